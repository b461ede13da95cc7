/* kiln — tar layers: the deterministic writer and the safe extractor.
 *
 * Writer: the change set is expanded (parent directories, whiteouts, opaque
 * markers), sorted component-wise (a directory right before its contents, an
 * opaque marker right after its directory), and every entry is read beneath
 * the tree's root fd with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so nothing
 * outside the tree is ever read.  The uncompressed tar goes through our own
 * write callback, which hashes it (diff_id) and passes the bytes to a second
 * libarchive writer (format "raw" + gzip/zstd filter) whose callback hashes
 * and writes the blob (digest, size).  One pass, one read of every file.
 *
 * Extractor: libarchive only parses; every filesystem change is made by us
 * with *at() calls relative to directory fds obtained beneath the root
 * (openat2 RESOLVE_IN_ROOT: a symlink inside the tree resolves as if the tree
 * were "/", so `a -> /etc` then `a/passwd` lands in ROOT/etc/passwd).  Names
 * with ".." components are rejected (the whole layer fails); a leading "/"
 * is stripped.  The final component is never followed (O_NOFOLLOW, removing
 * what was there first).  Directory mtimes are set at the end after checking
 * (dev, ino) again, so a directory swapped for a symlink by a later entry
 * (CVE-2021-31566) is left alone.
 *
 * The extractor decodes gzip, zstd, xz, lzma and bzip2 with libarchive's
 * built-in decoders only (never archive_read_support_filter_all, which would
 * let a layer make libarchive exec lrzip, lzop or grzip), and only tar.
 * Xattrs of symlinks, fifos and devices go through /proc/self/fd/N of an
 * O_PATH fd (the magic link lands on the inode itself, never its target), so
 * /proc must be mounted for them.
 *
 * Xattr policy (both directions): security.selinux (a host label),
 * system.* (ACLs, not supported), trusted.overlay.* and user.overlay.*
 * (overlayfs internals of a snapshot driver) are never copied; everything
 * else (user.*, security.capability, trusted.*) is.  The extractor ignores
 * EPERM/ENOTSUP for non-user.* names (e.g. inside a user namespace).
 */
#include "layers/layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define IO_CHUNK (128 * 1024)

/* ------------------------------------------------------------------ small helpers */

static int openat2_fd(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
	struct open_how how;
	memset(&how, 0, sizeof how);
	how.flags = (uint64_t)(flags | O_CLOEXEC);
	how.mode = (flags & O_CREAT) ? mode : 0;
	how.resolve = resolve;
	long r;
	int tries = 0;   /* EAGAIN: a rename raced the ".." checks; retry a bounded number of times */
	do
		r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
	while (r < 0 && (errno == EINTR || errno == EAGAIN) && ++tries < 64);
	return (int)r;
}

#define RES_TREE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
#define RES_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

struct hasher {
	EVP_MD_CTX *ctx;
};

static int hasher_init(struct hasher *h, struct kiln_err *err)
{
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(h->ctx);
		h->ctx = NULL;
		return kiln_err_set(err, 0, "sha256: cannot initialise digest");
	}
	return 0;
}

static void hasher_update(struct hasher *h, const void *p, size_t n)
{
	if (h->ctx && n)
		EVP_DigestUpdate(h->ctx, p, n);
}

static void hasher_final(struct hasher *h, char out[KILN_DIGEST_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_DigestFinal_ex(h->ctx, md, &n);
	int off = snprintf(out, KILN_DIGEST_MAX, "sha256:");
	for (unsigned int i = 0; i < n && off + 2 < KILN_DIGEST_MAX; i++)
		off += snprintf(out + off, (size_t)(KILN_DIGEST_MAX - off), "%02x", md[i]);
}

static void hasher_free(struct hasher *h)
{
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}

/* A string → size_t hash map (open addressing), used as a set too. */
struct strmap {
	char **keys;
	size_t *vals;
	size_t cap;   /* power of two or 0 */
	size_t n;
};

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t *strmap_find(const struct strmap *m, const char *key)
{
	if (!m->cap)
		return NULL;
	for (size_t i = str_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (!m->keys[i])
			return NULL;
		if (!strcmp(m->keys[i], key))
			return &m->vals[i];
	}
}

static void strmap_put(struct strmap *m, const char *key, size_t val);

static void strmap_grow(struct strmap *m)
{
	struct strmap old = *m;
	m->cap = old.cap ? old.cap * 2 : 64;
	m->keys = kiln_xcalloc(m->cap, sizeof *m->keys);
	m->vals = kiln_xcalloc(m->cap, sizeof *m->vals);
	m->n = 0;
	for (size_t i = 0; i < old.cap; i++) {
		if (old.keys[i]) {
			strmap_put(m, old.keys[i], old.vals[i]);
			free(old.keys[i]);
		}
	}
	free(old.keys);
	free(old.vals);
}

static void strmap_put(struct strmap *m, const char *key, size_t val)
{
	size_t *v = strmap_find(m, key);
	if (v) {
		*v = val;
		return;
	}
	if ((m->n + 1) * 2 > m->cap)
		strmap_grow(m);
	size_t i = str_hash(key) & (m->cap - 1);
	while (m->keys[i])
		i = (i + 1) & (m->cap - 1);
	m->keys[i] = kiln_xstrdup(key);
	m->vals[i] = val;
	m->n++;
}

static void strmap_free(struct strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}

bool kiln_layer_xattr_skipped(const char *name)
{
	return !strcmp(name, "security.selinux") || kiln_str_has_prefix(name, "system.") ||
	       kiln_str_has_prefix(name, "trusted.overlay.") ||
	       kiln_str_has_prefix(name, "user.overlay.");
}

/* ------------------------------------------------------------------ public small API */

int kiln_compression_parse(const char *name, enum kiln_compression *out, struct kiln_err *err)
{
	if (name && !strcmp(name, "gzip"))
		*out = KILN_COMPRESS_GZIP;
	else if (name && !strcmp(name, "zstd"))
		*out = KILN_COMPRESS_ZSTD;
	else if (name && (!strcmp(name, "none") || !strcmp(name, "uncompressed")))
		*out = KILN_COMPRESS_NONE;
	else
		return kiln_err_set(err, EINVAL, "unknown compression \"%s\" (want gzip, zstd or none)",
				    name ? name : "");
	return 0;
}

const char *kiln_compression_media_type(enum kiln_compression c)
{
	switch (c) {
	case KILN_COMPRESS_ZSTD:
		return KILN_MT_LAYER_ZSTD;
	case KILN_COMPRESS_NONE:
		return KILN_MT_LAYER_TAR;
	case KILN_COMPRESS_GZIP:
	default:
		return KILN_MT_LAYER_GZIP;
	}
}

void kiln_changes_add(struct kiln_changes *c, const char *path, enum kiln_change_kind kind)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->v = kiln_xrealloc(c->v, c->cap * sizeof *c->v);
	}
	c->v[c->n].path = kiln_xstrdup(path);
	c->v[c->n].kind = kind;
	c->n++;
}

void kiln_changes_free(struct kiln_changes *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i].path);
	free(c->v);
	memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ writer */

enum went_kind { WE_TREE, WE_WHITEOUT, WE_OPAQUE };

