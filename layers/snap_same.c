/* kiln — did a file's content change?  Equal metadata (mode, owner, size,
 * mtime, xattrs) is no proof: `echo bbbb > f; touch -d @T f` rewrites a file
 * and gives it back its size and mtime.  A diff skips a regular file only
 * when one of these proves the content the same:
 *
 *   - btrfs: the child's inode is the parent's (same number) with the same
 *     ctime.  A snapshot shares the parent's inode items verbatim, and every
 *     write, truncate, link, rename or attribute change sets the ctime to the
 *     current time, which is later than the snapshot (snap_clock_pass makes
 *     sure a clock tick separates them).  Atime updates, which also mark an
 *     inode as changed in the btrfs tree, keep the ctime.
 *   - vfs: the child file is the copy of the parent's inode recorded when the
 *     snapshot was made, with the ctime it had right after the copy (a copy
 *     gets a new ctime, so only a recorded one helps: see snap_ctimes_*).
 *   - both trees on one filesystem and every data extent of the two files
 *     the same (FIEMAP): reflinked or snapshotted data that nobody rewrote.
 *   - else: both files read in large blocks, up to the first difference.
 *
 * The overlay driver has no such proof: a regular file in the upper directory
 * was copied up because something opened it for writing (or changed its
 * attributes), so with equal metadata its content is compared.  Taking it
 * unread would also be correct, but it would put unchanged files into the
 * layer (`chown -R` to the owner a tree already has copies up every file)
 * and make the layer differ from the btrfs and vfs drivers' for the same
 * changes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snap_internal.h"

/* ---- clock ---- */

static bool ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

void snap_clock_pass(const struct timespec *t, bool whole_seconds)
{
	/* File times come from the coarse clock (or a finer one on kernels with
	 * multigrain timestamps, which only makes them later).  Bounded: a clock
	 * stepped back by more than a few seconds is not waited for. */
	for (int i = 0; i < 3000; i++) {
		struct timespec now;
		if (clock_gettime(CLOCK_REALTIME_COARSE, &now))
			return;
		if (whole_seconds ? now.tv_sec > t->tv_sec : ts_after(&now, t))
			return;
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
	}
}

/* ---- recorded ctimes (vfs) ---- */

struct ctrec {
	uint64_t ino;        /* the copy's inode */
	uint64_t pino;       /* the parent's inode it was copied from */
	int64_t sec;         /* the copy's ctime right after the copy */
	uint32_t nsec;
	uint32_t seq;        /* insertion order (in memory only) */
};

struct snap_ctimes {
	uint64_t dev;        /* st_dev of the copy */
	struct ctrec *v;
	size_t n, cap;
};

#define CT_MAGIC "KILNCT01"

struct snap_ctimes *snap_ctimes_new(dev_t dev)
{
	struct snap_ctimes *c = kiln_xcalloc(1, sizeof(*c));
	c->dev = (uint64_t)dev;
	return c;
}

void snap_ctimes_add(struct snap_ctimes *c, const struct stat *copy, const struct stat *orig)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->v = kiln_xrealloc(c->v, c->cap * sizeof(*c->v));
	}
	c->v[c->n] = (struct ctrec){
		.ino = (uint64_t)copy->st_ino,
		.pino = (uint64_t)orig->st_ino,
		.sec = (int64_t)copy->st_ctim.tv_sec,
		.nsec = (uint32_t)copy->st_ctim.tv_nsec,
		.seq = (uint32_t)c->n,
	};
	c->n++;
}

