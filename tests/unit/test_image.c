/* Unit tests: layers/image (references, chain ids, manifests, configs,
 * commit/load round trips, determinism, OCI schema validation). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/image.h"
#include "layers/store.h"

static char *new_root(void)
{
	char tmpl[] = "/tmp/kiln-unit-image-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return kiln_xasprintf("%s/root", tmpl);
}

static void drop_root(char *root)
{
	struct kiln_err err = {0};
	char *parent = kiln_xstrdup(root);
	*strrchr(parent, '/') = '\0';
	kiln_rm_rf(parent, &err);
	free(parent);
	free(root);
}

static struct kiln_store *open_rw(const char *root)
{
	struct kiln_store *s = NULL;
	struct kiln_err err = {0};
	if (kiln_store_open(root, KILN_STORE_RDWR, &s, &err) < 0)
		fail_msg("open %s: %s", root, err.msg);
	return s;
}

static void check_ref(const char *in, const char *full, const char *familiar)
{
	struct kiln_ref r;
	struct kiln_err err = {0};
	if (kiln_ref_parse(in, &r, &err) < 0)
		fail_msg("parse %s: %s", in, err.msg);
	char *f = kiln_ref_string(&r), *fam = kiln_ref_familiar(&r);
	if (strcmp(f, full) || strcmp(fam, familiar))
		fail_msg("%s: got %s / %s, want %s / %s", in, f, fam, full, familiar);
	free(f);
	free(fam);
	kiln_ref_free(&r);
}

static void test_refs(void **state)
{
	(void)state;
	check_ref("busybox", "docker.io/library/busybox:latest", "busybox:latest");
	check_ref("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36");
	check_ref("library/busybox", "docker.io/library/busybox:latest", "busybox:latest");
	check_ref("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest");
	check_ref("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x");
	check_ref("me/app:1", "docker.io/me/app:1", "me/app:1");
	check_ref("localhost/app", "localhost/app:latest", "localhost/app:latest");
	check_ref("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t");
	check_ref("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest");
	check_ref("ghcr.io/o/r@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
		  "ghcr.io/o/r@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
		  "ghcr.io/o/r@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
	check_ref("docker.io/a.b/c", "docker.io/a.b/c:latest", "docker.io/a.b/c:latest");
	check_ref("docker.io/localhost/c", "docker.io/localhost/c:latest", "docker.io/localhost/c:latest");
	check_ref("a_b__c-d--e.f:T_1.x-y", "docker.io/library/a_b__c-d--e.f:T_1.x-y", "a_b__c-d--e.f:T_1.x-y");
	struct kiln_ref r;
	struct kiln_err err = {0};
	assert_int_equal(kiln_ref_parse("busybox:1@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef", &r, &err), 0);
	assert_string_equal(r.tag, "1");
	assert_non_null(r.digest);
	char *repo = kiln_ref_repo(&r), *frepo = kiln_ref_familiar_repo(&r);
	assert_string_equal(repo, "docker.io/library/busybox");
	assert_string_equal(frepo, "busybox");
	free(repo);
	free(frepo);
	kiln_ref_free(&r);
	const char *bad[] = {"", "Busybox", "me/App", "a:b:c", "x:", ":tag", "a//b", "-a", "a-", "x:-tag",
			     "x@sha256:abc", "x:tag with space", "a/../b", "/abs"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (kiln_ref_parse(bad[i], &r, &err) == 0)
			fail_msg("\"%s\" parsed but must not", bad[i]);
		assert_non_null(strstr(err.msg, "invalid reference format"));
	}
	char *long_tag = kiln_xasprintf("x:%0129d", 0);
	assert_int_equal(kiln_ref_parse(long_tag, &r, &err), -1);
	free(long_tag);
	char *n = kiln_ref_normalize("busybox", &err);
	assert_string_equal(n, "docker.io/library/busybox:latest");
	char *fam = kiln_ref_familiarize(n);
	assert_string_equal(fam, "busybox:latest");
	free(n);
	free(fam);
}

static void test_chain_ids(void **state)
{
	(void)state;
	const char *a = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
	const char *b = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
	char c1[KILN_DIGEST_MAX], c2[KILN_DIGEST_MAX], want[KILN_DIGEST_MAX];
	kiln_chain_id_next(NULL, a, c1);
	assert_string_equal(c1, a);
	kiln_chain_id_next(c1, b, c2);
	char *s = kiln_xasprintf("%s %s", a, b);
	kiln_digest_data(s, strlen(s), want);
	free(s);
	assert_string_equal(c2, want);
	struct kiln_image *img = kiln_image_new_scratch();
	struct kiln_layer_info la = {.size = 1, .media_type = KILN_MT_LAYER_GZIP}, lb = la;
	snprintf(la.digest, sizeof(la.digest), "%s", b);
	snprintf(la.diff_id, sizeof(la.diff_id), "%s", a);
	snprintf(lb.digest, sizeof(lb.digest), "%s", a);
	snprintf(lb.diff_id, sizeof(lb.diff_id), "%s", b);
	struct kiln_err err = {0};
	char top[KILN_DIGEST_MAX];
	kiln_image_top_chain_id(img, top);
	assert_string_equal(top, "");
	assert_int_equal(kiln_image_add_layer(img, &la, "one", NULL, &err), 0);
	assert_int_equal(kiln_image_add_layer(img, &lb, "two", NULL, &err), 0);
	char **ids = kiln_image_chain_ids(img);
	assert_string_equal(ids[0], a);
	assert_string_equal(ids[1], want);
	assert_null(ids[2]);
	kiln_strv_free_raw(ids);
	kiln_image_top_chain_id(img, top);
	assert_string_equal(top, want);
	kiln_image_free(img);
}

static void test_manifest_validation(void **state)
{
	(void)state;
	json_t *j;
	struct kiln_err err = {0};
	const char *ok = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
			 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":"
			 "\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":2},"
			 "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":"
			 "\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":3}]}";
	assert_int_equal(kiln_manifest_parse(ok, strlen(ok), NULL, &j, &err), 0);
	json_decref(j);
	assert_int_equal(kiln_manifest_parse(ok, strlen(ok), KILN_MT_DOCKER_MANIFEST, &j, &err), -1);
	assert_int_equal(kiln_manifest_parse(ok, strlen(ok), KILN_MT_OCI_INDEX, &j, &err), -1);
	const char *bad[] = {
		"[]", "{", "{\"schemaVersion\":1}",
		/* unknown media type */
		"{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"config\":{},\"layers\":[]}",
		/* ambiguous: has manifests */
		"{\"schemaVersion\":2,\"manifests\":[],\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":1},\"layers\":[]}",
		/* bad digest */
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:XYZ\",\"size\":1},\"layers\":[]}",
		/* negative size */
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":-1},\"layers\":[]}",
		/* duplicate keys */
		"{\"schemaVersion\":2,\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":1},\"layers\":[]}",
		/* unknown layer type */
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":1},\"layers\":[{\"mediaType\":\"x/y\",\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":1}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (kiln_manifest_parse(bad[i], strlen(bad[i]), NULL, &j, &err) == 0)
			fail_msg("bad manifest %zu accepted", i);
	const char *idx = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
			  "\"digest\":\"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\",\"size\":7}]}";
	assert_int_equal(kiln_index_parse(idx, strlen(idx), &j, &err), 0);
	json_decref(j);
	assert_int_equal(kiln_index_parse(ok, strlen(ok), &j, &err), -1);
}

