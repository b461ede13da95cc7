/* Unit tests: the build cache shared through a registry — --cache-to/--cache-from
 * specs, the keys a build noted (min/max), encoding records into a cache config
 * and decoding it back with validation, and writing imported records without
 * replacing newer local ones. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cache.h"
#include "builder/remote_cache.h"
#include "common/util.h"
#include "layers/image.h"
#include "layers/store.h"

static void test_parse(void **state)
{
	(void)state;
	struct kiln_remote_cache_spec s;
	struct kiln_err e = {0};
	assert_int_equal(kiln_remote_cache_parse("type=registry,ref=localhost:5000/c:1,mode=max", true, &s, &e), 0);
	assert_string_equal(s.ref, "localhost:5000/c:1");
	assert_int_equal(s.mode, KILN_REMOTE_CACHE_MAX);
	assert_false(s.ignore_error);
	kiln_remote_cache_spec_free(&s);

	assert_int_equal(kiln_remote_cache_parse("ref=r.example/a/b:t,ignore-error=true,registry.insecure=true,"
						 "oci-mediatypes=true", true, &s, &e), 0);
	assert_string_equal(s.ref, "r.example/a/b:t");
	assert_int_equal(s.mode, KILN_REMOTE_CACHE_MIN);
	assert_true(s.ignore_error);
	assert_int_equal(s.tls, KILN_TLS_INSECURE);
	kiln_remote_cache_spec_free(&s);

	/* a plain reference (docker build --cache-from IMAGE) */
	assert_int_equal(kiln_remote_cache_parse("busybox", false, &s, &e), 0);
	assert_string_equal(s.ref, "docker.io/library/busybox:latest");
	kiln_remote_cache_spec_free(&s);
	/* import by digest is fine */
	const char *dg = "r.example/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	KILN_AUTOFREE char *byd = kiln_xasprintf("type=registry,ref=%s", dg);
	assert_int_equal(kiln_remote_cache_parse(byd, false, &s, &e), 0);
	kiln_remote_cache_spec_free(&s);

	static const struct { const char *text; bool to; } bad[] = {
		{"type=local,dest=/tmp/x", true},
		{"type=registry,ref=r.example/c:1,mode=all", true},
		{"type=registry", false},
		{"type=registry,ref=r.example/c:1,mode=max", false},   /* mode is for --cache-to */
		{"type=registry,ref=r.example/c:1,bogus=1", true},
		{"type=registry,ref=r.example/c:1,ignore-error=maybe", true},
		{"type=registry,ref=r.example/UPPER:1", true},
		{"type=registry,ref=r.example/c:1,novalue", true},
		{"", false},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&e, 0, sizeof(e));
		assert_int_equal(kiln_remote_cache_parse(bad[i].text, bad[i].to, &s, &e), -1);
		assert_int_equal(e.exit_code, 2);
		assert_true(e.msg[0] != 0);
		assert_null(s.ref);
	}
	/* export under a digest: no */
	memset(&e, 0, sizeof(e));
	assert_int_equal(kiln_remote_cache_parse(byd, true, &s, &e), -1);
	assert_int_equal(e.exit_code, 2);
}

static char *hexkey(char c)
{
	char *k = kiln_xmalloc(72);
	strcpy(k, "sha256:");
	memset(k + 7, c, 64);
	k[71] = 0;
	return k;
}

static void test_select(void **state)
{
	(void)state;
	KILN_AUTOFREE char *from = hexkey('f'), *a = hexkey('a'), *b = hexkey('b'), *c = hexkey('c');
	KILN_AUTOFREE char *other_from = hexkey('e'), *t = hexkey('d');
	kiln_remote_cache_reset();
	struct kiln_strv v = {0};
	kiln_remote_cache_select(KILN_REMOTE_CACHE_MIN, &v);
	assert_int_equal(v.n, 0);
	kiln_remote_cache_note(from, a);
	kiln_remote_cache_note(from, a);          /* twice: once */
	kiln_remote_cache_note(a, b);
	kiln_remote_cache_note(other_from, t);    /* a dependency stage built in between */
	kiln_remote_cache_note(b, c);
	kiln_remote_cache_select(KILN_REMOTE_CACHE_MIN, &v);
	assert_int_equal(v.n, 3);
	assert_string_equal(v.v[0], a);
	assert_string_equal(v.v[1], b);
	assert_string_equal(v.v[2], c);
	kiln_strv_free(&v);
	kiln_remote_cache_select(KILN_REMOTE_CACHE_MAX, &v);
	assert_int_equal(v.n, 4);
	assert_string_equal(v.v[2], t);
	kiln_strv_free(&v);
	/* a parent loop cannot hang the walk */
	kiln_remote_cache_reset();
	kiln_remote_cache_note(b, a);
	kiln_remote_cache_note(a, b);
	kiln_remote_cache_select(KILN_REMOTE_CACHE_MIN, &v);
	assert_int_equal(v.n, 2);
	kiln_strv_free(&v);
	kiln_remote_cache_reset();
	kiln_remote_cache_select(KILN_REMOTE_CACHE_MAX, &v);
	assert_int_equal(v.n, 0);
}