struct went {
	char *name;        /* tar name (no trailing '/') */
	char *key;         /* sort key */
	enum went_kind kind;
	bool implicit;     /* a parent directory the writer added */
	size_t order;
};

struct wlist {
	struct went *v;
	size_t n, cap;
};

static void wlist_push(struct wlist *l, char *name, char *key, enum went_kind kind, bool implicit)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = kiln_xrealloc(l->v, l->cap * sizeof *l->v);
	}
	l->v[l->n] = (struct went){ .name = name, .key = key, .kind = kind, .implicit = implicit, .order = l->n };
	l->n++;
}

static void wlist_free(struct wlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].key);
	}
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* Component-wise bytewise order: '/' sorts before every other byte, so a
 * directory's subtree is contiguous and right after the directory. */
static int path_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char ca = (unsigned char)*a, cb = (unsigned char)*b;
		if (ca == cb) {
			if (!ca)
				return 0;
			continue;
		}
		int ma = ca == 0 ? 0 : ca == '/' ? 1 : ca + 2;
		int mb = cb == 0 ? 0 : cb == '/' ? 1 : cb + 2;
		return ma - mb;
	}
}

static int went_cmp(const void *pa, const void *pb)
{
	const struct went *a = pa, *b = pb;
	int c = path_cmp(a->key, b->key);
	if (c)
		return c;
	if (a->implicit != b->implicit)
		return a->implicit ? 1 : -1;   /* explicit first */
	return a->order < b->order ? -1 : a->order > b->order;
}

static bool clean_change_path(const char *p)
{
	if (!p || !*p || *p == '/')
		return false;
	const char *s = p;
	for (;;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		if (!e)
			return true;
		s = e + 1;
	}
}

struct wctx {
	struct archive *tar;       /* uncompressed tar writer */
	struct archive *comp;      /* raw + filter writer, NULL for none */
	int out_fd;
	struct hasher diff, blob;
	int64_t size;
	struct kiln_err *err;
	bool failed;
};

static la_ssize_t blob_write_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
	(void)a;
	struct wctx *w = ud;
	if (kiln_write_all(w->out_fd, buf, len) < 0) {
		if (!w->failed)
			kiln_err_set(w->err, errno, "writing layer blob");
		w->failed = true;
		return -1;
	}
	hasher_update(&w->blob, buf, len);
	w->size += (int64_t)len;
	return (la_ssize_t)len;
}

static la_ssize_t tar_write_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
	struct wctx *w = ud;
	hasher_update(&w->diff, buf, len);
	if (!w->comp)
		return blob_write_cb(a, ud, buf, len);
	const char *p = buf;
	size_t left = len;
	while (left) {
		la_ssize_t r = archive_write_data(w->comp, p, left);
		if (r <= 0) {
			if (!w->failed)
				kiln_err_set(w->err, 0, "compressing layer: %s",
					     archive_error_string(w->comp) ? archive_error_string(w->comp) : "write failed");
			w->failed = true;
			return -1;
		}
		p += r;
		left -= (size_t)r;
	}
	return (la_ssize_t)len;
}

static int tar_fail(struct wctx *w, const char *what, const char *name)
{
	if (!w->failed) {
		const char *m = archive_error_string(w->tar);
		kiln_err_set(w->err, archive_errno(w->tar) > 0 ? archive_errno(w->tar) : 0,
			     "writing layer entry %s: %s%s%s", name, what, m ? ": " : "", m ? m : "");
	}
	w->failed = true;
	return -1;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Copy the xattrs of the inode behind fd (any type, O_PATH is fine) into e,
 * sorted by name. */
static int read_xattrs(int fd, const char *name, struct archive_entry *e, struct kiln_err *err)
{
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	ssize_t n = listxattr(proc, NULL, 0);
	if (n < 0) {
		if (errno == ENOTSUP || errno == ENOENT || errno == EPERM)
			return 0;
		return kiln_err_set(err, errno, "listing xattrs of %s", name);
	}
	if (n == 0)
		return 0;
	KILN_AUTOFREE char *list = kiln_xmalloc((size_t)n + 1);
	n = listxattr(proc, list, (size_t)n);
	if (n < 0)
		return kiln_err_set(err, errno, "listing xattrs of %s", name);
	list[n] = '\0';
	KILN_AUTOFREE char **names = NULL;
	size_t cnt = 0;
	for (char *p = list; p < list + n; p += strlen(p) + 1) {
		if (!*p || kiln_layer_xattr_skipped(p))
			continue;
		names = kiln_xrealloc(names, (cnt + 1) * sizeof *names);
		names[cnt++] = p;
	}
	if (cnt > 1)
		qsort(names, cnt, sizeof *names, cmp_str);
	for (size_t i = 0; i < cnt; i++) {
		ssize_t vn = getxattr(proc, names[i], NULL, 0);
		if (vn < 0) {
			if (errno == ENODATA)
				continue;
			return kiln_err_set(err, errno, "reading xattr %s of %s", names[i], name);
		}
		KILN_AUTOFREE char *val = kiln_xmalloc((size_t)vn + 1);
		vn = getxattr(proc, names[i], val, (size_t)vn);
		if (vn < 0)
			return kiln_err_set(err, errno, "reading xattr %s of %s", names[i], name);
		archive_entry_xattr_add_entry(e, names[i], val, (size_t)vn);
	}
	return 0;
}

static int64_t clamp_mtime(int64_t t, const struct kiln_layer_write_opts *o)
{
	if (o->source_date_epoch >= 0 && t > o->source_date_epoch)
		return o->source_date_epoch;
	return t;
}

/* Write one synthetic empty regular file (whiteout or opaque marker). */
static int write_marker(struct wctx *w, const char *name, const struct kiln_layer_write_opts *o)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_mtime(e, o->source_date_epoch >= 0 ? o->source_date_epoch : 0, 0);
	int r = archive_write_header(w->tar, e);
	archive_entry_free(e);
	if (r < ARCHIVE_WARN)
		return tar_fail(w, "header", name);
	return 0;
}

static int stream_file(struct wctx *w, int rootfd, const char *name, const struct stat *st)
{
	KILN_AUTOCLOSE int fd = openat2_fd(rootfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, RES_TREE);
	if (fd < 0)
		return kiln_err_set(w->err, errno, "opening %s for the layer", name);
	struct stat st2;
	if (fstat(fd, &st2) < 0)
		return kiln_err_set(w->err, errno, "stat %s", name);
	if (st2.st_dev != st->st_dev || st2.st_ino != st->st_ino)
		return kiln_err_set(w->err, 0, "%s changed while the layer was written", name);
	KILN_AUTOFREE char *buf = kiln_xmalloc(IO_CHUNK);
	int64_t left = st->st_size;
	while (left > 0) {
		size_t want = left > IO_CHUNK ? IO_CHUNK : (size_t)left;
		ssize_t r = read(fd, buf, want);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return kiln_err_set(w->err, errno, "reading %s", name);
		}
		if (r == 0)
			return kiln_err_set(w->err, 0, "%s shrank while the layer was written", name);
		if (archive_write_data(w->tar, buf, (size_t)r) != r)
			return tar_fail(w, "data", name);
		left -= r;
	}
	return 0;
}

struct hlink {
	struct strmap map;     /* "dev:ino" → index into names */
	struct kiln_strv names;
};

