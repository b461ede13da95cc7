/* kiln save [-o FILE] IMAGE...          one tar that is an OCI image layout
 *                                        (oci-layout, index.json, blobs/) and has
 *                                        docker's manifest.json: loadable by
 *                                        docker load, podman load and kiln load
 * kiln save --format oci-dir -o DIR IMAGE  an OCI image layout directory
 *
 * Deterministic: entries in a fixed order, owner 0:0, mtime SOURCE_DATE_EPOCH
 * (or 0).  Every blob is re-digested while it is copied out. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln save [OPTIONS] IMAGE [IMAGE...]\n\n"
		   "Save one or more images to a tar archive (streamed to STDOUT by default)\n\n"
		   "Options:\n"
		   "  -o, --output string   Write to a file, instead of STDOUT\n"
		   "      --format string   oci-archive (default: OCI layout + docker manifest.json in one tar)\n"
		   "                        or oci-dir (an OCI image layout directory)\n");
}

struct saved {
	struct kiln_strv blobs;     /* digests, in the order first seen */
	json_t *index;              /* OCI index.json */
	json_t *docker;             /* docker manifest.json */
};

static void add_blob(struct saved *sv, const char *digest)
{
	for (size_t i = 0; i < sv->blobs.n; i++)
		if (!strcmp(sv->blobs.v[i], digest))
			return;
	kiln_strv_push(&sv->blobs, digest);
}

static char *blob_rel(const char *digest)
{
	return kiln_xasprintf("blobs/sha256/%s", digest + 7);
}

/* Collect one image (its tag descriptor may be an index: then the index and
 * the manifests present are kept; manifest.json gets the host platform's). */
static int collect(struct kiln_store *s, struct saved *sv, const char *name, struct kiln_err *err)
{
	struct kiln_desc md;
	char id[KILN_DIGEST_MAX];
	if (kiln_image_resolve(s, name, &md, id, err) < 0)
		return -1;
	struct kiln_image *img;
	if (kiln_image_load_desc(s, &md, &img, err) < 0)
		return kiln_err_wrap(err, "image %s", name);
	/* the reference, when NAME names one (docker keeps RepoTags only then) */
	char *ref = NULL;
	struct kiln_ref r;
	struct kiln_err e = {0};
	if (kiln_ref_parse(name, &r, &e) == 0) {
		struct kiln_desc t;
		char *full = kiln_ref_string(&r);
		if (!r.digest && kiln_store_tag_get(s, full, &t, &e) == 0 && !strcmp(t.digest, md.digest))
			ref = full;
		else
			free(full);
		kiln_ref_free(&r);
	}
	if (strcmp(md.digest, img->manifest.digest)) {
		/* an image index: keep it and every manifest we have */
		add_blob(sv, md.digest);
		char *data;
		size_t len;
		json_t *idx;
		if (kiln_store_blob_read(s, md.digest, 0, &data, &len, err) < 0 ||
		    kiln_index_parse(data, len, &idx, err) < 0) {
			kiln_image_free(img);
			free(ref);
			return -1;
		}
		free(data);
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(idx, "manifests"), i, x) {
			struct kiln_desc sub;
			struct kiln_image *si;
			if (kiln_desc_from_json(x, &sub, &e) < 0 || !kiln_store_blob_exists(s, sub.digest) ||
			    kiln_image_load_desc(s, &sub, &si, &e) < 0)
				continue;
			add_blob(sv, sub.digest);
			add_blob(sv, si->id);
			for (size_t k = 0; k < si->n_layers; k++)
				add_blob(sv, si->layers[k].digest);
			kiln_image_free(si);
		}
		json_decref(idx);
	}
	add_blob(sv, img->manifest.digest);
	add_blob(sv, img->id);
	json_t *layers = json_array();
	for (size_t k = 0; k < img->n_layers; k++) {
		add_blob(sv, img->layers[k].digest);
		char *rel = blob_rel(img->layers[k].digest);
		json_array_append_new(layers, json_string(rel));
		free(rel);
	}
	/* the same name twice (busybox busybox:latest): once is enough */
	size_t di;
	json_t *dx;
	json_array_foreach(json_object_get(sv->index, "manifests"), di, dx) {
		const char *dn = json_string_value(json_object_get(json_object_get(dx, "annotations"), KILN_ANNOT_REF_NAME));
		const char *dd = json_string_value(json_object_get(dx, "digest"));
		if (dd && !strcmp(dd, md.digest) && ((!dn && !ref) || (dn && ref && !strcmp(dn, ref)))) {
			json_decref(layers);
			free(ref);
			kiln_image_free(img);
			return 0;
		}
	}
	/* index.json entry */
	json_t *ent = kiln_desc_to_json(&md);
	if (ref)
		json_object_set_new(ent, "annotations",
				    json_pack("{s:s, s:s}", KILN_ANNOT_IMAGE_NAME, ref, KILN_ANNOT_REF_NAME, ref));
	json_array_append_new(json_object_get(sv->index, "manifests"), ent);
	/* manifest.json entry: merge RepoTags when the same config is saved twice */
	json_t *tags = json_array();
	if (ref) {
		char *fam = kiln_ref_familiarize(ref);
		json_array_append_new(tags, json_string(fam));
		free(fam);
	}
	char *cfg = blob_rel(img->id);
	size_t i;
	json_t *x;
	bool merged = false;
	json_array_foreach(sv->docker, i, x) {
		if (!strcmp(json_string_value(json_object_get(x, "Config")), cfg)) {
			json_array_extend(json_object_get(x, "RepoTags"), tags);
			merged = true;
		}
	}
	if (!merged)
		json_array_append_new(sv->docker,
				      json_pack("{s:s, s:O, s:O}", "Config", cfg, "RepoTags", tags, "Layers", layers));
	json_decref(tags);
	json_decref(layers);
	free(cfg);
	free(ref);
	kiln_image_free(img);
	return 0;
}

