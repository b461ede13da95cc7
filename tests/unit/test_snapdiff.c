/* Unit tests: layers/snapshot diffs never lose a change — on btrfs (a
 * loop-mounted image made here), overlay and vfs (ext4 /tmp, and btrfs with
 * reflinks).
 *
 *   - rewrites that keep size, mode, owner and mtime (truncate and write,
 *     write in place, through one name of a hard-linked file, right after
 *     the snapshot was made) are changes; a rewrite with the same bytes,
 *     reading a file, opening it for writing are not; chmod, chown, touch
 *     and xattr changes still are;
 *   - a vfs snapshot without its ctime record (made by an older kiln) still
 *     diffs right, and the record does not outlive the commit;
 *   - a property test: seeded random change sets (create, delete, rewrite
 *     with the same size and mtime, chmod, chown, xattrs, hard links,
 *     symlinks, renames, a directory replaced by a file or emptied) over
 *     several stacked steps; after each step the layer written from the
 *     diff, applied by the extractor to a copy of the parent built from the
 *     layers alone, must give the committed snapshot exactly: types, modes,
 *     owners, contents, link targets, xattrs, mtimes (seconds, as layers
 *     keep them) and hard-link groups.
 *
 * Runs as root in a private mount namespace (mounts die with the process).
 * Without root only vfs on /tmp is tested. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/layer.h"
#include "layers/snapshot.h"
#include "layers/snap_internal.h"

#define T0 1000000000L

static char g_tmp[256];
static char g_btrfs[512];
static bool g_root;

struct drv {
	const char *name;
	const char *label;
	char dir[PATH_MAX];
	bool available;
	struct kiln_snapshotter *sn;
};

enum { D_BTRFS, D_OVERLAY, D_VFS, D_VFS_BTRFS, ND };
static struct drv g_drv[ND] = {
	[D_BTRFS] = { .name = "btrfs", .label = "btrfs" },
	[D_OVERLAY] = { .name = "overlay", .label = "overlay" },
	[D_VFS] = { .name = "vfs", .label = "vfs (ext4)" },
	[D_VFS_BTRFS] = { .name = "vfs", .label = "vfs (btrfs, reflinks)" },
};

/* ------------------------------------------------------------ helpers */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *cmd = NULL;
	if (vasprintf(&cmd, fmt, ap) < 0)
		abort();
	va_end(ap);
	int rc = system(cmd);
	free(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *P(const char *root, const char *rel)
{
	static char buf[4][PATH_MAX];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], PATH_MAX, "%s/%s", root, rel);
	return buf[i];
}

static void put(const char *path, const void *data, size_t len, int flags, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags, mode);
	if (fd < 0)
		fail_msg("open %s: %s", path, strerror(errno));
	assert_int_equal(kiln_write_all(fd, data, len), 0);
	close(fd);
}

static void set_mtime(const char *path, const struct timespec *mt)
{
	struct timespec ts[2] = { { 0, UTIME_OMIT }, *mt };
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW))
		fail_msg("utimensat %s: %s", path, strerror(errno));
}

static char *read_all(const char *path, size_t *len)
{
	char *out = NULL;
	struct kiln_err err = { 0 };
	if (kiln_read_file(path, 0, &out, len, &err) < 0)
		return NULL;
	return out;
}

static void make_chain(const char *seed, char out[KILN_DIGEST_MAX])
{
	char d[KILN_DIGEST_MAX] = "sha256:";
	for (int i = 0; i < 64; i++)
		d[7 + i] = "0123456789abcdef"[(seed[i % strlen(seed)] * 31 + i * 7 + (int)strlen(seed)) % 16];
	d[71] = 0;
	struct kiln_err err = { 0 };
	assert_int_equal(kiln_snap_chain_id(NULL, d, out, &err), 0);
}

struct line { char *path; char kind; };

static int line_cmp(const void *a, const void *b)
{
	return strcmp(((const struct line *)a)->path, ((const struct line *)b)->path);
}

static char *changes_str(const struct kiln_changes *c)
{
	static const char kinds[] = { [KILN_CHANGE_ADD] = 'A', [KILN_CHANGE_MODIFY] = 'M',
				      [KILN_CHANGE_DELETE] = 'D', [KILN_CHANGE_OPAQUE] = 'O' };
	struct line *v = kiln_xcalloc(c->n + 1, sizeof(*v));
	for (size_t i = 0; i < c->n; i++) {
		v[i].path = c->v[i].path;
		v[i].kind = kinds[c->v[i].kind];
	}
	qsort(v, c->n, sizeof(*v), line_cmp);
	struct kiln_buf b = { 0 };
	kiln_buf_puts(&b, "");
	for (size_t i = 0; i < c->n; i++)
		kiln_buf_printf(&b, "%c %s\n", v[i].kind, v[i].path);
	free(v);
	return kiln_buf_steal(&b);
}

static struct drv *need(void **state)
{
	struct drv *d = *state;
	if (!d->available)
		skip();
	return d;
}

/* ------------------------------------------------------------ directed */

#define SIZE_BIG (3 << 20)   /* more than one compare block */

/* A base with files whose metadata the mutations keep. */
static void populate(const char *r)
{
	assert_int_equal(mkdir(P(r, "etc"), 0755), 0);
	put(P(r, "etc/group"), "root:x:0:\nstaff:x:50:\n", 22, O_CREAT | O_TRUNC, 0644);
	put(P(r, "etc/group-"), "root:x:0:\nstaff:x:50:\n", 22, O_CREAT | O_TRUNC, 0644);
	put(P(r, "inplace"), "0123456789", 10, O_CREAT | O_TRUNC, 0644);
	put(P(r, "same"), "same bytes\n", 11, O_CREAT | O_TRUNC, 0644);
	put(P(r, "readme"), "read only\n", 10, O_CREAT | O_TRUNC, 0644);
	put(P(r, "hl1"), "linked!\n", 8, O_CREAT | O_TRUNC, 0644);
	assert_int_equal(link(P(r, "hl1"), P(r, "hl2")), 0);
	put(P(r, "meta"), "metadata only\n", 14, O_CREAT | O_TRUNC, 0644);
	char *big = kiln_xmalloc(SIZE_BIG);
	for (size_t i = 0; i < SIZE_BIG; i++)
		big[i] = (char)(i * 7 + i / 4096);
	put(P(r, "big"), big, SIZE_BIG, O_CREAT | O_TRUNC, 0644);
	free(big);
	assert_int_equal(sh("find '%s' -mindepth 1 -exec touch -h -d @%ld {} +", r, T0), 0);
}