static int write_tree_entry(struct wctx *w, int rootfd, const struct went *we,
			    const struct kiln_layer_write_opts *o, struct hlink *hl)
{
	const char *name = we->name;
	KILN_AUTOCLOSE int fd = openat2_fd(rootfd, name, O_PATH | O_NOFOLLOW, 0, RES_TREE);
	if (fd < 0) {
		if (errno == ENOENT && we->implicit)
			return 0;   /* the parent is gone too: its children carry the meaning */
		return kiln_err_set(w->err, errno, "opening %s in the tree", name);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_err_set(w->err, errno, "stat %s", name);
	if ((we->implicit || we->kind == WE_OPAQUE) && !S_ISDIR(st.st_mode))
		return kiln_err_set(w->err, ENOTDIR, "parent %s of a change is not a directory", name);

	struct archive_entry *e = archive_entry_new();
	int rc = -1;
	if (S_ISDIR(st.st_mode)) {
		KILN_AUTOFREE char *dn = kiln_xasprintf("%s/", name);
		archive_entry_set_pathname(e, dn);
	} else {
		archive_entry_set_pathname(e, name);
	}
	archive_entry_set_mode(e, st.st_mode);
	archive_entry_set_uid(e, st.st_uid);
	archive_entry_set_gid(e, st.st_gid);
	archive_entry_set_mtime(e, clamp_mtime(st.st_mtim.tv_sec, o), 0);
	archive_entry_set_size(e, 0);

	bool data = false;
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		char key[64];
		snprintf(key, sizeof key, "%llx:%llx", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
		size_t *idx = strmap_find(&hl->map, key);
		if (idx) {
			archive_entry_set_hardlink(e, hl->names.v[*idx]);
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, 0);
			goto header;
		}
		strmap_put(&hl->map, key, hl->names.n);
		kiln_strv_push(&hl->names, name);
	}
	if (S_ISREG(st.st_mode)) {
		archive_entry_set_size(e, st.st_size);
		data = st.st_size > 0;
	} else if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(fd, "", target, PATH_MAX);
		if (n < 0) {
			kiln_err_set(w->err, errno, "readlink %s", name);
			goto out;
		}
		target[n] = '\0';
		archive_entry_set_symlink(e, target);
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		archive_entry_set_rdevmajor(e, major(st.st_rdev));
		archive_entry_set_rdevminor(e, minor(st.st_rdev));
	} else if (S_ISSOCK(st.st_mode)) {
		rc = 0;   /* sockets are not archived (as tar does) */
		goto out;
	}
	if (read_xattrs(fd, name, e, w->err) < 0)
		goto out;
header:
	if (archive_write_header(w->tar, e) < ARCHIVE_WARN) {
		tar_fail(w, "header", name);
		goto out;
	}
	if (data && stream_file(w, rootfd, name, &st) < 0)
		goto out;
	rc = 0;
out:
	archive_entry_free(e);
	return rc;
}

static int build_list(const struct kiln_changes *changes, struct wlist *l, struct kiln_err *err)
{
	for (size_t i = 0; changes && i < changes->n; i++) {
		const struct kiln_change *c = &changes->v[i];
		if (!clean_change_path(c->path))
			return kiln_err_set(err, EINVAL, "layer change path \"%s\" is not a clean relative path",
					    c->path ? c->path : "");
		const char *slash = strrchr(c->path, '/');
		size_t plen = slash ? (size_t)(slash - c->path) : 0;
		const char *base = slash ? slash + 1 : c->path;
		/* a file really named .wh.* would read back as a whiteout */
		if (c->kind != KILN_CHANGE_DELETE &&
		    (kiln_str_has_prefix(c->path, ".wh.") || strstr(c->path, "/.wh.")))
			return kiln_err_set(err, EINVAL,
					    "%s: a name starting with \".wh.\" cannot be stored in a layer "
					    "(it would read as a whiteout)", c->path);
		switch (c->kind) {
		case KILN_CHANGE_ADD:
		case KILN_CHANGE_MODIFY:
			wlist_push(l, kiln_xstrdup(c->path), kiln_xstrdup(c->path), WE_TREE, false);
			break;
		case KILN_CHANGE_DELETE: {
			char *n = plen ? kiln_xasprintf("%.*s/.wh.%s", (int)plen, c->path, base)
				       : kiln_xasprintf(".wh.%s", base);
			wlist_push(l, n, kiln_xstrdup(n), WE_WHITEOUT, false);
			break;
		}
		case KILN_CHANGE_OPAQUE:
			wlist_push(l, kiln_xstrdup(c->path), kiln_xstrdup(c->path), WE_OPAQUE, false);
			wlist_push(l, kiln_xasprintf("%s/.wh..wh..opq", c->path), kiln_xasprintf("%s/", c->path),
				   WE_WHITEOUT, false);
			break;
		default:
			return kiln_err_set(err, EINVAL, "layer change %s: unknown kind %d", c->path, (int)c->kind);
		}
		for (const char *p = c->path; (p = strchr(p, '/')); p++)
			wlist_push(l, kiln_xstrndup(c->path, (size_t)(p - c->path)),
				   kiln_xstrndup(c->path, (size_t)(p - c->path)), WE_TREE, true);
	}
	if (l->n > 1)
		qsort(l->v, l->n, sizeof *l->v, went_cmp);
	/* Keep the first of equal keys (explicit before implicit, then the first given). */
	size_t o = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (o > 0 && !strcmp(l->v[o - 1].key, l->v[i].key)) {
			free(l->v[i].name);
			free(l->v[i].key);
			continue;
		}
		l->v[o++] = l->v[i];
	}
	l->n = o;
	/* A path both deleted and written: the written entry wins, drop the whiteout. */
	o = 0;
	for (size_t i = 0; i < l->n; i++) {
		struct went *we = &l->v[i];
		const char *b = strrchr(we->name, '/');
		b = b ? b + 1 : we->name;
		bool drop = false;
		if (we->kind == WE_WHITEOUT && strcmp(b, ".wh..wh..opq") != 0) {
			KILN_AUTOFREE char *target = kiln_xasprintf("%.*s%s", (int)(b - we->name), we->name, b + 4);
			size_t lo = 0, hi = l->n;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				int c = path_cmp(l->v[mid].key, target);
				if (c == 0) {
					drop = l->v[mid].kind != WE_WHITEOUT;
					break;
				}
				if (c < 0)
					lo = mid + 1;
				else
					hi = mid;
			}
		}
		if (drop) {
			free(we->name);
			free(we->key);
			continue;
		}
		l->v[o++] = *we;
	}
	l->n = o;
	return 0;
}

int kiln_layer_write(int rootfd, const struct kiln_changes *changes,
		     const struct kiln_layer_write_opts *opts, int out_fd,
		     struct kiln_layer_info *info, struct kiln_err *err)
{
	struct kiln_layer_write_opts defopts = { .compression = KILN_COMPRESS_GZIP, .source_date_epoch = -1 };
	const struct kiln_layer_write_opts *o = opts ? opts : &defopts;
	struct wlist list = {0};
	struct hlink hl = {0};
	struct wctx w = { .out_fd = out_fd, .err = err };
	struct archive_entry *raw = NULL;
	int rc = -1;
	/* Names are bytes; under a UTF-8 LC_CTYPE (this thread only) libarchive
	 * stores valid UTF-8 names as plain pax records and only other bytes with
	 * hdrcharset=BINARY, whatever the process locale is: same output always. */
	locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	locale_t oldloc = loc ? uselocale(loc) : (locale_t)0;