static int ctrec_cmp(const void *a, const void *b)
{
	const struct ctrec *x = a, *y = b;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int snap_ctimes_save(struct snap_ctimes *c, const char *path, struct kiln_err *err)
{
	/* sorted by inode; for an inode added twice (a hard link made after its
	 * first name was copied changes its ctime) the last record counts */
	if (c->n > 1)
		qsort(c->v, c->n, sizeof(*c->v), ctrec_cmp);
	size_t k = 0;
	bool fine = false;
	struct timespec max = { 0, 0 };
	for (size_t i = 0; i < c->n; i++) {
		if (k && c->v[k - 1].ino == c->v[i].ino)
			k--;
		c->v[k] = c->v[i];
		c->v[k].seq = 0;
		struct timespec t = { (time_t)c->v[k].sec, (long)c->v[k].nsec };
		if (t.tv_nsec)
			fine = true;
		if (ts_after(&t, &max))
			max = t;
		k++;
	}
	c->n = k;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kiln_err_set(err, errno, "creating %s", path);
	uint64_t hdr[2] = { c->dev, (uint64_t)c->n };
	int rc = 0;
	if (kiln_write_all(fd, CT_MAGIC, 8) || kiln_write_all(fd, hdr, sizeof(hdr)) ||
	    (c->n && kiln_write_all(fd, c->v, c->n * sizeof(*c->v))))
		rc = kiln_err_set(err, errno, "writing %s", path);
	if (close(fd) && !rc)
		rc = kiln_err_set(err, errno, "writing %s", path);
	/* a change made in the tick of the last copy could keep its ctime: let
	 * the clock pass it (on a filesystem with whole-second times, the second) */
	if (!rc && c->n)
		snap_clock_pass(&max, !fine);
	return rc;
}

struct snap_ctimes *snap_ctimes_load(const char *path, struct kiln_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		kiln_err_set(err, errno, "opening %s", path);
		return NULL;
	}
	char *data = NULL;
	size_t len = 0;
	int rc = kiln_read_fd(fd, (size_t)1 << 34, &data, &len, err);
	close(fd);
	if (rc)
		return NULL;
	struct snap_ctimes *c = NULL;
	uint64_t hdr[2];
	if (len < 8 + sizeof(hdr) || memcmp(data, CT_MAGIC, 8)) {
		kiln_err_set(err, EINVAL, "%s: not a ctime record", path);
		goto out;
	}
	memcpy(hdr, data + 8, sizeof(hdr));
	if (hdr[1] > (len - 8 - sizeof(hdr)) / sizeof(struct ctrec) ||
	    len != 8 + sizeof(hdr) + hdr[1] * sizeof(struct ctrec)) {
		kiln_err_set(err, EINVAL, "%s: truncated ctime record", path);
		goto out;
	}
	c = kiln_xcalloc(1, sizeof(*c));
	c->dev = hdr[0];
	c->n = c->cap = (size_t)hdr[1];
	if (c->n) {
		c->v = kiln_xmalloc(c->n * sizeof(*c->v));
		memcpy(c->v, data + 8 + sizeof(hdr), c->n * sizeof(*c->v));
	}
out:
	free(data);
	return c;
}

bool snap_ctimes_untouched(const struct snap_ctimes *c, const struct stat *copy,
			   const struct stat *orig)
{
	if (!c || (uint64_t)copy->st_dev != c->dev)
		return false;
	size_t lo = 0, hi = c->n;
	uint64_t ino = (uint64_t)copy->st_ino;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->v[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == c->n || c->v[lo].ino != ino)
		return false;
	const struct ctrec *r = &c->v[lo];
	return r->pino == (uint64_t)orig->st_ino && r->sec == (int64_t)copy->st_ctim.tv_sec &&
	       r->nsec == (uint32_t)copy->st_ctim.tv_nsec;
}

void snap_ctimes_free(struct snap_ctimes *c)
{
	if (!c)
		return;
	free(c->v);
	free(c);
}

/* ---- content ---- */