struct rw_case {
	const char *name;
	void (*fn)(const char *r);
	const char *want;
	bool needs_root;
};

static void keep_mtime(const char *r, const char *rel, void (*op)(const char *path))
{
	struct stat st;
	assert_int_equal(lstat(P(r, rel), &st), 0);
	op(P(r, rel));
	set_mtime(P(r, rel), &st.st_mtim);
	struct stat st2;
	assert_int_equal(lstat(P(r, rel), &st2), 0);
	assert_int_equal(st2.st_size, st.st_size);
	assert_int_equal(st2.st_mode, st.st_mode);
}

static void op_group(const char *p) { put(p, "root:x:0:\nstaff:x:51:\n", 22, O_TRUNC, 0); }
static void op_inplace(const char *p)
{
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 5), 1);
	close(fd);
}
static void op_same(const char *p) { put(p, "same bytes\n", 11, O_TRUNC, 0); }
static void op_hl(const char *p) { put(p, "LINKED!\n", 8, O_TRUNC, 0); }
static void op_big_last(const char *p)
{
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "?", 1, SIZE_BIG - 1), 1);   /* the last byte only */
	close(fd);
}

static void c_group(const char *r) { keep_mtime(r, "etc/group-", op_group); }
static void c_inplace(const char *r) { keep_mtime(r, "inplace", op_inplace); }
static void c_same(const char *r) { keep_mtime(r, "same", op_same); }
static void c_hardlinked(const char *r) { keep_mtime(r, "hl2", op_hl); }
static void c_big(const char *r) { keep_mtime(r, "big", op_big_last); }
static void c_read(const char *r)
{
	size_t len;
	free(read_all(P(r, "readme"), &len));
	free(read_all(P(r, "big"), &len));
}
static void c_open_write(const char *r)
{
	int fd = open(P(r, "same"), O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
}
static void c_chmod(const char *r) { assert_int_equal(chmod(P(r, "meta"), 0600), 0); }
static void c_chown(const char *r) { assert_int_equal(lchown(P(r, "meta"), 1234, 1234), 0); }
static void c_touch(const char *r)
{
	struct timespec t = { T0 + 5, 0 };
	set_mtime(P(r, "meta"), &t);
}
static void c_xattr(const char *r)
{
	assert_int_equal(lsetxattr(P(r, "meta"), "user.note", "x", 1, 0), 0);
}
static void c_chmod_back(const char *r)
{
	assert_int_equal(chmod(P(r, "meta"), 0600), 0);
	assert_int_equal(chmod(P(r, "meta"), 0644), 0);
}

static const struct rw_case g_cases[] = {
	{ "group_rewrite", c_group, "M etc/group-\n", false },
	{ "in_place", c_inplace, "M inplace\n", false },
	{ "big_last_byte", c_big, "M big\n", false },
	{ "hardlinked", c_hardlinked, "M hl1\nM hl2\n", false },
	{ "same_bytes", c_same, "", false },
	{ "read", c_read, "", false },
	{ "open_for_write", c_open_write, "", false },
	{ "chmod", c_chmod, "M meta\n", false },
	{ "chown", c_chown, "M meta\n", true },
	{ "touch", c_touch, "M meta\n", false },
	{ "xattr", c_xattr, "M meta\n", false },
	{ "chmod_back", c_chmod_back, "", false },
};
#define NCASES (sizeof(g_cases) / sizeof(g_cases[0]))

static void base_for(struct drv *d, const char *seed, char chain[KILN_DIGEST_MAX])
{
	struct kiln_err err = { 0 };
	make_chain(seed, chain);
	if (kiln_snap_exists(d->sn, chain))
		return;
	struct kiln_snap *s = NULL;
	char key[64];
	snprintf(key, sizeof(key), "base-%s", seed);
	if (kiln_snap_prepare(d->sn, NULL, key, 0, &s, &err))
		fail_msg("%s: prepare base: %s", d->label, err.msg);
	populate(kiln_snap_rootfs(s));
	if (kiln_snap_commit(s, chain, &err))
		fail_msg("%s: commit base: %s", d->label, err.msg);
	kiln_snap_release(s);
}

static void run_case(struct drv *d, const char *base, const struct rw_case *c, bool drop_record)
{
	struct kiln_err err = { 0 };
	struct kiln_snap *s = NULL;
	if (kiln_snap_prepare(d->sn, base, c->name, 0, &s, &err))
		fail_msg("%s/%s: prepare: %s", d->label, c->name, err.msg);
	if (drop_record) {
		/* a snapshot an older kiln made: no ctime record */
		char *ct = kiln_xasprintf("%s/ctimes", s->dir);
		assert_int_equal(unlink(ct), 0);
		free(ct);
	}
	c->fn(kiln_snap_rootfs(s));
	struct kiln_changes ch = { 0 };
	if (kiln_snap_diff(s, &ch, &err))
		fail_msg("%s/%s: diff: %s", d->label, c->name, err.msg);
	char *got = changes_str(&ch);
	if (strcmp(got, c->want))
		fail_msg("%s/%s%s: change set\n--- got\n%s--- want\n%s", d->label, c->name,
			 drop_record ? " (no ctime record)" : "", got, c->want);
	free(got);
	kiln_changes_free(&ch);
	assert_int_equal(kiln_snap_discard(s, &err), 0);
}

static void test_rewrites(void **state)
{
	struct drv *d = need(state);
	char base[KILN_DIGEST_MAX];
	base_for(d, "rewrites", base);
	for (size_t i = 0; i < NCASES; i++) {
		if (g_cases[i].needs_root && !g_root)
			continue;
		run_case(d, base, &g_cases[i], false);
		if (!strcmp(d->name, "vfs"))
			run_case(d, base, &g_cases[i], true);
	}
}

/* The change right after the snapshot, in the same clock tick if it can. */
static void test_rewrite_at_once(void **state)
{
	struct drv *d = need(state);
	char base[KILN_DIGEST_MAX];
	base_for(d, "rewrites", base);
	struct kiln_err err = { 0 };
	for (int i = 0; i < 20; i++) {
		struct kiln_snap *s = NULL;
		assert_int_equal(kiln_snap_prepare(d->sn, base, "atonce", 0, &s, &err), 0);
		c_group(kiln_snap_rootfs(s));
		struct kiln_changes ch = { 0 };
		assert_int_equal(kiln_snap_diff(s, &ch, &err), 0);
		char *got = changes_str(&ch);
		if (strcmp(got, "M etc/group-\n"))
			fail_msg("%s: round %d: got\n%s", d->label, i, got);
		free(got);
		kiln_changes_free(&ch);
		assert_int_equal(kiln_snap_discard(s, &err), 0);
	}
}

/* The vfs record lives beside the writable tree, never in it, and goes at commit. */
static void test_vfs_record(void **state)
{
	struct drv *d = need(state);
	if (strcmp(d->name, "vfs"))
		skip();
	char base[KILN_DIGEST_MAX], chain[KILN_DIGEST_MAX];
	base_for(d, "rewrites", base);
	struct kiln_err err = { 0 };
	struct kiln_snap *s = NULL;
	assert_int_equal(kiln_snap_prepare(d->sn, base, "record", 0, &s, &err), 0);
	char *ct = kiln_xasprintf("%s/ctimes", s->dir);
	struct stat st;
	assert_int_equal(stat(ct, &st), 0);
	assert_int_equal(st.st_size, 8 + 16 + 8 * 32);   /* 8 inodes (hl1, hl2 are one) */
	free(ct);
	make_chain("record-commit", chain);
	assert_int_equal(kiln_snap_commit(s, chain, &err), 0);
	kiln_snap_release(s);
	char *committed = snap_committed_path(d->sn, chain, "ctimes");
	assert_int_equal(stat(committed, &st), -1);
	assert_int_equal(errno, ENOENT);
	free(committed);
	assert_int_equal(kiln_snap_remove(d->sn, chain, &err), 0);
}

/* The proofs that spare reading: an untouched file passes, a touched one
 * (here: chmod and back, content and metadata as before) does not. */
static void test_proofs(void **state)
{
	struct drv *d = need(state);
	if (!strcmp(d->name, "overlay"))
		skip();
	char base[KILN_DIGEST_MAX];
	base_for(d, "rewrites", base);
	struct kiln_err err = { 0 };
	struct kiln_snap *s = NULL;
	assert_int_equal(kiln_snap_prepare(d->sn, base, "proofs", 0, &s, &err), 0);
	const char *r = kiln_snap_rootfs(s);
	char *pfs = snap_committed_path(d->sn, base, "fs");
	size_t len;
	free(read_all(P(r, "readme"), &len));               /* atime only */
	c_chmod_back(r);
	struct stat cs, ps, cm, pm;
	assert_int_equal(lstat(P(r, "readme"), &cs), 0);
	assert_int_equal(lstat(P(pfs, "readme"), &ps), 0);
	assert_int_equal(lstat(P(r, "meta"), &cm), 0);
	assert_int_equal(lstat(P(pfs, "meta"), &pm), 0);
	if (!strcmp(d->name, "btrfs")) {
		assert_int_equal(cs.st_ino, ps.st_ino);
		assert_true(cs.st_ctim.tv_sec == ps.st_ctim.tv_sec && cs.st_ctim.tv_nsec == ps.st_ctim.tv_nsec);
		assert_false(cm.st_ctim.tv_sec == pm.st_ctim.tv_sec && cm.st_ctim.tv_nsec == pm.st_ctim.tv_nsec);
	} else {
		char *ct = kiln_xasprintf("%s/ctimes", s->dir);
		struct snap_ctimes *rec = snap_ctimes_load(ct, &err);
		assert_non_null(rec);
		assert_true(snap_ctimes_untouched(rec, &cs, &ps));
		assert_false(snap_ctimes_untouched(rec, &cm, &pm));
		assert_false(snap_ctimes_untouched(rec, &cs, &pm));   /* another parent inode */
		snap_ctimes_free(rec);
		/* a damaged record is refused, not trusted */
		assert_int_equal(truncate(ct, 8 + 16 + 5), 0);
		assert_null(snap_ctimes_load(ct, &err));
		free(ct);
	}
	/* the diff agrees: nothing changed */
	struct kiln_changes ch = { 0 };
	assert_int_equal(kiln_snap_diff(s, &ch, &err), 0);
	assert_int_equal(ch.n, 0);
	free(pfs);
	assert_int_equal(kiln_snap_discard(s, &err), 0);
}

/* Content that cannot be read (a diff without root) counts as changed, never
 * as the same, and is no error. */
static void test_unreadable(void **state)
{
	(void)state;
	if (!g_root)
		skip();
	char *dir = kiln_xasprintf("%s/unreadable", g_tmp);
	assert_int_equal(mkdir(dir, 0755), 0);
	put(P(dir, "a"), "same", 4, O_CREAT | O_EXCL, 0600);
	put(P(dir, "b"), "same", 4, O_CREAT | O_EXCL, 0600);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);   /* before dropping root */
		if (fd < 0 || setgid(65534) || setuid(65534))
			_exit(2);
		struct kiln_err err = { 0 };
		bool same = true;
		int rc = snap_content_same(fd, "a", fd, "b", false, &same, &err);
		_exit(rc == 0 && !same ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* and with access: the same */
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct kiln_err err = { 0 };
	bool same = false;
	assert_int_equal(snap_content_same(fd, "a", fd, "b", false, &same, &err), 0);
	assert_true(same);
	close(fd);
	free(dir);
}

static void apply_layer_to(const char *dir, const char *layer);

/* `rm -rf d && mkdir d`: the layer's d has no xattrs, so neither has d once
 * the layer is applied over the old d (the extractor keeps the directory). */
static void test_recreated_dir_xattrs(void **state)
{
	struct drv *d = need(state);
	struct kiln_err err = { 0 };
	char base[KILN_DIGEST_MAX];
	make_chain("xattrdir", base);
	struct kiln_snap *s = NULL;
	assert_int_equal(kiln_snap_prepare(d->sn, NULL, "xattrdir", 0, &s, &err), 0);
	const char *r = kiln_snap_rootfs(s);
	assert_int_equal(mkdir(P(r, "d"), 0755), 0);
	assert_int_equal(lsetxattr(P(r, "d"), "user.old", "1", 1, 0), 0);
	assert_int_equal(lsetxattr(P(r, "d"), "user.kept", "2", 1, 0), 0);
	char *ref = kiln_xasprintf("%s/xattrdir-ref-%d", g_tmp, (int)(d - g_drv));
	assert_int_equal(snap_vfs_copy(r, ref, &err), 0);
	assert_int_equal(kiln_snap_commit(s, base, &err), 0);
	kiln_snap_release(s);
	assert_int_equal(kiln_snap_prepare(d->sn, base, "xattrdir2", 0, &s, &err), 0);
	r = kiln_snap_rootfs(s);
	assert_int_equal(rmdir(P(r, "d")), 0);
	assert_int_equal(mkdir(P(r, "d"), 0755), 0);
	assert_int_equal(lsetxattr(P(r, "d"), "user.kept", "3", 1, 0), 0);
	char *layer = kiln_xasprintf("%s/xattrdir.tar", g_tmp);
	int fd = open(layer, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	struct kiln_layer_write_opts o = { .compression = KILN_COMPRESS_NONE, .source_date_epoch = -1 };
	struct kiln_layer_info info;
	assert_int_equal(kiln_snap_write_layer(s, &o, fd, &info, NULL, &err), 0);
	close(fd);
	assert_int_equal(kiln_snap_discard(s, &err), 0);
	apply_layer_to(ref, layer);
	char v[8];
	assert_int_equal(lgetxattr(P(ref, "d"), "user.old", v, sizeof(v)), -1);
	assert_int_equal(errno, ENODATA);
	assert_int_equal(lgetxattr(P(ref, "d"), "user.kept", v, sizeof(v)), 1);
	assert_int_equal(v[0], '3');
	assert_int_equal(kiln_rm_rf(ref, &err), 0);
	assert_int_equal(kiln_snap_remove(d->sn, base, &err), 0);
	free(ref);
	free(layer);
}

/* ------------------------------------------------------------ property */

struct rng { uint64_t s; };

static uint64_t rnd(struct rng *r)
{
	r->s ^= r->s << 13;
	r->s ^= r->s >> 7;
	r->s ^= r->s << 17;
	return r->s;
}

static unsigned pick(struct rng *r, unsigned n) { return (unsigned)(rnd(r) % n); }

/* Everything below the root, as paths (a fresh walk each time). */
struct ent { char *path; struct stat st; };
struct ents { struct ent *v; size_t n, cap; };

static void ents_free(struct ents *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].path);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

static void walk(const char *root, const char *rel, struct ents *out)
{
	struct kiln_strv names = { 0 };
	struct kiln_err err = { 0 };
	int fd = open(*rel ? P(root, rel) : root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fail_msg("open %s/%s: %s", root, rel, strerror(errno));
	assert_int_equal(snap_list_dir(fd, &names, &err), 0);
	close(fd);
	for (size_t i = 0; i < names.n; i++) {
		char *p = *rel ? kiln_xasprintf("%s/%s", rel, names.v[i]) : kiln_xstrdup(names.v[i]);
		struct stat st;
		if (lstat(P(root, p), &st))
			fail_msg("lstat %s/%s: %s", root, p, strerror(errno));
		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 64;
			out->v = kiln_xrealloc(out->v, out->cap * sizeof(*out->v));
		}
		out->v[out->n].path = p;
		out->v[out->n].st = st;
		out->n++;
		if (S_ISDIR(st.st_mode))
			walk(root, p, out);
	}
	kiln_strv_free(&names);
}

/* A random entry of the given type (S_IFREG, S_IFDIR, S_IFLNK; 0: any) with
 * at most max_links links, or NULL. */
static const struct ent *pick_ent(struct rng *r, const struct ents *e, mode_t type, nlink_t max_links)
{
	if (!e->n)
		return NULL;
	size_t start = pick(r, (unsigned)e->n);
	for (size_t k = 0; k < e->n; k++) {
		const struct ent *x = &e->v[(start + k) % e->n];
		if (type && (x->st.st_mode & S_IFMT) != type)
			continue;
		if (max_links && !S_ISDIR(x->st.st_mode) && x->st.st_nlink > max_links)
			continue;
		return x;
	}
	return NULL;
}

static void rand_bytes(struct rng *r, char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)('a' + pick(r, 26));
}

