/* Unit tests: layers/snap_gc.c — which committed snapshots the collector
 * keeps (given roots, writable snapshots and their ancestors), that it
 * removes children before parents, the overlay links going with them, the
 * closure of chain ids, and what the consistency check reports.
 *
 * vfs always; overlay too when run as root (in a private mount namespace). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snapshot.h"

static char g_tmp[256];
static bool g_root;

struct fixture {
	const char *driver;
	char dir[512];
	struct kiln_snapshotter *sn;
	/* a tree:  A ─ B ─ C
	 *            └ D        */
	char a[KILN_DIGEST_MAX], b[KILN_DIGEST_MAX], c[KILN_DIGEST_MAX], d[KILN_DIGEST_MAX];
};

static void fake_diff_id(char seed, char out[KILN_DIGEST_MAX])
{
	snprintf(out, KILN_DIGEST_MAX, "sha256:");
	for (int i = 0; i < 64; i++)
		out[7 + i] = "0123456789abcdef"[(seed * 31 + i * 7) % 16];
	out[71] = 0;
}

/* Commit a child of parent (NULL: a base) holding one file; its chain id. */
static void commit(struct fixture *f, const char *parent, char seed, char out[KILN_DIGEST_MAX])
{
	struct kiln_err err = {0};
	char diff[KILN_DIGEST_MAX];
	fake_diff_id(seed, diff);
	assert_int_equal(kiln_snap_chain_id(parent, diff, out, &err), 0);
	char key[32];
	snprintf(key, sizeof(key), "mk-%c", seed);
	struct kiln_snap *s = NULL;
	assert_int_equal(kiln_snap_prepare(f->sn, parent, key, 0, &s, &err), 0);
	char *p = kiln_xasprintf("%s/file-%c", kiln_snap_rootfs(s), seed);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fprintf(fp, "%c\n", seed);
	fclose(fp);
	free(p);
	assert_int_equal(kiln_snap_commit(s, out, &err), 0);
	kiln_snap_release(s);
}

static int setup(void **state)
{
	struct fixture *f = *state;
	if (!strcmp(f->driver, "overlay") && !g_root) {
		skip();
		return 0;
	}
	static int n;
	snprintf(f->dir, sizeof(f->dir), "%s/%s-%d", g_tmp, f->driver, n++);
	struct kiln_err err = {0};
	if (kiln_snap_open(f->dir, f->driver, &f->sn, &err)) {
		print_error("%s: %s\n", f->driver, err.msg);
		return -1;
	}
	commit(f, NULL, 'a', f->a);
	commit(f, f->a, 'b', f->b);
	commit(f, f->b, 'c', f->c);
	commit(f, f->a, 'd', f->d);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	kiln_snap_close(f->sn);
	f->sn = NULL;
	return 0;
}

static void assert_clean(struct fixture *f)
{
	struct kiln_strv problems = {0};
	struct kiln_err err = {0};
	assert_int_equal(kiln_snap_check(f->sn, &problems, &err), 0);
	for (size_t i = 0; i < problems.n; i++)
		print_error("problem: %s\n", problems.v[i]);
	assert_int_equal(problems.n, 0);
	kiln_strv_free(&problems);
}