/* A record with one layer (digest of blob) named key, created at t. */
static void put_record(const char *root, const char *key, const char *blob_digest, const char *diff_id,
		       int64_t size, int64_t created, const char *label)
{
	struct kiln_cache_layer l = {0};
	snprintf(l.digest, sizeof(l.digest), "%s", blob_digest);
	snprintf(l.diff_id, sizeof(l.diff_id), "%s", diff_id);
	snprintf(l.media_type, sizeof(l.media_type), "%s", KILN_MT_LAYER_GZIP);
	l.size = size;
	struct kiln_cache_record r = {0};
	snprintf(r.key, sizeof(r.key), "%s", key);
	r.config = json_pack("{s:{s:[s]},s:{s:s}}", "config", "Cmd", "sh", "labels", "which", label);
	r.layers = &l;
	r.n_layers = 1;
	r.created = created;
	struct kiln_err e = {0};
	assert_int_equal(kiln_cache_put(root, &r, &e), 0);
	json_decref(r.config);
}

static const char *record_label(const char *root, const char *key)
{
	static char buf[64];
	struct kiln_cache_record r;
	struct kiln_err e = {0};
	if (kiln_cache_get(root, key, &r, &e) != 1)
		return "(none)";
	snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(json_object_get(r.config, "labels"), "which")));
	kiln_cache_record_free(&r);
	return buf;
}

