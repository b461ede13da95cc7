/* kiln — the build cache shared through a registry (see remote_cache.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "builder/remote_cache.h"
#include "layers/image.h"

/* ---- specs ----------------------------------------------------------------- */

static int usage_err(struct kiln_err *err, const char *fmt, const char *a, const char *b)
{
	kiln_err_set(err, 0, fmt, a, b);
	err->exit_code = 2;
	return -1;
}

static int parse_bool(const char *v, bool *out)
{
	if (!*v || !strcasecmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcasecmp(v, "false") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	return -1;
}

int kiln_remote_cache_parse(const char *text, bool to, struct kiln_remote_cache_spec *out,
			    struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *opt = to ? "--cache-to" : "--cache-from";
	if (!text || !*text)
		return usage_err(err, "%s: empty value%s", opt, "");
	KILN_AUTOFREE char *ref = NULL;
	KILN_AUTOFREE char *copy = kiln_xstrdup(text);
	bool has_kv = strchr(text, '=') != NULL;
	if (!has_kv) {
		/* docker build --cache-from IMAGE */
		ref = kiln_xstrdup(text);
	} else {
		const char *type = NULL;
		char *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			char *eq = strchr(t, '=');
			if (!eq)
				return usage_err(err, "%s: \"%s\" is not KEY=VALUE", opt, t);
			*eq = 0;
			const char *k = t, *v = eq + 1;
			bool b;
			if (!strcmp(k, "type")) {
				type = v;
			} else if (!strcmp(k, "ref")) {
				free(ref);
				ref = kiln_xstrdup(v);
			} else if (!strcmp(k, "mode") && to) {
				if (!strcmp(v, "min"))
					out->mode = KILN_REMOTE_CACHE_MIN;
				else if (!strcmp(v, "max"))
					out->mode = KILN_REMOTE_CACHE_MAX;
				else
					return usage_err(err, "%s: mode=%s: want min or max", opt, v);
			} else if (!strcmp(k, "ignore-error") && to) {
				if (parse_bool(v, &b) < 0)
					return usage_err(err, "%s: ignore-error=%s: want true or false", opt, v);
				out->ignore_error = b;
			} else if (!strcmp(k, "registry.insecure")) {
				if (parse_bool(v, &b) < 0)
					return usage_err(err, "%s: registry.insecure=%s: want true or false", opt, v);
				out->tls = b ? KILN_TLS_INSECURE : KILN_TLS_DEFAULT;
			} else if (!strcmp(k, "oci-mediatypes") || !strcmp(k, "image-manifest") ||
				   !strcmp(k, "compression") || !strcmp(k, "compression-level") ||
				   !strcmp(k, "force-compression")) {
				/* BuildKit's; kiln always writes an OCI image manifest */
			} else {
				return usage_err(err, "%s: unknown key \"%s\"", opt, k);
			}
		}
		if (type && strcmp(type, "registry"))
			return usage_err(err, "%s: type=%s is not supported (only type=registry)", opt, type);
		if (!ref)
			return usage_err(err, "%s: ref= is required%s", opt, "");
	}
	struct kiln_ref r;
	struct kiln_err e = {0};
	if (kiln_ref_parse(ref, &r, &e) < 0)
		return usage_err(err, "%s: invalid reference: %s", opt, e.msg);
	bool has_tag = r.tag != NULL, has_digest = r.digest != NULL;
	kiln_ref_free(&r);
	if (to && (has_digest || !has_tag))
		return usage_err(err, "%s: %s: a cache is exported under a tag, not a digest", opt, ref);
	out->ref = kiln_ref_normalize(ref, &e);
	if (!out->ref)
		return usage_err(err, "%s: invalid reference: %s", opt, e.msg);
	return 0;
}

void kiln_remote_cache_spec_free(struct kiln_remote_cache_spec *s)
{
	free(s->ref);
	s->ref = NULL;
}

/* ---- the keys a build used ---------------------------------------------- */

struct note {
	char parent[KILN_DIGEST_MAX];
	char key[KILN_DIGEST_MAX];
};
static struct note *g_notes;
static size_t g_n_notes, g_cap_notes;

