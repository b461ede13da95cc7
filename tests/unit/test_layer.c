/* Unit tests: layers/layer — the deterministic writer and the safe extractor,
 * including a hostile-tar corpus generated here with libarchive. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <grp.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/layer.h"

/* ------------------------------------------------------------------ fixtures */

static char *g_base;     /* a private temp dir: canary, hostetc/, root/ */

static char *pjoin(const char *a, const char *b)
{
	return kiln_xasprintf("%s/%s", a, b);
}

static void put_file(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static char *get_file(const char *path)
{
	char *out = NULL;
	size_t len = 0;
	struct kiln_err err = {0};
	if (kiln_read_file(path, 0, &out, &len, &err) < 0)
		return NULL;
	char *s = kiln_xstrndup(out, len);   /* kiln_read_file leaves an empty result unterminated */
	free(out);
	return s;
}

static void rm_tree(const char *path)
{
	/* rm copes with trees deeper than our fd limit */
	char *cmd = kiln_xasprintf("rm -rf '%s'", path);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

static int g_fds_at_start;

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int setup(void **state)
{
	(void)state;
	g_fds_at_start = count_fds();
	char tmpl[] = "/tmp/kiln-test-layer-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	g_base = kiln_xstrdup(tmpl);
	char *p = pjoin(g_base, "canary");
	put_file(p, "canary", 0644);
	free(p);
	p = pjoin(g_base, "hostetc");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = pjoin(g_base, "hostetc/passwd");
	put_file(p, "root:x:0:0::/root:/bin/sh\n", 0644);
	free(p);
	p = pjoin(g_base, "hostetc/shadow");
	put_file(p, "root:*:1::::::\n", 0600);
	free(p);
	p = pjoin(g_base, "root");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rm_tree(g_base);
	free(g_base);
	g_base = NULL;
	return 0;
}

/* Fresh empty directory under base; returns its path. */
static char *fresh_dir(const char *name)
{
	char *p = pjoin(g_base, name);
	rm_tree(p);
	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

static int open_dir(const char *p)
{
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* The outside of the target root: exactly canary, hostetc/{passwd,shadow},
 * root, src, dst (when present), with the original contents and modes. */
static void assert_outside_unchanged(void)
{
	DIR *d = opendir(g_base);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "canary") || !strcmp(n, "hostetc") ||
		    !strcmp(n, "root") || !strcmp(n, "src") || !strcmp(n, "dst") || !strcmp(n, "blob"))
			continue;
		fail_msg("unexpected entry outside the root: %s", n);
	}
	closedir(d);
	char *p = pjoin(g_base, "canary");
	char *s = get_file(p);
	assert_non_null(s);
	assert_string_equal(s, "canary");
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_nlink, 1);
	free(s);
	free(p);
	p = pjoin(g_base, "hostetc");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0755);
	d = opendir(p);
	assert_non_null(d);
	int n = 0;
	while ((de = readdir(d)))
		n++;
	closedir(d);
	assert_int_equal(n, 4);
	free(p);
	p = pjoin(g_base, "hostetc/passwd");
	s = get_file(p);
	assert_string_equal(s, "root:x:0:0::/root:/bin/sh\n");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_mode & 07777, 0644);
	free(s);
	free(p);
	p = pjoin(g_base, "hostetc/shadow");
	s = get_file(p);
	assert_string_equal(s, "root:*:1::::::\n");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_mode & 07777, 0600);
	free(s);
	free(p);
	/* and next to the base dir (for ../../x) */
	char *up = kiln_xasprintf("%s/../kiln-escape-%d", g_base, (int)getpid());
	assert_int_equal(access(up, F_OK), -1);
	free(up);
	assert_int_equal(access("/etc/kiln-escape-test", F_OK), -1);
}

/* ------------------------------------------------------------------ tar generation */

struct membuf {
	char *data;
	size_t len, cap;
};

static la_ssize_t mem_write(struct archive *a, void *ud, const void *buf, size_t n)
{
	(void)a;
	struct membuf *m = ud;
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->data = kiln_xrealloc(m->data, m->cap);
	}
	memcpy(m->data + m->len, buf, n);
	m->len += n;
	return (la_ssize_t)n;
}

struct hent {
	char type;              /* f d l h c b p */
	const char *name;
	const char *link;       /* symlink target or hard link target */
	const char *data;
	mode_t mode;
	unsigned rmaj, rmin;
};

static void make_tar(const struct hent *v, size_t n, struct membuf *out)
{
	memset(out, 0, sizeof *out);
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	archive_write_set_bytes_in_last_block(a, 1);
	assert_int_equal(archive_write_open2(a, out, NULL, mem_write, NULL, NULL), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, v[i].name);
		archive_entry_set_mtime(e, 1000000, 0);
		mode_t perm = v[i].mode ? v[i].mode : 0644;
		switch (v[i].type) {
		case 'f':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, v[i].data ? (la_int64_t)strlen(v[i].data) : 0);
			break;
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			perm = v[i].mode ? v[i].mode : 0755;
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, v[i].link);
			perm = 0777;
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, v[i].link);
			archive_entry_set_size(e, 0);
			break;
		case 'c':
		case 'b':
			archive_entry_set_filetype(e, v[i].type == 'c' ? AE_IFCHR : AE_IFBLK);
			archive_entry_set_rdevmajor(e, v[i].rmaj);
			archive_entry_set_rdevminor(e, v[i].rmin);
			break;
		case 'p':
			archive_entry_set_filetype(e, AE_IFIFO);
			break;
		}
		archive_entry_set_perm(e, perm);
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (v[i].type == 'f' && v[i].data && *v[i].data)
			assert_int_equal(archive_write_data(a, v[i].data, strlen(v[i].data)),
					 (la_ssize_t)strlen(v[i].data));
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static int mem_fd(const void *data, size_t len)
{
	int fd = memfd_create("layer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, len), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* Apply a generated tar to root (fresh unless keep) → return code. */
static int apply_tar(const struct hent *v, size_t n, const struct kiln_layer_apply_opts *o,
		     struct kiln_err *err)
{
	struct membuf m;
	make_tar(v, n, &m);
	int fd = mem_fd(m.data, m.len);
	char *root = pjoin(g_base, "root");
	int rfd = open_dir(root);
	int rc = kiln_layer_apply(rfd, fd, o, NULL, err);
	close(rfd);
	close(fd);
	free(root);
	free(m.data);
	return rc;
}

static char *reset_root(void)
{
	return fresh_dir("root");
}

static char *in_root(const char *rel)
{
	return kiln_xasprintf("%s/root/%s", g_base, rel);
}

static const struct kiln_layer_apply_opts OPTS = { .whiteouts = true };

/* ------------------------------------------------------------------ writer helpers */

struct rentry {
	char name[4200];
	mode_t type;
	mode_t perm;
	char link[512];
	char hardlink[512];
	int64_t size;
	int64_t mtime;
	int64_t uid, gid;
	int nxattr;
	char xattrs[256];
	bool has_uname;
};

/* Read a layer blob from fd into an entry list. */
static size_t read_layer(int fd, struct rentry **out)
{
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct archive *a = archive_read_new();
	kiln_layer_read_filters(a);
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_fd(a, fd, 65536), ARCHIVE_OK);
	struct rentry *v = NULL;
	size_t n = 0;
	struct archive_entry *e;
	int r;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		v = kiln_xrealloc(v, (n + 1) * sizeof *v);
		struct rentry *x = &v[n++];
		memset(x, 0, sizeof *x);
		/* in the C locale a UTF-8 pax name has no multibyte form: use the UTF-8 one */
		const char *nm = archive_entry_pathname(e) ? archive_entry_pathname(e) : archive_entry_pathname_utf8(e);
		assert_non_null(nm);
		snprintf(x->name, sizeof x->name, "%s", nm);
		x->type = archive_entry_filetype(e);
		x->perm = archive_entry_perm(e);
		if (archive_entry_symlink(e))
			snprintf(x->link, sizeof x->link, "%s", archive_entry_symlink(e));
		if (archive_entry_hardlink(e))
			snprintf(x->hardlink, sizeof x->hardlink, "%s", archive_entry_hardlink(e));
		x->size = archive_entry_size(e);
		x->mtime = archive_entry_mtime(e);
		x->uid = archive_entry_uid(e);
		x->gid = archive_entry_gid(e);
		x->has_uname = archive_entry_uname(e) && archive_entry_uname(e)[0];
		x->nxattr = archive_entry_xattr_reset(e);
		const char *xn;
		const void *xv;
		size_t xs;
		while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
			size_t l = strlen(x->xattrs);
			snprintf(x->xattrs + l, sizeof x->xattrs - l, "%s=%zu;", xn, xs);
		}
		assert_false(archive_entry_atime_is_set(e));
		assert_false(archive_entry_ctime_is_set(e));
	}
	assert_int_equal(r, ARCHIVE_EOF);
	archive_read_free(a);
	*out = v;
	return n;
}