	if (build_list(changes, &list, err) < 0)
		goto out;
	if (hasher_init(&w.diff, err) < 0 || hasher_init(&w.blob, err) < 0)
		goto out;

	if (o->compression != KILN_COMPRESS_NONE) {
		w.comp = archive_write_new();
		int r = o->compression == KILN_COMPRESS_ZSTD ? archive_write_add_filter_zstd(w.comp)
							     : archive_write_add_filter_gzip(w.comp);
		if (r != ARCHIVE_OK || archive_write_set_format_raw(w.comp) != ARCHIVE_OK ||
		    archive_write_set_bytes_per_block(w.comp, 0) != ARCHIVE_OK) {
			kiln_err_set(err, 0, "setting up layer compression: %s", archive_error_string(w.comp));
			goto out;
		}
		if (o->compression == KILN_COMPRESS_GZIP &&
		    archive_write_set_filter_option(w.comp, "gzip", "timestamp", NULL) != ARCHIVE_OK) {
			kiln_err_set(err, 0, "gzip option: %s", archive_error_string(w.comp));
			goto out;
		}
		if (o->level) {
			int max = o->compression == KILN_COMPRESS_ZSTD ? 19 : 9;
			if (o->level < 1 || o->level > max) {
				kiln_err_set(err, EINVAL, "compression level %d out of range 1-%d", o->level, max);
				goto out;
			}
			char lv[16];
			snprintf(lv, sizeof lv, "%d", o->level);
			const char *fname = o->compression == KILN_COMPRESS_ZSTD ? "zstd" : "gzip";
			if (archive_write_set_filter_option(w.comp, fname, "compression-level", lv) != ARCHIVE_OK) {
				kiln_err_set(err, 0, "compression level: %s", archive_error_string(w.comp));
				goto out;
			}
		}
		if (archive_write_open2(w.comp, &w, NULL, blob_write_cb, NULL, NULL) != ARCHIVE_OK) {
			if (!w.failed)
				kiln_err_set(err, 0, "opening layer compressor: %s", archive_error_string(w.comp));
			goto out;
		}
		raw = archive_entry_new();
		archive_entry_set_pathname(raw, "layer.tar");
		archive_entry_set_filetype(raw, AE_IFREG);
		archive_entry_set_perm(raw, 0644);
		if (archive_write_header(w.comp, raw) != ARCHIVE_OK) {
			kiln_err_set(err, 0, "layer compressor: %s", archive_error_string(w.comp));
			goto out;
		}
	}

	w.tar = archive_write_new();
	if (archive_write_set_format_pax_restricted(w.tar) != ARCHIVE_OK ||
	    archive_write_set_format_option(w.tar, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(w.tar, 10240) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(w.tar, 1) != ARCHIVE_OK) {
		kiln_err_set(err, 0, "setting up the tar writer: %s", archive_error_string(w.tar));
		goto out;
	}
	if (archive_write_open2(w.tar, &w, NULL, tar_write_cb, NULL, NULL) != ARCHIVE_OK) {
		if (!w.failed)
			kiln_err_set(err, 0, "opening the tar writer: %s", archive_error_string(w.tar));
		goto out;
	}
	for (size_t i = 0; i < list.n; i++) {
		const struct went *we = &list.v[i];
		int r = we->kind == WE_WHITEOUT ? write_marker(&w, we->name, o)
						: write_tree_entry(&w, rootfd, we, o, &hl);
		if (r < 0)
			goto out;
	}
	if (archive_write_close(w.tar) != ARCHIVE_OK) {
		tar_fail(&w, "closing", "(end)");
		goto out;
	}
	if (w.comp) {
		if (archive_write_finish_entry(w.comp) != ARCHIVE_OK || archive_write_close(w.comp) != ARCHIVE_OK) {
			if (!w.failed)
				kiln_err_set(err, 0, "finishing layer compression: %s", archive_error_string(w.comp));
			goto out;
		}
	}
	if (w.failed)
		goto out;
	memset(info, 0, sizeof *info);
	hasher_final(&w.diff, info->diff_id);
	if (w.comp)
		hasher_final(&w.blob, info->digest);
	else
		snprintf(info->digest, sizeof info->digest, "%s", info->diff_id);
	info->size = w.size;
	info->media_type = kiln_compression_media_type(o->compression);
	rc = 0;
out:
	if (w.tar)
		archive_write_free(w.tar);
	if (w.comp)
		archive_write_free(w.comp);
	archive_entry_free(raw);
	hasher_free(&w.diff);
	hasher_free(&w.blob);
	strmap_free(&hl.map);
	kiln_strv_free(&hl.names);
	wlist_free(&list);
	if (loc) {
		uselocale(oldloc);
		freelocale(loc);
	}
	return rc;
}

/* ------------------------------------------------------------------ extractor */

struct actx {
	int rootfd;
	int in_fd;
	struct hasher blob;        /* of the bytes read from in_fd */
	int64_t blob_size;
	char *inbuf;
	const struct kiln_layer_apply_opts *o;
	struct archive *raw;       /* decompressor (format raw) */
	struct archive *tar;       /* tar parser fed from raw */
	struct hasher diff;
	char *buf;
	struct kiln_err *err;
	bool read_failed;
	struct strmap created;     /* "pdev:pino/name" of entries this layer made */
	struct dirrec {
		char *path;
		dev_t dev;
		ino_t ino;
		struct timespec ts[2];
		mode_t mode;       /* final mode, set at the end (non-root only) */
		bool fix_mode;
	} *dirs;
	size_t ndirs, capdirs;
	struct strmap diridx;      /* path → index in dirs */
	bool is_root;
	size_t entries;            /* tar entries seen */
};

static la_ssize_t in_read_cb(struct archive *a, void *ud, const void **out)
{
	struct actx *c = ud;
	ssize_t n;
	do
		n = read(c->in_fd, c->inbuf, IO_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "reading the layer stream");
		return -1;
	}
	hasher_update(&c->blob, c->inbuf, (size_t)n);
	c->blob_size += n;
	*out = c->inbuf;
	return n;
}

static la_ssize_t raw_read_cb(struct archive *a, void *ud, const void **out)
{
	(void)a;
	struct actx *c = ud;
	la_ssize_t n = archive_read_data(c->raw, c->buf, IO_CHUNK);
	if (n < 0) {
		c->read_failed = true;
		archive_set_error(a, EIO, "decompressing layer: %s",
				  archive_error_string(c->raw) ? archive_error_string(c->raw) : "read error");
		return -1;
	}
	hasher_update(&c->diff, c->buf, (size_t)n);
	*out = c->buf;
	return n;
}