void kiln_remote_cache_note(const char *parent_key, const char *key)
{
	if (!key || !*key)
		return;
	for (size_t i = 0; i < g_n_notes; i++)
		if (!strcmp(g_notes[i].key, key))
			return;
	if (g_n_notes == g_cap_notes) {
		g_cap_notes = g_cap_notes ? 2 * g_cap_notes : 32;
		g_notes = kiln_xrealloc(g_notes, g_cap_notes * sizeof(*g_notes));
	}
	struct note *n = &g_notes[g_n_notes++];
	snprintf(n->parent, sizeof(n->parent), "%s", parent_key ? parent_key : "");
	snprintf(n->key, sizeof(n->key), "%s", key);
}

void kiln_remote_cache_reset(void)
{
	free(g_notes);
	g_notes = NULL;
	g_n_notes = g_cap_notes = 0;
}

static const struct note *find_note(const char *key)
{
	for (size_t i = 0; i < g_n_notes; i++)
		if (!strcmp(g_notes[i].key, key))
			return &g_notes[i];
	return NULL;
}

void kiln_remote_cache_select(enum kiln_remote_cache_mode mode, struct kiln_strv *out)
{
	if (!g_n_notes)
		return;
	if (mode == KILN_REMOTE_CACHE_MAX) {
		for (size_t i = 0; i < g_n_notes; i++)
			kiln_strv_push(out, g_notes[i].key);
		return;
	}
	/* walk the parents back from the final step; at most n steps (no loops) */
	const struct note **chain = kiln_xcalloc(g_n_notes, sizeof(*chain));
	size_t n = 0;
	for (const struct note *c = &g_notes[g_n_notes - 1]; c && n < g_n_notes; c = find_note(c->parent))
		chain[n++] = c;
	while (n)
		kiln_strv_push(out, chain[--n]->key);
	free(chain);
}

/* ---- records as JSON -------------------------------------------------------- */

static bool key_valid(const char *k)
{
	return k && kiln_digest_valid(k);
}

static bool layer_mt_known(const char *mt)
{
	static const char *const ok[] = {KILN_MT_LAYER_TAR, KILN_MT_LAYER_GZIP, KILN_MT_LAYER_ZSTD,
					 KILN_MT_DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar",
					 NULL};
	for (const char *const *p = ok; *p; p++)
		if (!strcmp(*p, mt))
			return true;
	return false;
}

static json_t *record_to_json(const struct kiln_cache_record *rec, const char *parent)
{
	json_t *layers = json_array();
	for (size_t i = 0; i < rec->n_layers; i++)
		json_array_append_new(layers, json_pack("{s:s,s:s,s:I,s:s}", "digest", rec->layers[i].digest,
							"diff_id", rec->layers[i].diff_id, "size",
							(json_int_t)rec->layers[i].size, "mediaType",
							rec->layers[i].media_type));
	json_t *j = json_pack("{s:s,s:O,s:o,s:I}", "key", rec->key, "config", rec->config, "layers", layers,
			      "created", (json_int_t)rec->created);
	if (j && parent && *parent)
		json_object_set_new(j, "parent", json_string(parent));
	return j;
}

/* The size a manifest lists for digest, -1 when it lists none. */
static int64_t manifest_size(const json_t *layers, const char *digest)
{
	size_t i;
	json_t *l;
	json_array_foreach(layers, i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		if (d && !strcmp(d, digest))
			return json_integer_value(json_object_get(l, "size"));
	}
	return -1;
}