static const char *parent_dir_of(struct rng *r, const struct ents *e, char *buf, size_t size)
{
	const struct ent *d = pick(r, 4) ? pick_ent(r, e, S_IFDIR, 0) : NULL;
	snprintf(buf, size, "%s", d ? d->path : "");
	return buf;
}

static unsigned g_name;   /* fresh names: never a name the parent had */

static char *fresh(const char *dir, const char *stem)
{
	g_name++;
	return *dir ? kiln_xasprintf("%s/%s%u", dir, stem, g_name) : kiln_xasprintf("%s%u", stem, g_name);
}

static void new_file(struct rng *r, const char *root, const char *rel)
{
	size_t n = pick(r, 5) ? pick(r, 200) : pick(r, 70000);
	char *buf = kiln_xmalloc(n + 1);
	rand_bytes(r, buf, n);
	put(P(root, rel), buf, n, O_CREAT | O_EXCL, 0644);
	free(buf);
	struct timespec t = { T0 + (time_t)pick(r, 1000), (long)pick(r, 1000000000) };
	set_mtime(P(root, rel), &t);
}

/* One random change; appends what it did to log.  Hard links and renames
 * stay inside one directory and touch only files of the step or their whole
 * group: a hard link between a path the layer writes and one it does not is
 * stored as a copy (as every layer format does), and overlay cannot tell a
 * file written anew under a hard-linked name from a copied-up one (see
 * snap_overlay.c).  Metadata changes really change something: on overlay a
 * copy-up that changes nothing splits a hard-linked file in the snapshot
 * while the (empty) change keeps it one file in the layers (snap_overlay.c). */
