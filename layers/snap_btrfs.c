/* kiln — btrfs snapshot driver: subvolumes through libbtrfsutil, and the
 * set of inodes changed since a snapshot was taken (tree search on the
 * snapshot's own tree with min_transid, then inode → paths) so that diffs
 * only walk what changed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <endian.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <btrfsutil.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>

#include "common/util.h"
#include "layers/snap_internal.h"

static int bu_err(struct kiln_err *err, enum btrfs_util_error e, const char *what, const char *path)
{
	return kiln_err_set(err, errno, "%s %s: %s", what, path, btrfs_util_strerror(e));
}

bool snap_btrfs_is_btrfs(const char *path)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && (unsigned long)sf.f_type == (unsigned long)BTRFS_SUPER_MAGIC;
}

int snap_btrfs_create(const char *parent_fs, const char *dst, struct kiln_err *err)
{
	enum btrfs_util_error e;
	if (parent_fs) {
		/* the diff takes a file whose inode and ctime are still the
		 * parent's as untouched (snap_same.c): let the clock tick between
		 * the parent's last change and the child's first */
		struct timespec t0;
		(void)clock_gettime(CLOCK_REALTIME_COARSE, &t0);
		e = btrfs_util_create_snapshot(parent_fs, dst, 0, NULL, NULL);
		if (e)
			return bu_err(err, e, "creating btrfs snapshot", dst);
		snap_clock_pass(&t0, false);
	} else {
		e = btrfs_util_create_subvolume(dst, 0, NULL, NULL);
		if (e)
			return bu_err(err, e, "creating btrfs subvolume", dst);
		if (chmod(dst, 0755))
			return kiln_err_set(err, errno, "chmod %s", dst);
	}
	return 0;
}

int snap_btrfs_set_readonly(const char *path, bool ro, struct kiln_err *err)
{
	enum btrfs_util_error e = btrfs_util_set_subvolume_read_only(path, ro);
	if (e)
		return bu_err(err, e, ro ? "making subvolume read-only" : "making subvolume writable", path);
	return 0;
}

int snap_btrfs_delete(const char *path, struct kiln_err *err)
{
	enum btrfs_util_error e = btrfs_util_is_subvolume(path);
	if (e == BTRFS_UTIL_ERROR_NOT_SUBVOLUME || e == BTRFS_UTIL_ERROR_NOT_BTRFS)
		return kiln_rm_rf(path, err);
	if (e == BTRFS_UTIL_ERROR_STATFS_FAILED || e == BTRFS_UTIL_ERROR_STAT_FAILED) {
		if (errno == ENOENT)
			return 0;
		return bu_err(err, e, "checking subvolume", path);
	}
	if (e)
		return bu_err(err, e, "checking subvolume", path);
	e = btrfs_util_delete_subvolume(path, BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE);
	if (!e)
		return 0;
	/* Without CAP_SYS_ADMIN (and without user_subvol_rm_allowed) the ioctl is
	 * refused; an empty subvolume can still be removed with rmdir. */
	int saved = errno;
	(void)btrfs_util_set_subvolume_read_only(path, false);
	struct kiln_err e2;
	if (kiln_rm_rf(path, &e2) == 0)
		return 0;
	errno = saved;
	return bu_err(err, e, "deleting btrfs subvolume", path);
}

/* The child's creation transaction: items with a newer transid were changed
 * after the snapshot was taken. */
static int child_otransid(const char *child, uint64_t *out, struct kiln_err *err)
{
	struct btrfs_util_subvolume_info info;
	enum btrfs_util_error e = btrfs_util_subvolume_info(child, 0, &info);
	if (e)
		return bu_err(err, e, "reading subvolume info", child);
	*out = info.otransid;
	return 0;
}

