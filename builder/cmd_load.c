/* kiln load [-i FILE] [-q] — load images from a tar archive (or STDIN):
 * an OCI image layout tar (index.json + blobs/, what kiln save, docker 25+ and
 * skopeo oci-archive write) or a docker-archive (manifest.json + layer tars,
 * what docker save 20.10 writes).  The archive may be compressed.
 *
 * Every file is streamed into the store; files under blobs/sha256/ must match
 * their names (the digest is verified while they stream), manifests and
 * configs are validated, uncompressed docker-archive layers must match their
 * diff_ids.  Archive paths never touch the filesystem.  Tags are set only
 * after all blobs are stored, so an interrupted load leaves no partial image. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/layer.h"
#include "layers/store.h"

#define META_MAX (16u << 20)

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln load [OPTIONS]\n\n"
		   "Load an image from a tar archive or STDIN\n\n"
		   "Options:\n"
		   "  -i, --input string   Read from tar archive file, instead of STDIN\n"
		   "  -q, --quiet          Suppress the load output\n");
}

struct file {
	char *path;                      /* cleaned archive path */
	char digest[KILN_DIGEST_MAX];    /* of its content, now a blob */
	int64_t size;
};

struct loaded {
	struct file *v;
	size_t n, cap;
	char *index_json, *manifest_json;
	size_t index_len, manifest_len;
};

static char *clean_path(const char *p)
{
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	while (*p == '/')
		p++;
	return kiln_xstrdup(p);
}

static const struct file *find_file(const struct loaded *l, const char *path)
{
	char *c = clean_path(path);
	const struct file *f = NULL;
	for (size_t i = 0; i < l->n && !f; i++)
		if (!strcmp(l->v[i].path, c))
			f = &l->v[i];
	free(c);
	return f;
}

static int read_member(struct archive *a, const char *name, char **out, size_t *len, struct kiln_err *err)
{
	struct kiln_buf b = {0};
	char buf[65536];
	for (;;) {
		la_ssize_t r = archive_read_data(a, buf, sizeof(buf));
		if (r < 0) {
			kiln_buf_free(&b);
			return kiln_err_set(err, 0, "read %s from the archive: %s", name, archive_error_string(a));
		}
		if (r == 0)
			break;
		if (b.len + (size_t)r > META_MAX) {
			kiln_buf_free(&b);
			return kiln_err_set(err, 0, "%s in the archive is too large", name);
		}
		kiln_buf_append(&b, buf, (size_t)r);
	}
	*len = b.len;
	*out = kiln_buf_steal(&b);
	return 0;
}

static int read_archive(struct kiln_store *s, int in_fd, struct loaded *l, struct kiln_err *err)
{
	struct archive *a = archive_read_new();
	kiln_layer_read_filters(a);   /* in-process decoders only */
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	int rc = -1;
	if (archive_read_open_fd(a, in_fd, 1 << 17) != ARCHIVE_OK) {
		kiln_err_set(err, 0, "read the archive: %s", archive_error_string(a));
		goto out;
	}
	static char buf[1 << 17];
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			kiln_err_set(err, 0, "read the archive: %s", archive_error_string(a));
			goto out;
		}
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		char *path = clean_path(archive_entry_pathname(e));
		if (!strcmp(path, "index.json") || !strcmp(path, "manifest.json")) {
			bool idx = path[0] == 'i';
			char **dst = idx ? &l->index_json : &l->manifest_json;
			free(*dst);
			int m = read_member(a, path, dst, idx ? &l->index_len : &l->manifest_len, err);
			free(path);
			if (m < 0)
				goto out;
			continue;
		}
		/* everything else becomes a blob; blobs/sha256/<hex> must match its name */
		const char *expected = NULL;
		char named[KILN_DIGEST_MAX] = "";
		if (!strncmp(path, "blobs/sha256/", 13)) {
			snprintf(named, sizeof(named), "sha256:%.64s", path + 13);
			if (strlen(path + 13) != 64 || !kiln_digest_valid(named)) {
				kiln_err_set(err, 0, "archive member %s is not named by a sha256 digest", path);
				free(path);
				goto out;
			}
			expected = named;
		} else if (!strcmp(path, "oci-layout") || !strcmp(path, "repositories")) {
			free(path);
			continue;
		}
		struct kiln_blob_writer *w;
		if (kiln_store_blob_begin(s, &w, err) < 0) {
			free(path);
			goto out;
		}
		for (;;) {
			la_ssize_t n = archive_read_data(a, buf, sizeof(buf));
			if (n < 0) {
				kiln_err_set(err, 0, "read %s from the archive: %s", path, archive_error_string(a));
				kiln_store_blob_abort(w);
				free(path);
				goto out;
			}
			if (n == 0)
				break;
			if (kiln_blob_write(w, buf, (size_t)n, err) < 0) {
				kiln_store_blob_abort(w);
				free(path);
				goto out;
			}
		}
		if (l->n == l->cap) {
			l->cap = l->cap ? l->cap * 2 : 16;
			l->v = kiln_xrealloc(l->v, l->cap * sizeof(*l->v));
		}
		struct file *f = &l->v[l->n];
		memset(f, 0, sizeof(*f));
		if (kiln_store_blob_commit(w, expected, f->digest, &f->size, err) < 0) {
			kiln_err_wrap(err, "archive member %s", path);
			free(path);
			goto out;
		}
		f->path = path;
		l->n++;
	}
	rc = 0;
