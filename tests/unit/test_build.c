/* Unit tests: builder pieces — COPY path rules and wildcard matching, COPY
 * into a tree, .dockerignore matching, passwd/group lookup, cache keys and
 * records, the context's stat cache, the builder's view of the plan (stage
 * order with forward references, --from resolution, cycles). */
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
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cache.h"
#include "builder/context.h"
#include "builder/copy.h"
#include "builder/userdb.h"
#include "common/util.h"
#include "parser/plan.h"

static void test_match(void **state)
{
	(void)state;
	assert_int_equal(kiln_copy_match("*.txt", "a.txt"), 1);
	assert_int_equal(kiln_copy_match("*.txt", "dir/a.txt"), 0);   /* '*' does not cross '/' */
	assert_int_equal(kiln_copy_match("dir/*.txt", "dir/a.txt"), 1);
	assert_int_equal(kiln_copy_match("a?c", "abc"), 1);
	assert_int_equal(kiln_copy_match("a?c", "a/c"), 0);
	assert_int_equal(kiln_copy_match("[a-c]x", "bx"), 1);
	assert_int_equal(kiln_copy_match("[^a-c]x", "bx"), 0);
	assert_int_equal(kiln_copy_match("[!a-c]x", "dx"), 1);
	assert_int_equal(kiln_copy_match("\\*", "*"), 1);
	assert_int_equal(kiln_copy_match("\\*", "a"), 0);
	assert_int_equal(kiln_copy_match("[a-", "a"), -1);           /* malformed */
	assert_int_equal(kiln_copy_match("", ""), 1);
	assert_int_equal(kiln_copy_match("*", ""), 1);
}

static void check_clean(const char *in, const char *want)
{
	char *c = kiln_copy_clean(in);
	assert_string_equal(c, want);
	free(c);
}

static void check_dest(const char *dest, const char *wd, const char *want)
{
	char *c = kiln_copy_dest_path(dest, wd);
	assert_string_equal(c, want);
	free(c);
}

static void test_paths(void **state)
{
	(void)state;
	check_clean("", ".");
	check_clean("a//b/./c/..", "a/b");
	check_clean("/../x", "/x");
	check_clean("../x/..", "..");
	check_clean("/", "/");
	check_dest("app", "/srv", "/srv/app");
	check_dest("app/", "/srv", "/srv/app/");
	check_dest(".", "/srv", "/srv/");
	check_dest("/abs/x", "/srv", "/abs/x");
	check_dest("x", NULL, "/x");
	check_dest("../../..", "/a", "/");
}

static char *tmpdir_make(void)
{
	char tmpl[] = "/tmp/kiln-unit-build-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return strdup(tmpl);
}

static void put(int dirfd, const char *path, const char *content, mode_t mode)
{
	char *dup = strdup(path);
	for (char *s = strchr(dup, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		mkdirat(dirfd, dup, 0755);
		*s = '/';
	}
	free(dup);
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, content, strlen(content)), 0);
	fchmod(fd, mode);
	close(fd);
}

static char *get(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *data = NULL;
	size_t len;
	struct kiln_err e;
	assert_int_equal(kiln_read_fd(fd, 0, &data, &len, &e), 0);
	close(fd);
	return data;
}

static void assert_file(int dirfd, const char *path, const char *want)
{
	char *got = get(dirfd, path);
	if (!got)
		fail_msg("missing %s", path);
	assert_string_equal(got, want);
	free(got);
}