static void mark_dirty(struct snap_strset *dirty, const char *path)
{
	snap_strset_add(dirty, "");
	char *p = kiln_xstrdup(path);
	for (char *s = strchr(p, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		snap_strset_add(dirty, p);
		*s = '/';
	}
	free(p);
}

static int ino_paths(int fd, uint64_t ino, struct snap_strset *dirty, struct kiln_err *err)
{
	size_t size = 16384;
	for (;;) {
		char *buf = kiln_xcalloc(1, size);
		struct btrfs_ioctl_ino_path_args a = {
			.inum = ino,
			.size = size,
			.fspath = (uint64_t)(uintptr_t)buf,
		};
		if (ioctl(fd, BTRFS_IOC_INO_PATHS, &a) < 0) {
			int e = errno;
			free(buf);
			if (e == ENOENT)        /* gone meanwhile, or an orphan */
				return 0;
			return kiln_err_set(err, e, "resolving inode %llu to paths",
					    (unsigned long long)ino);
		}
		struct btrfs_data_container *dc = (struct btrfs_data_container *)buf;
		if (dc->elem_missed && size < (64u << 20)) {
			size = size * 4 + dc->bytes_missing;
			free(buf);
			continue;
		}
		for (uint32_t i = 0; i < dc->elem_cnt; i++) {
			uint64_t off = dc->val[i];
			if (off >= size)
				continue;
			const char *p = (const char *)dc->val + off;
			mark_dirty(dirty, p);
		}
		free(buf);
		return 0;
	}
}

int snap_btrfs_changes(const char *child, struct snap_u64set *changed,
		       struct snap_strset *dirty, struct kiln_err *err)
{
	uint64_t otransid = 0;
	if (child_otransid(child, &otransid, err))
		return -1;
	/* Inode updates wait in memory (delayed inodes) until a transaction
	 * commits; the tree search only sees the btree, so commit first.  It
	 * has to be a full sync: a commit without flushing file data
	 * (BTRFS_IOC_START_SYNC + WAIT_SYNC) missed appends to files in the
	 * tests (their inode items are updated when the data is written). */
	enum btrfs_util_error be = btrfs_util_sync(child);
	if (be)
		return bu_err(err, be, "syncing", child);
	int fd = open(child, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s", child);

	const size_t bufsz = 256 * 1024;
	struct btrfs_ioctl_search_args_v2 *args = kiln_xcalloc(1, sizeof(*args) + bufsz);
	struct btrfs_ioctl_search_key *sk = &args->key;
	sk->tree_id = 0;                           /* the tree of fd's subvolume */
	sk->min_objectid = BTRFS_FIRST_FREE_OBJECTID;
	sk->max_objectid = BTRFS_LAST_FREE_OBJECTID;
	sk->min_type = BTRFS_INODE_ITEM_KEY;
	sk->max_type = BTRFS_INODE_ITEM_KEY;
	sk->min_offset = 0;
	sk->max_offset = (uint64_t)-1;
	sk->min_transid = otransid + 1;
	sk->max_transid = (uint64_t)-1;
	int rc = 0;
	for (;;) {
		sk->nr_items = 4096;
		args->buf_size = bufsz;
		if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0) {
			rc = kiln_err_set(err, errno, "btrfs tree search in %s", child);
			break;
		}
		if (sk->nr_items == 0)
			break;
		size_t off = 0;
		struct btrfs_ioctl_search_header sh = { 0 };
		const char *base = (const char *)args->buf;
		for (uint32_t i = 0; i < sk->nr_items; i++) {
			memcpy(&sh, base + off, sizeof(sh));
			off += sizeof(sh);
			if (sh.type == BTRFS_INODE_ITEM_KEY && sh.len >= 16) {
				uint64_t item_transid;
				memcpy(&item_transid, base + off + 8, 8);   /* generation, transid */
				if (le64toh(item_transid) > otransid)
					snap_u64set_add(changed, sh.objectid);
			}
			off += sh.len;
		}
		/* continue after the last object: one inode item per object */
		if (sh.objectid >= BTRFS_LAST_FREE_OBJECTID)
			break;
		sk->min_objectid = sh.type < BTRFS_INODE_ITEM_KEY ? sh.objectid : sh.objectid + 1;
		sk->min_type = BTRFS_INODE_ITEM_KEY;
		sk->min_offset = 0;
	}
	free(args);
	if (rc == 0 && changed->n) {
		snap_strset_add(dirty, "");
		for (size_t i = 0; i < changed->cap && rc == 0; i++) {
			uint64_t ino = changed->v[i];
			if (!ino || ino == BTRFS_FIRST_FREE_OBJECTID)
				continue;
			rc = ino_paths(fd, ino, dirty, err);
		}
	}
	close(fd);
	return rc;
}