/* Do the two files map the very same data extents?  false when unsure. */
static bool extents_shared(int fa, int fb)
{
	enum { NEXT = 128 };
	const uint32_t unsure = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
				FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED |
				FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
				FIEMAP_EXTENT_DATA_TAIL;
	size_t size = sizeof(struct fiemap) + NEXT * sizeof(struct fiemap_extent);
	struct fiemap *ma = kiln_xmalloc(size), *mb = kiln_xmalloc(size);
	uint64_t start = 0;
	bool shared = false;
	for (int round = 0; round < 4096; round++) {
		memset(ma, 0, size);
		memset(mb, 0, size);
		ma->fm_start = mb->fm_start = start;
		ma->fm_length = mb->fm_length = FIEMAP_MAX_OFFSET - start;
		ma->fm_flags = mb->fm_flags = FIEMAP_FLAG_SYNC;
		ma->fm_extent_count = mb->fm_extent_count = NEXT;
		if (ioctl(fa, FS_IOC_FIEMAP, ma) || ioctl(fb, FS_IOC_FIEMAP, mb))
			break;
		if (ma->fm_mapped_extents != mb->fm_mapped_extents)
			break;
		if (ma->fm_mapped_extents == 0) {
			shared = true;           /* nothing (more) mapped in either: holes */
			break;
		}
		bool ok = true, last = false;
		for (uint32_t i = 0; i < ma->fm_mapped_extents && ok; i++) {
			const struct fiemap_extent *x = &ma->fm_extents[i], *y = &mb->fm_extents[i];
			ok = x->fe_logical == y->fe_logical && x->fe_physical == y->fe_physical &&
			     x->fe_length == y->fe_length && x->fe_flags == y->fe_flags &&
			     x->fe_physical != 0 && !(x->fe_flags & unsure);
			if (x->fe_flags & FIEMAP_EXTENT_LAST)
				last = true;
		}
		if (!ok)
			break;
		if (last) {
			shared = true;
			break;
		}
		const struct fiemap_extent *e = &ma->fm_extents[ma->fm_mapped_extents - 1];
		start = e->fe_logical + e->fe_length;
	}
	free(ma);
	free(mb);
	return shared;
}

static int open_ro(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && errno == EPERM)   /* O_NOATIME needs the owner or CAP_FOWNER */
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	return fd;
}

static ssize_t read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int snap_content_same(int dfa, const char *na, int dfb, const char *nb, bool extents,
		      bool *same, struct kiln_err *err)
{
	*same = false;
	/* a file we may not read (without root) is taken as changed: taking
	 * it is always correct, skipping it is not */
	int fa = open_ro(dfa, na);
	if (fa < 0)
		return errno == EACCES ? 0 : kiln_err_set(err, errno, "opening %s", na);
	int fb = open_ro(dfb, nb);
	if (fb < 0) {
		int e = errno;
		close(fa);
		return e == EACCES ? 0 : kiln_err_set(err, e, "opening %s in the parent", nb);
	}
	int rc = 0;
	if (extents && extents_shared(fa, fb)) {
		*same = true;
		goto out;
	}
	const size_t blk = 1 << 20;
	char *ba = kiln_xmalloc(blk), *bb = kiln_xmalloc(blk);
	(void)posix_fadvise(fa, 0, 0, POSIX_FADV_SEQUENTIAL);
	(void)posix_fadvise(fb, 0, 0, POSIX_FADV_SEQUENTIAL);
	for (;;) {
		ssize_t la = read_full(fa, ba, blk);
		if (la < 0) {
			rc = kiln_err_set(err, errno, "reading %s", na);
			break;
		}
		ssize_t lb = read_full(fb, bb, blk);
		if (lb < 0) {
			rc = kiln_err_set(err, errno, "reading %s in the parent", nb);
			break;
		}
		if (la != lb || memcmp(ba, bb, (size_t)la))
			break;
		if (la == 0) {
			*same = true;
			break;
		}
	}
	free(ba);
	free(bb);
out:
	close(fa);
	close(fb);
	return rc;
}

int snap_entry_same(int dfa, const char *na, const struct stat *sa, int dfb, const char *nb,
		    const struct stat *sb, const struct snap_proof *pr, bool *same,
		    struct kiln_err *err)
{
	if (snap_meta_same(dfa, na, sa, dfb, nb, sb, same, err))
		return -1;
	if (!*same || !S_ISREG(sa->st_mode) || sa->st_size == 0)
		return 0;
	if (pr && pr->inode_ctime && sa->st_ino == sb->st_ino &&
	    sa->st_ctim.tv_sec == sb->st_ctim.tv_sec && sa->st_ctim.tv_nsec == sb->st_ctim.tv_nsec)
		return 0;
	if (pr && snap_ctimes_untouched(pr->ctimes, sa, sb))
		return 0;
	return snap_content_same(dfa, na, dfb, nb, pr && pr->extents, same, err);
}