/* One record from the config; false when invalid. */
static bool record_from_json(const json_t *j, const json_t *mlayers, struct kiln_cache_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	const char *key = json_string_value(json_object_get(j, "key"));
	json_t *cfg = json_object_get(j, "config");
	json_t *layers = json_object_get(j, "layers");
	json_t *created = json_object_get(j, "created");
	if (!key_valid(key) || !json_is_object(cfg) || !json_is_array(layers) ||
	    (created && !json_is_integer(created)) || json_array_size(layers) > 10000)
		return false;
	/* (the config's rootfs is not checked: the builder rewrites it at commit
	 * from the layers, so a record's copy may lag behind) */
	snprintf(rec->key, sizeof(rec->key), "%s", key);
	rec->created = created ? json_integer_value(created) : 0;
	rec->n_layers = json_array_size(layers);
	rec->layers = kiln_xcalloc(rec->n_layers + 1, sizeof(*rec->layers));
	char chain[KILN_DIGEST_MAX] = "";
	for (size_t i = 0; i < rec->n_layers; i++) {
		json_t *l = json_array_get(layers, i);
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *di = json_string_value(json_object_get(l, "diff_id"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		json_t *size = json_object_get(l, "size");
		if (!kiln_digest_valid(d) || !kiln_digest_valid(di) || !mt || !layer_mt_known(mt) ||
		    !json_is_integer(size) || json_integer_value(size) < 0)
			goto bad;
		if (mlayers && manifest_size(mlayers, d) != json_integer_value(size))
			goto bad;
		struct kiln_cache_layer *cl = &rec->layers[i];
		snprintf(cl->digest, sizeof(cl->digest), "%s", d);
		snprintf(cl->diff_id, sizeof(cl->diff_id), "%s", di);
		snprintf(cl->media_type, sizeof(cl->media_type), "%s", mt);
		cl->size = json_integer_value(size);
		char next[KILN_DIGEST_MAX];
		kiln_chain_id_next(chain, di, next);
		memcpy(chain, next, sizeof(chain));
	}
	/* computed here, never taken from the remote side */
	snprintf(rec->chain_id, sizeof(rec->chain_id), "%s", chain);
	rec->config = json_deep_copy(cfg);
	if (rec->config)
		return true;
bad:
	kiln_cache_record_free(rec);
	return false;
}

static bool blobs_present(struct kiln_store *store, const struct kiln_cache_record *rec)
{
	for (size_t i = 0; i < rec->n_layers; i++)
		if (!kiln_store_blob_exists(store, rec->layers[i].digest))
			return false;
	return true;
}

int kiln_remote_cache_encode(const char *root, struct kiln_store *store, char *const *keys, size_t n,
			     json_t **config_json, struct kiln_registry_blob **blobs, size_t *n_blobs,
			     size_t *n_records, struct kiln_err *err)
{
	*config_json = NULL;
	*blobs = NULL;
	*n_blobs = 0;
	*n_records = 0;
	json_t *records = json_array();
	for (size_t i = 0; i < n; i++) {
		struct kiln_cache_record rec;
		struct kiln_err e = {0};
		if (kiln_cache_get(root, keys[i], &rec, &e) != 1)
			continue;
		if (!blobs_present(store, &rec)) {
			kiln_cache_record_free(&rec);
			continue;
		}
		const struct note *nt = find_note(keys[i]);
		json_t *j = record_to_json(&rec, nt ? nt->parent : NULL);
		kiln_cache_record_free(&rec);
		if (!j) {
			json_decref(records);
			return kiln_err_set(err, 0, "encoding the cache record %s", keys[i]);
		}
		json_array_append_new(records, j);
	}
	json_t *cfg = json_pack("{s:i,s:o}", "kiln.buildcache", 1, "records", records);
	if (!cfg)
		return kiln_err_set(err, ENOMEM, "encoding the build cache");
	/* the distinct layer blobs, bottom first */
	size_t cap = 0, nb = 0;
	struct kiln_registry_blob *b = NULL;
	size_t i, k;
	json_t *r, *l;
	json_array_foreach(json_object_get(cfg, "records"), i, r) {
		json_array_foreach(json_object_get(r, "layers"), k, l) {
			const char *d = json_string_value(json_object_get(l, "digest"));
			bool seen = false;
			for (size_t x = 0; x < nb && !seen; x++)
				seen = !strcmp(b[x].digest, d);
			if (seen)
				continue;
			if (nb == cap) {
				cap = cap ? 2 * cap : 16;
				b = kiln_xrealloc(b, cap * sizeof(*b));
			}
			memset(&b[nb], 0, sizeof(b[nb]));
			snprintf(b[nb].digest, sizeof(b[nb].digest), "%s", d);
			b[nb].size = json_integer_value(json_object_get(l, "size"));
			b[nb].media_type = json_string_value(json_object_get(l, "mediaType"));
			nb++;
		}
	}
	*config_json = cfg;
	*blobs = b;
	*n_blobs = nb;
	*n_records = json_array_size(json_object_get(cfg, "records"));
	return 0;
}

int kiln_remote_cache_decode(const char *data, size_t len, const json_t *layers,
			     struct kiln_cache_record **recs, size_t *n, size_t *invalid,
			     struct kiln_err *err)
{
	*recs = NULL;
	*n = 0;
	if (invalid)
		*invalid = 0;
	json_error_t je;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return kiln_err_set(err, EINVAL, "the cache config is not JSON: %s (line %d)", je.text, je.line);
	json_t *ver = json_object_get(j, "kiln.buildcache");
	json_t *records = json_object_get(j, "records");
	if (!json_is_integer(ver) || !json_is_array(records)) {
		json_decref(j);
		return kiln_err_set(err, EINVAL, "not a kiln build cache (no \"kiln.buildcache\" and \"records\")");
	}
	if (json_integer_value(ver) != 1) {
		json_decref(j);
		return kiln_err_set(err, EINVAL, "kiln build cache version %lld is not supported (1 is)",
				    (long long)json_integer_value(ver));
	}
	size_t total = json_array_size(records);
	if (total > KILN_REMOTE_CACHE_MAX_RECORDS) {
		json_decref(j);
		return kiln_err_set(err, E2BIG, "the cache holds %zu records (at most %d are read)", total,
				    KILN_REMOTE_CACHE_MAX_RECORDS);
	}
	struct kiln_cache_record *v = kiln_xcalloc(total + 1, sizeof(*v));
	size_t nv = 0, i;
	json_t *r;
	json_array_foreach(records, i, r) {
		bool dup = false;
		const char *key = json_string_value(json_object_get(r, "key"));
		for (size_t x = 0; key && x < nv && !dup; x++)
			dup = !strcmp(v[x].key, key);
		if (!dup && record_from_json(r, layers, &v[nv]))
			nv++;
		else if (invalid)
			(*invalid)++;
	}
	json_decref(j);
	*recs = v;
	*n = nv;
	return 0;
}

void kiln_remote_cache_records_free(struct kiln_cache_record *recs, size_t n)
{
	for (size_t i = 0; recs && i < n; i++)
		kiln_cache_record_free(&recs[i]);
	free(recs);
}

bool kiln_remote_cache_wanted(const char *root, struct kiln_store *store,
			      const struct kiln_cache_record *rec)
{
	struct kiln_cache_record local;
	struct kiln_err e = {0};
	if (kiln_cache_get(root, rec->key, &local, &e) != 1)
		return true;
	/* a working local record is only replaced by a newer one that needs no
	 * download (no bytes fetched for an equivalent result) */
	bool want = !blobs_present(store, &local) || (rec->created > local.created && blobs_present(store, rec));
	kiln_cache_record_free(&local);
	return want;
}

int kiln_remote_cache_store_record(const char *root, struct kiln_store *store,
				   const struct kiln_cache_record *rec, struct kiln_err *err)
{
	if (!kiln_remote_cache_wanted(root, store, rec) || !blobs_present(store, rec))
		return 0;
	if (kiln_cache_put(root, rec, err) < 0)
		return -1;
	return 1;
}

/* ---- import / export -------------------------------------------------------- */

struct conn {
	struct kiln_ref ref;
	struct kiln_registry *reg;
};

static int conn_open(const struct kiln_remote_cache_spec *spec, struct conn *c, struct kiln_err *err)
{
	memset(c, 0, sizeof(*c));
	if (kiln_ref_parse(spec->ref, &c->ref, err) < 0)
		return -1;
	struct kiln_registry_opts ro = {0};
	kiln_registry_opts_from_env(&ro);
	ro.tls = spec->tls;
	if (kiln_registry_open(c->ref.domain, &ro, &c->reg, err) < 0) {
		kiln_ref_free(&c->ref);
		return -1;
	}
	return 0;
}

static void conn_close(struct conn *c)
{
	kiln_registry_close(c->reg);
	c->reg = NULL;
	kiln_ref_free(&c->ref);
}

static void say(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(FILE *f, const char *fmt, ...)
{
	if (!f)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fflush(f);
}

/* ---- lazily fetched layers ----------------------------------------------------
 * Import writes the records at once but downloads no layer: the builder asks
 * kiln_remote_cache_fetch for a blob a hit needs and is missing.  The table
 * lives for the process (one build). */

struct source {
	char *ref;
	enum kiln_tls_mode tls;
	struct conn c;
	bool open, broken;
};
struct pending {
	struct kiln_registry_blob blob;
	char media_type[128];
	size_t src;
	bool failed;
};
static struct source *g_src;
static size_t g_n_src;
static struct pending *g_pend;
static size_t g_n_pend, g_cap_pend;
static int64_t g_fetched_bytes;
static size_t g_fetched;

static void pending_clear(void)
{
	for (size_t i = 0; i < g_n_src; i++) {
		if (g_src[i].open)
			conn_close(&g_src[i].c);
		free(g_src[i].ref);
	}
	free(g_src);
	free(g_pend);
	g_src = NULL;
	g_pend = NULL;
	g_n_src = g_n_pend = g_cap_pend = 0;
	g_fetched = 0;
	g_fetched_bytes = 0;
}

static size_t source_add(const struct kiln_remote_cache_spec *spec)
{
	static bool registered;
	if (!registered) {
		atexit(pending_clear);
		registered = true;
	}
	for (size_t i = 0; i < g_n_src; i++)
		if (!strcmp(g_src[i].ref, spec->ref))
			return i;
	g_src = kiln_xrealloc(g_src, (g_n_src + 1) * sizeof(*g_src));
	memset(&g_src[g_n_src], 0, sizeof(*g_src));
	g_src[g_n_src].ref = kiln_xstrdup(spec->ref);
	g_src[g_n_src].tls = spec->tls;
	return g_n_src++;
}

static void pending_add(const struct kiln_cache_layer *l, size_t src)
{
	for (size_t i = 0; i < g_n_pend; i++)
		if (!strcmp(g_pend[i].blob.digest, l->digest))
			return;
	if (g_n_pend == g_cap_pend) {
		g_cap_pend = g_cap_pend ? 2 * g_cap_pend : 32;
		g_pend = kiln_xrealloc(g_pend, g_cap_pend * sizeof(*g_pend));
	}
	struct pending *p = &g_pend[g_n_pend++];
	memset(p, 0, sizeof(*p));
	snprintf(p->blob.digest, sizeof(p->blob.digest), "%s", l->digest);
	p->blob.size = l->size;
	snprintf(p->media_type, sizeof(p->media_type), "%s", l->media_type);
	p->src = src;
}

bool kiln_remote_cache_fetch(struct kiln_store *store, const char *digest)
{
	struct pending *p = NULL;
	for (size_t i = 0; i < g_n_pend && !p; i++)
		if (!strcmp(g_pend[i].blob.digest, digest))
			p = &g_pend[i];
	if (!p || p->failed)
		return false;
	struct source *src = &g_src[p->src];
	struct kiln_err e = {0};
	int rc = -1;
	if (src->broken) {
		p->failed = true;
		return false;
	}
	if (!src->open) {
		struct kiln_remote_cache_spec spec = {.ref = src->ref, .tls = src->tls};
		if (conn_open(&spec, &src->c, &e) == 0)
			src->open = true;
		else
			src->broken = true;
	}
	if (src->open) {
		p->blob.media_type = p->media_type;
		rc = kiln_registry_blob_get_to_store(src->c.reg, store, src->c.ref.path, &p->blob, 1, &e);
	}
	if (rc < 0 || !kiln_store_blob_exists(store, digest)) {
		p->failed = true;
		KILN_AUTOFREE char *name = kiln_ref_familiarize(src->ref);
		fprintf(stderr, "kiln: warning: fetching cache layer %s from %s: %s\n", digest, name,
			e.msg[0] ? e.msg : "not stored");
		fflush(stderr);
		return false;
	}
	g_fetched++;
	g_fetched_bytes += p->blob.size;
	return true;
}

void kiln_remote_cache_fetch_stats(size_t *layers, int64_t *bytes)
{
	*layers = g_fetched;
	*bytes = g_fetched_bytes;
}

static int do_import(const char *root, struct kiln_store *store, struct conn *c,
		     const struct kiln_remote_cache_spec *spec, const char *name, FILE *progress,
		     struct kiln_err *err)
{
	char *data = NULL, *mt = NULL, *cfg = NULL;
	size_t len = 0, cfg_len = 0;
	char dg[KILN_DIGEST_MAX];
	json_t *m = NULL;
	struct kiln_cache_record *recs = NULL;
	size_t n = 0, invalid = 0;
	int rc = -1;
	const char *reference = c->ref.digest ? c->ref.digest : c->ref.tag;
	if (kiln_registry_manifest_get(c->reg, c->ref.path, reference, &data, &len, &mt, dg, err) < 0) {
		if (err->errnum == ENOENT) {
			say(progress, "importing cache manifest from %s: not found (nothing to import)", name);
			kiln_err_clear(err);
			rc = 0;
		}
		goto out;
	}
	if (kiln_manifest_parse(data, len, mt, &m, err) < 0)
		goto out;
	json_t *config = json_object_get(m, "config");
	const char *cmt = json_string_value(json_object_get(config, "mediaType"));
	if (!cmt || strcmp(cmt, KILN_MT_BUILDCACHE_CONFIG)) {
		kiln_err_set(err, EINVAL, "%s is not a kiln build cache (its config is %s)", name, cmt ? cmt : "untyped");
		goto out;
	}
	struct kiln_registry_blob cb = {.size = json_integer_value(json_object_get(config, "size")),
					.media_type = KILN_MT_BUILDCACHE_CONFIG};
	snprintf(cb.digest, sizeof(cb.digest), "%s", json_string_value(json_object_get(config, "digest")));
	if (kiln_registry_blob_get_mem(c->reg, c->ref.path, &cb, 16u << 20, &cfg, &cfg_len, err) < 0)
		goto out;
	json_t *mlayers = json_object_get(m, "layers");
	if (kiln_remote_cache_decode(cfg, cfg_len, mlayers, &recs, &n, &invalid, err) < 0)
		goto out;
	/* write the wanted records now; their missing layers are fetched when a
	 * step hits (kiln_remote_cache_fetch) */
	size_t src = source_add(spec), written = 0, missing = 0;
	for (size_t i = 0; i < n; i++) {
		if (!kiln_remote_cache_wanted(root, store, &recs[i]))
			continue;
		for (size_t k = 0; k < recs[i].n_layers; k++)
			if (!kiln_store_blob_exists(store, recs[i].layers[k].digest)) {
				pending_add(&recs[i].layers[k], src);
				missing++;
			}
		if (kiln_cache_put(root, &recs[i], err) < 0)
			goto out;
		written++;
	}
	say(progress, "importing cache manifest from %s: %zu records, %zu imported%s%s", name, n, written,
	    missing ? " (layers are fetched when a step hits)" : "",
	    invalid ? " (some invalid records ignored)" : "");
	rc = 0;
out:
	kiln_remote_cache_records_free(recs, n);
	json_decref(m);
	free(cfg);
	free(data);
	free(mt);
	return rc;
}

int kiln_remote_cache_import(const char *root, const struct kiln_remote_cache_spec *spec, FILE *progress,
			     struct kiln_err *err)
{
	KILN_AUTOFREE char *name = kiln_ref_familiarize(spec->ref);
	struct kiln_store *store = NULL;
	if (kiln_store_open(root, KILN_STORE_RDWR, &store, err) < 0)
		return -1;
	struct conn c;
	int rc = conn_open(spec, &c, err);
	if (rc == 0) {
		rc = do_import(root, store, &c, spec, name, progress, err);
		conn_close(&c);
	}
	kiln_store_close(store);
	if (rc < 0)
		kiln_err_wrap(err, "importing the build cache from %s", name);
	return rc;
}

int kiln_remote_cache_export(const char *root, const struct kiln_remote_cache_spec *spec, FILE *progress,
			     struct kiln_err *err)
{
	KILN_AUTOFREE char *name = kiln_ref_familiarize(spec->ref);
	struct kiln_strv keys = {0};
	kiln_remote_cache_select(spec->mode, &keys);
	struct kiln_store *store = NULL;
	json_t *cfg = NULL;
	struct kiln_registry_blob *blobs = NULL;
	size_t nb = 0, nr = 0;
	char *text = NULL;
	int rc = kiln_store_open(root, KILN_STORE_RDWR, &store, err);
	if (rc == 0)
		rc = kiln_remote_cache_encode(root, store, keys.v, keys.n, &cfg, &blobs, &nb, &nr, err);
	if (rc == 0 && nr == 0) {
		say(progress, "exporting cache to %s: no cache records to export", name);
		goto out;
	}
	if (rc == 0) {
		text = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
		if (!text)
			rc = kiln_err_set(err, ENOMEM, "encoding the build cache");
	}
	if (rc == 0) {
		struct conn c;
		rc = conn_open(spec, &c, err);
		if (rc == 0) {
			char count[32];
			snprintf(count, sizeof(count), "%zu", nr);
			json_t *ann = json_pack("{s:s}", "dev.kiln.buildcache.records", count);
			char dg[KILN_DIGEST_MAX] = "";
			rc = kiln_registry_artifact_push(c.reg, store, c.ref.path, c.ref.tag,
							 KILN_MT_BUILDCACHE_CONFIG, text, strlen(text), blobs, nb,
							 ann, dg, err);
			json_decref(ann);
			conn_close(&c);
			if (rc == 0)
				say(progress, "exporting cache to %s: %zu records, %zu layers, manifest %s", name,
				    nr, nb, dg);
		}
	}
out:
	free(text);
	free(blobs);
	json_decref(cfg);
	kiln_store_close(store);
	kiln_strv_free(&keys);
	if (rc < 0)
		kiln_err_wrap(err, "exporting the build cache to %s", name);
	return rc;
}

/* ---- what kiln build calls -------------------------------------------------- */

int kiln_remote_cache_list_add(struct kiln_remote_cache_list *l, const char *text, bool to,
			       struct kiln_err *err)
{
	struct kiln_remote_cache_spec s;
	if (kiln_remote_cache_parse(text, to, &s, err) < 0)
		return -1;
	l->v = kiln_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = s;
	return 0;
}

void kiln_remote_cache_list_free(struct kiln_remote_cache_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		kiln_remote_cache_spec_free(&l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void kiln_remote_cache_import_all(const char *root, const struct kiln_remote_cache_list *from,
				  bool no_cache, FILE *progress)
{
	kiln_remote_cache_reset();
	pending_clear();
	for (size_t i = 0; !no_cache && i < from->n; i++) {
		struct kiln_err e = {0};
		if (kiln_remote_cache_import(root, &from->v[i], progress, &e) < 0) {
			fprintf(stderr, "kiln: warning: %s\n", e.msg);
			fflush(stderr);
		}
	}
}

int kiln_remote_cache_export_all(const char *root, const struct kiln_remote_cache_list *to,
				 FILE *progress, struct kiln_err *err)
{
	if (g_fetched) {
		char hs[32];
		kiln_human_size(g_fetched_bytes, hs);
		say(progress, "fetched %zu cache layer%s (%s) from imported caches", g_fetched, g_fetched == 1 ? "" : "s", hs);
	}
	for (size_t i = 0; i < to->n; i++) {
		struct kiln_err e = {0};
		if (kiln_remote_cache_export(root, &to->v[i], progress, &e) == 0)
			continue;
		if (to->v[i].ignore_error) {
			fprintf(stderr, "kiln: warning: %s\n", e.msg);
			fflush(stderr);
			continue;
		}
		*err = e;
		return -1;
	}
	return 0;
}
