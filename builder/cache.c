/* kiln — build cache records. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/cache.h"
#include "common/util.h"
#include "layers/store.h"

void kiln_cache_key_begin(struct kiln_cache_key *k, const char *kind)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL))
		abort();
	k->md = c;
	/* v3: records made while RUN diffs could drop same-size, same-mtime
	 * rewrites (an empty or short layer) are not reused */
	kiln_cache_key_add(k, "kiln-cache-v3", kind);
}

void kiln_cache_key_add(struct kiln_cache_key *k, const char *name, const char *value)
{
	char hdr[64];
	size_t nl = strlen(name);
	int h = snprintf(hdr, sizeof(hdr), "%zu:", nl);
	EVP_DigestUpdate(k->md, hdr, (size_t)h);
	EVP_DigestUpdate(k->md, name, nl);
	if (!value) {
		EVP_DigestUpdate(k->md, "-", 1);
		return;
	}
	size_t vl = strlen(value);
	h = snprintf(hdr, sizeof(hdr), "=%zu:", vl);
	EVP_DigestUpdate(k->md, hdr, (size_t)h);
	EVP_DigestUpdate(k->md, value, vl);
}

void kiln_cache_key_add_json(struct kiln_cache_key *k, const char *name, const json_t *value)
{
	if (!value) {
		kiln_cache_key_add(k, name, NULL);
		return;
	}
	char *s = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	kiln_cache_key_add(k, name, s ? s : "");
	free(s);
}

void kiln_cache_key_end(struct kiln_cache_key *k, char out[KILN_DIGEST_MAX])
{
	unsigned char h[32];
	unsigned int len = 32;
	EVP_DigestFinal_ex(k->md, h, &len);
	EVP_MD_CTX_free(k->md);
	k->md = NULL;
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", h[i]);
}

static char *records_dir(const char *root)
{
	return kiln_xasprintf("%s/cache/records", root);
}

static bool key_ok(const char *key)
{
	if (strncmp(key, "sha256:", 7) || strlen(key) != 71)
		return false;
	for (const char *p = key + 7; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int record_from_json(json_t *j, struct kiln_cache_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	json_t *cfg = json_object_get(j, "config");
	json_t *layers = json_object_get(j, "layers");
	if (!json_is_object(cfg) || !json_is_array(layers))
		return -1;
	copy_str(rec->key, sizeof(rec->key), json_string_value(json_object_get(j, "key")));
	copy_str(rec->chain_id, sizeof(rec->chain_id), json_string_value(json_object_get(j, "chain_id")));
	rec->created = json_integer_value(json_object_get(j, "created"));
	rec->config = json_incref(cfg);
	rec->n_layers = json_array_size(layers);
	rec->layers = kiln_xcalloc(rec->n_layers + 1, sizeof(*rec->layers));
	for (size_t i = 0; i < rec->n_layers; i++) {
		json_t *l = json_array_get(layers, i);
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *di = json_string_value(json_object_get(l, "diff_id"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		if (!d || !di || !mt) {
			kiln_cache_record_free(rec);
			return -1;
		}
		copy_str(rec->layers[i].digest, sizeof(rec->layers[i].digest), d);
		copy_str(rec->layers[i].diff_id, sizeof(rec->layers[i].diff_id), di);
		copy_str(rec->layers[i].media_type, sizeof(rec->layers[i].media_type), mt);
		rec->layers[i].size = json_integer_value(json_object_get(l, "size"));
	}
	return 0;
}

int kiln_cache_get(const char *root, const char *key, struct kiln_cache_record *rec,
		   struct kiln_err *err)
{
	memset(rec, 0, sizeof(*rec));
	if (!key_ok(key))
		return kiln_err_set(err, 0, "invalid cache key %s", key);
	KILN_AUTOFREE char *path = kiln_xasprintf("%s/cache/records/%s.json", root, key + 7);
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	if (!j)
		return 0;
	int r = record_from_json(j, rec);
	json_decref(j);
	if (r < 0 || strcmp(rec->key, key)) {
		kiln_cache_record_free(rec);
		return 0;
	}
	return 1;
}

int kiln_cache_put(const char *root, const struct kiln_cache_record *rec, struct kiln_err *err)
{
	if (!key_ok(rec->key))
		return kiln_err_set(err, 0, "invalid cache key %s", rec->key);
	KILN_AUTOFREE char *dir = records_dir(root);
	if (kiln_mkdir_p(dir, 0700, err) < 0)
		return -1;
	json_t *layers = json_array();
	for (size_t i = 0; i < rec->n_layers; i++)
		json_array_append_new(layers, json_pack("{s:s,s:s,s:I,s:s}", "digest", rec->layers[i].digest,
							"diff_id", rec->layers[i].diff_id, "size",
							(json_int_t)rec->layers[i].size, "mediaType",
							rec->layers[i].media_type));
	json_t *j = json_pack("{s:s,s:O,s:o,s:s,s:I}", "key", rec->key, "config", rec->config, "layers", layers,
			      "chain_id", rec->chain_id, "created", (json_int_t)rec->created);
	if (!j)
		return kiln_err_set(err, 0, "encoding cache record %s", rec->key);
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!s)
		return kiln_err_set(err, 0, "encoding cache record %s", rec->key);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		free(s);
		return kiln_err_set(err, errno, "opening %s", dir);
	}
	KILN_AUTOFREE char *name = kiln_xasprintf("%s.json", rec->key + 7);
	int r = kiln_write_file_atomic(dfd, name, s, strlen(s), 0600, err);
	close(dfd);
	free(s);
	return r;
}

void kiln_cache_record_free(struct kiln_cache_record *rec)
{
	if (rec->config)
		json_decref(rec->config);
	free(rec->layers);
	rec->config = NULL;
	rec->layers = NULL;
	rec->n_layers = 0;
}

typedef int (*record_fn)(const char *path, const char *name, struct kiln_cache_record *rec, void *arg);

static int each_record(const char *root, record_fn fn, void *arg, struct kiln_err *err)
{
	KILN_AUTOFREE char *dir = records_dir(root);
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return kiln_err_set(err, errno, "opening %s", dir);
	}
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d)) && rc == 0) {
		if (!kiln_str_has_suffix(e->d_name, ".json"))
			continue;
		KILN_AUTOFREE char *path = kiln_xasprintf("%s/%s", dir, e->d_name);
		json_error_t je;
		json_t *j = json_load_file(path, 0, &je);
		struct kiln_cache_record rec = {0};
		bool ok = j && record_from_json(j, &rec) == 0;
		if (j)
			json_decref(j);
		rc = fn(path, e->d_name, ok ? &rec : NULL, arg);
		if (ok)
			kiln_cache_record_free(&rec);
	}
	closedir(d);
	return rc;
}