static int64_t save_mtime(void)
{
	const char *e = getenv("SOURCE_DATE_EPOCH");
	return e && *e ? strtoll(e, NULL, 10) : 0;
}

static int tar_header(struct archive *a, const char *name, bool dir, int64_t size, struct kiln_err *err)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
	archive_entry_set_perm(e, dir ? 0755 : 0644);
	archive_entry_set_size(e, dir ? 0 : size);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_mtime(e, save_mtime(), 0);
	int r = archive_write_header(a, e);
	archive_entry_free(e);
	if (r != ARCHIVE_OK)
		return kiln_err_set(err, archive_errno(a) > 0 ? archive_errno(a) : 0, "write tar header %s: %s", name,
				    archive_error_string(a));
	return 0;
}

static int tar_mem(struct archive *a, const char *name, const char *data, struct kiln_err *err)
{
	size_t len = strlen(data);
	if (tar_header(a, name, false, (int64_t)len, err) < 0)
		return -1;
	if (archive_write_data(a, data, len) != (la_ssize_t)len)
		return kiln_err_set(err, archive_errno(a) > 0 ? archive_errno(a) : 0, "write %s: %s", name,
				    archive_error_string(a));
	return 0;
}

/* Copy a blob out (to the tar when a != NULL, else to out_fd), verifying it. */
static int copy_blob(struct kiln_store *s, const char *digest, struct archive *a, int out_fd, struct kiln_err *err)
{
	int fd;
	if (kiln_store_blob_open(s, digest, &fd, err) < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return kiln_err_set(err, errno, "stat blob %s", digest);
	}
	char *rel = blob_rel(digest);
	int rc = -1;
	if (a && tar_header(a, rel, false, st.st_size, err) < 0)
		goto out;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	static char buf[1 << 17];
	int64_t total = 0;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			kiln_err_set(err, errno, "read blob %s", digest);
			EVP_MD_CTX_free(ctx);
			goto out;
		}
		if (r == 0)
			break;
		total += r;
		if (total > st.st_size) {
			kiln_err_set(err, 0, "blob %s changed while it was saved", digest);
			EVP_MD_CTX_free(ctx);
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)r);
		if (a ? archive_write_data(a, buf, (size_t)r) != r : kiln_write_all(out_fd, buf, (size_t)r) < 0) {
			kiln_err_set(err, a ? (archive_errno(a) > 0 ? archive_errno(a) : 0) : errno, "write %s%s%s", rel, a ? ": " : "",
				     a ? archive_error_string(a) : "");
			EVP_MD_CTX_free(ctx);
			goto out;
		}
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen;
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	char hex[65];
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, digest + 7) || total != st.st_size) {
		kiln_err_set(err, 0, "blob %s is corrupt in the store (run kiln fsck)", digest);
		goto out;
	}
	rc = 0;