static int tmp_blob(void)
{
	int fd = memfd_create("blob", MFD_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static int write_layer(int rootfd, const struct kiln_changes *ch, enum kiln_compression comp, int64_t sde,
		       struct kiln_layer_info *info)
{
	struct kiln_layer_write_opts o = { .compression = comp, .source_date_epoch = sde };
	int fd = tmp_blob();
	struct kiln_err err = {0};
	int rc = kiln_layer_write(rootfd, ch, &o, fd, info, &err);
	if (rc < 0)
		fail_msg("kiln_layer_write: %s", err.msg);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, info->size);
	return fd;
}

static size_t find_entry(struct rentry *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return i;
	fail_msg("entry %s not in the layer", name);
	return (size_t)-1;
}

static bool has_entry(struct rentry *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return true;
	return false;
}

/* A capability blob: VFS_CAP_REVISION_2, cap_net_bind_service permitted+effective. */
static const unsigned char CAPBLOB[20] = {
	0x01, 0x00, 0x00, 0x02,  0x00, 0x04, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
};

static char g_longname[241];
static char g_longpath[700];

/* A source tree with every kind of file. */
static char *make_src_tree(void)
{
	char *src = fresh_dir("src");
	char *p;
#define P(rel) (free(p), p = pjoin(src, rel))
	p = NULL;
	P("etc");
	assert_int_equal(mkdir(p, 0755), 0);
	P("etc/hosts");
	put_file(p, "127.0.0.1 localhost\n", 0644);
	P("bin");
	assert_int_equal(mkdir(p, 0750), 0);
	P("bin/tool");
	put_file(p, "#!/bin/sh\necho tool\n", 0755);
	assert_int_equal(chown(p, 1234, 5678), 0);
	P("bin/bigid");   /* ids beyond ustar's 7 octal digits need pax records */
	put_file(p, "big ids", 0640);
	assert_int_equal(chown(p, 3000000, 4000000), 0);
	P("bin/suid");
	put_file(p, "suid", 0755);
	assert_int_equal(chmod(p, 04755), 0);
	P("bin/link1");
	put_file(p, "hardlinked content\n", 0644);
	char *l2 = pjoin(src, "bin/link2");
	assert_int_equal(link(p, l2), 0);
	free(l2);
	l2 = pjoin(src, "etc/link3");
	assert_int_equal(link(p, l2), 0);
	free(l2);
	P("bin/sym");
	assert_int_equal(symlink("tool", p), 0);
	P("bin/abs");
	assert_int_equal(symlink("/etc/hosts", p), 0);
	P("bin/fifo");
	assert_int_equal(mkfifo(p, 0640), 0);
	P("bin/null");
	assert_int_equal(mknod(p, S_IFCHR | 0666, makedev(1, 3)), 0);
	P("bin/xattr");
	put_file(p, "with xattrs", 0644);
	assert_int_equal(setxattr(p, "user.kiln", "hello", 5, 0), 0);
	assert_int_equal(setxattr(p, "security.capability", CAPBLOB, sizeof CAPBLOB, 0), 0);
	P("empty");
	put_file(p, "", 0600);
	P("big");
	{
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		char buf[4096];
		for (int i = 0; i < 300; i++) {
			memset(buf, 'a' + (i % 26), sizeof buf);
			assert_int_equal(kiln_write_all(fd, buf, sizeof buf), 0);
		}
		close(fd);
	}
	P("utf8-\xc3\xa9t\xc3\xa9");
	put_file(p, "utf8", 0644);
	P("bad-\xff\xfe");
	put_file(p, "latin", 0644);
	memset(g_longname, 'n', 240);
	g_longname[240] = '\0';
	P(g_longname);
	put_file(p, "long name", 0644);
	/* a path longer than 255 (needs a pax path record) */
	snprintf(g_longpath, sizeof g_longpath, "deep");
	P("deep");
	assert_int_equal(mkdir(p, 0755), 0);
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(g_longpath);
		snprintf(g_longpath + l, sizeof g_longpath - l, "/%.*s%d", 100, g_longname, i);
		P(g_longpath);
		assert_int_equal(mkdir(p, 0755), 0);
	}
	{
		size_t l = strlen(g_longpath);
		snprintf(g_longpath + l, sizeof g_longpath - l, "/file");
	}
	P(g_longpath);
	put_file(p, "deep file", 0644);
#undef P
	free(p);
	return src;
}

static void all_changes(struct kiln_changes *ch)
{
	const char *paths[] = { "bin/tool", "bin/bigid", "bin/suid", "bin/link1", "bin/link2", "etc/link3", "bin/sym",
				"bin/abs", "bin/fifo", "bin/null", "bin/xattr", "empty", "big", "etc/hosts",
				"bin", "etc", g_longname, g_longpath, "utf8-\xc3\xa9t\xc3\xa9", "bad-\xff\xfe" };
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
		kiln_changes_add(ch, paths[i], KILN_CHANGE_ADD);
}

/* ------------------------------------------------------------------ writer tests */

static void test_compression_names(void **state)
{
	(void)state;
	enum kiln_compression c;
	struct kiln_err err = {0};
	assert_int_equal(kiln_compression_parse("gzip", &c, &err), 0);
	assert_int_equal(c, KILN_COMPRESS_GZIP);
	assert_int_equal(kiln_compression_parse("zstd", &c, &err), 0);
	assert_int_equal(c, KILN_COMPRESS_ZSTD);
	assert_int_equal(kiln_compression_parse("none", &c, &err), 0);
	assert_int_equal(c, KILN_COMPRESS_NONE);
	assert_int_equal(kiln_compression_parse("lz4", &c, &err), -1);
	assert_non_null(strstr(err.msg, "lz4"));
	assert_string_equal(kiln_compression_media_type(KILN_COMPRESS_GZIP), KILN_MT_LAYER_GZIP);
	assert_string_equal(kiln_compression_media_type(KILN_COMPRESS_ZSTD), KILN_MT_LAYER_ZSTD);
	assert_string_equal(kiln_compression_media_type(KILN_COMPRESS_NONE), KILN_MT_LAYER_TAR);
}

static void test_empty_layer(void **state)
{
	(void)state;
	char *src = fresh_dir("src");
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	struct kiln_layer_info info;
	int fd = write_layer(rfd, &ch, KILN_COMPRESS_NONE, -1, &info);
	assert_string_equal(info.diff_id, KILN_EMPTY_LAYER_DIFF_ID);
	assert_string_equal(info.digest, KILN_EMPTY_LAYER_DIFF_ID);
	assert_int_equal(info.size, 1024);
	assert_string_equal(info.media_type, KILN_MT_LAYER_TAR);
	char buf[1024];
	assert_int_equal(pread(fd, buf, sizeof buf, 0), 1024);
	for (int i = 0; i < 1024; i++)
		assert_int_equal(buf[i], 0);
	close(fd);
	for (int c = KILN_COMPRESS_GZIP; c <= KILN_COMPRESS_ZSTD; c++) {
		fd = write_layer(rfd, &ch, (enum kiln_compression)c, -1, &info);
		assert_string_equal(info.diff_id, KILN_EMPTY_LAYER_DIFF_ID);
		assert_string_not_equal(info.digest, KILN_EMPTY_LAYER_DIFF_ID);
		unsigned char hdr[10];
		assert_int_equal(pread(fd, hdr, sizeof hdr, 0), 10);
		if (c == KILN_COMPRESS_GZIP) {
			assert_int_equal(hdr[0], 0x1f);
			assert_int_equal(hdr[1], 0x8b);
			/* no timestamp */
			assert_int_equal(hdr[4] | hdr[5] | hdr[6] | hdr[7], 0);
			assert_string_equal(info.media_type, KILN_MT_LAYER_GZIP);
		} else {
			assert_int_equal(hdr[0], 0x28);
			assert_int_equal(hdr[1], 0xb5);
			assert_int_equal(hdr[2], 0x2f);
			assert_int_equal(hdr[3], 0xfd);
			assert_string_equal(info.media_type, KILN_MT_LAYER_ZSTD);
		}
		/* and it applies, giving the same diff_id */
		char *dst = fresh_dir("dst");
		int dfd = open_dir(dst);
		char diff[KILN_DIGEST_MAX];
		struct kiln_err err = {0};
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		assert_int_equal(kiln_layer_apply(dfd, fd, &OPTS, diff, &err), 0);
		assert_string_equal(diff, KILN_EMPTY_LAYER_DIFF_ID);
		close(dfd);
		free(dst);
		close(fd);
	}
	close(rfd);
	free(src);
}