static void test_copy_rules(void **state)
{
	(void)state;
	char *src = tmpdir_make(), *dst = tmpdir_make();
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put(sfd, "a.txt", "A", 0644);
	put(sfd, "b.txt", "B", 0600);
	put(sfd, "dir/c.txt", "C", 0755);
	put(sfd, "dir/sub/d.txt", "D", 0644);
	put(sfd, "skip.log", "L", 0644);
	symlinkat("a.txt", sfd, "link");
	linkat(sfd, "a.txt", sfd, "hard", 0);
	/* an escape attempt in the destination tree: a symlink to / */
	symlinkat("/", dfd, "escape");

	struct kiln_copy_src s = {.rootfd = sfd};
	struct kiln_err err = {0};
	struct kiln_strv m = {0};
	char *pats[] = {"*.txt"};
	assert_int_equal(kiln_copy_expand(&s, pats, 1, &m, &err), 0);
	assert_int_equal(m.n, 2);
	assert_string_equal(m.v[0], "a.txt");
	assert_string_equal(m.v[1], "b.txt");

	/* multiple sources need a directory destination ending in / */
	struct kiln_copy_opts o = {.dest = "out", .workdir = "/w"};
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), -1);
	assert_non_null(strstr(err.msg, "must be a directory"));
	o.dest = "out/";
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_file(dfd, "w/out/a.txt", "A");
	assert_file(dfd, "w/out/b.txt", "B");
	struct stat st;
	assert_int_equal(fstatat(dfd, "w/out/b.txt", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	kiln_strv_free(&m);

	/* a single file to a name that does not exist: the file gets that name */
	char *one[] = {"a.txt"};
	assert_int_equal(kiln_copy_expand(&s, one, 1, &m, &err), 0);
	o.dest = "/renamed";
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_file(dfd, "renamed", "A");
	/* to an existing directory: into it */
	o.dest = "/w/out";
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_file(dfd, "w/out/a.txt", "A");
	kiln_strv_free(&m);

	/* a directory: its contents, not the directory itself; chown/chmod */
	char *d[] = {"dir"};
	assert_int_equal(kiln_copy_expand(&s, d, 1, &m, &err), 0);
	o.dest = "/d";
	o.chown = true;
	o.uid = 1234;
	o.gid = 4321;
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_file(dfd, "d/c.txt", "C");
	assert_file(dfd, "d/sub/d.txt", "D");
	assert_int_equal(fstatat(dfd, "d/sub/d.txt", &st, 0), 0);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 4321);
	assert_int_equal(fstatat(dfd, "d/dir", &st, 0), -1);
	kiln_strv_free(&m);
	o.chown = false;

	/* through a symlink to / in the destination: stays inside the tree */
	assert_int_equal(kiln_copy_expand(&s, one, 1, &m, &err), 0);
	o.dest = "/escape/tmp/kiln-unit-escaped";
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_int_equal(access("/tmp/kiln-unit-escaped", F_OK), -1);
	assert_file(dfd, "tmp/kiln-unit-escaped", "A");
	kiln_strv_free(&m);

	/* the whole tree with --exclude, symlinks and hard links kept */
	char *all[] = {"."};
	assert_int_equal(kiln_copy_expand(&s, all, 1, &m, &err), 0);
	char *ex[] = {"*.log", NULL};
	o.excludes = ex;
	o.dest = "/all/";
	assert_int_equal(kiln_copy_run(&s, m.v, m.n, dfd, &o, &err), 0);
	assert_int_equal(fstatat(dfd, "all/skip.log", &st, AT_SYMLINK_NOFOLLOW), -1);
	char target[64] = "";
	assert_int_equal(readlinkat(dfd, "all/link", target, sizeof(target)), 5);
	struct stat a, h;
	assert_int_equal(fstatat(dfd, "all/a.txt", &a, 0), 0);
	assert_int_equal(fstatat(dfd, "all/hard", &h, 0), 0);
	assert_int_equal(a.st_ino, h.st_ino);
	kiln_strv_free(&m);

	/* a source that leaves the context is cleaned back into it */
	char *up[] = {"../../a.txt"};
	assert_int_equal(kiln_copy_expand(&s, up, 1, &m, &err), 0);
	assert_string_equal(m.v[0], "a.txt");
	kiln_strv_free(&m);
	char *none[] = {"nothing*"};
	assert_int_equal(kiln_copy_expand(&s, none, 1, &m, &err), -1);
	assert_non_null(strstr(err.msg, "nothing*"));
	kiln_strv_free(&m);

	close(sfd);
	close(dfd);
	kiln_rm_rf(src, &err);
	kiln_rm_rf(dst, &err);
	free(src);
	free(dst);
}