out:
	free(rel);
	close(fd);
	return rc;
}

static int write_archive(struct kiln_store *s, struct saved *sv, int out_fd, struct kiln_err *err)
{
	struct archive *a = archive_write_new();
	int rc = -1;
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(a, out_fd) != ARCHIVE_OK) {
		kiln_err_set(err, 0, "open the archive: %s", archive_error_string(a));
		goto out;
	}
	char *idx = json_dumps(sv->index, JSON_COMPACT | JSON_SORT_KEYS);
	char *man = json_dumps(sv->docker, JSON_COMPACT | JSON_PRESERVE_ORDER);
	int r = tar_mem(a, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", err);
	if (r == 0)
		r = tar_mem(a, "index.json", idx, err);
	if (r == 0)
		r = tar_mem(a, "manifest.json", man, err);
	free(idx);
	free(man);
	if (r < 0 || tar_header(a, "blobs/", true, 0, err) < 0 || tar_header(a, "blobs/sha256/", true, 0, err) < 0)
		goto out;
	for (size_t i = 0; i < sv->blobs.n; i++)
		if (copy_blob(s, sv->blobs.v[i], a, -1, err) < 0)
			goto out;
	if (archive_write_close(a) != ARCHIVE_OK) {
		kiln_err_set(err, archive_errno(a) > 0 ? archive_errno(a) : 0, "finish the archive: %s",
			     archive_error_string(a));
		goto out;
	}
	rc = 0;
out:
	archive_write_free(a);
	return rc;
}

static int write_dir(struct kiln_store *s, struct saved *sv, const char *dir, struct kiln_err *err)
{
	if (kiln_mkdir_p(dir, 0755, err) < 0)
		return -1;
	char *blobs = kiln_xasprintf("%s/blobs/sha256", dir);
	int rc = kiln_mkdir_p(blobs, 0755, err);
	free(blobs);
	if (rc < 0)
		return -1;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_set(err, errno, "open %s", dir);
	rc = -1;
	for (size_t i = 0; i < sv->blobs.n; i++) {
		char *rel = blob_rel(sv->blobs.v[i]);
		char *tmp = kiln_xasprintf("%s.tmp", rel);
		int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0) {
			kiln_err_set(err, errno, "create %s/%s", dir, tmp);
			free(rel);
			free(tmp);
			goto out;
		}
		int r = copy_blob(s, sv->blobs.v[i], NULL, fd, err);
		if (r == 0 && fsync(fd) < 0)
			r = kiln_err_set(err, errno, "fsync %s", tmp);
		close(fd);
		if (r == 0 && renameat(dfd, tmp, dfd, rel) < 0)
			r = kiln_err_set(err, errno, "rename %s", tmp);
		if (r < 0)
			unlinkat(dfd, tmp, 0);
		free(rel);
		free(tmp);
		if (r < 0)
			goto out;
	}
	/* merge with an existing layout's index.json (as skopeo does) */
	json_t *old = NULL;
	char *data;
	size_t len;
	char *ipath = kiln_xasprintf("%s/index.json", dir);
	struct kiln_err e = {0};
	if (kiln_read_file(ipath, 64u << 20, &data, &len, &e) == 0) {
		old = json_loadb(data, len, 0, NULL);
		free(data);
	}
	free(ipath);
	if (json_is_array(json_object_get(old, "manifests"))) {
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(sv->index, "manifests"), i, x) {
			const char *name = json_string_value(json_object_get(json_object_get(x, "annotations"),
									 KILN_ANNOT_REF_NAME));
			json_t *m = json_object_get(old, "manifests");
			for (size_t k = 0; name && k < json_array_size(m);) {
				const char *on = json_string_value(
					json_object_get(json_object_get(json_array_get(m, k), "annotations"),
							KILN_ANNOT_REF_NAME));
				if (on && !strcmp(on, name))
					json_array_remove(m, k);
				else
					k++;
			}
			json_array_append(m, x);
		}
	} else {
		json_decref(old);
		old = json_incref(sv->index);
	}
	char *idx = json_dumps(old, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(old);
	const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
	if (kiln_write_file_atomic(dfd, "oci-layout", layout, strlen(layout), 0644, err) == 0 &&
	    kiln_write_file_atomic(dfd, "index.json", idx, strlen(idx), 0644, err) == 0)
		rc = 0;
	free(idx);
out:
	close(dfd);
	return rc;
}