/* A name for messages: at most size-1 bytes, control bytes as '?', "..." when cut. */
static void display_name(const char *name, char *out, size_t size)
{
	size_t n = 0, len = strlen(name);
	for (; n + 1 < size && name[n]; n++) {
		unsigned char ch = (unsigned char)name[n];
		out[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	out[n] = '\0';
	if (len > n && size > 4)
		memcpy(out + size - 4, "...", 4);
}

/* Split a tar name into clean components.  A leading '/' and "." parts are
 * dropped; ".." anywhere is refused.  Returns the joined clean path (possibly
 * "" for the root) or NULL with err set. */
static char *clean_entry_name(const char *name, struct kiln_err *err)
{
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, "");
	const char *s = name;
	while (*s) {
		while (*s == '/')
			s++;
		if (!*s)
			break;
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 2 && s[0] == '.' && s[1] == '.') {
			kiln_buf_free(&b);
			char disp[320];
			display_name(name, disp, sizeof disp);
			kiln_err_set(err, EPERM, "layer entry \"%s\" has a \"..\" component", disp);
			return NULL;
		}
		if (!(n == 1 && s[0] == '.')) {
			if (b.len)
				kiln_buf_putc(&b, '/');
			kiln_buf_append(&b, s, n);
		}
		s += n;
	}
	return kiln_buf_steal(&b);
}

static void created_key(char *out, size_t outsz, const struct stat *pst, const char *base)
{
	snprintf(out, outsz, "%llx:%llx/%s", (unsigned long long)pst->st_dev,
		 (unsigned long long)pst->st_ino, base);
}

static void mark_created(struct actx *c, const struct stat *pst, const char *base)
{
	char key[NAME_MAX + 64];
	created_key(key, sizeof key, pst, base);
	strmap_put(&c->created, key, 1);
}

/* Open (O_PATH) the directory `dir` (clean, relative, "" = root) beneath the
 * root, symlinks resolved inside the root.  Missing components are created
 * (0755) when create is set; *missing is set when it does not exist and
 * create is false. */
static int open_parent(struct actx *c, const char *dir, bool create, bool *missing)
{
	if (missing)
		*missing = false;
	if (!*dir)
		return openat2_fd(c->rootfd, ".", O_PATH | O_DIRECTORY, 0, RES_ROOT);
	int fd = openat2_fd(c->rootfd, dir, O_PATH | O_DIRECTORY, 0, RES_ROOT);
	if (fd >= 0)
		return fd;
	if (errno != ENOENT) {
		kiln_err_set(c->err, errno, "resolving its directory in the layer root");
		return -1;
	}
	if (!create) {
		if (missing)
			*missing = true;
		return -1;
	}
	/* Walk component by component, creating what is missing. */
	KILN_AUTOFREE char *path = kiln_xstrdup(dir);
	int cur = openat2_fd(c->rootfd, ".", O_PATH | O_DIRECTORY, 0, RES_ROOT);
	if (cur < 0) {
		kiln_err_set(c->err, errno, "opening the layer root");
		return -1;
	}
	char *s = path;
	for (;;) {
		char *e = strchr(s, '/');
		if (e)
			*e = '\0';
		int next = openat(cur, s, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(cur, s, 0755) == 0) {
				struct stat pst;
				if (fstat(cur, &pst) == 0)
					mark_created(c, &pst, s);
				/* owned by the image's root (the id offset) like the rest */
				if (c->o->keep_owner &&
				    fchownat(cur, s, c->o->uid_offset, c->o->gid_offset, AT_SYMLINK_NOFOLLOW) < 0) {
					kiln_err_set(c->err, errno, "chown of a missing parent directory");
					close(cur);
					return -1;
				}
			} else if (errno != EEXIST) {
				kiln_err_set(c->err, errno, "creating a missing parent directory");
				close(cur);
				return -1;
			}
			next = openat(cur, s, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (next < 0 && (errno == ELOOP || errno == ENOTDIR)) {
			/* a symlink (or not a directory): resolve the prefix inside the root */
			next = openat2_fd(c->rootfd, path, O_PATH | O_DIRECTORY, 0, RES_ROOT);
		}
		if (next < 0) {
			kiln_err_set(c->err, errno, "resolving its directory in the layer root");
			close(cur);
			return -1;
		}
		close(cur);
		cur = next;
		if (!e)
			break;
		*e = '/';
		s = e + 1;
	}
	return cur;
}

/* Remove whatever is at pfd/base unless it is a directory and keep_dir. */
static int clear_slot(struct actx *c, int pfd, const char *base, bool keep_dir, const char *name)
{
	struct stat st;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return kiln_err_set(c->err, errno, "layer entry %s: stat", name);
	}
	if (S_ISDIR(st.st_mode)) {
		if (keep_dir)
			return 0;
		if (kiln_rm_rf_at(pfd, base, c->err) < 0)
			return kiln_err_wrap(c->err, "layer entry %s: removing the old directory", name);
		return 0;
	}
	if (unlinkat(pfd, base, 0) < 0 && errno != ENOENT)
		return kiln_err_set(c->err, errno, "layer entry %s: removing the old entry", name);
	return 0;
}

/* fd is an open file or directory (fsetxattr), or with is_path an O_PATH fd
 * (set through /proc/self/fd, which lands on the inode itself, even a symlink). */
static int apply_xattrs(struct actx *c, int fd, bool is_path, struct archive_entry *e, const char *name)
{
	const char *xn;
	const void *xv;
	size_t xs;
	if (archive_entry_xattr_reset(e) == 0)
		return 0;
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
		if (!xn || !*xn || kiln_layer_xattr_skipped(xn))
			continue;
		/* file capabilities are privileges like setuid: kept only with keep_owner */
		if (!c->o->keep_owner && !strcmp(xn, "security.capability"))
			continue;
		int r = is_path ? setxattr(proc, xn, xv, xs, 0) : fsetxattr(fd, xn, xv, xs, 0);
		if (r < 0) {
			/* not supported here, or not allowed (user.* on symlinks and
			 * devices, trusted.* or security.* in a user namespace) */
			if (errno == ENOTSUP || errno == EPERM)
				continue;
			char xd[128];
			display_name(xn, xd, sizeof xd);
			return kiln_err_set(c->err, errno, "layer entry %s: setting xattr %s", name, xd);
		}
	}
	return 0;
}

/* A directory entry applied over a directory that is already there keeps the
 * directory; its xattrs become the entry's: the writer records every xattr a
 * directory has (but the skipped ones), so one the entry lacks was removed
 * (`rm -rf d && mkdir d`, setfattr -x). */
static int drop_stale_xattrs(struct actx *c, int fd, struct archive_entry *e, const char *name)
{
	ssize_t n = flistxattr(fd, NULL, 0);
	if (n <= 0)
		return 0;
	char *list = kiln_xmalloc((size_t)n + 1);
	n = flistxattr(fd, list, (size_t)n);
	int rc = 0;
	for (ssize_t i = 0; n > 0 && i < n && !rc; i += (ssize_t)strlen(list + i) + 1) {
		const char *xn = list + i;
		if (!*xn || kiln_layer_xattr_skipped(xn))
			continue;
		bool keep = false;
		const char *en;
		const void *ev;
		size_t es;
		archive_entry_xattr_reset(e);
		while (!keep && archive_entry_xattr_next(e, &en, &ev, &es) == ARCHIVE_OK)
			keep = en && !strcmp(en, xn);
		if (keep || fremovexattr(fd, xn) == 0 || errno == ENODATA || errno == ENOTSUP ||
		    errno == EPERM)
			continue;
		char xd[128];
		display_name(xn, xd, sizeof xd);
		rc = kiln_err_set(c->err, errno, "layer entry %s: removing xattr %s", name, xd);
	}
	free(list);
	return rc;
}