out:
	archive_read_free(a);
	return rc;
}

static void report(bool quiet, const char *ref, const char *id)
{
	if (quiet)
		return;
	if (ref) {
		char *fam = kiln_ref_familiarize(ref);
		printf("Loaded image: %s\n", fam);
		free(fam);
	} else {
		printf("Loaded image ID: %s\n", id);
	}
}

/* The OCI way: index.json entries → manifests (already verified blobs). */
static int load_oci(struct kiln_store *s, struct loaded *l, bool quiet, struct kiln_err *err)
{
	json_t *idx;
	if (kiln_index_parse(l->index_json, l->index_len, &idx, err) < 0)
		return kiln_err_wrap(err, "index.json in the archive");
	size_t i;
	json_t *x;
	int rc = 0;
	json_array_foreach(json_object_get(idx, "manifests"), i, x) {
		struct kiln_desc md;
		struct kiln_image *img;
		if (kiln_desc_from_json(x, &md, err) < 0 || kiln_image_load_desc(s, &md, &img, err) < 0) {
			kiln_err_wrap(err, "index.json entry %zu in the archive", i);
			rc = -1;
			break;
		}
		int64_t sz;
		if (kiln_store_blob_size(s, md.digest, &sz, err) < 0 || sz != md.size) {
			kiln_image_free(img);
			rc = kiln_err_set(err, 0, "index.json entry %zu: manifest size %lld differs from its descriptor's %lld",
					  i, (long long)sz, (long long)md.size);
			break;
		}
		bool ok = true;
		for (size_t k = 0; k < img->n_layers && ok; k++) {
			if (!kiln_store_blob_exists(s, img->layers[k].digest)) {
				kiln_err_set(err, 0, "the archive lacks layer %s", img->layers[k].digest);
				ok = false;
			} else if (kiln_store_blob_size(s, img->layers[k].digest, &sz, err) < 0 ||
				   sz != img->layers[k].size) {
				kiln_err_set(err, 0, "layer %s has %lld bytes, its descriptor says %lld",
					     img->layers[k].digest, (long long)sz, (long long)img->layers[k].size);
				ok = false;
			}
		}
		json_t *ann = json_object_get(x, "annotations");
		const char *name = json_string_value(json_object_get(ann, KILN_ANNOT_IMAGE_NAME));
		const char *rname = json_string_value(json_object_get(ann, KILN_ANNOT_REF_NAME));
		/* a bare tag in ref.name (docker 25) without a full name is not a repository */
		if (!name && rname && strchr(rname, ':'))
			name = rname;
		char id[KILN_DIGEST_MAX];
		memcpy(id, img->id, sizeof(id));
		kiln_image_free(img);
		if (!ok) {
			rc = -1;
			break;
		}
		struct kiln_err e = {0};
		char *norm = name ? kiln_ref_normalize(name, &e) : NULL;
		if (norm ? kiln_store_tag_set(s, norm, &md, err) < 0 : kiln_store_index_add_untagged(s, &md, err) < 0) {
			free(norm);
			rc = -1;
			break;
		}
		report(quiet, norm, id);
		free(norm);
	}
	json_decref(idx);
	return rc;
}

static const char *layer_media_type(struct kiln_store *s, const char *digest)
{
	int fd;
	struct kiln_err e = {0};
	unsigned char m[4] = {0};
	if (kiln_store_blob_open(s, digest, &fd, &e) == 0) {
		if (read(fd, m, sizeof(m)) < 0)
			m[0] = 0;
		close(fd);
	}
	if (m[0] == 0x1f && m[1] == 0x8b)
		return KILN_MT_LAYER_GZIP;
	if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
		return KILN_MT_LAYER_ZSTD;
	return KILN_MT_LAYER_TAR;
}