static void test_config_editing(void **state)
{
	(void)state;
	struct kiln_image *img = kiln_image_new_scratch();
	kiln_image_env_set(img, "PATH", "/bin");
	kiln_image_env_set(img, "A", "1");
	kiln_image_env_set(img, "PATH", "/usr/bin:/bin");
	assert_string_equal(kiln_image_env_get(img, "PATH"), "/usr/bin:/bin");
	assert_string_equal(kiln_image_env_get(img, "A"), "1");
	assert_null(kiln_image_env_get(img, "PAT"));
	char **env = kiln_image_get_strv(img, "Env");
	assert_string_equal(env[0], "PATH=/usr/bin:/bin");   /* replaced in place */
	assert_string_equal(env[1], "A=1");
	assert_null(env[2]);
	kiln_strv_free_raw(env);
	char *cmd[] = {"nc", "-l", NULL};
	kiln_image_set_strv(img, "Entrypoint", cmd);
	char **got = kiln_image_get_strv(img, "Entrypoint");
	assert_string_equal(got[1], "-l");
	kiln_strv_free_raw(got);
	kiln_image_set_strv(img, "Entrypoint", NULL);
	assert_null(kiln_image_get_strv(img, "Entrypoint"));
	kiln_image_set_string(img, "WorkingDir", "/app");
	kiln_image_set_string(img, "User", "1000:1000");
	assert_string_equal(kiln_image_get_string(img, "WorkingDir"), "/app");
	kiln_image_set_string(img, "User", NULL);
	assert_null(kiln_image_get_string(img, "User"));
	kiln_image_label_set(img, "a.b", "c");
	kiln_image_expose(img, "80");
	kiln_image_expose(img, "53/udp");
	kiln_image_volume_add(img, "/data");
	kiln_image_set_healthcheck(img, json_pack("{s:[s,s]}", "Test", "CMD-SHELL", "true"));
	json_t *c = kiln_image_cfg(img);
	assert_non_null(json_object_get(json_object_get(c, "ExposedPorts"), "80/tcp"));
	assert_non_null(json_object_get(json_object_get(c, "ExposedPorts"), "53/udp"));
	assert_non_null(json_object_get(json_object_get(c, "Volumes"), "/data"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(c, "Labels"), "a.b")), "c");
	assert_non_null(json_object_get(c, "Healthcheck"));
	kiln_image_free(img);
}