static void mutate(struct rng *r, const char *root, struct kiln_strv *mine, struct kiln_buf *log)
{
	struct ents e = { 0 };
	walk(root, "", &e);
	char dirbuf[PATH_MAX];
	const struct ent *x;
	unsigned op = pick(r, 13);
	switch (op) {
	case 0: {                                   /* create a file */
		char *p = fresh(parent_dir_of(r, &e, dirbuf, sizeof(dirbuf)), "f");
		new_file(r, root, p);
		kiln_strv_push(mine, p);
		kiln_buf_printf(log, "create %s\n", p);
		free(p);
		break;
	}
	case 1:                                     /* delete a file or symlink */
		if ((x = pick_ent(r, &e, pick(r, 2) ? S_IFREG : S_IFLNK, 0))) {
			kiln_buf_printf(log, "delete %s\n", x->path);
			assert_int_equal(unlink(P(root, x->path)), 0);
		}
		break;
	case 2: case 3: case 4:                     /* rewrite: same size, mode, mtime */
		if ((x = pick_ent(r, &e, S_IFREG, 0)) && x->st.st_size > 0) {
			size_t n = (size_t)x->st.st_size;
			size_t len;
			char *old = read_all(P(root, x->path), &len);
			assert_non_null(old);
			assert_int_equal(len, n);
			char *buf = kiln_xmalloc(n);
			memcpy(buf, old, n);
			size_t at = pick(r, (unsigned)n);
			buf[at] = (char)(buf[at] == 'Z' ? 'Y' : 'Z');
			if (pick(r, 2)) {
				put(P(root, x->path), buf, n, O_TRUNC, 0);
				kiln_buf_printf(log, "rewrite %s (byte %zu, truncating)\n", x->path, at);
			} else {
				int fd = open(P(root, x->path), O_WRONLY | O_CLOEXEC);
				assert_true(fd >= 0);
				assert_int_equal(pwrite(fd, buf + at, 1, (off_t)at), 1);
				close(fd);
				kiln_buf_printf(log, "rewrite %s (byte %zu, in place)\n", x->path, at);
			}
			set_mtime(P(root, x->path), &x->st.st_mtim);
			free(old);
			free(buf);
			kiln_strv_push(mine, x->path);
		}
		break;
	case 5:                                     /* chmod */
		if ((x = pick_ent(r, &e, pick(r, 3) ? S_IFREG : S_IFDIR, 0))) {
			static const mode_t modes[] = { 0600, 0644, 0640, 0755, 0700, 0711 };
			mode_t m = modes[pick(r, 6)];
			if (S_ISDIR(x->st.st_mode))
				m |= 0700;
			if (m == (x->st.st_mode & 07777))
				m = m == 0711 ? 0700 : 0711;        /* a real change (see below) */
			kiln_buf_printf(log, "chmod %o %s\n", (unsigned)m, x->path);
			assert_int_equal(chmod(P(root, x->path), m), 0);
		}
		break;
	case 6:                                     /* chown */
		if (g_root && (x = pick_ent(r, &e, 0, 0))) {
			uid_t u = 1000 + pick(r, 3);
			if (u == x->st.st_uid)
				u = 999;
			kiln_buf_printf(log, "chown %u %s\n", (unsigned)u, x->path);
			assert_int_equal(lchown(P(root, x->path), u, u), 0);
		}
		break;
	case 7:                                     /* xattr */
		if ((x = pick_ent(r, &e, pick(r, 2) ? S_IFREG : S_IFDIR, 0))) {
			char v[8], cur[8] = "";
			(void)lgetxattr(P(root, x->path), "user.k", cur, sizeof(cur) - 1);
			snprintf(v, sizeof(v), "v%u", pick(r, 3));
			if (!strcmp(v, cur))
				snprintf(v, sizeof(v), "v9");
			kiln_buf_printf(log, "xattr %s=%s %s\n", "user.k", v, x->path);
			assert_int_equal(lsetxattr(P(root, x->path), "user.k", v, strlen(v), 0), 0);
		}
		break;
	case 8:                                     /* hard link to a file of this step */
		if (mine->n) {
			const char *src = mine->v[pick(r, (unsigned)mine->n)];
			struct stat st;
			if (lstat(P(root, src), &st) || !S_ISREG(st.st_mode))
				break;
			char *dir = kiln_xstrdup(src);
			char *slash = strrchr(dir, '/');
			if (slash)
				*slash = 0;
			else
				dir[0] = 0;
			char *p = fresh(dir, "h");
			kiln_buf_printf(log, "link %s %s\n", src, p);
			assert_int_equal(link(P(root, src), P(root, p)), 0);
			kiln_strv_push(mine, p);
			free(p);
			free(dir);
		}
		break;
	case 9: {                                   /* symlink: new or retargeted */
		char tgt[32];
		snprintf(tgt, sizeof(tgt), "%s/t%u", pick(r, 2) ? "" : "..", pick(r, 100));
		if (pick(r, 2) && (x = pick_ent(r, &e, S_IFLNK, 0))) {
			kiln_buf_printf(log, "retarget %s -> %s\n", x->path, tgt);
			assert_int_equal(unlink(P(root, x->path)), 0);
			assert_int_equal(symlink(tgt, P(root, x->path)), 0);
		} else {
			char *p = fresh(parent_dir_of(r, &e, dirbuf, sizeof(dirbuf)), "l");
			kiln_buf_printf(log, "symlink %s -> %s\n", p, tgt);
			assert_int_equal(symlink(tgt, P(root, p)), 0);
			free(p);
		}
		break;
	}
	case 10:                                    /* rename a file (single link) or a directory */
		if ((x = pick_ent(r, &e, pick(r, 2) ? S_IFREG : S_IFDIR, 1))) {
			char *dir = kiln_xstrdup(x->path);
			char *slash = strrchr(dir, '/');
			if (slash)
				*slash = 0;
			else
				dir[0] = 0;
			char *p = fresh(dir, "r");
			kiln_buf_printf(log, "rename %s %s\n", x->path, p);
			if (rename(P(root, x->path), P(root, p))) {
				/* overlay without redirect_dir: EXDEV for directories, as mv copies */
				assert_int_equal(errno, EXDEV);
				struct kiln_err err = { 0 };
				if (snap_vfs_copy(P(root, x->path), P(root, p), &err))
					fail_msg("copy: %s", err.msg);
				assert_int_equal(kiln_rm_rf(P(root, x->path), &err), 0);
			}
			free(p);
			free(dir);
		}
		break;
	case 11:                                    /* a directory replaced by a file */
		if ((x = pick_ent(r, &e, S_IFDIR, 0))) {
			struct kiln_err err = { 0 };
			kiln_buf_printf(log, "dir->file %s\n", x->path);
			char *p = kiln_xstrdup(x->path);
			assert_int_equal(kiln_rm_rf(P(root, p), &err), 0);
			new_file(r, root, p);
			kiln_strv_push(mine, p);
			free(p);
		}
		break;
	case 12:                                    /* a directory emptied and made again */
		if ((x = pick_ent(r, &e, S_IFDIR, 0))) {
			struct kiln_err err = { 0 };
			kiln_buf_printf(log, "recreate dir %s\n", x->path);
			char *p = kiln_xstrdup(x->path);
			assert_int_equal(kiln_rm_rf(P(root, p), &err), 0);
			assert_int_equal(mkdir(P(root, p), 0755), 0);
			char *f = fresh(p, "f");
			new_file(r, root, f);
			kiln_strv_push(mine, f);
			free(f);
			free(p);
		}
		break;
	}
	ents_free(&e);
}