static void test_writer_entries(void **state)
{
	(void)state;
	char *src = make_src_tree();
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	all_changes(&ch);
	struct kiln_layer_info info;
	int fd = write_layer(rfd, &ch, KILN_COMPRESS_GZIP, -1, &info);
	struct rentry *v;
	size_t n = read_layer(fd, &v);

	/* sorted: every directory right before its contents, bytewise per component */
	for (size_t i = 1; i < n; i++) {
		if (strcmp(v[i - 1].name, v[i].name) >= 0) {
			/* allowed only when the earlier one is a directory prefix ("a/" < "a-b") */
			size_t l = strlen(v[i - 1].name);
			assert_true(v[i - 1].type == AE_IFDIR && strncmp(v[i].name, v[i - 1].name, l) == 0);
		}
	}
	for (size_t i = 0; i < n; i++) {
		/* numeric ids only */
		assert_false(v[i].has_uname);
		/* every parent directory comes earlier */
		char parent[4200];
		snprintf(parent, sizeof parent, "%s", v[i].name);
		size_t l = strlen(parent);
		if (l && parent[l - 1] == '/')
			parent[--l] = '\0';
		char *s = strrchr(parent, '/');
		if (s) {
			s[1] = '\0';
			size_t j = find_entry(v, n, parent);
			assert_true(j < i);
		}
	}
	size_t i = find_entry(v, n, "bin/");
	assert_int_equal(v[i].type, AE_IFDIR);
	assert_int_equal(v[i].perm, 0750);
	i = find_entry(v, n, "bin/tool");
	assert_int_equal(v[i].type, AE_IFREG);
	assert_int_equal(v[i].perm, 0755);
	assert_int_equal(v[i].uid, 1234);
	assert_int_equal(v[i].gid, 5678);
	assert_int_equal(v[i].size, 20);
	i = find_entry(v, n, "bin/suid");
	assert_int_equal(v[i].perm, 04755);
	/* hard links: the first path (in sorted order) carries the data */
	i = find_entry(v, n, "bin/link1");
	assert_string_equal(v[i].hardlink, "");
	assert_int_equal(v[i].size, 19);
	i = find_entry(v, n, "bin/link2");
	assert_string_equal(v[i].hardlink, "bin/link1");
	i = find_entry(v, n, "etc/link3");
	assert_string_equal(v[i].hardlink, "bin/link1");
	i = find_entry(v, n, "bin/sym");
	assert_int_equal(v[i].type, AE_IFLNK);
	assert_string_equal(v[i].link, "tool");
	i = find_entry(v, n, "bin/abs");
	assert_string_equal(v[i].link, "/etc/hosts");
	i = find_entry(v, n, "bin/fifo");
	assert_int_equal(v[i].type, AE_IFIFO);
	i = find_entry(v, n, "bin/null");
	assert_int_equal(v[i].type, AE_IFCHR);
	i = find_entry(v, n, "bin/xattr");
	assert_string_equal(v[i].xattrs, "security.capability=20;user.kiln=5;");
	i = find_entry(v, n, "big");
	assert_int_equal(v[i].size, 300 * 4096);
	i = find_entry(v, n, g_longname);
	assert_int_equal(v[i].size, 9);
	i = find_entry(v, n, g_longpath);
	assert_int_equal(v[i].size, 9);
	assert_true(has_entry(v, n, "deep/"));
	free(v);
	close(fd);

	/* the raw tar has xattrs once (SCHILY only, no LIBARCHIVE.xattr), no atime/ctime */
	fd = write_layer(rfd, &ch, KILN_COMPRESS_NONE, -1, &info);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *raw = kiln_xmalloc((size_t)st.st_size + 1);
	assert_int_equal(pread(fd, raw, (size_t)st.st_size, 0), st.st_size);
	raw[st.st_size] = '\0';
	assert_null(memmem(raw, (size_t)st.st_size, "LIBARCHIVE.xattr", 16));
	assert_non_null(memmem(raw, (size_t)st.st_size, "SCHILY.xattr.user.kiln", 22));
	assert_null(memmem(raw, (size_t)st.st_size, "atime=", 6));
	assert_null(memmem(raw, (size_t)st.st_size, "ctime=", 6));
	/* ends with two zero blocks, no 10240 padding beyond */
	assert_int_equal(st.st_size % 512, 0);
	free(raw);
	close(fd);
	kiln_changes_free(&ch);
	close(rfd);
	free(src);
}

static void test_writer_deterministic(void **state)
{
	(void)state;
	char *src = make_src_tree();
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	all_changes(&ch);
	struct kiln_changes rev = {0};   /* same set, reverse order */
	for (size_t i = ch.n; i-- > 0;)
		kiln_changes_add(&rev, ch.v[i].path, ch.v[i].kind);
	struct kiln_layer_info a, b, c;
	for (int comp = KILN_COMPRESS_GZIP; comp <= KILN_COMPRESS_NONE; comp++) {
		close(write_layer(rfd, &ch, (enum kiln_compression)comp, -1, &a));
		close(write_layer(rfd, &rev, (enum kiln_compression)comp, -1, &b));
		assert_string_equal(a.digest, b.digest);
		assert_string_equal(a.diff_id, b.diff_id);
		assert_int_equal(a.size, b.size);
		if (comp == KILN_COMPRESS_GZIP)
			c = a;
		else
			assert_string_equal(a.diff_id, c.diff_id);   /* diff_id independent of compression */
	}
	/* compression levels: same diff_id, other bytes; bad levels refused */
	for (int comp = KILN_COMPRESS_GZIP; comp <= KILN_COMPRESS_ZSTD; comp++) {
		struct kiln_layer_info l1, l9;
		struct kiln_layer_write_opts lo = { .compression = (enum kiln_compression)comp,
						    .source_date_epoch = -1, .level = 1 };
		struct kiln_err err = {0};
		int f1 = tmp_blob(), f9 = tmp_blob();
		assert_int_equal(kiln_layer_write(rfd, &ch, &lo, f1, &l1, &err), 0);
		lo.level = 9;
		assert_int_equal(kiln_layer_write(rfd, &ch, &lo, f9, &l9, &err), 0);
		assert_string_equal(l1.diff_id, c.diff_id);
		assert_string_equal(l9.diff_id, c.diff_id);
		assert_string_not_equal(l1.digest, l9.digest);
		assert_true(l9.size <= l1.size);
		char dd[KILN_DIGEST_MAX];
		char *dst = fresh_dir("dst");
		int dfd = open_dir(dst);
		assert_int_equal(lseek(f1, 0, SEEK_SET), 0);
		assert_int_equal(kiln_layer_apply(dfd, f1, &OPTS, dd, &err), 0);
		assert_string_equal(dd, c.diff_id);
		close(dfd);
		free(dst);
		close(f1);
		close(f9);
		lo.level = comp == KILN_COMPRESS_GZIP ? 10 : 20;
		f1 = tmp_blob();
		assert_int_equal(kiln_layer_write(rfd, &ch, &lo, f1, &l1, &err), -1);
		assert_non_null(strstr(err.msg, "level"));
		close(f1);
	}
	/* a different tree gives a different digest (the test can fail) */
	char *p = pjoin(src, "etc/hosts");
	put_file(p, "127.0.0.2 localhost\n", 0644);
	close(write_layer(rfd, &ch, KILN_COMPRESS_GZIP, -1, &b));
	assert_string_not_equal(b.diff_id, c.diff_id);

	/* SOURCE_DATE_EPOCH clamps mtimes */
	struct utimbuf;
	struct timespec old[2] = { { 500, 0 }, { 500, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, p, old, AT_SYMLINK_NOFOLLOW), 0);
	free(p);
	int fd = write_layer(rfd, &ch, KILN_COMPRESS_GZIP, 1000, &a);
	struct rentry *v;
	size_t n = read_layer(fd, &v);
	bool saw_old = false;
	for (size_t i = 0; i < n; i++) {
		assert_true(v[i].mtime <= 1000);
		if (!strcmp(v[i].name, "etc/hosts")) {
			assert_int_equal(v[i].mtime, 500);
			saw_old = true;
		}
	}
	assert_true(saw_old);
	free(v);
	close(fd);
	/* without clamping the mtimes are the tree's (now) */
	fd = write_layer(rfd, &ch, KILN_COMPRESS_GZIP, -1, &b);
	n = read_layer(fd, &v);
	assert_true(v[find_entry(v, n, "big")].mtime > 1000000000);
	free(v);
	close(fd);
	kiln_changes_free(&ch);
	kiln_changes_free(&rev);
	close(rfd);
	free(src);
}