/* Validate a JSON document with python3-jsonschema against an OCI schema
 * (tests/lib/ocischema.py; the tests run from the top of the source tree). */
static void validate_schema(const char *schema, const char *json_text)
{
	const char *td = getenv("KILN_TESTDATA");
	if (!td)
		fail_msg("KILN_TESTDATA is not set (make unit sets it)");
	char path[] = "/tmp/kiln-unit-json-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, json_text, strlen(json_text)), 0);
	close(fd);
	char *dir = kiln_xasprintf("%s/oci-schemas", td);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("python3", "python3", "tests/lib/ocischema.py", dir, schema, path, (char *)NULL);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	unlink(path);
	free(dir);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("%s does not validate against %s: %s", json_text, schema, "see stderr");
}

static char *blob_text(struct kiln_store *s, const char *digest)
{
	char *data;
	size_t len;
	struct kiln_err err = {0};
	if (kiln_store_blob_read(s, digest, 0, &data, &len, &err) < 0)
		fail_msg("%s", err.msg);
	return data;
}

static void test_commit_load_schema(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	/* a metadata-only image still gets one (empty) layer */
	struct kiln_image *img = kiln_image_new_scratch();
	char *cmd[] = {"sh", NULL};
	kiln_image_set_strv(img, "Cmd", cmd);
	kiln_image_add_history(img, "CMD [\"sh\"]", NULL, true);
	const char *tags[] = {"test/meta:1", "test/meta:latest", NULL};
	char id[KILN_DIGEST_MAX];
	assert_int_equal(kiln_image_commit(s, img, tags, id, &err), 0);
	assert_string_equal(id, img->id);
	assert_int_equal(img->n_layers, 1);
	assert_string_equal(img->layers[0].diff_id, KILN_EMPTY_LAYER_DIFF_ID);
	assert_string_equal(img->layers[0].digest, KILN_EMPTY_LAYER_DIFF_ID);
	assert_int_equal(img->layers[0].size, 1024);
	char *mtext = blob_text(s, img->manifest.digest);
	char *ctext = blob_text(s, img->id);
	validate_schema("image-manifest-schema.json", mtext);
	validate_schema("config-schema.json", ctext);
	/* canonical: compact, sorted keys, created from SOURCE_DATE_EPOCH */
	assert_non_null(strstr(ctext, "\"created\":\"2023-11-14T22:13:20Z\""));
	assert_true(strstr(ctext, "\"architecture\"") < strstr(ctext, "\"config\""));
	json_t *reparsed = json_loads(ctext, 0, NULL);
	char *canon = kiln_json_canonical(reparsed);
	assert_string_equal(canon, ctext);   /* stored exactly in canonical form */
	free(canon);
	json_decref(reparsed);
	assert_null(strchr(ctext, '\n'));
	/* history: one non-empty entry per layer */
	json_t *cfg = json_loads(ctext, 0, NULL);
	json_t *h = json_object_get(cfg, "history");
	size_t nonempty = 0, i;
	json_t *x;
	json_array_foreach(h, i, x)
		nonempty += !json_is_true(json_object_get(x, "empty_layer"));
	assert_int_equal(nonempty, 1);
	json_decref(cfg);
	char *root_index = kiln_xasprintf("%s/index.json", root), *itext;
	size_t ilen;
	assert_int_equal(kiln_read_file(root_index, 0, &itext, &ilen, &err), 0);
	validate_schema("image-index-schema.json", itext);
	free(itext);
	free(root_index);

	/* load it back: by name, by short id, by full id, by manifest digest */
	struct kiln_image *l;
	assert_int_equal(kiln_image_load(s, "test/meta:1", &l, &err), 0);
	assert_string_equal(l->id, id);
	assert_int_equal(l->n_layers, 1);
	char **c = kiln_image_get_strv(l, "Cmd");
	assert_string_equal(c[0], "sh");
	kiln_strv_free_raw(c);
	kiln_image_free(l);
	char prefix[16];
	snprintf(prefix, sizeof(prefix), "%.12s", id + 7);
	assert_int_equal(kiln_image_load(s, prefix, &l, &err), 0);
	assert_string_equal(l->id, id);
	kiln_image_free(l);
	assert_int_equal(kiln_image_load(s, id, &l, &err), 0);
	kiln_image_free(l);
	assert_int_equal(kiln_image_load(s, img->manifest.digest, &l, &err), 0);
	assert_string_equal(l->id, id);
	kiln_image_free(l);
	char *byd = kiln_xasprintf("test/meta@%s", img->manifest.digest);
	assert_int_equal(kiln_image_load(s, byd, &l, &err), 0);
	kiln_image_free(l);
	free(byd);
	assert_int_equal(kiln_image_load(s, "test/none", &l, &err), -1);
	assert_int_equal(err.errnum, ENOENT);
	assert_int_equal(kiln_image_load(s, "ffffffffffff", &l, &err), -1);
	assert_int_equal(err.errnum, ENOENT);

	/* a derived image: copy, add a layer, commit; base layers are kept */
	struct kiln_image *child = kiln_image_copy(img);
	assert_null(json_object_get(child->config, "created"));
	char ld[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(s, "pretend gzip", 12, ld, &err), 0);
	struct kiln_layer_info li = {.size = 12, .media_type = KILN_MT_LAYER_GZIP};
	snprintf(li.digest, sizeof(li.digest), "%s", ld);
	kiln_digest_data("pretend tar", 11, li.diff_id);
	assert_int_equal(kiln_image_add_layer(child, &li, "RUN x", NULL, &err), 0);
	const char *ctags[] = {"child", NULL};
	assert_int_equal(kiln_image_commit(s, child, ctags, NULL, &err), 0);
	assert_int_equal(child->n_layers, 2);
	char *cm = blob_text(s, child->manifest.digest);
	validate_schema("image-manifest-schema.json", cm);
	free(cm);
	/* a layer missing from the store is refused */
	struct kiln_image *bad = kiln_image_copy(child);
	kiln_digest_data("not stored", 10, li.digest);
	assert_int_equal(kiln_image_add_layer(bad, &li, "RUN y", NULL, &err), 0);
	assert_int_equal(kiln_image_commit(s, bad, NULL, NULL, &err), -1);
	kiln_image_free(bad);

	/* the list groups tags by image */
	struct kiln_image_entry *v;
	size_t n;
	assert_int_equal(kiln_image_list(s, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].id, id);
	assert_int_equal(v[0].refs.n, 2);
	assert_int_equal(v[0].size, 1024);
	kiln_image_list_free(v, n);

	free(mtext);
	free(ctext);
	kiln_image_free(child);
	kiln_image_free(img);
	kiln_store_close(s);
	drop_root(root);
}