static void test_roundtrip(void **state)
{
	(void)state;
	char tmpl_a[] = "/tmp/kiln-rcache-a-XXXXXX", tmpl_b[] = "/tmp/kiln-rcache-b-XXXXXX";
	const char *ra = mkdtemp(tmpl_a), *rb = mkdtemp(tmpl_b);
	assert_non_null(ra);
	assert_non_null(rb);
	struct kiln_err e = {0};
	struct kiln_store *sa = NULL, *sb = NULL;
	assert_int_equal(kiln_store_open(ra, KILN_STORE_RDWR, &sa, &e), 0);
	assert_int_equal(kiln_store_open(rb, KILN_STORE_RDWR, &sb, &e), 0);

	const char layer[] = "pretend this is a gzip layer";
	char ld[KILN_DIGEST_MAX], diff[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(sa, layer, sizeof(layer), ld, &e), 0);
	kiln_digest_data("uncompressed", 12, diff);
	KILN_AUTOFREE char *k1 = hexkey('1'), *k2 = hexkey('2'), *k3 = hexkey('3'), *k4 = hexkey('4');
	KILN_AUTOFREE char *from = hexkey('0');
	KILN_AUTOFREE char *missing = hexkey('9');
	put_record(ra, k1, ld, diff, (int64_t)sizeof(layer), 100, "one");
	put_record(ra, k2, ld, diff, (int64_t)sizeof(layer), 100, "two");
	put_record(ra, k3, missing, diff, 5, 100, "blob-missing");   /* its blob is not in the store */

	char *keys[] = {k1, k2, k3, k4};   /* k4: no record at all */
	json_t *cfg = NULL;
	struct kiln_registry_blob *blobs = NULL;
	size_t nb = 0, nr = 0;
	assert_int_equal(kiln_remote_cache_encode(ra, sa, keys, 4, &cfg, &blobs, &nb, &nr, &e), 0);
	assert_int_equal(nr, 2);
	assert_int_equal(nb, 1);                    /* one distinct layer */
	assert_string_equal(blobs[0].digest, ld);
	assert_int_equal(blobs[0].size, (int64_t)sizeof(layer));
	assert_string_equal(blobs[0].media_type, KILN_MT_LAYER_GZIP);
	char *text = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
	assert_null(strstr(text, ra));              /* no local path travels */
	json_t *mlayers = json_pack("[{s:s,s:s,s:I}]", "mediaType", KILN_MT_LAYER_GZIP, "digest", ld, "size",
				    (json_int_t)sizeof(layer));

	struct kiln_cache_record *recs = NULL;
	size_t n = 0, invalid = 0;
	assert_int_equal(kiln_remote_cache_decode(text, strlen(text), mlayers, &recs, &n, &invalid, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(invalid, 0);
	assert_string_equal(recs[0].key, k1);
	assert_string_equal(recs[0].chain_id, diff);   /* computed: one layer → its diff_id */
	assert_int_equal(recs[0].created, 100);

	/* root B: the blob is missing → nothing written; once present → written */
	assert_true(kiln_remote_cache_wanted(rb, sb, &recs[0]));
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[0], &e), 0);
	assert_string_equal(record_label(rb, k1), "(none)");
	char ld2[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(sb, layer, sizeof(layer), ld2, &e), 0);
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[0], &e), 1);
	assert_string_equal(record_label(rb, k1), "one");
	assert_false(kiln_remote_cache_wanted(rb, sb, &recs[0]));     /* same age: kept */
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[0], &e), 0);
	/* a newer local record stays; an older one is replaced */
	put_record(rb, k2, ld, diff, (int64_t)sizeof(layer), 200, "local-newer");
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[1], &e), 0);
	assert_string_equal(record_label(rb, k2), "local-newer");
	put_record(rb, k2, ld, diff, (int64_t)sizeof(layer), 50, "local-older");
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[1], &e), 1);
	assert_string_equal(record_label(rb, k2), "two");
	/* a working local record is not traded for a newer remote one that needs a download */
	struct kiln_cache_layer far = recs[1].layers[0];
	snprintf(far.digest, sizeof(far.digest), "%s", missing);
	struct kiln_cache_record remote_far = recs[1];
	remote_far.layers = &far;
	remote_far.created = 1000;
	assert_false(kiln_remote_cache_wanted(rb, sb, &remote_far));
	/* a local record whose blob is gone is replaced even when newer */
	put_record(rb, k2, missing, diff, 5, 999, "local-broken");
	assert_int_equal(kiln_remote_cache_store_record(rb, sb, &recs[1], &e), 1);
	assert_string_equal(record_label(rb, k2), "two");
	kiln_remote_cache_records_free(recs, n);

	/* the manifest must list each layer with the same size */
	json_t *wrong = json_pack("[{s:s,s:s,s:I}]", "mediaType", KILN_MT_LAYER_GZIP, "digest", ld, "size",
				  (json_int_t)sizeof(layer) + 1);
	assert_int_equal(kiln_remote_cache_decode(text, strlen(text), wrong, &recs, &n, &invalid, &e), 0);
	assert_int_equal(n, 0);
	assert_int_equal(invalid, 2);
	kiln_remote_cache_records_free(recs, n);
	json_t *none = json_array();
	assert_int_equal(kiln_remote_cache_decode(text, strlen(text), none, &recs, &n, &invalid, &e), 0);
	assert_int_equal(n, 0);
	kiln_remote_cache_records_free(recs, n);
	json_decref(none);
	json_decref(wrong);

	/* invalid records are dropped one by one; duplicates count as invalid */
	json_t *recs_j = json_object_get(cfg, "records");
	json_t *bad = json_deep_copy(json_array_get(recs_j, 0));
	json_object_set_new(bad, "key", json_string("sha256:nothex"));
	json_array_append_new(recs_j, bad);
	bad = json_deep_copy(json_array_get(recs_j, 1));
	json_object_set_new(json_array_get(json_object_get(bad, "layers"), 0), "mediaType",
			    json_string("application/x-evil"));
	json_object_set_new(bad, "key", json_string(k3));
	json_array_append_new(recs_j, bad);
	bad = json_deep_copy(json_array_get(recs_j, 1));
	json_object_set_new(json_array_get(json_object_get(bad, "layers"), 0), "digest", json_string("sha256:12"));
	json_object_set_new(bad, "key", json_string(k4));
	json_array_append_new(recs_j, bad);
	json_array_append_new(recs_j, json_deep_copy(json_array_get(recs_j, 0)));   /* duplicate key */
	json_array_append_new(recs_j, json_string("not an object"));
	char *text2 = json_dumps(cfg, JSON_COMPACT);
	assert_int_equal(kiln_remote_cache_decode(text2, strlen(text2), mlayers, &recs, &n, &invalid, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(invalid, 5);
	kiln_remote_cache_records_free(recs, n);
	free(text2);

	/* not a cache at all, another version, not JSON */
	const char *img_cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	memset(&e, 0, sizeof(e));
	assert_int_equal(kiln_remote_cache_decode(img_cfg, strlen(img_cfg), NULL, &recs, &n, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "not a kiln build cache"));
	const char *v2 = "{\"kiln.buildcache\":2,\"records\":[]}";
	assert_int_equal(kiln_remote_cache_decode(v2, strlen(v2), NULL, &recs, &n, NULL, &e), -1);
	assert_int_equal(kiln_remote_cache_decode("{", 1, NULL, &recs, &n, NULL, &e), -1);

	json_decref(mlayers);
	free(text);
	free(blobs);
	json_decref(cfg);
	kiln_store_close(sa);
	kiln_store_close(sb);
	assert_int_equal(kiln_rm_rf(ra, &e), 0);
	assert_int_equal(kiln_rm_rf(rb, &e), 0);
	kiln_remote_cache_reset();
	(void)from;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_select),
		cmocka_unit_test(test_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