static void random_base(struct rng *r, const char *root)
{
	const char *dirs[] = { "a", "a/b", "a/b/c", "d", "e" };
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(mkdir(P(root, dirs[i]), 0755), 0);
	for (int i = 0; i < 24; i++) {
		char *p = fresh(dirs[pick(r, 5)], "f");
		new_file(r, root, p);
		if (i % 6 == 0) {                   /* a hard-link group in one directory */
			char *h = kiln_xasprintf("%s.link", p);
			assert_int_equal(link(P(root, p), P(root, h)), 0);
			free(h);
		}
		if (i % 5 == 0) {
			char *l = kiln_xasprintf("%s.sym", p);
			assert_int_equal(symlink(strrchr(p, '/') ? strrchr(p, '/') + 1 : p, P(root, l)), 0);
			free(l);
		}
		free(p);
	}
	put(P(root, "d/empty"), "", 0, O_CREAT | O_EXCL, 0644);
	assert_int_equal(lsetxattr(P(root, "d"), "user.k", "base", 4, 0), 0);
	assert_int_equal(sh("find '%s' -mindepth 1 -type d -exec touch -d @%ld {} +", root, T0), 0);
}

/* Compare the trees exactly; NULL when equal, else what differs. */
static char *tree_diff(const char *a, const char *b)
{
	struct ents ea = { 0 }, eb = { 0 };
	walk(a, "", &ea);
	walk(b, "", &eb);
	struct kiln_buf out = { 0 };
	size_t i = 0, j = 0;
	while (i < ea.n || j < eb.n) {
		int k = i >= ea.n ? 1 : j >= eb.n ? -1 : strcmp(ea.v[i].path, eb.v[j].path);
		if (k < 0) {
			kiln_buf_printf(&out, "only in the snapshot: %s\n", ea.v[i++].path);
			continue;
		}
		if (k > 0) {
			kiln_buf_printf(&out, "only from the layers: %s\n", eb.v[j++].path);
			continue;
		}
		const struct ent *x = &ea.v[i++], *y = &eb.v[j++];
		const struct stat *s = &x->st, *t = &y->st;
		if ((s->st_mode & S_IFMT) != (t->st_mode & S_IFMT)) {
			kiln_buf_printf(&out, "%s: type %o vs %o\n", x->path, s->st_mode & S_IFMT, t->st_mode & S_IFMT);
			continue;
		}
		if (!S_ISLNK(s->st_mode) && (s->st_mode & 07777) != (t->st_mode & 07777))
			kiln_buf_printf(&out, "%s: mode %o vs %o\n", x->path, s->st_mode & 07777, t->st_mode & 07777);
		if (s->st_uid != t->st_uid || s->st_gid != t->st_gid)
			kiln_buf_printf(&out, "%s: owner %u:%u vs %u:%u\n", x->path, s->st_uid, s->st_gid,
					t->st_uid, t->st_gid);
		if (!S_ISLNK(s->st_mode) && s->st_mtim.tv_sec != t->st_mtim.tv_sec)
			kiln_buf_printf(&out, "%s: mtime %ld vs %ld\n", x->path, (long)s->st_mtim.tv_sec,
					(long)t->st_mtim.tv_sec);
		if (S_ISREG(s->st_mode)) {
			size_t la = 0, lb = 0;
			char *ca = read_all(P(a, x->path), &la), *cb = read_all(P(b, y->path), &lb);
			if (la != lb || (la && memcmp(ca, cb, la)))
				kiln_buf_printf(&out, "%s: content differs (%zu vs %zu bytes)\n", x->path, la, lb);
			free(ca);
			free(cb);
		} else if (S_ISLNK(s->st_mode)) {
			char ta[PATH_MAX] = "", tb[PATH_MAX] = "";
			ssize_t na = readlink(P(a, x->path), ta, sizeof(ta) - 1);
			ssize_t nb = readlink(P(b, y->path), tb, sizeof(tb) - 1);
			if (na < 0 || nb < 0 || na != nb || memcmp(ta, tb, (size_t)na))
				kiln_buf_printf(&out, "%s: link target %.*s vs %.*s\n", x->path, (int)(na > 0 ? na : 0),
						ta, (int)(nb > 0 ? nb : 0), tb);
		} else if ((S_ISCHR(s->st_mode) || S_ISBLK(s->st_mode)) && s->st_rdev != t->st_rdev) {
			kiln_buf_printf(&out, "%s: device differs\n", x->path);
		}
		/* xattrs (what layers carry) */
		char la[4096] = "", lb[4096] = "";
		ssize_t na = llistxattr(P(a, x->path), la, sizeof(la));
		ssize_t nb = llistxattr(P(b, y->path), lb, sizeof(lb));
		struct kiln_buf xa = { 0 }, xb = { 0 };
		kiln_buf_puts(&xa, "");
		kiln_buf_puts(&xb, "");
		for (int side = 0; side < 2; side++) {
			const char *list = side ? lb : la;
			ssize_t n = side ? nb : na;
			const char *path = side ? P(b, y->path) : P(a, x->path);
			for (ssize_t o = 0; n > 0 && o < n; o += (ssize_t)strlen(list + o) + 1) {
				if (kiln_layer_xattr_skipped(list + o))
					continue;
				char v[256] = "";
				ssize_t vl = lgetxattr(path, list + o, v, sizeof(v) - 1);
				kiln_buf_printf(side ? &xb : &xa, "%s=%.*s;", list + o, (int)(vl > 0 ? vl : 0), v);
			}
		}
		if (strcmp(xa.data ? xa.data : "", xb.data ? xb.data : ""))
			kiln_buf_printf(&out, "%s: xattrs %s vs %s\n", x->path, xa.data, xb.data);
		free(kiln_buf_steal(&xa));
		free(kiln_buf_steal(&xb));
	}
	/* hard-link groups: the first path of each entry's inode must agree */
	for (int side = 0; side < 2 && ea.n == eb.n; side++) {
		struct ents *e = side ? &eb : &ea, *o = side ? &ea : &eb;
		for (size_t m = 0; m < e->n; m++) {
			if (S_ISDIR(e->v[m].st.st_mode))
				continue;
			for (size_t q = 0; q < m; q++) {
				bool same_a = e->v[q].st.st_ino == e->v[m].st.st_ino && !S_ISDIR(e->v[q].st.st_mode);
				bool same_b = !strcmp(o->v[q].path, e->v[q].path) &&
					      !strcmp(o->v[m].path, e->v[m].path) &&
					      o->v[q].st.st_ino == o->v[m].st.st_ino && !S_ISDIR(o->v[q].st.st_mode);
				if (same_a && !same_b)
					kiln_buf_printf(&out, "%s and %s: one file %s, two %s\n", e->v[q].path,
							e->v[m].path, side ? "from the layers" : "in the snapshot",
							side ? "in the snapshot" : "from the layers");
			}
		}
	}
	ents_free(&ea);
	ents_free(&eb);
	return out.len ? kiln_buf_steal(&out) : (free(kiln_buf_steal(&out)), NULL);
}