static size_t count_dir(struct fixture *f, const char *sub)
{
	char *p = kiln_xasprintf("%s/%s/%s", f->dir, f->driver, sub);
	size_t n = 0;
	DIR *d = opendir(p);
	free(p);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Roots keep their ancestors; a writable snapshot keeps its parent chain;
 * the rest goes, and the check stays clean. */
static void test_roots_and_active(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = {0};
	assert_clean(f);
	struct kiln_snap *ctr = NULL;
	assert_int_equal(kiln_snap_prepare(f->sn, f->b, "ctr-1", KILN_SNAP_NOMOUNT, &ctr, &err), 0);
	kiln_snap_release(ctr);
	struct kiln_strv keep = {0};
	kiln_strv_push(&keep, f->d);
	struct kiln_snap_gc_stats st;
	assert_int_equal(kiln_snap_gc(f->sn, &keep, &st, &err), 0);
	assert_int_equal(st.removed, 1);            /* C only */
	assert_true(st.bytes > 0);
	assert_false(kiln_snap_exists(f->sn, f->c));
	assert_true(kiln_snap_exists(f->sn, f->a));
	assert_true(kiln_snap_exists(f->sn, f->b));
	assert_true(kiln_snap_exists(f->sn, f->d));
	assert_clean(f);
	/* the container goes: B and then A follow once nothing keeps them */
	assert_int_equal(kiln_snap_remove(f->sn, "ctr-1", &err), 0);
	assert_int_equal(kiln_snap_gc(f->sn, &keep, &st, &err), 0);
	assert_int_equal(st.removed, 1);            /* B; A stays under D */
	assert_true(kiln_snap_exists(f->sn, f->a));
	kiln_strv_free(&keep);
	assert_int_equal(kiln_snap_gc(f->sn, NULL, &st, &err), 0);
	assert_int_equal(st.removed, 2);            /* D, then A */
	assert_int_equal(count_dir(f, "snaps"), 0);
	assert_int_equal(count_dir(f, "tmp"), 0);
	if (!strcmp(f->driver, "overlay"))
		assert_int_equal(count_dir(f, "l"), 0);   /* the short links went too */
	assert_clean(f);
}

/* A keep list naming snapshots that do not exist (images not unpacked yet)
 * changes nothing; the closure lists existing ancestors once, sorted. */
static void test_closure(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = {0};
	struct kiln_strv ids = {0}, out = {0};
	kiln_strv_push(&ids, f->c);
	kiln_strv_push(&ids, f->b);
	kiln_strv_push(&ids, "sha256:0000000000000000000000000000000000000000000000000000000000000000");
	assert_int_equal(kiln_snap_closure(f->sn, &ids, &out, &err), 0);
	assert_int_equal(out.n, 3);
	for (size_t i = 1; i < out.n; i++)
		assert_true(strcmp(out.v[i - 1], out.v[i]) < 0);
	struct kiln_snap_gc_stats st;
	assert_int_equal(kiln_snap_gc(f->sn, &ids, &st, &err), 0);
	assert_int_equal(st.removed, 1);            /* D */
	kiln_strv_free(&ids);
	kiln_strv_free(&out);
}

/* A removal cut short (the snapshot renamed into tmp/, not yet deleted) is
 * finished by the next open; the check notices a missing parent and a
 * writable snapshot on a missing chain. */
static void test_check_and_leftovers(void **state)
{
	struct fixture *f = *state;
	struct kiln_err err = {0};
	/* a leftover of a dead process in tmp/ */
	char *t = kiln_xasprintf("%s/%s/tmp/999999999-1-1/fs", f->dir, f->driver);
	assert_int_equal(kiln_mkdir_p(t, 0700, &err), 0);
	free(t);
	kiln_snap_close(f->sn);
	assert_int_equal(kiln_snap_open(f->dir, f->driver, &f->sn, &err), 0);
	assert_int_equal(count_dir(f, "tmp"), 0);
	assert_clean(f);
	/* hide B: C loses its parent */
	char *from = kiln_xasprintf("%s/%s/snaps/%s", f->dir, f->driver, f->b + 7);
	char *to = kiln_xasprintf("%s/%s/hidden", f->dir, f->driver);
	assert_int_equal(rename(from, to), 0);
	struct kiln_strv problems = {0};
	assert_int_equal(kiln_snap_check(f->sn, &problems, &err), 0);
	bool parent = false;
	for (size_t i = 0; i < problems.n; i++)
		if (strstr(problems.v[i], f->c) && strstr(problems.v[i], "parent"))
			parent = true;
	assert_true(parent);
	kiln_strv_free(&problems);
	assert_int_equal(rename(to, from), 0);
	free(from);
	free(to);
	assert_clean(f);
}

static struct fixture g_vfs = {.driver = "vfs"}, g_ovl = {.driver = "overlay"};

int main(void)
{
	g_root = geteuid() == 0;
	if (g_root && (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)))
		g_root = false;
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/kiln-snapgc.XXXXXX");
	if (!mkdtemp(g_tmp)) {
		perror("mkdtemp");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_prestate_setup_teardown(test_roots_and_active, setup, teardown, &g_vfs),
		cmocka_unit_test_prestate_setup_teardown(test_roots_and_active, setup, teardown, &g_ovl),
		cmocka_unit_test_prestate_setup_teardown(test_closure, setup, teardown, &g_vfs),
		cmocka_unit_test_prestate_setup_teardown(test_closure, setup, teardown, &g_ovl),
		cmocka_unit_test_prestate_setup_teardown(test_check_and_leftovers, setup, teardown, &g_vfs),
		cmocka_unit_test_prestate_setup_teardown(test_check_and_leftovers, setup, teardown, &g_ovl),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	struct kiln_err err = {0};
	kiln_rm_rf(g_tmp, &err);
	return rc;
}