static void commit_in_new_root(char id[KILN_DIGEST_MAX], char mdg[KILN_DIGEST_MAX])
{
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	struct kiln_image *img = kiln_image_new_scratch();
	kiln_image_env_set(img, "Z", "1");
	kiln_image_env_set(img, "A", "2");
	kiln_image_label_set(img, "z", "1");
	kiln_image_label_set(img, "a", "2");
	kiln_image_add_history(img, "ENV", NULL, true);
	const char *tags[] = {"det", NULL};
	assert_int_equal(kiln_image_commit(s, img, tags, id, &err), 0);
	memcpy(mdg, img->manifest.digest, KILN_DIGEST_MAX);
	kiln_image_free(img);
	kiln_store_close(s);
	drop_root(root);
}

static void test_determinism(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1234567890", 1);
	char id1[KILN_DIGEST_MAX], id2[KILN_DIGEST_MAX], m1[KILN_DIGEST_MAX], m2[KILN_DIGEST_MAX];
	commit_in_new_root(id1, m1);
	commit_in_new_root(id2, m2);
	assert_string_equal(id1, id2);
	assert_string_equal(m1, m2);
	setenv("SOURCE_DATE_EPOCH", "1234567891", 1);
	commit_in_new_root(id2, m2);
	assert_string_not_equal(id1, id2);
	char *now = kiln_image_now();
	assert_string_equal(now, "2009-02-13T23:31:31Z");
	free(now);
}