static void test_digest(void **state)
{
	(void)state;
	char *src = tmpdir_make();
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put(sfd, "d/x", "1", 0644);
	put(sfd, "d/y", "2", 0644);
	struct kiln_copy_src s = {.rootfd = sfd};
	struct kiln_copy_opts o = {.dest = "/"};
	struct kiln_err err;
	char *m[] = {"d"};
	char d1[72], d2[72], d3[72], d4[72];
	assert_int_equal(kiln_copy_digest(&s, m, 1, &o, d1, &err), 0);
	/* mtime changes do not change the digest */
	struct timespec ts[2] = {{1000, 0}, {1000, 0}};
	utimensat(sfd, "d/x", ts, 0);
	assert_int_equal(kiln_copy_digest(&s, m, 1, &o, d2, &err), 0);
	assert_string_equal(d1, d2);
	/* content and mode do */
	put(sfd, "d/x", "3", 0644);
	assert_int_equal(kiln_copy_digest(&s, m, 1, &o, d3, &err), 0);
	assert_string_not_equal(d1, d3);
	fchmodat(sfd, "d/x", 0600, 0);
	assert_int_equal(kiln_copy_digest(&s, m, 1, &o, d4, &err), 0);
	assert_string_not_equal(d3, d4);
	close(sfd);
	kiln_rm_rf(src, &err);
	free(src);
}

static void test_ignore(void **state)
{
	(void)state;
	char *root = tmpdir_make(), *dir = tmpdir_make();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put(dfd, "Dockerfile", "FROM scratch\n", 0644);
	put(dfd, ".dockerignore", "# comment\n\n*.log\n/build/\n!build/keep\n**/secret*\n node_modules \n", 0644);
	struct kiln_context ctx;
	struct kiln_err err;
	struct kiln_context_opts o = {.path = dir, .root = root};
	assert_int_equal(kiln_context_open(&o, &ctx, &err), 0);
	assert_int_equal(kiln_context_excluded(&ctx, "a.log", false), KILN_COPY_EXCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "dir/a.log", false), KILN_COPY_INCLUDED); /* one level */
	assert_int_equal(kiln_context_excluded(&ctx, "build/x/y", false), KILN_COPY_EXCLUDED);  /* parent */
	assert_int_equal(kiln_context_excluded(&ctx, "build/keep", false), KILN_COPY_INCLUDED); /* exception */
	assert_int_equal(kiln_context_excluded(&ctx, "build", true), KILN_COPY_DESCEND);        /* walk it */
	assert_int_equal(kiln_context_excluded(&ctx, "secret.txt", false), KILN_COPY_EXCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "a/b/secret.key", false), KILN_COPY_EXCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "node_modules", true), KILN_COPY_EXCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "src/main.c", false), KILN_COPY_INCLUDED);
	kiln_context_close(&ctx);
	/* a Dockerfile-specific ignore file wins over the context's */
	put(dfd, "Dockerfile.dev", "FROM scratch\n", 0644);
	put(dfd, "Dockerfile.dev.dockerignore", "*.txt\n", 0644);
	char *df = kiln_xasprintf("%s/Dockerfile.dev", dir);
	o.dockerfile = df;
	assert_int_equal(kiln_context_open(&o, &ctx, &err), 0);
	assert_int_equal(kiln_context_excluded(&ctx, "a.log", false), KILN_COPY_INCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "a.txt", false), KILN_COPY_EXCLUDED);
	kiln_context_close(&ctx);
	free(df);
	close(dfd);
	kiln_rm_rf(root, &err);
	kiln_rm_rf(dir, &err);
	free(root);
	free(dir);
}

static void test_userdb(void **state)
{
	(void)state;
	const char *passwd = "root:x:0:0:root:/root:/bin/sh\n"
			     "# comment\n"
			     "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
			     "bob:x:1001:100::/home/bob:/bin/sh\n";
	const char *group = "root:x:0:\nalice:x:1000:\nusers:x:100:\nwheel:x:10:alice,bob\naudio:x:29:bob\n";
	struct kiln_userdb_ids ids;
	struct kiln_err err;
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "alice", &ids, &err), 0);
	assert_int_equal(ids.uid, 1000);
	assert_int_equal(ids.gid, 1000);
	assert_int_equal(ids.ngroups, 1);
	assert_int_equal(ids.groups[0], 10);
	assert_string_equal(ids.home, "/home/alice");
	kiln_userdb_ids_free(&ids);
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "bob:audio", &ids, &err), 0);
	assert_int_equal(ids.uid, 1001);
	assert_int_equal(ids.gid, 29);
	kiln_userdb_ids_free(&ids);
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "1001", &ids, &err), 0);
	assert_int_equal(ids.gid, 100);
	assert_int_equal(ids.ngroups, 2);
	kiln_userdb_ids_free(&ids);
	assert_int_equal(kiln_userdb_resolve_text(NULL, NULL, "4242:77", &ids, &err), 0);
	assert_int_equal(ids.uid, 4242);
	assert_int_equal(ids.gid, 77);
	kiln_userdb_ids_free(&ids);
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "mallory", &ids, &err), -1);
	assert_non_null(strstr(err.msg, "mallory"));
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "alice:nogroup", &ids, &err), -1);
	assert_int_equal(kiln_userdb_resolve_text(passwd, group, "alice:", &ids, &err), -1);
}