struct prune_ctx {
	const char *root;
	bool all;
	size_t removed;
	struct kiln_strv *chains;
};

static bool blob_present(const char *root, const char *digest)
{
	if (strncmp(digest, "sha256:", 7))
		return false;
	KILN_AUTOFREE char *p = kiln_xasprintf("%s/blobs/sha256/%s", root, digest + 7);
	return access(p, F_OK) == 0;
}

static int prune_cb(const char *path, const char *name, struct kiln_cache_record *rec, void *arg)
{
	struct prune_ctx *c = arg;
	bool drop = c->all || !rec;
	for (size_t i = 0; rec && !drop && i < rec->n_layers; i++)
		if (!blob_present(c->root, rec->layers[i].digest))
			drop = true;
	if (!drop)
		return 0;
	if (unlink(path) == 0) {
		c->removed++;
		if (c->chains && rec && rec->chain_id[0])
			kiln_strv_push(c->chains, rec->chain_id);
	}
	return 0;
}

int kiln_cache_prune(const char *root, bool all, size_t *removed, struct kiln_strv *chains,
		     struct kiln_err *err)
{
	struct prune_ctx c = {.root = root, .all = all, .chains = chains};
	int r = each_record(root, prune_cb, &c, err);
	if (removed)
		*removed = c.removed;
	return r;
}

static int roots_cb(const char *path, const char *name, struct kiln_cache_record *rec, void *arg)
{
	struct kiln_strv *v = arg;
	for (size_t i = 0; rec && i < rec->n_layers; i++)
		kiln_strv_push(v, rec->layers[i].digest);
	return 0;
}

int kiln_cache_roots(const char *root, struct kiln_strv *digests, struct kiln_err *err)
{
	return each_record(root, roots_cb, digests, err);
}

/* The store's gc asks this for extra roots: every layer a cache record names. */
int kiln_store_gc_extra_roots(struct kiln_store *s, struct kiln_strv *roots, struct kiln_err *err)
{
	return kiln_cache_roots(kiln_store_root_path(s), roots, err);
}