int kiln_cmd_save(int argc, char **argv)
{
	const char *output = NULL, *format = "oci-archive";
	struct kiln_strv names = {0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			kiln_strv_free(&names);
			return 0;
		} else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
			output = argv[++i];
		} else if (!strncmp(a, "--output=", 9)) {
			output = a + 9;
		} else if (!strcmp(a, "--format") && i + 1 < argc) {
			format = argv[++i];
		} else if (!strncmp(a, "--format=", 9)) {
			format = a + 9;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: save: unknown option %s\n", a);
			kiln_strv_free(&names);
			return KILN_EXIT_USAGE;
		} else {
			kiln_strv_push(&names, a);
		}
	}
	bool dir = !strcmp(format, "oci-dir");
	if (!dir && strcmp(format, "oci-archive") && strcmp(format, "docker-archive")) {
		fprintf(stderr, "kiln: save: unknown --format %s (oci-archive or oci-dir)\n", format);
		kiln_strv_free(&names);
		return KILN_EXIT_USAGE;
	}
	if (!names.n) {
		fprintf(stderr, "kiln: \"save\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	if (dir && !output) {
		fprintf(stderr, "kiln: save --format oci-dir needs -o DIR\n");
		kiln_strv_free(&names);
		return KILN_EXIT_USAGE;
	}
	if (!dir && (!output || !strcmp(output, "-")) && isatty(1)) {
		fprintf(stderr, "kiln: cowardly refusing to save to a terminal. Use the -o flag or redirect\n");
		kiln_strv_free(&names);
		return KILN_EXIT_FAIL;
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	struct saved sv = {0};
	int rc = KILN_EXIT_FAIL;
	struct kiln_outfile of = {.fd = -1};
	sv.index = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", KILN_MT_OCI_INDEX, "manifests");
	sv.docker = json_array();
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0)
		goto fail;
	for (size_t i = 0; i < names.n; i++)
		if (collect(s, &sv, names.v[i], &err) < 0)
			goto fail;
	if (dir) {
		if (write_dir(s, &sv, output, &err) < 0)
			goto fail;
	} else if (output) {
		/* "-" is stdout; a device or fifo is written in place; a regular file
		 * is written next to the target and renamed when complete (no half
		 * archive under the name) */
		if (kiln_outfile_open(&of, output, 0644, &err) < 0)
			goto fail;
		if (write_archive(s, &sv, of.fd, &err) < 0) {
			kiln_err_wrap(&err, "writing %s", output);
			goto fail;
		}
		if (kiln_outfile_commit(&of, &err) < 0)
			goto fail;
	} else {
		if (write_archive(s, &sv, 1, &err) < 0)
			goto fail;
	}
	rc = 0;
	goto out;
fail:
	kiln_err_print(&err);
out:
	kiln_outfile_abort(&of);
	json_decref(sv.index);
	json_decref(sv.docker);
	kiln_strv_free(&sv.blobs);
	kiln_store_close(s);
	kiln_strv_free(&names);
	return rc;
}