static void test_display(void **state)
{
	(void)state;
	char b[64];
	kiln_human_size(0, b);
	assert_string_equal(b, "0B");
	kiln_human_size(999, b);
	assert_string_equal(b, "999B");
	kiln_human_size(1036400, b);
	assert_string_equal(b, "1.04MB");
	kiln_human_size(4260000, b);
	assert_string_equal(b, "4.26MB");
	kiln_human_since(NULL, b);
	assert_string_equal(b, "N/A");
	kiln_human_since("2001-01-01T00:00:00Z", b);
	assert_non_null(strstr(b, "years ago"));
	kiln_short_id("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef", b);
	assert_string_equal(b, "5f70bf18a086");
}

/* Docker schema2 input and image indexes are read; kiln writes OCI. */
static void test_docker_and_index_input(void **state)
{
	(void)state;
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	char *root = new_root();
	struct kiln_store *s = open_rw(root);
	struct kiln_err err = {0};
	static const char zeros[1024];
	char layer[KILN_DIGEST_MAX], cfgd[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(s, zeros, sizeof(zeros), layer, &err), 0);
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"sh\"]},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" KILN_EMPTY_LAYER_DIFF_ID "\"]}}";
	assert_int_equal(kiln_store_blob_put(s, cfg, strlen(cfg), cfgd, &err), 0);
	char *man = kiln_xasprintf(
		"{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu},"
		"\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar\",\"digest\":\"%s\",\"size\":1024}]}",
		KILN_MT_DOCKER_MANIFEST, KILN_MT_DOCKER_CONFIG, cfgd, strlen(cfg), layer);
	struct kiln_desc md = {.size = (int64_t)strlen(man)};
	snprintf(md.media_type, sizeof(md.media_type), "%s", KILN_MT_DOCKER_MANIFEST);
	assert_int_equal(kiln_store_blob_put(s, man, strlen(man), md.digest, &err), 0);
	/* an index pointing at it for this host, plus a foreign platform we lack */
	char *idx = kiln_xasprintf(
		"{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
		"{\"mediaType\":\"%s\",\"digest\":\"sha256:%064d\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"s390x\"}},"
		"{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,\"platform\":{\"os\":\"linux\",\"architecture\":\"%s\"}}]}",
		KILN_MT_DOCKER_LIST, KILN_MT_DOCKER_MANIFEST, 0, KILN_MT_DOCKER_MANIFEST, md.digest, strlen(man),
		kiln_host_arch());
	struct kiln_desc id = {.size = (int64_t)strlen(idx)};
	snprintf(id.media_type, sizeof(id.media_type), "%s", KILN_MT_DOCKER_LIST);
	assert_int_equal(kiln_store_blob_put(s, idx, strlen(idx), id.digest, &err), 0);
	assert_int_equal(kiln_store_tag_set(s, "docker/one", &md, &err), 0);
	assert_int_equal(kiln_store_tag_set(s, "docker/multi", &id, &err), 0);

	struct kiln_image *a, *b;
	assert_int_equal(kiln_image_load(s, "docker/one", &a, &err), 0);
	assert_string_equal(a->id, cfgd);
	assert_int_equal(kiln_image_load(s, "docker/multi", &b, &err), 0);
	assert_string_equal(b->id, cfgd);
	assert_string_equal(b->manifest.digest, md.digest);
	kiln_image_free(b);
	/* by id: both entries name one image */
	assert_int_equal(kiln_image_load(s, cfgd, &b, &err), 0);
	kiln_image_free(b);
	/* derived image: OCI types out */
	struct kiln_image *c = kiln_image_copy(a);
	kiln_image_env_set(c, "X", "1");
	const char *tags[] = {"derived", NULL};
	assert_int_equal(kiln_image_commit(s, c, tags, NULL, &err), 0);
	char *data;
	size_t len;
	assert_int_equal(kiln_store_blob_read(s, c->manifest.digest, 0, &data, &len, &err), 0);
	assert_non_null(strstr(data, KILN_MT_OCI_MANIFEST));
	assert_non_null(strstr(data, "\"application/vnd.oci.image.layer.v1.tar\""));
	assert_null(strstr(data, "docker"));
	free(data);
	struct kiln_fsck_report r;
	assert_int_equal(kiln_store_fsck(s, &r, &err), 0);
	for (size_t i = 0; i < r.problems.n; i++)
		print_message("fsck: %s\n", r.problems.v[i]);
	assert_int_equal(r.problems.n, 0);
	kiln_fsck_report_free(&r);
	/* a manifest whose config diff_ids disagree with its layers is refused */
	const char *cfg2 = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	char cfg2d[KILN_DIGEST_MAX];
	assert_int_equal(kiln_store_blob_put(s, cfg2, strlen(cfg2), cfg2d, &err), 0);
	char *man2 = kiln_xasprintf(
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu},"
		"\"layers\":[{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1024}]}",
		KILN_MT_OCI_CONFIG, cfg2d, strlen(cfg2), KILN_MT_LAYER_TAR, layer);
	struct kiln_desc md2 = {.size = (int64_t)strlen(man2)};
	snprintf(md2.media_type, sizeof(md2.media_type), "%s", KILN_MT_OCI_MANIFEST);
	assert_int_equal(kiln_store_blob_put(s, man2, strlen(man2), md2.digest, &err), 0);
	struct kiln_image *bad;
	assert_int_equal(kiln_image_load_desc(s, &md2, &bad, &err), -1);
	assert_non_null(strstr(err.msg, "diff_ids"));
	free(man2);
	kiln_image_free(c);
	kiln_image_free(a);
	free(man);
	free(idx);
	kiln_store_close(s);
	drop_root(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_chain_ids),
		cmocka_unit_test(test_manifest_validation),
		cmocka_unit_test(test_config_editing),
		cmocka_unit_test(test_commit_load_schema),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_display),
		cmocka_unit_test(test_docker_and_index_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