static void test_cache(void **state)
{
	(void)state;
	/* fields are length-prefixed: ("ab","c") differs from ("a","bc") */
	struct kiln_cache_key k;
	char k1[72], k2[72], k3[72], k4[72];
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add(&k, "ab", "c");
	kiln_cache_key_end(&k, k1);
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add(&k, "a", "bc");
	kiln_cache_key_end(&k, k2);
	assert_string_not_equal(k1, k2);
	/* security.md item 18: equal layers, different config → different keys */
	json_t *c1 = json_pack("{s:[s]}", "Cmd", "a");
	json_t *c2 = json_pack("{s:[s],s:{s:[s]}}", "Cmd", "a", "Healthcheck", "Test", "NONE");
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add_json(&k, "config", c1);
	kiln_cache_key_end(&k, k3);
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add_json(&k, "config", c2);
	kiln_cache_key_end(&k, k4);
	assert_string_not_equal(k3, k4);
	/* absent differs from empty */
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add(&k, "x", NULL);
	kiln_cache_key_end(&k, k1);
	kiln_cache_key_begin(&k, "step");
	kiln_cache_key_add(&k, "x", "");
	kiln_cache_key_end(&k, k2);
	assert_string_not_equal(k1, k2);

	char *root = tmpdir_make();
	struct kiln_cache_record rec = {0}, got;
	snprintf(rec.key, sizeof(rec.key), "%s", k3);
	rec.config = c2;
	struct kiln_cache_layer l = {.size = 5};
	strcpy(l.digest, "sha256:1111111111111111111111111111111111111111111111111111111111111111");
	strcpy(l.diff_id, "sha256:2222222222222222222222222222222222222222222222222222222222222222");
	strcpy(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
	rec.layers = &l;
	rec.n_layers = 1;
	struct kiln_err err;
	assert_int_equal(kiln_cache_get(root, k3, &got, &err), 0);
	assert_int_equal(kiln_cache_put(root, &rec, &err), 0);
	assert_int_equal(kiln_cache_get(root, k3, &got, &err), 1);
	assert_int_equal(got.n_layers, 1);
	assert_string_equal(got.layers[0].diff_id, l.diff_id);
	assert_true(json_equal(got.config, c2));
	kiln_cache_record_free(&got);
	assert_int_equal(kiln_cache_get(root, k4, &got, &err), 0);
	struct kiln_strv roots = {0};
	assert_int_equal(kiln_cache_roots(root, &roots, &err), 0);
	assert_int_equal(roots.n, 1);
	assert_string_equal(roots.v[0], l.digest);
	kiln_strv_free(&roots);
	/* not -a: the record's layer blob is missing, so it goes */
	size_t removed = 0;
	assert_int_equal(kiln_cache_prune(root, false, &removed, NULL, &err), 0);
	assert_int_equal(removed, 1);
	assert_int_equal(kiln_cache_get(root, k3, &got, &err), 0);
	assert_int_equal(kiln_cache_get(root, "sha256:../../etc", &got, &err), -1);
	json_decref(c1);
	json_decref(c2);
	kiln_rm_rf(root, &err);
	free(root);
}

static void test_context_statcache(void **state)
{
	(void)state;
	char *root = tmpdir_make(), *dir = tmpdir_make();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put(dfd, "Dockerfile", "FROM scratch\n", 0644);
	put(dfd, ".dockerignore", "*.tmp\n", 0644);
	put(dfd, "big", "some content", 0644);
	struct kiln_context ctx;
	struct kiln_err err;
	struct kiln_context_opts o = {.path = dir, .root = root};
	assert_int_equal(kiln_context_open(&o, &ctx, &err), 0);
	assert_string_equal(ctx.dockerfile, "FROM scratch\n");
	assert_int_equal(kiln_context_excluded(&ctx, "x.tmp", false), KILN_COPY_EXCLUDED);
	assert_int_equal(kiln_context_excluded(&ctx, "big", false), KILN_COPY_INCLUDED);
	int fd = openat(dfd, "big", O_RDONLY | O_CLOEXEC);
	struct stat st;
	fstat(fd, &st);
	unsigned char h1[32], h2[32];
	assert_int_equal(kiln_context_hash(&ctx, fd, "big", &st, h1, &err), 0);
	assert_int_equal(ctx.hashed_bytes, 12);
	kiln_context_close(&ctx);
	/* a second open: unchanged file comes from the persisted cache */
	assert_int_equal(kiln_context_open(&o, &ctx, &err), 0);
	assert_int_equal(kiln_context_hash(&ctx, fd, "big", &st, h2, &err), 0);
	assert_int_equal(ctx.hashed_bytes, 0);
	assert_int_equal(ctx.cache_hits, 1);
	assert_memory_equal(h1, h2, 32);
	kiln_context_close(&ctx);
	close(fd);
	close(dfd);
	kiln_rm_rf(root, &err);
	kiln_rm_rf(dir, &err);
	free(root);
	free(dir);
}

static struct kiln_plan *plan_of(const char *text, const char *target, struct kiln_err *err)
{
	struct kiln_df *df = NULL;
	struct kiln_plan *plan = NULL;
	assert_int_equal(kiln_parse(text, strlen(text), "Dockerfile", &df, err), 0);
	int rc = kiln_plan_build(df, NULL, target, &plan, err);
	kiln_df_free(df);
	return rc == 0 ? plan : NULL;
}

static void test_plan(void **state)
{
	(void)state;
	struct kiln_err err;
	/* forward references: the later stages come first, the unused one never */
	struct kiln_plan *p = plan_of("FROM busybox AS final\n"
				      "COPY --from=later /x /x\n"
				      "RUN --mount=from=2,target=/m true\n"
				      "FROM busybox AS later\n"
				      "FROM scratch AS third\n"
				      "FROM busybox AS unused\n",
				      "final", &err);
	assert_non_null(p);
	assert_int_equal((int)p->n_stages, 4);
	assert_int_equal(p->target, 0);
	int *order = NULL;
	size_t n = 0;
	assert_int_equal(kiln_plan_needed_stages(p, -1, &order, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 0);
	free(order);
	int idx = -9;
	assert_int_equal(kiln_plan_resolve_from(p, 0, "LATER", &idx, &err), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(kiln_plan_resolve_from(p, 0, "3", &idx, &err), 0);
	assert_int_equal(idx, 3);
	assert_int_equal(kiln_plan_resolve_from(p, 0, "alpine:3", &idx, &err), 0);
	assert_int_equal(idx, -1);
	/* a builder-expanded --from that would close a cycle, or names no stage */
	assert_int_equal(kiln_plan_resolve_from(p, 1, "final", &idx, &err), -1);
	assert_non_null(strstr(err.msg, "Dockerfile:"));
	assert_int_equal(kiln_plan_resolve_from(p, 2, "2", &idx, &err), -1);
	assert_int_equal(kiln_plan_resolve_from(p, 0, "4", &idx, &err), -1);
	kiln_plan_free(p);

	/* plan errors name the file and line */
	assert_null(plan_of("FROM busybox AS a\nRUN true\nCOPY --from=a /x /y\n", NULL, &err));
	assert_non_null(strstr(err.msg, "Dockerfile:3"));
	assert_null(plan_of("FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\nCOPY --from=a /x /y\n",
			    NULL, &err));
	assert_non_null(strstr(err.msg, "circular"));
	assert_null(plan_of("FROM busybox AS a\nFROM busybox AS A\n", NULL, &err));
	assert_non_null(strstr(err.msg, "Dockerfile:2"));
	assert_null(plan_of("FROM busybox AS a\n", "nosuch", &err));
	assert_non_null(strstr(err.msg, "nosuch"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_copy_rules),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_ignore),
		cmocka_unit_test(test_userdb),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_context_statcache),
		cmocka_unit_test(test_plan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