static void test_writer_whiteouts(void **state)
{
	(void)state;
	char *src = fresh_dir("src");
	char *p = pjoin(src, "a");
	assert_int_equal(mkdir(p, 0711), 0);
	free(p);
	p = pjoin(src, "a/b");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = pjoin(src, "a/b/new");
	put_file(p, "new", 0644);
	free(p);
	p = pjoin(src, "a/b/-first");
	put_file(p, "dash", 0644);
	free(p);
	p = pjoin(src, "o");
	assert_int_equal(mkdir(p, 0700), 0);
	free(p);
	p = pjoin(src, "o/kept");
	put_file(p, "x", 0644);
	free(p);
	p = pjoin(src, "a-b");
	put_file(p, "sorted after a/", 0644);
	free(p);
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	kiln_changes_add(&ch, "a/b/gone", KILN_CHANGE_DELETE);
	kiln_changes_add(&ch, "a/b/new", KILN_CHANGE_ADD);
	kiln_changes_add(&ch, "a/b/-first", KILN_CHANGE_ADD);
	kiln_changes_add(&ch, "top", KILN_CHANGE_DELETE);
	kiln_changes_add(&ch, "o", KILN_CHANGE_OPAQUE);
	kiln_changes_add(&ch, "o/kept", KILN_CHANGE_ADD);
	kiln_changes_add(&ch, "a-b", KILN_CHANGE_MODIFY);
	kiln_changes_add(&ch, "a/b/new", KILN_CHANGE_ADD);   /* duplicate */
	kiln_changes_add(&ch, "a/b/new", KILN_CHANGE_DELETE); /* written wins over deleted */
	struct kiln_layer_info info;
	int fd = write_layer(rfd, &ch, KILN_COMPRESS_NONE, -1, &info);
	struct rentry *v;
	size_t n = read_layer(fd, &v);
	const char *want[] = { ".wh.top", "a/", "a/b/", "a/b/-first", "a/b/.wh.gone", "a/b/new", "a-b",
			       "o/", "o/.wh..wh..opq", "o/kept" };
	assert_int_equal(n, sizeof want / sizeof *want);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(v[i].name, want[i]);
	assert_int_equal(v[1].perm, 0711);    /* parent header taken from the tree */
	assert_int_equal(v[0].size, 0);
	assert_int_equal(v[0].type, AE_IFREG);
	free(v);
	close(fd);

	/* bad change paths are refused */
	struct kiln_changes bad = {0};
	kiln_changes_add(&bad, "a/../etc", KILN_CHANGE_ADD);
	struct kiln_err err = {0};
	struct kiln_layer_write_opts o = { .compression = KILN_COMPRESS_NONE, .source_date_epoch = -1 };
	fd = tmp_blob();
	assert_int_equal(kiln_layer_write(rfd, &bad, &o, fd, &info, &err), -1);
	close(fd);
	kiln_changes_free(&bad);
	kiln_changes_add(&bad, "/etc", KILN_CHANGE_ADD);
	fd = tmp_blob();
	assert_int_equal(kiln_layer_write(rfd, &bad, &o, fd, &info, &err), -1);
	close(fd);
	kiln_changes_free(&bad);
	/* a real file named .wh.* cannot be stored (it would read as a whiteout) */
	p = pjoin(src, "a/.wh.x");
	put_file(p, "", 0644);
	free(p);
	kiln_changes_add(&bad, "a/.wh.x", KILN_CHANGE_ADD);
	fd = tmp_blob();
	assert_int_equal(kiln_layer_write(rfd, &bad, &o, fd, &info, &err), -1);
	assert_non_null(strstr(err.msg, "whiteout"));
	close(fd);
	kiln_changes_free(&bad);
	/* the writer never follows a symlink out of the tree */
	p = pjoin(src, "esc");
	char *hostetc = pjoin(g_base, "hostetc");
	assert_int_equal(symlink(hostetc, p), 0);
	free(hostetc);
	free(p);
	kiln_changes_add(&bad, "esc/passwd", KILN_CHANGE_ADD);
	fd = tmp_blob();
	assert_int_equal(kiln_layer_write(rfd, &bad, &o, fd, &info, &err), -1);
	close(fd);
	kiln_changes_free(&bad);

	kiln_changes_free(&ch);
	close(rfd);
	free(src);
}

/* ------------------------------------------------------------------ round trip */