static mode_t entry_perm(struct actx *c, struct archive_entry *e)
{
	mode_t m = archive_entry_perm(e) & 07777;
	if (!c->o->keep_owner)
		m &= ~(mode_t)(S_ISUID | S_ISGID);
	return m;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
	if (archive_entry_mtime_is_set(e)) {
		ts[1].tv_sec = archive_entry_mtime(e);
		ts[1].tv_nsec = archive_entry_mtime_nsec(e);
	} else {
		ts[1].tv_sec = 0;
		ts[1].tv_nsec = 0;
	}
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec >= 1000000000)
		ts[1].tv_nsec = 0;
	if (archive_entry_atime_is_set(e)) {
		ts[0].tv_sec = archive_entry_atime(e);
		ts[0].tv_nsec = archive_entry_atime_nsec(e);
		if (ts[0].tv_nsec < 0 || ts[0].tv_nsec >= 1000000000)
			ts[0].tv_nsec = 0;
	} else {
		ts[0] = ts[1];
	}
}

static int owner_ids(struct actx *c, struct archive_entry *e, const char *name, uid_t *uid, gid_t *gid)
{
	int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
	u += c->o->uid_offset;
	g += c->o->gid_offset;
	if (u < 0 || g < 0 || u >= (int64_t)UINT32_MAX || g >= (int64_t)UINT32_MAX)
		return kiln_err_set(c->err, ERANGE, "layer entry %s: owner %lld:%lld out of range",
				    name, (long long)u, (long long)g);
	*uid = (uid_t)u;
	*gid = (gid_t)g;
	return 0;
}

/* Ownership, mode, xattrs and times for a non-directory opened as fd (O_PATH
 * allowed) at pfd/base. */