static void apply_layer_to(const char *dir, const char *layer)
{
	int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(rootfd >= 0);
	int fd = open(layer, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct kiln_layer_apply_opts o = { .whiteouts = true, .allow_devices = g_root, .keep_owner = g_root };
	struct kiln_err err = { 0 };
	char got[KILN_DIGEST_MAX];
	if (kiln_layer_apply(rootfd, fd, &o, got, &err))
		fail_msg("applying %s: %s", layer, err.msg);
	close(fd);
	close(rootfd);
}

#define PROP_SEEDS 5     /* SNAPDIFF_SEEDS=N for a longer run */
#define PROP_STEPS 3

static void test_property(void **state)
{
	struct drv *d = need(state);
	struct kiln_err err = { 0 };
	unsigned seeds = getenv("SNAPDIFF_SEEDS") ? (unsigned)atoi(getenv("SNAPDIFF_SEEDS")) : PROP_SEEDS;
	for (unsigned seed = 1; seed <= seeds; seed++) {
		struct rng r = { 0x9e3779b97f4a7c15ULL * seed + 12345 };
		g_name = 0;
		char chain[KILN_DIGEST_MAX], tag[64];
		snprintf(tag, sizeof(tag), "prop-%u", seed);
		make_chain(tag, chain);
		struct kiln_snap *s = NULL;
		snprintf(tag, sizeof(tag), "prop-base-%u", seed);
		assert_int_equal(kiln_snap_prepare(d->sn, NULL, tag, 0, &s, &err), 0);
		random_base(&r, kiln_snap_rootfs(s));
		/* the reference: the parent as a plain copy, then only layers */
		char *ref = kiln_xasprintf("%s/ref-%d-%u", g_tmp, (int)(d - g_drv), seed);
		if (snap_vfs_copy(kiln_snap_rootfs(s), ref, &err))
			fail_msg("copy: %s", err.msg);
		assert_int_equal(kiln_snap_commit(s, chain, &err), 0);
		kiln_snap_release(s);
		char *layer = kiln_xasprintf("%s/prop.tar", g_tmp);
		for (unsigned step = 1; step <= PROP_STEPS; step++) {
			snprintf(tag, sizeof(tag), "prop-%u-%u", seed, step);
			if (kiln_snap_prepare(d->sn, chain, tag, 0, &s, &err))
				fail_msg("%s: prepare: %s", d->label, err.msg);
			const char *root = kiln_snap_rootfs(s);
			struct kiln_strv mine = { 0 };
			struct kiln_buf log = { 0 };
			kiln_buf_puts(&log, "");
			unsigned n = 1 + pick(&r, 24);
			for (unsigned m = 0; m < n; m++)
				mutate(&r, root, &mine, &log);
			int fd = open(layer, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			assert_true(fd >= 0);
			struct kiln_layer_write_opts o = { .compression = KILN_COMPRESS_NONE, .source_date_epoch = -1 };
			struct kiln_layer_info info;
			if (kiln_snap_write_layer(s, &o, fd, &info, NULL, &err))
				fail_msg("%s: seed %u step %u: write layer: %s\n%s", d->label, seed, step, err.msg, log.data);
			close(fd);
			char next[KILN_DIGEST_MAX];
			assert_int_equal(kiln_snap_chain_id(chain, info.diff_id, next, &err), 0);
			if (kiln_snap_commit(s, next, &err))
				fail_msg("%s: commit: %s", d->label, err.msg);
			kiln_snap_release(s);
			snprintf(chain, sizeof(chain), "%s", next);
			apply_layer_to(ref, layer);
			/* the committed snapshot (what the next step starts from) */
			struct kiln_snap *v = NULL;
			snprintf(tag, sizeof(tag), "propview-%u-%u", seed, step);
			assert_int_equal(kiln_snap_view(d->sn, chain, tag, &v, &err), 0);
			char *diff = tree_diff(kiln_snap_rootfs(v), ref);
			kiln_snap_release(v);
			if (diff)
				fail_msg("%s: seed %u step %u: the layers do not give the snapshot:\n%s"
					 "--- changes made:\n%s", d->label, seed, step, diff, log.data);
			kiln_strv_free(&mine);
			free(kiln_buf_steal(&log));
		}
		assert_int_equal(kiln_rm_rf(ref, &err), 0);
		free(ref);
		free(layer);
	}
}

/* ------------------------------------------------------------ setup */

static int setup(void **state)
{
	(void)state;
	struct kiln_err err = { 0 };
	for (int i = 0; i < ND; i++) {
		struct drv *d = &g_drv[i];
		bool on_btrfs = i == D_BTRFS || i == D_VFS_BTRFS;
		if ((on_btrfs && !g_btrfs[0]) || (i == D_OVERLAY && !g_root))
			continue;
		snprintf(d->dir, sizeof(d->dir), "%s/snaps-%d", on_btrfs ? g_btrfs : g_tmp, i);
		if (kiln_snap_open(d->dir, d->name, &d->sn, &err)) {
			fprintf(stderr, "%s: not available: %s\n", d->label, err.msg);
			continue;
		}
		d->available = true;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < ND; i++) {
		kiln_snap_close(g_drv[i].sn);
		g_drv[i].sn = NULL;
	}
	return 0;
}

static void setup_btrfs(void)
{
	if (!g_root || sh("command -v mkfs.btrfs >/dev/null") != 0)
		return;
	char img[300], mnt[300];
	snprintf(img, sizeof(img), "%s/btrfs.img", g_tmp);
	snprintf(mnt, sizeof(mnt), "%s/btrfs", g_tmp);
	if (mkdir(mnt, 0700))
		return;
	if (sh("truncate -s 300M '%s' && mkfs.btrfs -q -f '%s' >/dev/null 2>&1 && "
	       "mount -t btrfs -o loop '%s' '%s'", img, img, img, mnt) == 0)
		snprintf(g_btrfs, sizeof(g_btrfs), "%s", mnt);
	else
		fprintf(stderr, "test_snapdiff: no btrfs (loop mount failed); btrfs tests skipped\n");
}

static void cleanup_all(void)
{
	if (g_btrfs[0]) {
		if (umount2(g_btrfs, 0))
			umount2(g_btrfs, MNT_DETACH);
		char img[PATH_MAX + 16];
		snprintf(img, sizeof(img), "%s/btrfs.img", g_tmp);
		sh("losetup -j '%s' | cut -d: -f1 | while read -r l; do losetup -d \"$l\"; done", img);
	}
	sh("grep -o ' %s[^ ]*' /proc/self/mountinfo | sort -r | "
	   "while read -r m; do umount -l \"$m\"; done 2>/dev/null", g_tmp);
	struct kiln_err err;
	kiln_rm_rf(g_tmp, &err);
}

#define PER_DRIVER(fn) \
	cmocka_unit_test_prestate(fn, &g_drv[D_BTRFS]), \
	cmocka_unit_test_prestate(fn, &g_drv[D_OVERLAY]), \
	cmocka_unit_test_prestate(fn, &g_drv[D_VFS]), \
	cmocka_unit_test_prestate(fn, &g_drv[D_VFS_BTRFS])

int main(void)
{
	g_root = geteuid() == 0;
	if (g_root && (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))) {
		fprintf(stderr, "test_snapdiff: no private mount namespace (%s); vfs only\n", strerror(errno));
		g_root = false;
	}
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/kiln-snapdiff.XXXXXX");
	if (!mkdtemp(g_tmp)) {
		perror("mkdtemp");
		return 1;
	}
	setup_btrfs();
	const struct CMUnitTest tests[] = {
		PER_DRIVER(test_rewrites),
		PER_DRIVER(test_rewrite_at_once),
		PER_DRIVER(test_vfs_record),
		PER_DRIVER(test_proofs),
		PER_DRIVER(test_recreated_dir_xattrs),
		cmocka_unit_test(test_unreadable),
		PER_DRIVER(test_property),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	cleanup_all();
	return rc;
}