static void assert_same_inode_meta(const char *a, const char *b, bool check_mtime)
{
	struct stat sa, sb;
	assert_int_equal(lstat(a, &sa), 0);
	assert_int_equal(lstat(b, &sb), 0);
	assert_int_equal(sa.st_mode, sb.st_mode);
	assert_int_equal(sa.st_uid, sb.st_uid);
	assert_int_equal(sa.st_gid, sb.st_gid);
	if (S_ISREG(sa.st_mode))
		assert_int_equal(sa.st_size, sb.st_size);
	if (S_ISCHR(sa.st_mode))
		assert_int_equal(sa.st_rdev, sb.st_rdev);
	if (check_mtime)
		assert_int_equal(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
}

static void test_round_trip(void **state)
{
	(void)state;
	char *src = make_src_tree();
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	all_changes(&ch);
	struct kiln_layer_info info;
	int fd = write_layer(rfd, &ch, KILN_COMPRESS_ZSTD, -1, &info);
	char *dst = fresh_dir("dst");
	int dfd = open_dir(dst);
	struct kiln_layer_apply_opts o = { .whiteouts = true, .keep_owner = true, .allow_devices = true };
	struct kiln_err err = {0};
	char diff[KILN_DIGEST_MAX];
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	if (kiln_layer_apply(dfd, fd, &o, diff, &err) < 0)
		fail_msg("apply: %s", err.msg);
	assert_string_equal(diff, info.diff_id);
	/* apply_ex reports the blob as the writer described it, for every compression */
	for (int comp = KILN_COMPRESS_GZIP; comp <= KILN_COMPRESS_NONE; comp++) {
		struct kiln_layer_info wi, ai;
		int bfd = write_layer(rfd, &ch, (enum kiln_compression)comp, -1, &wi);
		assert_int_equal(lseek(bfd, 0, SEEK_SET), 0);
		if (kiln_layer_apply_ex(dfd, bfd, &o, &ai, &err) < 0)
			fail_msg("apply_ex: %s", err.msg);
		assert_string_equal(ai.digest, wi.digest);
		assert_string_equal(ai.diff_id, wi.diff_id);
		assert_int_equal(ai.size, wi.size);
		assert_string_equal(ai.media_type, wi.media_type);
		close(bfd);
	}
	const char *paths[] = { "etc", "etc/hosts", "bin", "bin/tool", "bin/bigid", "bin/suid", "bin/link1", "bin/sym",
				"bin/abs", "bin/fifo", "bin/null", "bin/xattr", "empty", "big", g_longname,
				g_longpath, "utf8-\xc3\xa9t\xc3\xa9", "bad-\xff\xfe" };
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
		char *a = pjoin(src, paths[i]), *b = pjoin(dst, paths[i]);
		assert_same_inode_meta(a, b, true);
		struct stat st;
		assert_int_equal(lstat(a, &st), 0);
		if (S_ISREG(st.st_mode)) {
			char *ca = get_file(a), *cb = get_file(b);
			assert_string_equal(ca, cb);
			free(ca);
			free(cb);
		}
		if (S_ISLNK(st.st_mode)) {
			char la[256] = "", lb[256] = "";
			assert_true(readlink(a, la, sizeof la - 1) > 0);
			assert_true(readlink(b, lb, sizeof lb - 1) > 0);
			assert_string_equal(la, lb);
		}
		free(a);
		free(b);
	}
	/* hard links are links again */
	struct stat s1, s2, s3;
	char *l1 = pjoin(dst, "bin/link1"), *l2 = pjoin(dst, "bin/link2"), *l3 = pjoin(dst, "etc/link3");
	assert_int_equal(lstat(l1, &s1), 0);
	assert_int_equal(lstat(l2, &s2), 0);
	assert_int_equal(lstat(l3, &s3), 0);
	assert_int_equal(s1.st_ino, s2.st_ino);
	assert_int_equal(s1.st_ino, s3.st_ino);
	assert_int_equal(s1.st_nlink, 3);
	free(l1);
	free(l2);
	free(l3);
	/* xattrs, including the file capability */
	char *x = pjoin(dst, "bin/xattr");
	char val[64];
	assert_int_equal(getxattr(x, "user.kiln", val, sizeof val), 5);
	assert_memory_equal(val, "hello", 5);
	assert_int_equal(getxattr(x, "security.capability", val, sizeof val), 20);
	assert_memory_equal(val, CAPBLOB, 20);
	free(x);
	/* without keep_owner: setuid dropped, files owned by us */
	close(dfd);
	rm_tree(dst);
	free(dst);
	dst = fresh_dir("dst");
	dfd = open_dir(dst);
	struct kiln_layer_apply_opts o2 = { .whiteouts = true };
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(kiln_layer_apply(dfd, fd, &o2, NULL, &err), 0);
	char *sp = pjoin(dst, "bin/suid");
	struct stat st;
	assert_int_equal(lstat(sp, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	free(sp);
	sp = pjoin(dst, "bin/tool");
	assert_int_equal(lstat(sp, &st), 0);
	assert_int_equal(st.st_uid, geteuid());
	free(sp);
	sp = pjoin(dst, "bin/xattr");   /* file capabilities are dropped like setuid */
	assert_int_equal(getxattr(sp, "security.capability", val, sizeof val), -1);
	assert_int_equal(getxattr(sp, "user.kiln", val, sizeof val), 5);
	free(sp);
	sp = pjoin(dst, "bin/null");   /* no devices unless allowed */
	assert_int_equal(lstat(sp, &st), -1);
	free(sp);
	close(dfd);
	rm_tree(dst);
	free(dst);
	close(fd);
	kiln_changes_free(&ch);
	close(rfd);
	rm_tree(src);
	free(src);
	assert_outside_unchanged();
}

/* Layers on layers: whiteouts and opaque directories. */
static void test_apply_whiteouts(void **state)
{
	(void)state;
	char *root = reset_root();
	struct kiln_err err = {0};
	const struct hent base[] = {
		{ 'd', "a/", 0, 0, 0, 0, 0 },
		{ 'f', "a/old", 0, "old", 0, 0, 0 },
		{ 'd', "a/sub/", 0, 0, 0, 0, 0 },
		{ 'f', "a/sub/deep", 0, "deep", 0, 0, 0 },
		{ 'f', "gone", 0, "gone", 0, 0, 0 },
		{ 'd', "o/", 0, 0, 0, 0, 0 },
		{ 'f', "o/lower", 0, "lower", 0, 0, 0 },
		{ 'f', "keep", 0, "keep", 0, 0, 0 },
		{ 'd', "o/sub/", 0, 0, 0, 0, 0 },
		{ 'f', "o/sub/lowerfile", 0, "lower", 0, 0, 0 },
		{ 'd', "o/sub/lowerdir/", 0, 0, 0, 0, 0 },
	};
	assert_int_equal(apply_tar(base, sizeof base / sizeof *base, &OPTS, &err), 0);
	const struct hent upper[] = {
		{ 'f', ".wh.gone", 0, "", 0, 0, 0 },
		{ 'd', "a/", 0, 0, 0, 0, 0 },
		{ 'f', "a/.wh.sub", 0, "", 0, 0, 0 },
		{ 'd', "o/", 0, 0, 0, 0, 0 },
		{ 'f', "o/early", 0, "early", 0, 0, 0 },   /* same layer, before the marker: stays */
		{ 'f', "o/sub/x", 0, "x", 0, 0, 0 },       /* ...also deeper, in a lower directory */
		{ 'f', "o/.wh..wh..opq", 0, "", 0, 0, 0 },
		{ 'f', "o/new", 0, "new", 0, 0, 0 },
		{ 'f', "x/.wh.nothing", 0, "", 0, 0, 0 },  /* parent missing: nothing to do */
	};
	if (apply_tar(upper, sizeof upper / sizeof *upper, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *p;
#define EXISTS(rel, yes) do { p = in_root(rel); assert_int_equal(access(p, F_OK) == 0, yes); free(p); } while (0)
	EXISTS("gone", 0);
	EXISTS(".wh.gone", 0);
	EXISTS("a/old", 1);
	EXISTS("a/sub", 0);
	EXISTS("a/.wh.sub", 0);
	EXISTS("o/lower", 0);
	EXISTS("o/early", 1);
	EXISTS("o/sub/x", 1);
	EXISTS("o/sub/lowerfile", 0);
	EXISTS("o/sub/lowerdir", 0);
	EXISTS("o/new", 1);
	EXISTS("o/.wh..wh..opq", 0);
	EXISTS("keep", 1);
	EXISTS("x", 0);
	/* with whiteouts off, .wh. files are plain files */
	struct kiln_layer_apply_opts nw = { .whiteouts = false };
	const struct hent plain[] = { { 'f', ".wh.keep", 0, "x", 0, 0, 0 } };
	assert_int_equal(apply_tar(plain, 1, &nw, &err), 0);
	EXISTS(".wh.keep", 1);
	EXISTS("keep", 1);
	/* opaque at the root empties the lower root (entries of this layer before it stay) */
	const struct hent opqroot[] = {
		{ 'f', "first", 0, "1", 0, 0, 0 },
		{ 'f', ".wh..wh..opq", 0, "", 0, 0, 0 },
		{ 'f', "second", 0, "2", 0, 0, 0 },
	};
	assert_int_equal(apply_tar(opqroot, 3, &OPTS, &err), 0);
	EXISTS("keep", 0);
	EXISTS("a", 0);
	EXISTS("first", 1);
	EXISTS("second", 1);
#undef EXISTS
	free(root);
	assert_outside_unchanged();
}

/* ------------------------------------------------------------------ hostile corpus */

static void test_hostile_dotdot(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	free(reset_root());
	char *esc = kiln_xasprintf("../../kiln-escape-%d", (int)getpid());
	const struct hent t1[] = { { 'f', "../x", 0, "evil", 0, 0, 0 } };
	assert_int_equal(apply_tar(t1, 1, &OPTS, &err), -1);
	assert_non_null(strstr(err.msg, ".."));
	const struct hent t2[] = { { 'f', esc, 0, "evil", 0, 0, 0 } };
	assert_int_equal(apply_tar(t2, 1, &OPTS, &err), -1);
	const struct hent t3[] = { { 'f', "a/../../x", 0, "evil", 0, 0, 0 } };
	assert_int_equal(apply_tar(t3, 1, &OPTS, &err), -1);
	const struct hent t4[] = { { 'd', "d/", 0, 0, 0, 0, 0 }, { 'f', "d/../../canary", 0, "evil", 0, 0, 0 } };
	assert_int_equal(apply_tar(t4, 2, &OPTS, &err), -1);
	free(esc);
	assert_outside_unchanged();
}

static void test_hostile_absolute(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	free(reset_root());
	char *abs = kiln_xasprintf("%s/hostetc/passwd", g_base);
	const struct hent t[] = {
		{ 'f', "/etc/kiln-escape-test", 0, "evil", 0, 0, 0 },
		{ 'f', abs, 0, "evil", 0, 0, 0 },
	};
	if (apply_tar(t, 2, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	/* absolute names land inside the root */
	char *p = in_root("etc/kiln-escape-test");
	char *s = get_file(p);
	assert_string_equal(s, "evil");
	free(s);
	free(p);
	p = kiln_xasprintf("%s/root%s", g_base, abs);
	s = get_file(p);
	assert_string_equal(s, "evil");
	free(s);
	free(p);
	free(abs);
	assert_outside_unchanged();
}

static void test_hostile_symlink_parent(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	free(reset_root());
	char *hostetc = pjoin(g_base, "hostetc");
	/* a -> <host etc>, then a/passwd: resolved inside the root (where it dangles) */
	const struct hent t1[] = {
		{ 'l', "a", hostetc, 0, 0, 0, 0 },
		{ 'f', "a/passwd", 0, "evil", 0, 0, 0 },
	};
	assert_int_equal(apply_tar(t1, 2, &OPTS, &err), -1);   /* a dangles inside the root */
	assert_outside_unchanged();
	/* with an etc/ inside the root, a -> /etc then a/passwd writes ROOT/etc/passwd */
	free(reset_root());
	const struct hent t2[] = {
		{ 'd', "etc/", 0, 0, 0, 0, 0 },
		{ 'l', "a", "/etc", 0, 0, 0, 0 },
		{ 'f', "a/kiln-escape-test", 0, "evil", 0, 0, 0 },
	};
	if (apply_tar(t2, 3, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *p = in_root("etc/kiln-escape-test");
	char *s = get_file(p);
	assert_string_equal(s, "evil");
	free(s);
	free(p);
	/* a -> ../../.. then a/x: clamped at the root */
	free(reset_root());
	const struct hent t3[] = {
		{ 'l', "a", "../../..", 0, 0, 0, 0 },
		{ 'f', "a/canary", 0, "evil", 0, 0, 0 },
		{ 'l', "b", "../../../..", 0, 0, 0, 0 },
		{ 'f', "b/hostetc/passwd", 0, "evil", 0, 0, 0 },
	};
	if (apply_tar(t3, 4, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	p = in_root("canary");
	s = get_file(p);
	assert_string_equal(s, "evil");
	free(s);
	free(p);
	p = in_root("hostetc/passwd");
	s = get_file(p);
	assert_string_equal(s, "evil");
	free(s);
	free(p);
	/* a whiteout through a symlink cannot delete outside */
	free(reset_root());
	const struct hent t4[] = {
		{ 'l', "w", g_base, 0, 0, 0, 0 },
		{ 'f', "w/.wh.canary", 0, "", 0, 0, 0 },
		{ 'l', "v", "../..", 0, 0, 0, 0 },
		{ 'f', "v/.wh.canary", 0, "", 0, 0, 0 },
		{ 'f', "v/.wh.hostetc", 0, "", 0, 0, 0 },
		{ 'f', "v/.wh..wh..opq", 0, "", 0, 0, 0 },
	};
	if (apply_tar(t4, 6, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	p = in_root("w");   /* the layer's own entries survive its opaque marker */
	assert_int_equal(faccessat(AT_FDCWD, p, F_OK, AT_SYMLINK_NOFOLLOW), 0);
	free(p);
	free(hostetc);
	assert_outside_unchanged();
}

static void test_hostile_hardlinks(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	free(reset_root());
	char *shadow = kiln_xasprintf("%s/hostetc/shadow", g_base);
	const struct hent t1[] = { { 'h', "h", shadow, 0, 0, 0, 0 } };
	assert_int_equal(apply_tar(t1, 1, &OPTS, &err), -1);
	const struct hent t2[] = { { 'h', "h", "../../canary", 0, 0, 0, 0 } };
	assert_int_equal(apply_tar(t2, 1, &OPTS, &err), -1);
	const struct hent t3[] = { { 'h', "h", "/etc/shadow", 0, 0, 0, 0 } };
	assert_int_equal(apply_tar(t3, 1, &OPTS, &err), -1);
	/* through a symlinked directory: still resolved in the root */
	char *hostetc = pjoin(g_base, "hostetc");
	const struct hent t4[] = {
		{ 'l', "s", hostetc, 0, 0, 0, 0 },
		{ 'h', "h", "s/shadow", 0, 0, 0, 0 },
	};
	assert_int_equal(apply_tar(t4, 2, &OPTS, &err), -1);
	/* a link to a symlink that points outside links the symlink itself */
	free(reset_root());
	const struct hent t5[] = {
		{ 'l', "l", shadow, 0, 0, 0, 0 },
		{ 'h', "h", "l", 0, 0, 0, 0 },
		{ 'f', "f", 0, "data", 0, 0, 0 },
		{ 'h', "g", "f", 0, 0, 0, 0 },
		{ 'd', "dir/", 0, 0, 0, 0, 0 },
	};
	if (apply_tar(t5, 5, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *p = in_root("h");
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	free(p);
	p = in_root("g");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	free(p);
	/* hard link to a directory is refused */
	const struct hent t6[] = { { 'h', "hd", "dir", 0, 0, 0, 0 } };
	assert_int_equal(apply_tar(t6, 1, &OPTS, &err), -1);
	free(hostetc);
	free(shadow);
	assert_outside_unchanged();
}

static void test_hostile_dir_then_symlink(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	free(reset_root());
	char *hostetc = pjoin(g_base, "hostetc");
	/* CVE-2021-31566: directory d (mode 0700, old mtime), then symlink d -> host dir,
	 * then a file beneath d; the deferred directory metadata must not reach the host */
	const struct hent t1[] = {
		{ 'd', "d/", 0, 0, 0700, 0, 0 },
		{ 'l', "d", hostetc, 0, 0, 0, 0 },
		{ 'f', "d/x", 0, "evil", 0, 0, 0 },
	};
	assert_int_equal(apply_tar(t1, 3, &OPTS, &err), -1);   /* d dangles inside the root */
	assert_outside_unchanged();
	struct stat before, after;
	assert_int_equal(stat(hostetc, &before), 0);
	free(reset_root());
	const struct hent t2[] = {
		{ 'd', "d/", 0, 0, 0700, 0, 0 },
		{ 'l', "d", "../../..", 0, 0, 0, 0 },
		{ 'd', "d/", 0, 0, 0700, 0, 0 },    /* a directory entry through the symlink name */
		{ 'f', "d/y", 0, "evil", 0, 0, 0 },
	};
	if (apply_tar(t2, 4, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *dy = in_root("d/y");   /* the second d/ replaced the symlink with a directory */
	struct stat dst;
	assert_int_equal(lstat(dy, &dst), 0);
	free(dy);
	dy = in_root("d");
	assert_int_equal(lstat(dy, &dst), 0);
	assert_true(S_ISDIR(dst.st_mode));
	assert_int_equal(dst.st_mode & 07777, 0700);
	free(dy);
	assert_int_equal(stat(hostetc, &after), 0);
	assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
	assert_int_equal(before.st_mode, after.st_mode);
	struct stat bst;
	assert_int_equal(stat(g_base, &bst), 0);
	assert_int_equal(bst.st_mode & 07777, 0700);   /* mkdtemp's mode: not chmodded */
	free(hostetc);
	assert_outside_unchanged();
}

static void test_hostile_misc(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *root = reset_root();
	/* duplicates: the later entry wins, whatever the types */
	const struct hent dup[] = {
		{ 'f', "f", 0, "one", 0, 0, 0 },
		{ 'f', "f", 0, "two", 0, 0, 0 },
		{ 'd', "g/", 0, 0, 0, 0, 0 },
		{ 'f', "g/inner", 0, "x", 0, 0, 0 },
		{ 'f', "g", 0, "file now", 0, 0, 0 },
		{ 'f', "h", 0, "file", 0, 0, 0 },
		{ 'd', "h/", 0, 0, 0750, 0, 0 },
		{ 'l', "i", "f", 0, 0, 0, 0 },
		{ 'f', "i", 0, "not a link", 0, 0, 0 },
	};
	if (apply_tar(dup, sizeof dup / sizeof *dup, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *p = in_root("f"), *s = get_file(p);
	assert_string_equal(s, "two");
	free(s);
	free(p);
	p = in_root("g");
	s = get_file(p);
	assert_string_equal(s, "file now");
	free(s);
	free(p);
	struct stat st;
	p = in_root("h");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	free(p);
	p = in_root("i");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	free(p);
	/* .wh. with an empty name, ".wh.." and ".wh..." are refused */
	const struct hent wh1[] = { { 'f', ".wh.", 0, "", 0, 0, 0 } };
	assert_int_equal(apply_tar(wh1, 1, &OPTS, &err), -1);
	const struct hent wh2[] = { { 'f', "f/../.wh..", 0, "", 0, 0, 0 } };
	assert_int_equal(apply_tar(wh2, 1, &OPTS, &err), -1);
	const struct hent wh3[] = { { 'f', ".wh...", 0, "", 0, 0, 0 } };
	assert_int_equal(apply_tar(wh3, 1, &OPTS, &err), -1);
	p = in_root("f");
	assert_int_equal(access(p, F_OK), 0);
	free(p);
	/* device nodes: skipped unless allowed */
	const struct hent dev[] = {
		{ 'c', "null", 0, 0, 0666, 1, 3 },
		{ 'b', "sda", 0, 0, 0660, 8, 0 },
		{ 'p', "fifo", 0, 0, 0600, 0, 0 },
	};
	assert_int_equal(apply_tar(dev, 3, &OPTS, &err), 0);
	p = in_root("null");
	assert_int_equal(lstat(p, &st), -1);
	free(p);
	p = in_root("sda");
	assert_int_equal(lstat(p, &st), -1);
	free(p);
	p = in_root("fifo");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	free(p);
	if (geteuid() == 0) {
		struct kiln_layer_apply_opts ad = { .whiteouts = true, .allow_devices = true };
		assert_int_equal(apply_tar(dev, 3, &ad, &err), 0);
		p = in_root("null");
		assert_int_equal(lstat(p, &st), 0);
		assert_true(S_ISCHR(st.st_mode));
		assert_int_equal(st.st_rdev, makedev(1, 3));
		free(p);
	}
	/* setuid/setgid: kept only with keep_owner */
	const struct hent su[] = {
		{ 'f', "suid", 0, "x", 04755, 0, 0 },
		{ 'f', "sgid", 0, "x", 02755, 0, 0 },
		{ 'd', "sgdir/", 0, 0, 02775, 0, 0 },
	};
	assert_int_equal(apply_tar(su, 3, &OPTS, &err), 0);
	p = in_root("suid");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	free(p);
	p = in_root("sgid");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	free(p);
	struct kiln_layer_apply_opts ko = { .whiteouts = true, .keep_owner = true };
	assert_int_equal(apply_tar(su, 3, &ko, &err), 0);
	p = in_root("suid");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 04755);
	free(p);
	free(root);
	assert_outside_unchanged();
}

static void test_hostile_long_and_deep(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *root = reset_root();
	/* a very deep path (1500 levels, 4500 bytes, beyond PATH_MAX): a clean error */
	struct kiln_buf b = {0};
	for (int i = 0; i < 1500; i++)
		kiln_buf_puts(&b, "dd/");
	kiln_buf_puts(&b, "f");
	const struct hent deep[] = { { 'f', b.data, 0, "deep", 0, 0, 0 } };
	kiln_err_clear(&err);
	assert_int_equal(apply_tar(deep, 1, &OPTS, &err), -1);
	assert_int_equal(err.errnum, ENAMETOOLONG);
	assert_non_null(strstr(err.msg, "dd/dd/"));
	assert_true(strlen(err.msg) < 1024);   /* the name is cut in the message */
	kiln_buf_free(&b);
	/* 400 levels: works */
	for (int i = 0; i < 400; i++)
		kiln_buf_puts(&b, "dd/");
	kiln_buf_puts(&b, "f");
	const struct hent deep2[] = { { 'f', b.data, 0, "deep", 0, 0, 0 } };
	if (apply_tar(deep2, 1, &OPTS, &err) < 0)
		fail_msg("%s", err.msg);
	char *p = in_root(b.data), *s = get_file(p);
	assert_string_equal(s, "deep");
	free(s);
	free(p);
	kiln_buf_free(&b);
	/* a single 5000-byte name: refused cleanly */
	char *longname = kiln_xmalloc(5001);
	memset(longname, 'x', 5000);
	longname[5000] = '\0';
	const struct hent ln[] = { { 'f', longname, 0, "x", 0, 0, 0 } };
	assert_int_equal(apply_tar(ln, 1, &OPTS, &err), -1);
	assert_int_equal(err.errnum, ENAMETOOLONG);
	free(longname);
	/* 4 GiB size in the header, truncated data: clean error */
	const struct hent big[] = { { 'f', "big", 0, "x", 0, 0, 0 } };
	struct membuf m;
	make_tar(big, 1, &m);
	assert_true(m.len >= 1536);
	/* patch the ustar size field (offset 124, 12 bytes) to 4 GiB and fix the checksum */
	snprintf(m.data + 124, 12, "%011llo", 4ULL << 30);
	memset(m.data + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (unsigned char)m.data[i];
	snprintf(m.data + 148, 8, "%06o", sum);
	int fd = mem_fd(m.data, m.len);
	int rfd = open_dir(root);
	assert_int_equal(kiln_layer_apply(rfd, fd, &OPTS, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "big"));
	close(rfd);
	close(fd);
	free(m.data);
	/* compressions that libarchive would hand to an external program (lrzip,
	 * lzop, grzip) or decode beyond OCI (uuencode) are refused, and nothing
	 * is executed: a fake lrzip on PATH must not run */
	char *bindir = pjoin(g_base, "bin");
	assert_int_equal(mkdir(bindir, 0755), 0);
	char *marker = pjoin(g_base, "ran");
	char *fake = pjoin(bindir, "lrzip");
	char *script = kiln_xasprintf("#!/bin/sh\ntouch '%s'\ncat\n", marker);
	put_file(fake, script, 0755);
	const char *oldpath = getenv("PATH");
	char *saved = kiln_xstrdup(oldpath ? oldpath : "/usr/bin:/bin");
	char *newpath = kiln_xasprintf("%s:%s", bindir, saved);
	setenv("PATH", newpath, 1);
	static const char lrz[] = "LRZI\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
	fd = mem_fd(lrz, sizeof lrz - 1);
	rfd = open_dir(root);
	assert_int_equal(kiln_layer_apply(rfd, fd, &OPTS, NULL, &err), -1);
	close(fd);
	static const char uu[] = "begin 644 layer.tar\nM\n`\nend\n";
	fd = mem_fd(uu, sizeof uu - 1);
	assert_int_equal(kiln_layer_apply(rfd, fd, &OPTS, NULL, &err), -1);
	close(fd);
	close(rfd);
	setenv("PATH", saved, 1);
	assert_int_equal(access(marker, F_OK), -1);
	rm_tree(bindir);
	free(saved);
	free(newpath);
	free(script);
	free(fake);
	free(marker);
	free(bindir);
	/* garbage and empty input */
	fd = mem_fd("this is not a tar archive at all, not even close.........", 56);
	rfd = open_dir(root);
	assert_int_equal(kiln_layer_apply(rfd, fd, &OPTS, NULL, &err), -1);
	close(fd);
	fd = mem_fd("", 0);
	assert_int_equal(kiln_layer_apply(rfd, fd, &OPTS, NULL, &err), -1);
	close(fd);
	close(rfd);
	free(root);
	assert_outside_unchanged();
}

/* ------------------------------------------------------------------ interop with real tools */

static char *run_out(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	int st = pclose(f);
	assert_int_equal(st, 0);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return kiln_xstrdup(buf);
}

static bool have_tools(void)
{
	return system("{ command -v tar && command -v gzip && command -v xz && command -v bzip2 && "
		      "command -v zstd && command -v sha256sum; } >/dev/null 2>&1") == 0;
}

static void test_interop_tools(void **state)
{
	(void)state;
	if (!have_tools())
		skip();
	char *src = make_src_tree();
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	all_changes(&ch);
	/* our gzip and zstd blobs decompress with the real tools to the diff_id */
	for (int c = KILN_COMPRESS_GZIP; c <= KILN_COMPRESS_NONE; c++) {
		struct kiln_layer_info info;
		int fd = write_layer(rfd, &ch, (enum kiln_compression)c, -1, &info);
		char *blob = pjoin(g_base, "blob");
		int out = open(blob, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		assert_true(out >= 0);
		char buf[65536];
		ssize_t n;
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		while ((n = read(fd, buf, sizeof buf)) > 0)
			assert_int_equal(kiln_write_all(out, buf, (size_t)n), 0);
		close(out);
		const char *dec = c == KILN_COMPRESS_GZIP ? "gzip -dc" : c == KILN_COMPRESS_ZSTD ? "zstd -dcq" : "cat";
		char *cmd = kiln_xasprintf("%s '%s' | sha256sum | cut -d' ' -f1", dec, blob);
		char *hex = run_out(cmd);
		assert_string_equal(hex, info.diff_id + 7);
		free(hex);
		free(cmd);
		cmd = kiln_xasprintf("sha256sum '%s' | cut -d' ' -f1", blob);
		hex = run_out(cmd);
		assert_string_equal(hex, info.digest + 7);
		free(hex);
		free(cmd);
		/* GNU tar lists it, with the hard link and the long path */
		cmd = kiln_xasprintf("%s '%s' | tar --quoting-style=literal -tvf - 2>&1", dec, blob);
		char *list = run_out(cmd);
		assert_non_null(strstr(list, " utf8-\xc3\xa9t\xc3\xa9"));
		assert_non_null(strstr(list, " bad-\xff\xfe\n"));
		/* hdrcharset=BINARY only for the name that is not UTF-8 */
		int nbin = 0;
		for (const char *q = list; (q = strstr(q, "hdrcharset")); q++)
			nbin++;
		assert_int_equal(nbin, 1);
		assert_non_null(strstr(list, "bin/link2 link to bin/link1"));
		assert_non_null(strstr(list, "bin/sym -> tool"));
		assert_non_null(strstr(list, g_longpath));
		free(list);
		free(cmd);
		free(blob);
		close(fd);
	}
	/* layers made by GNU tar ("./" names, root entry, 10240 padding) in every
	 * compression apply, and the diff_id covers the whole uncompressed stream */
	const char *comps[][2] = { { "cat", "" }, { "gzip -c", ".gz" }, { "xz -c", ".xz" },
				   { "bzip2 -c", ".bz2" }, { "zstd -qc", ".zst" } };
	char *tarfile = pjoin(g_base, "blob");
	char *cmd = kiln_xasprintf("tar --xattrs --xattrs-include='*' -C '%s' -cf '%s' .", src, tarfile);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	cmd = kiln_xasprintf("sha256sum '%s' | cut -d' ' -f1", tarfile);
	char *want = run_out(cmd);
	free(cmd);
	for (size_t i = 0; i < sizeof comps / sizeof *comps; i++) {
		char *z = kiln_xasprintf("%s/blob%s.x", g_base, comps[i][1]);
		cmd = kiln_xasprintf("%s '%s' > '%s'", comps[i][0], tarfile, z);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		char *dst = fresh_dir("dst");
		int dfd = open_dir(dst);
		int in = open(z, O_RDONLY | O_CLOEXEC);
		assert_true(in >= 0);
		struct kiln_err err = {0};
		char diff[KILN_DIGEST_MAX];
		struct kiln_layer_apply_opts o = { .whiteouts = true, .keep_owner = true, .allow_devices = true };
		if (kiln_layer_apply(dfd, in, &o, diff, &err) < 0)
			fail_msg("%s: %s", comps[i][0], err.msg);
		assert_string_equal(diff + 7, want);
		char *a = pjoin(src, "bin/tool"), *b = pjoin(dst, "bin/tool");
		assert_same_inode_meta(a, b, true);
		free(a);
		free(b);
		a = pjoin(dst, "bin/xattr");
		char val[32];
		assert_int_equal(getxattr(a, "user.kiln", val, sizeof val), 5);
		free(a);
		close(in);
		close(dfd);
		unlink(z);
		free(z);
		free(dst);
	}
	/* multi-member gzip (pigz, estargz) and multi-frame zstd with a skippable
	 * frame (zstd:chunked) are one stream */
	for (int z = 0; z < 2; z++) {
		char *mm = kiln_xasprintf("%s/blob.multi", g_base);
		cmd = z == 0
			? kiln_xasprintf("sz=$(stat -c %%s '%s'); h=$(( sz / 1024 * 512 )); "
					 "{ head -c $h '%s' | gzip -c; tail -c +$((h+1)) '%s' | gzip -c; } > '%s'",
					 tarfile, tarfile, tarfile, mm)
			: kiln_xasprintf("sz=$(stat -c %%s '%s'); h=$(( sz / 1024 * 512 )); "
					 "{ head -c $h '%s' | zstd -qc; printf 'P*M\\030\\004\\000\\000\\000abcd'; "
					 "tail -c +$((h+1)) '%s' | zstd -qc; } > '%s'",
					 tarfile, tarfile, tarfile, mm);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		char *dst = fresh_dir("dst");
		int dfd = open_dir(dst);
		int in = open(mm, O_RDONLY | O_CLOEXEC);
		assert_true(in >= 0);
		struct kiln_err err = {0};
		char diff[KILN_DIGEST_MAX];
		if (kiln_layer_apply(dfd, in, &OPTS, diff, &err) < 0)
			fail_msg("multi %d: %s", z, err.msg);
		assert_string_equal(diff + 7, want);
		char *b = pjoin(dst, "etc/hosts");
		assert_int_equal(access(b, F_OK), 0);
		free(b);
		close(in);
		close(dfd);
		unlink(mm);
		free(mm);
		free(dst);
	}
	/* a GNU sparse file (1 GiB apparent, two data runs) is written sparse */
	char *sp = pjoin(src, "sparse");
	cmd = kiln_xasprintf("truncate -s 1G '%s' && printf head | dd of='%s' conv=notrunc status=none && "
			     "printf tail | dd of='%s' bs=1 seek=1000000000 conv=notrunc status=none && "
			     "tar -S -C '%s' -cf '%s' sparse", sp, sp, sp, src, tarfile);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(sp);
	char *dst = fresh_dir("dst");
	int dfd = open_dir(dst);
	int in = open(tarfile, O_RDONLY | O_CLOEXEC);
	assert_true(in >= 0);
	struct kiln_err err = {0};
	if (kiln_layer_apply(dfd, in, &OPTS, NULL, &err) < 0)
		fail_msg("sparse: %s", err.msg);
	close(in);
	sp = pjoin(dst, "sparse");
	struct stat st;
	assert_int_equal(stat(sp, &st), 0);
	assert_int_equal(st.st_size, 1LL << 30);
	assert_true(st.st_blocks < 1024);    /* not 1 GiB of zeros on disk */
	int sfd = open(sp, O_RDONLY | O_CLOEXEC);
	char b4[4];
	assert_int_equal(pread(sfd, b4, 4, 0), 4);
	assert_memory_equal(b4, "head", 4);
	assert_int_equal(pread(sfd, b4, 4, 1000000000), 4);
	assert_memory_equal(b4, "tail", 4);
	assert_int_equal(pread(sfd, b4, 4, 500000000), 4);
	assert_memory_equal(b4, "\0\0\0\0", 4);
	close(sfd);
	free(sp);
	close(dfd);
	free(dst);
	unlink(tarfile);
	free(tarfile);
	free(want);
	kiln_changes_free(&ch);
	close(rfd);
	free(src);
	assert_outside_unchanged();
}

/* keep_owner with an id offset (user namespaces): entries and the parents the
 * extractor has to create belong to the shifted ids */
static void test_apply_owner_offset(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct kiln_err err = {0};
	char *root = reset_root();
	const struct hent t[] = {
		{ 'f', "x/y/f", 0, "data", 0640, 0, 0 },
		{ 'l', "x/l", "y/f", 0, 0, 0, 0 },
		{ 'd', "d/", 0, 0, 0711, 0, 0 },
	};
	struct kiln_layer_apply_opts o = { .whiteouts = true, .keep_owner = true,
					   .uid_offset = 100000, .gid_offset = 200000 };
	if (apply_tar(t, 3, &o, &err) < 0)
		fail_msg("%s", err.msg);
	const char *paths[] = { "x", "x/y", "x/y/f", "x/l", "d" };
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
		char *p = in_root(paths[i]);
		struct stat st;
		assert_int_equal(lstat(p, &st), 0);
		assert_int_equal(st.st_uid, 100000);
		assert_int_equal(st.st_gid, 200000);
		free(p);
	}
	free(root);
	assert_outside_unchanged();
}

/* Without root: a read-only directory still receives the entries after it,
 * and ends with its own mode. */
static void test_apply_unprivileged(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	char *root = reset_root();
	assert_int_equal(chown(root, 65534, 65534), 0);
	struct membuf m;
	const struct hent t[] = {
		{ 'd', "ro/", 0, 0, 0555, 0, 0 },
		{ 'f', "ro/f", 0, "inside", 0444, 0, 0 },
		{ 'd', "ro/sub/", 0, 0, 0500, 0, 0 },
		{ 'f', "ro/sub/g", 0, "deeper", 0644, 0, 0 },
	};
	make_tar(t, 4, &m);
	int fd = mem_fd(m.data, m.len);
	int rfd = open_dir(root);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(3);
		struct kiln_err err = {0};
		if (kiln_layer_apply(rfd, fd, &OPTS, NULL, &err) < 0) {
			fprintf(stderr, "unprivileged apply: %s\n", err.msg);
			_exit(1);
		}
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	close(rfd);
	close(fd);
	free(m.data);
	struct stat sb;
	char *p = in_root("ro");
	assert_int_equal(lstat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0555);
	assert_int_equal(sb.st_uid, 65534);
	free(p);
	p = in_root("ro/sub");
	assert_int_equal(lstat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0500);
	free(p);
	p = in_root("ro/sub/g");
	char *s = get_file(p);
	assert_string_equal(s, "deeper");
	free(s);
	free(p);
	free(root);
	assert_outside_unchanged();
}

/* CVE-2018-15664 style: while the layer is applied, another process swaps a
 * directory of the tree with a symlink that points out of it, over and over. */
static void test_hostile_race(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *root = reset_root();
	char *d = in_root("d"), *sw = in_root("sw"), *s2 = in_root("s2");
	assert_int_equal(mkdir(d, 0755), 0);
	char *hostetc = pjoin(g_base, "hostetc");
	assert_int_equal(symlink(hostetc, sw), 0);
	assert_int_equal(symlink("../../../../../../..", s2), 0);
	enum { N = 400 };
	struct hent *t = kiln_xcalloc(N, sizeof *t);
	char (*names)[32] = kiln_xcalloc(N, 32);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 32, i % 3 == 0 ? "d/passwd" : i % 3 == 1 ? "d/f%d" : "d/", i);
		t[i] = (struct hent){ i % 3 == 2 ? 'd' : 'f', names[i], 0, i % 3 == 2 ? 0 : "evil", 0700, 0, 0 };
	}
	int ok = 0, failed = 0;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the test */
		if (getppid() == 1)
			_exit(0);
		for (unsigned long i = 0;; i++)
			syscall(SYS_renameat2, AT_FDCWD, d, AT_FDCWD, (i & 1) ? sw : s2, 2 /* RENAME_EXCHANGE */);
	}
	for (int round = 0; round < 20; round++) {
		if (apply_tar(t, N, &OPTS, &err) == 0)
			ok++;
		else
			failed++;
	}
	kill(pid, SIGKILL);
	int st;
	waitpid(pid, &st, 0);
	assert_int_equal(ok + failed, 20);
	free(t);
	free(names);
	free(hostetc);
	free(d);
	free(sw);
	free(s2);
	free(root);
	assert_outside_unchanged();
}

/* Defence for the machine running this test: the extractor is fed hostile
 * layers aimed at host paths, so if it were broken the damage would happen
 * before any assertion.  In a private mount namespace every mount except /tmp
 * (where all the test's files live), /proc, /sys and /dev is made read-only.
 * Without the privileges for that, the test runs as is (with a note). */
static void confine_host_writes(void)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("/tmp", "/tmp", NULL, MS_BIND | MS_REC, NULL) < 0) {
		fprintf(stderr, "note: cannot confine writes to /tmp (%s); running unconfined\n", strerror(errno));
		return;
	}
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	char line[4096];
	while (fgets(line, sizeof line, f)) {
		/* id parent major:minor root mountpoint ... */
		char mp[4096];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		/* unescape \040 and friends */
		char *o = mp;
		for (const char *i = mp; *i; i++) {
			if (i[0] == '\\' && i[1] >= '0' && i[1] <= '7' && i[2] && i[3]) {
				*o++ = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
				i += 3;
			} else {
				*o++ = *i;
			}
		}
		*o = '\0';
		static const char *const keep[] = { "/tmp", "/proc", "/sys", "/dev" };
		bool skip = false;
		for (size_t k = 0; k < sizeof keep / sizeof *keep; k++) {
			size_t l = strlen(keep[k]);
			if (!strncmp(mp, keep[k], l) && (mp[l] == '\0' || mp[l] == '/'))
				skip = true;
		}
		if (!skip)
			(void)mount(NULL, mp, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
	}
	fclose(f);
}

/* Runs last: every success and error path above closed what it opened. */
static void test_no_fd_leaks(void **state)
{
	(void)state;
	assert_int_equal(count_fds(), g_fds_at_start);
}

/* The writer racing a directory/symlink exchange in the tree it reads: it
 * fails or reads the tree's file, never the host file behind the symlink. */
static void test_writer_race(void **state)
{
	(void)state;
	char *src = fresh_dir("src");
	char *d = pjoin(src, "d"), *sw = pjoin(src, "sw"), *f = pjoin(src, "d/passwd");
	assert_int_equal(mkdir(d, 0755), 0);
	put_file(f, "tree file\n", 0644);
	char *hostetc = pjoin(g_base, "hostetc");
	assert_int_equal(symlink(hostetc, sw), 0);
	int rfd = open_dir(src);
	struct kiln_changes ch = {0};
	kiln_changes_add(&ch, "d/passwd", KILN_CHANGE_ADD);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* never outlive the test, even when an assertion ends it early */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(0);
		for (;;)
			syscall(SYS_renameat2, AT_FDCWD, d, AT_FDCWD, sw, 2 /* RENAME_EXCHANGE */);
	}
	int ok = 0, failed = 0, leaked = 0, wrong = 0;
	for (int i = 0; i < 300; i++) {
		struct kiln_layer_write_opts o = { .compression = KILN_COMPRESS_NONE, .source_date_epoch = -1 };
		struct kiln_layer_info info;
		struct kiln_err err = {0};
		int fd = tmp_blob();
		if (kiln_layer_write(rfd, &ch, &o, fd, &info, &err) == 0) {
			ok++;
			struct stat st;
			char *buf = NULL;
			if (fstat(fd, &st) == 0 && (buf = kiln_xmalloc((size_t)st.st_size + 1)) &&
			    pread(fd, buf, (size_t)st.st_size, 0) == st.st_size) {
				if (memmem(buf, (size_t)st.st_size, "root:x:0:0", 10))
					leaked++;
				if (!memmem(buf, (size_t)st.st_size, "tree file", 9))
					wrong++;
			} else {
				wrong++;
			}
			free(buf);
		} else {
			failed++;
		}
		close(fd);
	}
	/* the child goes before any assertion */
	kill(pid, SIGKILL);
	int st;
	waitpid(pid, &st, 0);
	assert_int_equal(leaked, 0);
	assert_int_equal(wrong, 0);
	assert_int_equal(ok + failed, 300);
	kiln_changes_free(&ch);
	close(rfd);
	free(hostetc);
	free(d);
	free(sw);
	free(f);
	free(src);
	assert_outside_unchanged();
}

int main(void)
{
	confine_host_writes();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compression_names),
		cmocka_unit_test(test_empty_layer),
		cmocka_unit_test(test_writer_entries),
		cmocka_unit_test(test_writer_deterministic),
		cmocka_unit_test(test_writer_whiteouts),
		cmocka_unit_test(test_writer_race),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_apply_whiteouts),
		cmocka_unit_test(test_apply_owner_offset),
		cmocka_unit_test(test_apply_unprivileged),
		cmocka_unit_test(test_hostile_dotdot),
		cmocka_unit_test(test_hostile_absolute),
		cmocka_unit_test(test_hostile_symlink_parent),
		cmocka_unit_test(test_hostile_hardlinks),
		cmocka_unit_test(test_hostile_dir_then_symlink),
		cmocka_unit_test(test_hostile_misc),
		cmocka_unit_test(test_hostile_long_and_deep),
		cmocka_unit_test(test_hostile_race),
		cmocka_unit_test(test_interop_tools),
		cmocka_unit_test(test_no_fd_leaks),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