static int finish_meta(struct actx *c, int pfd, const char *base, int fd, struct archive_entry *e,
		       const char *name, bool is_link)
{
	if (c->o->keep_owner) {
		uid_t uid;
		gid_t gid;
		if (owner_ids(c, e, name, &uid, &gid) < 0)
			return -1;
		if (fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: chown", name);
	}
	if (!is_link && fchmodat(pfd, base, entry_perm(c, e), AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: chmod", name);
	if (apply_xattrs(c, fd, true, e, name) < 0)
		return -1;
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: setting times", name);
	return 0;
}

static int write_regular(struct actx *c, int pfd, const char *base, struct archive_entry *e, const char *name)
{
	KILN_AUTOCLOSE int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: create", name);
	const void *blk;
	size_t len;
	la_int64_t off;
	int64_t end = 0;
	for (;;) {
		int r = archive_read_data_block(c->tar, &blk, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return kiln_err_set(c->err, archive_errno(c->tar) > 0 ? archive_errno(c->tar) : 0,
					    "layer entry %s: reading data: %s", name,
					    archive_error_string(c->tar) ? archive_error_string(c->tar) : "error");
		if (off < 0)
			return kiln_err_set(c->err, EINVAL, "layer entry %s: bad data offset", name);
		const char *p = blk;
		size_t left = len;
		int64_t at = off;
		while (left) {
			ssize_t w = pwrite(fd, p, left, at);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return kiln_err_set(c->err, errno, "layer entry %s: write", name);
			}
			p += w;
			left -= (size_t)w;
			at += w;
		}
		if (at > end)
			end = at;
	}
	int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : end;
	if (size > end && ftruncate(fd, size) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: truncate", name);
	if (c->o->keep_owner) {
		uid_t uid;
		gid_t gid;
		if (owner_ids(c, e, name, &uid, &gid) < 0)
			return -1;
		if (fchown(fd, uid, gid) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: chown", name);
	}
	if (fchmod(fd, entry_perm(c, e)) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: chmod", name);
	if (apply_xattrs(c, fd, false, e, name) < 0)
		return -1;
	struct timespec ts[2];
	entry_times(e, ts);
	if (futimens(fd, ts) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: setting times", name);
	return 0;
}

static int write_directory(struct actx *c, int pfd, const char *base, const char *path,
			   struct archive_entry *e, const char *name)
{
	if (clear_slot(c, pfd, base, true, name) < 0)
		return -1;
	bool existed = false;
	if (mkdirat(pfd, base, 0700) < 0) {
		if (errno != EEXIST)
			return kiln_err_set(c->err, errno, "layer entry %s: mkdir", name);
		existed = true;
	}
	KILN_AUTOCLOSE int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: open directory", name);
	if (c->o->keep_owner) {
		uid_t uid;
		gid_t gid;
		if (owner_ids(c, e, name, &uid, &gid) < 0)
			return -1;
		if (fchown(fd, uid, gid) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: chown", name);
	}
	/* Without root a 0555 directory would refuse the entries that follow
	 * it: keep it owner-writable until the end. */
	mode_t perm = entry_perm(c, e);
	bool fix_mode = !c->is_root && (perm & S_IRWXU) != S_IRWXU;
	if (fchmod(fd, fix_mode ? perm | S_IRWXU : perm) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: chmod", name);
	if (existed && drop_stale_xattrs(c, fd, e, name) < 0)
		return -1;
	if (apply_xattrs(c, fd, false, e, name) < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: stat", name);
	size_t *idx = strmap_find(&c->diridx, path);
	struct dirrec *d;
	if (idx) {
		d = &c->dirs[*idx];
	} else {
		if (c->ndirs == c->capdirs) {
			c->capdirs = c->capdirs ? c->capdirs * 2 : 64;
			c->dirs = kiln_xrealloc(c->dirs, c->capdirs * sizeof *c->dirs);
		}
		strmap_put(&c->diridx, path, c->ndirs);
		d = &c->dirs[c->ndirs++];
		d->path = kiln_xstrdup(path);
	}
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	d->mode = perm;
	d->fix_mode = fix_mode;
	entry_times(e, d->ts);
	return 0;
}

/* Remove what earlier layers put into the directory pfd.  Entries this layer
 * created stay; a lower directory is emptied the same way and removed only
 * when nothing of this layer is inside it (so o/sub/x written before
 * o/.wh..wh..opq survives, with o/sub's lower contents gone).  *kept tells
 * whether anything was kept. */
static int opaque_clear(struct actx *c, int pfd, const char *name, int depth, bool *kept)
{
	if (depth > 4096)
		return kiln_err_set(c->err, ELOOP, "layer entry %s: opaque directory too deep", name);
	struct stat pst;
	if (fstat(pfd, &pst) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: stat", name);
	int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: open directory", name);
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return kiln_err_set(c->err, errno, "layer entry %s: opendir", name);
	}
	struct kiln_strv names = {0};
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			kiln_strv_push(&names, de->d_name);
	closedir(d);
	int rc = 0;
	char key[NAME_MAX + 64];
	for (size_t i = 0; i < names.n && rc == 0; i++) {
		const char *n = names.v[i];
		created_key(key, sizeof key, &pst, n);
		bool created = strmap_find(&c->created, key) != NULL;
		struct stat st;
		if (fstatat(pfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			rc = kiln_err_set(c->err, errno, "layer entry %s: opaque directory", name);
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(pfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				rc = kiln_err_set(c->err, errno, "layer entry %s: opaque directory", name);
				break;
			}
			bool sub_kept = false;
			rc = opaque_clear(c, sub, name, depth + 1, &sub_kept);
			close(sub);
			if (rc < 0)
				break;
			if (created || sub_kept)
				*kept = true;
			else if (unlinkat(pfd, n, AT_REMOVEDIR) < 0 && errno != ENOENT)
				rc = kiln_err_set(c->err, errno, "layer entry %s: opaque directory", name);
		} else if (created) {
			*kept = true;
		} else if (unlinkat(pfd, n, 0) < 0 && errno != ENOENT) {
			rc = kiln_err_set(c->err, errno, "layer entry %s: opaque directory", name);
		}
	}
	kiln_strv_free(&names);
	return rc;
}

static int apply_entry(struct actx *c, struct archive_entry *e)
{
	const char *rawname = archive_entry_pathname(e);
	if (!rawname)
		rawname = archive_entry_pathname_utf8(e);
	if (!rawname)
		return kiln_err_set(c->err, EINVAL, "layer entry without a usable name");
	char raw[320];   /* the name as shown in messages */
	display_name(rawname, raw, sizeof raw);
	KILN_AUTOFREE char *path = clean_entry_name(rawname, c->err);
	if (!path)
		return -1;
	if (!*path)
		return 0;   /* the root itself: its metadata belongs to whoever made the root */
	char *slash = strrchr(path, '/');
	KILN_AUTOFREE char *dir = slash ? kiln_xstrndup(path, (size_t)(slash - path)) : kiln_xstrdup("");
	const char *base = slash ? slash + 1 : path;
	if (strlen(base) > NAME_MAX)
		return kiln_err_set(c->err, ENAMETOOLONG, "layer entry %s: name too long", raw);

	if (c->o->whiteouts && kiln_str_has_prefix(base, ".wh.")) {
		if (!strcmp(base, ".wh..wh..opq")) {
			KILN_AUTOCLOSE int pfd = open_parent(c, dir, true, NULL);
			if (pfd < 0)
				return kiln_err_wrap(c->err, "layer entry %s", raw);
			bool kept = false;
			return opaque_clear(c, pfd, raw, 0, &kept);
		}
		if (kiln_str_has_prefix(base, ".wh..wh."))
			return 0;   /* aufs metadata, meaningless here */
		const char *victim = base + 4;
		if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
			return kiln_err_set(c->err, EINVAL, "layer entry %s: invalid whiteout", raw);
		bool missing = false;
		KILN_AUTOCLOSE int pfd = open_parent(c, dir, false, &missing);
		if (pfd < 0)
			return missing ? 0 : kiln_err_wrap(c->err, "layer entry %s", raw);
		if (kiln_rm_rf_at(pfd, victim, c->err) < 0)
			return kiln_err_wrap(c->err, "layer entry %s: whiteout", raw);
		return 0;
	}

	KILN_AUTOCLOSE int pfd = open_parent(c, dir, true, NULL);
	if (pfd < 0)
		return kiln_err_wrap(c->err, "layer entry %s", raw);
	struct stat pst;
	if (fstat(pfd, &pst) < 0)
		return kiln_err_set(c->err, errno, "layer entry %s: stat parent", raw);

	const char *hardlink_raw = archive_entry_hardlink(e);
	if (!hardlink_raw)
		hardlink_raw = archive_entry_hardlink_utf8(e);
	if (hardlink_raw) {
		char hardlink[320];
		display_name(hardlink_raw, hardlink, sizeof hardlink);
		KILN_AUTOFREE char *tpath = clean_entry_name(hardlink_raw, c->err);
		if (!tpath)
			return kiln_err_wrap(c->err, "hard link %s", raw);
		if (!*tpath)
			return kiln_err_set(c->err, EPERM, "layer entry %s: hard link to the root", raw);
		char *ts = strrchr(tpath, '/');
		KILN_AUTOFREE char *tdir = ts ? kiln_xstrndup(tpath, (size_t)(ts - tpath)) : kiln_xstrdup("");
		const char *tbase = ts ? ts + 1 : tpath;
		bool missing = false;
		KILN_AUTOCLOSE int tpfd = open_parent(c, tdir, false, &missing);
		if (tpfd < 0) {
			if (missing)
				return kiln_err_set(c->err, ENOENT, "layer entry %s: hard link target %s",
						    raw, hardlink);
			return kiln_err_wrap(c->err, "layer entry %s: hard link target", raw);
		}
		struct stat tst, dst;
		if (fstatat(tpfd, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: hard link target %s",
					    raw, hardlink);
		if (S_ISDIR(tst.st_mode))
			return kiln_err_set(c->err, EPERM, "layer entry %s: hard link to a directory", raw);
		if (fstatat(pfd, base, &dst, AT_SYMLINK_NOFOLLOW) == 0 && dst.st_dev == tst.st_dev &&
		    dst.st_ino == tst.st_ino) {
			mark_created(c, &pst, base);
			return 0;   /* already that file */
		}
		if (clear_slot(c, pfd, base, false, raw) < 0)
			return -1;
		if (linkat(tpfd, tbase, pfd, base, 0) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: hard link to %s", raw, hardlink);
		mark_created(c, &pst, base);
		return 0;
	}

	mode_t type = archive_entry_filetype(e);
	int rc = 0;
	switch (type) {
	case AE_IFDIR:
		rc = write_directory(c, pfd, base, path, e, raw);
		break;
	case AE_IFREG:
		if (clear_slot(c, pfd, base, false, raw) < 0)
			return -1;
		rc = write_regular(c, pfd, base, e, raw);
		break;
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e);
		if (!target)
			target = archive_entry_symlink_utf8(e);
		if (!target || !*target)
			return kiln_err_set(c->err, EINVAL, "layer entry %s: symlink without a target", raw);
		if (clear_slot(c, pfd, base, false, raw) < 0)
			return -1;
		if (symlinkat(target, pfd, base) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: symlink", raw);
		KILN_AUTOCLOSE int fd = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: open symlink", raw);
		rc = finish_meta(c, pfd, base, fd, e, raw, true);
		break;
	}
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		if (type != AE_IFIFO && !(c->o->allow_devices && c->is_root))
			return 0;   /* device nodes are skipped unless allowed */
		if (clear_slot(c, pfd, base, false, raw) < 0)
			return -1;
		dev_t dev = type == AE_IFIFO ? 0
			: makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
		mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
		if (mknodat(pfd, base, kind | 0600, dev) < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: mknod", raw);
		KILN_AUTOCLOSE int fd = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return kiln_err_set(c->err, errno, "layer entry %s: open", raw);
		rc = finish_meta(c, pfd, base, fd, e, raw, false);
		break;
	}
	default:
		return 0;   /* sockets and unknown types are skipped */
	}
	if (rc == 0)
		mark_created(c, &pst, base);
	return rc;
}

static void apply_dir_times(struct actx *c)
{
	for (size_t i = c->ndirs; i-- > 0;) {
		struct dirrec *d = &c->dirs[i];
		int fd = openat2_fd(c->rootfd, d->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, RES_ROOT);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_dev == d->dev && st.st_ino == d->ino) {
			if (d->fix_mode)
				(void)fchmod(fd, d->mode);
			(void)futimens(fd, d->ts);
		}
		close(fd);
	}
}

/* The decompressors kiln reads: gzip, zstd, xz/lzma, bzip2 — each only when
 * libarchive has it built in.  Never archive_read_support_filter_all(): it
 * registers lrzip, lzop, grzip... that libarchive runs as external programs
 * found on $PATH (a crafted archive must not make kiln exec anything).  Every
 * libarchive reader in kiln (layers, ADD, import, load) is set up here. */
typedef int (*filter_fn)(struct archive *);

void kiln_layer_read_filters(struct archive *a)
{
	static const filter_fn fns[] = {
		archive_read_support_filter_gzip,
		archive_read_support_filter_zstd,
		archive_read_support_filter_xz,
		archive_read_support_filter_lzma,
		archive_read_support_filter_bzip2,
	};
	static int native[sizeof fns / sizeof *fns];   /* 0 unknown, 1 native, -1 external */
	for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
		if (!native[i]) {
			struct archive *probe = archive_read_new();
			native[i] = fns[i](probe) == ARCHIVE_OK ? 1 : -1;
			archive_read_free(probe);
		}
		if (native[i] > 0)
			fns[i](a);
	}
}

static int apply_stream(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
			struct kiln_layer_info *info, bool whole, struct kiln_err *err);

int kiln_layer_apply(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
		     char diff_id[KILN_DIGEST_MAX], struct kiln_err *err)
{
	struct kiln_layer_info info;
	if (apply_stream(rootfd, in_fd, opts, &info, diff_id != NULL, err) < 0)
		return -1;
	if (diff_id)
		snprintf(diff_id, KILN_DIGEST_MAX, "%s", info.diff_id);
	return 0;
}

int kiln_layer_apply_ex(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
			struct kiln_layer_info *info, struct kiln_err *err)
{
	return apply_stream(rootfd, in_fd, opts, info, true, err);
}

/* whole: the caller wants digests of everything in in_fd; a regular file is
 * then read to its end.  Otherwise (and always for pipes and devices, which
 * may never end: /dev/zero is an empty tar followed by endless zeros) at most
 * KILN_LAYER_TRAIL_MAX bytes after the tar's end-of-archive marker are read,
 * as Docker's tar reader stops at the marker. */
static int apply_stream(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
			struct kiln_layer_info *info, bool whole, struct kiln_err *err)
{
	struct kiln_layer_apply_opts defopts = { .whiteouts = true };
	struct actx c = { .rootfd = rootfd, .in_fd = in_fd, .o = opts ? opts : &defopts, .err = err };
	struct archive_entry *re = NULL;
	int rc = -1;
	c.is_root = geteuid() == 0;

	struct stat rst;
	if (fstat(rootfd, &rst) < 0 || !S_ISDIR(rst.st_mode)) {
		kiln_err_set(err, ENOTDIR, "applying layer: the target is not a directory");
		return -1;
	}
	if (hasher_init(&c.diff, err) < 0)
		return -1;
	if (hasher_init(&c.blob, err) < 0) {
		hasher_free(&c.diff);
		return -1;
	}
	c.buf = kiln_xmalloc(IO_CHUNK);
	c.inbuf = kiln_xmalloc(IO_CHUNK);

	c.raw = archive_read_new();
	kiln_layer_read_filters(c.raw);
	archive_read_support_format_raw(c.raw);
	if (archive_read_open2(c.raw, &c, NULL, in_read_cb, NULL, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(c.raw, &re) != ARCHIVE_OK) {
		kiln_err_set(err, archive_errno(c.raw) > 0 ? archive_errno(c.raw) : 0, "reading layer: %s",
			     archive_error_string(c.raw) ? archive_error_string(c.raw) : "empty or unreadable stream");
		goto out;
	}
	c.tar = archive_read_new();
	archive_read_support_format_tar(c.tar);
	if (archive_read_open2(c.tar, &c, NULL, raw_read_cb, NULL, NULL) != ARCHIVE_OK) {
		kiln_err_set(err, 0, "reading layer: %s",
			     archive_error_string(c.tar) ? archive_error_string(c.tar) : "not a tar stream");
		goto out;
	}
	for (int retries = 0;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(c.tar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_RETRY && ++retries < 16)
			continue;
		if (r < ARCHIVE_WARN || r == ARCHIVE_RETRY) {
			kiln_err_set(err, 0, "reading layer: %s",
				     archive_error_string(c.tar) ? archive_error_string(c.tar) : "bad tar header");
			goto out;
		}
		c.entries++;
		if (apply_entry(&c, e) < 0)
			goto out;
	}
	/* Hash what follows the tar's end marker too: diff_id covers the stream.
	 * Only a regular file is read to its end, and only when its digests are
	 * wanted; any other input stops after KILN_LAYER_TRAIL_MAX bytes. */
	struct stat ist;
	if (whole)
		whole = fstat(in_fd, &ist) == 0 && S_ISREG(ist.st_mode);
	int64_t trail = 0;
	bool cut = false;
	for (;;) {
		la_ssize_t n = archive_read_data(c.raw, c.buf, IO_CHUNK);
		if (n < 0) {
			kiln_err_set(err, 0, "reading layer: %s",
				     archive_error_string(c.raw) ? archive_error_string(c.raw) : "read error");
			goto out;
		}
		if (n == 0)
			break;
		hasher_update(&c.diff, c.buf, (size_t)n);
		trail += n;
		if (!whole && trail > KILN_LAYER_TRAIL_MAX) {
			cut = true;
			break;
		}
	}
	if (cut && c.entries == 0) {
		kiln_err_set(err, 0, "reading layer: not a tar archive (no entry, and more than %d KiB after "
			     "the end-of-archive marker)", KILN_LAYER_TRAIL_MAX / 1024);
		goto out;
	}
	/* and the rest of the input (a blob's digest covers all of it) */
	while (whole) {
		const void *dummy;
		la_ssize_t n = in_read_cb(c.raw, &c, &dummy);
		if (n < 0) {
			kiln_err_set(err, errno, "reading the layer stream");
			goto out;
		}
		if (n == 0)
			break;
	}
	apply_dir_times(&c);
	memset(info, 0, sizeof *info);
	hasher_final(&c.diff, info->diff_id);
	hasher_final(&c.blob, info->digest);
	info->size = c.blob_size;
	switch (archive_filter_code(c.raw, 0)) {
	case ARCHIVE_FILTER_GZIP:
		info->media_type = KILN_MT_LAYER_GZIP;
		break;
	case ARCHIVE_FILTER_ZSTD:
		info->media_type = KILN_MT_LAYER_ZSTD;
		break;
	case ARCHIVE_FILTER_NONE:
		info->media_type = KILN_MT_LAYER_TAR;
		break;
	default:
		info->media_type = NULL;
	}
	rc = 0;
out:
	if (c.tar)
		archive_read_free(c.tar);
	if (c.raw)
		archive_read_free(c.raw);
	hasher_free(&c.diff);
	hasher_free(&c.blob);
	free(c.buf);
	free(c.inbuf);
	for (size_t i = 0; i < c.ndirs; i++)
		free(c.dirs[i].path);
	free(c.dirs);
	strmap_free(&c.diridx);
	strmap_free(&c.created);
	return rc;
}
