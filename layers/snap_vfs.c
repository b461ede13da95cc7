/* kiln — vfs snapshot driver: a full copy of a tree that keeps everything a
 * layer can describe (types, owners, modes, mtimes in ns, xattrs, devices,
 * hard links).  File data is reflinked (FICLONE) when the filesystem can,
 * else copied in the kernel (copy_file_range), else read/written.  A
 * snapshot also records each copied file's ctime, which lets the diff tell
 * untouched files from rewritten ones without reading them (snap_same.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snap_internal.h"

struct link_ent {
	dev_t dev;
	ino_t ino;
	char *rel;              /* first copy, relative to the destination root */
};

struct copy_ctx {
	int dst_root;
	struct link_ent *links;
	size_t nlinks, caplinks;
	bool no_clone, no_cfr;
	struct snap_ctimes *ctimes;     /* NULL: not recorded */
	struct kiln_err *err;
};

/* The copy's ctime as it is now (after its last metadata change). */
static int record_ctime(struct copy_ctx *c, int ddir, const char *name, const struct stat *orig,
			const char *rel)
{
	if (!c->ctimes || !S_ISREG(orig->st_mode))
		return 0;
	struct stat st;
	if (fstatat(ddir, name, &st, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(c->err, errno, "stat copy of %s", rel);
	snap_ctimes_add(c->ctimes, &st, orig);
	return 0;
}

static size_t link_slot(const struct copy_ctx *c, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)dev;
	size_t j = (size_t)(h ^ (h >> 29)) & (c->caplinks - 1);
	while (c->links[j].rel && !(c->links[j].dev == dev && c->links[j].ino == ino))
		j = (j + 1) & (c->caplinks - 1);
	return j;
}

static const char *find_link(struct copy_ctx *c, const struct stat *st)
{
	if (!c->caplinks)
		return NULL;
	return c->links[link_slot(c, st->st_dev, st->st_ino)].rel;
}

static void remember_link(struct copy_ctx *c, const struct stat *st, const char *rel)
{
	if ((c->nlinks + 1) * 2 > c->caplinks) {
		struct copy_ctx old = *c;
		c->caplinks = c->caplinks ? c->caplinks * 2 : 64;
		c->links = kiln_xcalloc(c->caplinks, sizeof(*c->links));
		for (size_t i = 0; i < old.caplinks; i++)
			if (old.links[i].rel)
				c->links[link_slot(c, old.links[i].dev, old.links[i].ino)] = old.links[i];
		free(old.links);
	}
	c->links[link_slot(c, st->st_dev, st->st_ino)] =
		(struct link_ent){ st->st_dev, st->st_ino, kiln_xstrdup(rel) };
	c->nlinks++;
}

static int copy_xattrs(int sdir, int ddir, const char *name, const char *rel, struct kiln_err *err)
{
	char sp[64 + NAME_MAX], dp[64 + NAME_MAX];
	snprintf(sp, sizeof(sp), "/proc/self/fd/%d/%s", sdir, name);
	snprintf(dp, sizeof(dp), "/proc/self/fd/%d/%s", ddir, name);
	ssize_t n = llistxattr(sp, NULL, 0);
	if (n <= 0) {
		if (n < 0 && errno != ENOTSUP)
			return kiln_err_set(err, errno, "listing xattrs of %s", rel);
		return 0;
	}
	char *list = kiln_xmalloc((size_t)n + 1);
	n = llistxattr(sp, list, (size_t)n);
	if (n < 0) {
		free(list);
		return kiln_err_set(err, errno, "listing xattrs of %s", rel);
	}
	int rc = 0;
	for (ssize_t i = 0; i < n && !rc; i += (ssize_t)strlen(list + i) + 1) {
		const char *xn = list + i;
		if (!*xn)
			continue;
		ssize_t vl = lgetxattr(sp, xn, NULL, 0);
		if (vl < 0) {
			rc = kiln_err_set(err, errno, "reading xattr %s of %s", xn, rel);
			break;
		}
		char *v = kiln_xmalloc((size_t)vl + 1);
		vl = lgetxattr(sp, xn, v, (size_t)vl);
		if (vl < 0)
			rc = kiln_err_set(err, errno, "reading xattr %s of %s", xn, rel);
		else if (lsetxattr(dp, xn, v, (size_t)vl, 0))
			rc = kiln_err_set(err, errno, "setting xattr %s on %s", xn, rel);
		free(v);
	}
	free(list);
	return rc;
}

/* Owner, then mode (chown clears set-id bits), xattrs (file capabilities are
 * dropped by chown, so after it), then times. */
static int copy_meta(int sdir, int ddir, const char *name, const struct stat *st,
		     const char *rel, struct kiln_err *err)
{
	if (fchownat(ddir, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(err, errno, "chown %s", rel);
	if (!S_ISLNK(st->st_mode) && fchmodat(ddir, name, st->st_mode & 07777, 0))
		return kiln_err_set(err, errno, "chmod %s", rel);
	if (copy_xattrs(sdir, ddir, name, rel, err))
		return -1;
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	if (utimensat(ddir, name, ts, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(err, errno, "setting times of %s", rel);
	return 0;
}

static int copy_data(struct copy_ctx *c, int sfd, int dfd, off_t size, const char *rel)
{
	if (!c->no_clone) {
		if (ioctl(dfd, FICLONE, sfd) == 0)
			return 0;
		if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV || errno == EINVAL)
			c->no_clone = true;
		else
			return kiln_err_set(c->err, errno, "cloning %s", rel);
	}
	off_t done = 0;
	while (!c->no_cfr && done < size) {
		ssize_t n = copy_file_range(sfd, NULL, dfd, NULL, (size_t)(size - done), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL) {
				if (done == 0) {
					c->no_cfr = true;
					break;
				}
			}
			return kiln_err_set(c->err, errno, "copying %s", rel);
		}
		if (n == 0)
			break;          /* the file shrank meanwhile */
		done += n;
	}
	if (done >= size && !c->no_cfr)
		return 0;
	char buf[65536];
	for (;;) {
		ssize_t n = read(sfd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_err_set(c->err, errno, "reading %s", rel);
		if (n == 0)
			return 0;
		if (kiln_write_all(dfd, buf, (size_t)n))
			return kiln_err_set(c->err, errno, "writing %s", rel);
	}
}

static int copy_dir(struct copy_ctx *c, int sdir, int ddir, const char *rel);

static int copy_entry(struct copy_ctx *c, int sdir, int ddir, const char *name, const char *rel)
{
	struct stat st;
	if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW))
		return kiln_err_set(c->err, errno, "stat %s", rel);
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		const char *first = find_link(c, &st);
		if (first) {
			if (linkat(c->dst_root, first, ddir, name, 0))
				return kiln_err_set(c->err, errno, "linking %s to %s", rel, first);
			return record_ctime(c, ddir, name, &st, rel);   /* the link moved it */
		}
		remember_link(c, &st, rel);
	}
	switch (st.st_mode & S_IFMT) {
	case S_IFDIR: {
		if (mkdirat(ddir, name, 0700))
			return kiln_err_set(c->err, errno, "mkdir %s", rel);
		int s2 = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (s2 < 0)
			return kiln_err_set(c->err, errno, "opening %s", rel);
		int d2 = openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (d2 < 0) {
			close(s2);
			return kiln_err_set(c->err, errno, "opening copy of %s", rel);
		}
		int rc = copy_dir(c, s2, d2, rel);
		close(s2);
		close(d2);
		if (rc)
			return rc;
		break;
	}
	case S_IFREG: {
		int sfd = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (sfd < 0)
			return kiln_err_set(c->err, errno, "opening %s", rel);
		int dfd = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (dfd < 0) {
			close(sfd);
			return kiln_err_set(c->err, errno, "creating copy of %s", rel);
		}
		int rc = copy_data(c, sfd, dfd, st.st_size, rel);
		close(sfd);
		if (close(dfd) && !rc)
			rc = kiln_err_set(c->err, errno, "writing %s", rel);
		if (rc)
			return rc;
		break;
	}
	case S_IFLNK: {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(sdir, name, target, PATH_MAX);
		if (n < 0)
			return kiln_err_set(c->err, errno, "reading symlink %s", rel);
		target[n] = 0;
		if (symlinkat(target, ddir, name))
			return kiln_err_set(c->err, errno, "creating symlink %s", rel);
		break;
	}
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		if (mknodat(ddir, name, (st.st_mode & S_IFMT) | 0600, st.st_rdev))
			return kiln_err_set(c->err, errno, "creating node %s", rel);
		break;
	default:
		return kiln_err_set(c->err, 0, "%s: unknown file type 0%o", rel,
				    (unsigned)(st.st_mode & S_IFMT));
	}
	if (copy_meta(sdir, ddir, name, &st, rel, c->err))
		return -1;
	return record_ctime(c, ddir, name, &st, rel);
}

static int copy_dir(struct copy_ctx *c, int sdir, int ddir, const char *rel)
{
	struct kiln_strv names = { 0 };
	if (snap_list_dir(sdir, &names, c->err))
		return kiln_err_wrap(c->err, "%s", *rel ? rel : "/");
	int rc = 0;
	for (size_t i = 0; i < names.n && !rc; i++) {
		char *p = snap_join(rel, names.v[i]);
		rc = copy_entry(c, sdir, ddir, names.v[i], p);
		free(p);
	}
	kiln_strv_free(&names);
	return rc;
}

int snap_vfs_copy(const char *src, const char *dst, struct kiln_err *err)
{
	return snap_vfs_snapshot(src, dst, NULL, err);
}

int snap_vfs_snapshot(const char *src, const char *dst, const char *ctimes,
		      struct kiln_err *err)
{
	struct stat st;
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return kiln_err_set(err, errno, "opening %s", src);
	if (fstat(sfd, &st)) {
		int e = errno;
		close(sfd);
		return kiln_err_set(err, e, "stat %s", src);
	}
	if (mkdir(dst, 0700)) {
		int e = errno;
		close(sfd);
		return kiln_err_set(err, e, "mkdir %s", dst);
	}
	int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		int e = errno;
		close(sfd);
		return kiln_err_set(err, e, "opening %s", dst);
	}
	struct copy_ctx c = { .dst_root = dfd, .err = err };
	struct stat dst_st;
	if (ctimes && fstat(dfd, &dst_st) == 0)
		c.ctimes = snap_ctimes_new(dst_st.st_dev);
	int rc = copy_dir(&c, sfd, dfd, "");
	if (!rc) {
		/* the root's own metadata, after its entries */
		if (fchown(dfd, st.st_uid, st.st_gid) || fchmod(dfd, st.st_mode & 07777))
			rc = kiln_err_set(err, errno, "setting owner/mode of %s", dst);
		struct timespec ts[2] = { st.st_atim, st.st_mtim };
		if (!rc && futimens(dfd, ts))
			rc = kiln_err_set(err, errno, "setting times of %s", dst);
	}
	if (!rc && c.ctimes)
		rc = snap_ctimes_save(c.ctimes, ctimes, err);
	snap_ctimes_free(c.ctimes);
	for (size_t i = 0; i < c.caplinks; i++)
		free(c.links[i].rel);
	free(c.links);
	close(sfd);
	close(dfd);
	if (rc)
		kiln_err_wrap(err, "copying %s", src);
	return rc;
}