/* The docker way: manifest.json → config file + layer files; an OCI manifest is made. */
static int load_docker(struct kiln_store *s, struct loaded *l, bool quiet, struct kiln_err *err)
{
	json_error_t je;
	json_t *man = json_loadb(l->manifest_json, l->manifest_len, 0, &je);
	if (!json_is_array(man)) {
		json_decref(man);
		return kiln_err_set(err, 0, "manifest.json in the archive is not a JSON array");
	}
	size_t i;
	json_t *x;
	int rc = 0;
	json_array_foreach(man, i, x) {
		const char *cpath = json_string_value(json_object_get(x, "Config"));
		json_t *layers = json_object_get(x, "Layers");
		const struct file *cf = cpath ? find_file(l, cpath) : NULL;
		if (!cf || !json_is_array(layers)) {
			rc = kiln_err_set(err, 0, "manifest.json entry %zu: config %s is missing from the archive", i,
					  cpath ? cpath : "(none)");
			break;
		}
		char *cdata;
		size_t clen;
		if (kiln_store_blob_read(s, cf->digest, META_MAX, &cdata, &clen, err) < 0) {
			rc = -1;
			break;
		}
		json_t *cfg = json_loadb(cdata, clen, 0, NULL);
		free(cdata);
		json_t *diff_ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
		if (!json_is_object(cfg) || !json_is_array(diff_ids) ||
		    json_array_size(diff_ids) != json_array_size(layers)) {
			json_decref(cfg);
			rc = kiln_err_set(err, 0, "manifest.json entry %zu: the config's diff_ids do not match its %zu layers",
					  i, json_array_size(layers));
			break;
		}
		json_t *ldescs = json_array();
		size_t k;
		json_t *lp;
		json_array_foreach(layers, k, lp) {
			const struct file *lf = json_is_string(lp) ? find_file(l, json_string_value(lp)) : NULL;
			const char *did = json_string_value(json_array_get(diff_ids, k));
			if (!lf || !kiln_digest_valid(did)) {
				rc = kiln_err_set(err, 0, "manifest.json entry %zu: layer %zu is missing from the archive", i, k);
				break;
			}
			const char *mt = layer_media_type(s, lf->digest);
			if (!strcmp(mt, KILN_MT_LAYER_TAR) && strcmp(lf->digest, did)) {
				rc = kiln_err_set(err, 0, "layer %s: its content has digest %s, the config's diff_id is %s",
						  json_string_value(lp), lf->digest, did);
				break;
			}
			json_array_append_new(ldescs, json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", lf->digest,
								"size", (json_int_t)lf->size));
		}
		json_decref(cfg);
		if (rc < 0) {
			json_decref(ldescs);
			break;
		}
		json_t *mj = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
				       KILN_MT_OCI_MANIFEST, "config", "mediaType", KILN_MT_OCI_CONFIG, "digest",
				       cf->digest, "size", (json_int_t)cf->size, "layers", ldescs);
		char *mtext = kiln_json_canonical(mj);
		json_decref(mj);
		struct kiln_desc md;
		snprintf(md.media_type, sizeof(md.media_type), "%s", KILN_MT_OCI_MANIFEST);
		md.size = (int64_t)strlen(mtext);
		int r = kiln_store_blob_put(s, mtext, strlen(mtext), md.digest, err);
		free(mtext);
		struct kiln_image *img;
		if (r < 0 || kiln_image_load_desc(s, &md, &img, err) < 0) {
			rc = -1;
			break;
		}
		kiln_image_free(img);
		json_t *tags = json_object_get(x, "RepoTags");
		if (!json_array_size(tags)) {
			if (kiln_store_index_add_untagged(s, &md, err) < 0) {
				rc = -1;
				break;
			}
			report(quiet, NULL, cf->digest);
		}
		json_t *t;
		json_array_foreach(tags, k, t) {
			const char *name = json_string_value(t);
			char *norm = name ? kiln_ref_normalize(name, err) : NULL;
			if (!norm || kiln_store_tag_set(s, norm, &md, err) < 0) {
				free(norm);
				rc = -1;
				break;
			}
			report(quiet, norm, cf->digest);
			free(norm);
		}
		if (rc < 0)
			break;
	}
	json_decref(man);
	return rc;
}

int kiln_cmd_load(int argc, char **argv)
{
	const char *input = NULL;
	bool quiet = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if ((!strcmp(a, "-i") || !strcmp(a, "--input")) && i + 1 < argc) {
			input = argv[++i];
		} else if (!strncmp(a, "--input=", 8)) {
			input = a + 8;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = true;
		} else {
			fprintf(stderr, "kiln: load: unexpected argument %s (see 'kiln load --help')\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	struct kiln_err err = {0};
	int in = 0;
	if (input && strcmp(input, "-")) {
		in = open(input, O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			kiln_err_set(&err, errno, "open %s", input);
			kiln_err_print(&err);
			return KILN_EXIT_FAIL;
		}
	} else if (isatty(0)) {
		fprintf(stderr, "kiln: requested load from stdin, but stdin is empty (use -i FILE)\n");
		return KILN_EXIT_FAIL;
	}
	struct kiln_store *s = NULL;
	struct loaded l = {0};
	int rc = KILN_EXIT_FAIL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0 || read_archive(s, in, &l, &err) < 0)
		goto fail;
	if (l.index_json) {
		if (load_oci(s, &l, quiet, &err) < 0)
			goto fail;
	} else if (l.manifest_json) {
		if (load_docker(s, &l, quiet, &err) < 0)
			goto fail;
	} else {
		kiln_err_set(&err, 0, "the archive has neither index.json nor manifest.json: not an image archive");
		goto fail;
	}
	rc = 0;
	goto out;
fail:
	kiln_err_print(&err);
out:
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i].path);
	free(l.v);
	free(l.index_json);
	free(l.manifest_json);
	if (in > 0)
		close(in);
	kiln_store_close(s);
	return rc;
}
