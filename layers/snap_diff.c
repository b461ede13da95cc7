/* kiln — change sets between two trees (btrfs, vfs) and the pieces the
 * overlay diff shares: metadata comparison by the canonical rules of
 * snapshot.h (content: snap_same.c), sorted directory listings, whole-subtree
 * ADDs, small sets. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snap_internal.h"

/* ---- sets ---- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static void u64set_grow(struct snap_u64set *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 64;
	uint64_t *nv = kiln_xcalloc(ncap, sizeof(*nv));
	for (size_t i = 0; i < s->cap; i++) {
		uint64_t x = s->v[i];
		if (!x)
			continue;
		size_t j = mix64(x) & (ncap - 1);
		while (nv[j])
			j = (j + 1) & (ncap - 1);
		nv[j] = x;
	}
	free(s->v);
	s->v = nv;
	s->cap = ncap;
}

void snap_u64set_add(struct snap_u64set *s, uint64_t x)
{
	if (!x)
		return;
	if ((s->n + 1) * 2 > s->cap)
		u64set_grow(s);
	size_t j = mix64(x) & (s->cap - 1);
	while (s->v[j]) {
		if (s->v[j] == x)
			return;
		j = (j + 1) & (s->cap - 1);
	}
	s->v[j] = x;
	s->n++;
}

bool snap_u64set_has(const struct snap_u64set *s, uint64_t x)
{
	if (!s || !s->cap || !x)
		return false;
	size_t j = mix64(x) & (s->cap - 1);
	while (s->v[j]) {
		if (s->v[j] == x)
			return true;
		j = (j + 1) & (s->cap - 1);
	}
	return false;
}

void snap_u64set_free(struct snap_u64set *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return mix64(h);
}

static void strset_grow(struct snap_strset *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 64;
	char **nv = kiln_xcalloc(ncap, sizeof(*nv));
	for (size_t i = 0; i < s->cap; i++) {
		char *x = s->v[i];
		if (!x)
			continue;
		size_t j = str_hash(x) & (ncap - 1);
		while (nv[j])
			j = (j + 1) & (ncap - 1);
		nv[j] = x;
	}
	free(s->v);
	s->v = nv;
	s->cap = ncap;
}

void snap_strset_add(struct snap_strset *s, const char *str)
{
	if ((s->n + 1) * 2 > s->cap)
		strset_grow(s);
	size_t j = str_hash(str) & (s->cap - 1);
	while (s->v[j]) {
		if (!strcmp(s->v[j], str))
			return;
		j = (j + 1) & (s->cap - 1);
	}
	s->v[j] = kiln_xstrdup(str);
	s->n++;
}

bool snap_strset_has(const struct snap_strset *s, const char *str)
{
	if (!s || !s->cap)
		return false;
	size_t j = str_hash(str) & (s->cap - 1);
	while (s->v[j]) {
		if (!strcmp(s->v[j], str))
			return true;
		j = (j + 1) & (s->cap - 1);
	}
	return false;
}

void snap_strset_free(struct snap_strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* ---- directory listings ---- */

struct dent {
	char *name;
	uint64_t ino;
};

struct dents {
	struct dent *v;
	size_t n, cap;
};

static void dents_free(struct dents *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	memset(d, 0, sizeof(*d));
}

static int dent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

static int list_dents(int dirfd, struct dents *out, struct kiln_err *err)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening a directory to list it");
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return kiln_err_set(err, e, "listing a directory");
	}
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 16;
			out->v = kiln_xrealloc(out->v, out->cap * sizeof(*out->v));
		}
		out->v[out->n].name = kiln_xstrdup(de->d_name);
		out->v[out->n].ino = de->d_ino;
		out->n++;
		errno = 0;
	}
	int e = errno;
	closedir(d);
	if (e) {
		dents_free(out);
		return kiln_err_set(err, e, "reading a directory");
	}
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), dent_cmp);
	return 0;
}

int snap_list_dir(int dirfd, struct kiln_strv *out, struct kiln_err *err)
{
	struct dents d = { 0 };
	if (list_dents(dirfd, &d, err))
		return -1;
	for (size_t i = 0; i < d.n; i++) {
		kiln_strv_push_owned(out, d.v[i].name);
		d.v[i].name = NULL;
	}
	free(d.v);
	return 0;
}

char *snap_join(const char *rel, const char *name)
{
	if (!rel || !*rel)
		return kiln_xstrdup(name);
	return kiln_xasprintf("%s/%s", rel, name);
}

/* ---- metadata ---- */

struct xattr_list {
	char **names;          /* sorted */
	size_t n;
	char *buf;
};

static void xattr_list_free(struct xattr_list *x)
{
	free(x->names);
	free(x->buf);
	memset(x, 0, sizeof(*x));
}

static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int xattrs_get(const char *path, struct xattr_list *x, struct kiln_err *err)
{
	memset(x, 0, sizeof(*x));
	for (;;) {
		ssize_t n = llistxattr(path, NULL, 0);
		if (n < 0) {
			if (errno == ENOTSUP || errno == ENOENT)
				return 0;
			return kiln_err_set(err, errno, "listing xattrs of %s", path);
		}
		if (n == 0)
			return 0;
		x->buf = kiln_xmalloc((size_t)n + 1);
		ssize_t m = llistxattr(path, x->buf, (size_t)n);
		if (m < 0 && errno == ERANGE) {
			free(x->buf);
			x->buf = NULL;
			continue;
		}
		if (m < 0)
			return kiln_err_set(err, errno, "listing xattrs of %s", path);
		x->buf[m] = 0;
		size_t cnt = 0;
		for (ssize_t i = 0; i < m; i += (ssize_t)strlen(x->buf + i) + 1)
			cnt++;
		x->names = kiln_xcalloc(cnt + 1, sizeof(char *));
		for (ssize_t i = 0; i < m; i += (ssize_t)strlen(x->buf + i) + 1) {
			const char *nm = x->buf + i;
			if (!*nm || kiln_str_has_prefix(nm, "trusted.overlay."))
				continue;
			x->names[x->n++] = x->buf + i;
		}
		qsort(x->names, x->n, sizeof(char *), str_ptr_cmp);
		return 0;
	}
}

static int xattr_value(const char *path, const char *name, char **val, ssize_t *len,
		       struct kiln_err *err)
{
	for (;;) {
		ssize_t n = lgetxattr(path, name, NULL, 0);
		if (n < 0)
			return kiln_err_set(err, errno, "reading xattr %s of %s", name, path);
		*val = kiln_xmalloc((size_t)n + 1);
		ssize_t m = lgetxattr(path, name, *val, (size_t)n);
		if (m < 0 && errno == ERANGE) {
			free(*val);
			continue;
		}
		if (m < 0) {
			free(*val);
			return kiln_err_set(err, errno, "reading xattr %s of %s", name, path);
		}
		*len = m;
		return 0;
	}
}

static int xattrs_same(int dfa, const char *na, int dfb, const char *nb, bool *same,
		       struct kiln_err *err)
{
	char pa[64 + NAME_MAX], pb[64 + NAME_MAX];
	snprintf(pa, sizeof(pa), "/proc/self/fd/%d/%s", dfa, na);
	snprintf(pb, sizeof(pb), "/proc/self/fd/%d/%s", dfb, nb);
	struct xattr_list xa, xb;
	if (xattrs_get(pa, &xa, err))
		return -1;
	if (xattrs_get(pb, &xb, err)) {
		xattr_list_free(&xa);
		return -1;
	}
	int rc = 0;
	*same = xa.n == xb.n;
	for (size_t i = 0; *same && i < xa.n; i++) {
		if (strcmp(xa.names[i], xb.names[i])) {
			*same = false;
			break;
		}
		char *va = NULL, *vb = NULL;
		ssize_t la = 0, lb = 0;
		if (xattr_value(pa, xa.names[i], &va, &la, err) ||
		    xattr_value(pb, xb.names[i], &vb, &lb, err)) {
			free(va);
			rc = -1;
			break;
		}
		if (la != lb || memcmp(va, vb, (size_t)la))
			*same = false;
		free(va);
		free(vb);
	}
	xattr_list_free(&xa);
	xattr_list_free(&xb);
	return rc;
}

int snap_meta_same(int dfa, const char *na, const struct stat *sa,
		   int dfb, const char *nb, const struct stat *sb, bool *same,
		   struct kiln_err *err)
{
	*same = false;
	if ((sa->st_mode & S_IFMT) != (sb->st_mode & S_IFMT))
		return 0;
	if ((sa->st_mode & 07777) != (sb->st_mode & 07777) || sa->st_uid != sb->st_uid ||
	    sa->st_gid != sb->st_gid)
		return 0;
	if (S_ISREG(sa->st_mode) && sa->st_size != sb->st_size)
		return 0;
	if ((S_ISCHR(sa->st_mode) || S_ISBLK(sa->st_mode)) && sa->st_rdev != sb->st_rdev)
		return 0;
	if (sa->st_mtim.tv_sec != sb->st_mtim.tv_sec || sa->st_mtim.tv_nsec != sb->st_mtim.tv_nsec)
		return 0;
	if (S_ISLNK(sa->st_mode)) {
		char la[PATH_MAX + 1], lb[PATH_MAX + 1];
		ssize_t n1 = readlinkat(dfa, na, la, PATH_MAX);
		if (n1 < 0)
			return kiln_err_set(err, errno, "reading symlink %s", na);
		ssize_t n2 = readlinkat(dfb, nb, lb, PATH_MAX);
		if (n2 < 0)
			return kiln_err_set(err, errno, "reading symlink %s", nb);
		if (n1 != n2 || memcmp(la, lb, (size_t)n1))
			return 0;
	}
	return xattrs_same(dfa, na, dfb, nb, same, err);
}

/* ---- whole subtrees ---- */

static bool is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static int add_children(int dirfd, const char *rel, bool skip_whiteouts,
			struct kiln_changes *out, struct kiln_err *err)
{
	struct kiln_strv names = { 0 };
	if (snap_list_dir(dirfd, &names, err))
		return kiln_err_wrap(err, "%s", *rel ? rel : "/");
	int rc = 0;
	for (size_t i = 0; i < names.n && !rc; i++) {
		char *p = snap_join(rel, names.v[i]);
		rc = snap_add_subtree(dirfd, names.v[i], p, skip_whiteouts, out, err);
		free(p);
	}
	kiln_strv_free(&names);
	return rc;
}

int snap_add_subtree(int parentfd, const char *name, const char *rel, bool skip_whiteouts,
		     struct kiln_changes *out, struct kiln_err *err)
{
	struct stat st;
	if (fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(err, errno, "stat %s", rel);
	if (skip_whiteouts && is_whiteout(&st))
		return 0;
	kiln_changes_add(out, rel, KILN_CHANGE_ADD);
	if (!S_ISDIR(st.st_mode))
		return 0;
	int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s", rel);
	int rc = add_children(fd, rel, skip_whiteouts, out, err);
	close(fd);
	return rc;
}

int snap_diff_all_added(const char *dir, struct kiln_changes *out, struct kiln_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s", dir);
	int rc = add_children(fd, "", false, out, err);
	close(fd);
	return rc;
}

/* ---- tree comparison ---- */

struct dctx {
	const struct snap_u64set *changed;
	const struct snap_strset *dirty;
	const struct snap_proof *proof;
	bool prune;
	struct kiln_changes *out;
	struct kiln_err *err;
};

static int cmp_dir(struct dctx *c, int cfd, int pfd, const char *rel);

static int cmp_entry(struct dctx *c, int cfd, int pfd, const struct dent *ce,
		     const struct dent *pe, const char *path)
{
	if (c->prune && ce->ino == pe->ino && !snap_u64set_has(c->changed, ce->ino) &&
	    !snap_strset_has(c->dirty, path))
		return 0;
	struct stat cs, ps;
	if (fstatat(cfd, ce->name, &cs, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(c->err, errno, "stat %s", path);
	if (fstatat(pfd, pe->name, &ps, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(c->err, errno, "stat %s in the parent", path);
	bool same;
	if (snap_entry_same(cfd, ce->name, &cs, pfd, pe->name, &ps, c->proof, &same, c->err))
		return kiln_err_wrap(c->err, "%s", path);
	if (!same)
		kiln_changes_add(c->out, path, KILN_CHANGE_MODIFY);
	if (!S_ISDIR(cs.st_mode))
		return 0;
	int csub = openat(cfd, ce->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (csub < 0)
		return kiln_err_set(c->err, errno, "opening %s", path);
	int rc;
	if (!S_ISDIR(ps.st_mode)) {
		/* file → dir: everything beneath is new */
		rc = add_children(csub, path, false, c->out, c->err);
	} else {
		int psub = openat(pfd, pe->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (psub < 0) {
			close(csub);
			return kiln_err_set(c->err, errno, "opening %s in the parent", path);
		}
		rc = cmp_dir(c, csub, psub, path);
		close(psub);
	}
	close(csub);
	return rc;
}

static int cmp_dir(struct dctx *c, int cfd, int pfd, const char *rel)
{
	struct dents cl = { 0 }, pl = { 0 };
	if (list_dents(cfd, &cl, c->err))
		return kiln_err_wrap(c->err, "%s", *rel ? rel : "/");
	if (list_dents(pfd, &pl, c->err)) {
		dents_free(&cl);
		return kiln_err_wrap(c->err, "%s in the parent", *rel ? rel : "/");
	}
	size_t i = 0, j = 0;
	int rc = 0;
	while (!rc && (i < cl.n || j < pl.n)) {
		int k = i >= cl.n ? 1 : j >= pl.n ? -1 : strcmp(cl.v[i].name, pl.v[j].name);
		const char *name = k <= 0 ? cl.v[i].name : pl.v[j].name;
		char *path = snap_join(rel, name);
		if (k > 0) {
			kiln_changes_add(c->out, path, KILN_CHANGE_DELETE);
			j++;
		} else if (k < 0) {
			rc = snap_add_subtree(cfd, name, path, false, c->out, c->err);
			i++;
		} else {
			rc = cmp_entry(c, cfd, pfd, &cl.v[i], &pl.v[j], path);
			i++;
			j++;
		}
		free(path);
	}
	dents_free(&cl);
	dents_free(&pl);
	return rc;
}

int snap_diff_trees(const char *child, const char *parent, const struct snap_u64set *changed,
		    const struct snap_strset *dirty, const struct snap_proof *proof,
		    struct kiln_changes *out, struct kiln_err *err)
{
	struct dctx c = {
		.changed = changed,
		.dirty = dirty,
		.proof = proof,
		.prune = changed && dirty,
		.out = out,
		.err = err,
	};
	int cfd = open(child, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0)
		return kiln_err_set(err, errno, "opening %s", child);
	int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0) {
		int e = errno;
		close(cfd);
		return kiln_err_set(err, e, "opening %s", parent);
	}
	int rc = 0;
	/* btrfs: nothing changed at all → nothing to walk */
	if (!c.prune || changed->n || dirty->n)
		rc = cmp_dir(&c, cfd, pfd, "");
	close(cfd);
	close(pfd);
	return rc;
}
