/* kiln — snapshot drivers: what snapshot.c shares with snap_btrfs.c,
 * snap_overlay.c, snap_vfs.c and snap_diff.c.  Not a public interface. */
#ifndef KILN_LAYERS_SNAP_INTERNAL_H
#define KILN_LAYERS_SNAP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "common/err.h"
#include "common/util.h"
#include "layers/layer.h"
#include "layers/snapshot.h"

enum snap_driver { SNAP_BTRFS, SNAP_OVERLAY, SNAP_VFS };

struct kiln_snapshotter {
	enum snap_driver drv;
	char *dir;           /* absolute: <snapshots_dir>/<driver> */
	int dirfd;           /* O_PATH|O_DIRECTORY of dir */
	unsigned counter;    /* for unique temporary names */
};

struct kiln_snap {
	struct kiln_snapshotter *sn;
	char *key;           /* active/<key> */
	char *parent;        /* parent chain id or NULL */
	char *dir;           /* absolute active/<key> */
	char *fs;            /* absolute active/<key>/fs (btrfs/vfs tree, overlay upper) */
	char *merged;        /* overlay with a parent: absolute active/<key>/merged */
	char *view_path;     /* views: the committed fs path (btrfs, vfs, depth-1 overlay) */
	bool view;
	bool mounted;        /* this handle mounted `merged` */
	bool committed;
};

/* ---- snapshot.c helpers ---- */
/* "sha256:<64 lowercase hex>" → pointer to the hex, or NULL. */
const char *snap_chain_hex(const char *chain_id);
/* Absolute path of snaps/<hex>[/sub] (sub may be NULL); caller frees. */
char *snap_committed_path(struct kiln_snapshotter *sn, const char *chain_id, const char *sub);
/* Read a small text file (trailing newline stripped); NULL with ENOENT if missing. */
char *snap_read_text(int dirfd, const char *path, struct kiln_err *err);
int snap_write_text(int dirfd, const char *path, const char *text, struct kiln_err *err);

/* Remove the committed snapshot snaps/<hex> crash-safely: rename into tmp/,
 * drop its overlay link, delete.  No check for children. */
int snap_remove_committed(struct kiln_snapshotter *sn, const char *hex, struct kiln_err *err);

/* ---- snap_btrfs.c ---- */
bool snap_btrfs_is_btrfs(const char *path);
/* parent_fs NULL: a new empty subvolume. */
int snap_btrfs_create(const char *parent_fs, const char *dst, struct kiln_err *err);
int snap_btrfs_set_readonly(const char *path, bool ro, struct kiln_err *err);
/* Delete the subvolume at path (and nested ones); not a subvolume: rm -rf. */
int snap_btrfs_delete(const char *path, struct kiln_err *err);
/* The set of inodes of `child` (a snapshot) changed since it was created,
 * as paths: every ancestor directory path ("" for the root) of a changed
 * inode's path goes into *dirty; the changed inode numbers into *changed.
 * -1 when the information is not available (caller compares everything). */
struct snap_u64set;
struct snap_strset;
int snap_btrfs_changes(const char *child, struct snap_u64set *changed,
		       struct snap_strset *dirty, struct kiln_err *err);

/* ---- snap_vfs.c ---- */
/* Copy the tree src to dst (dst must not exist): dirs, files (FICLONE, else
 * copy_file_range, else read/write), symlinks, devices, fifos, sockets, hard
 * links, owners, modes, mtimes (ns), xattrs. */
int snap_vfs_copy(const char *src, const char *dst, struct kiln_err *err);
/* The same, and (ctimes not NULL) the ctime of every regular file's copy
 * right after the copy, saved at ctimes for the diff (snap_same.c). */
int snap_vfs_snapshot(const char *src, const char *dst, const char *ctimes,
		      struct kiln_err *err);

/* ---- snap_overlay.c ---- */
bool snap_overlay_probe(struct kiln_snapshotter *sn);
/* Lower dirs (absolute paths through l/ links, topmost first) of the chain
 * ending in chain_id. */
int snap_overlay_lowers(struct kiln_snapshotter *sn, const char *chain_id,
			struct kiln_strv *out, struct kiln_err *err);
/* At commit: make the l/ link and the `lower` file in the active dir. */
int snap_overlay_prepare_commit(struct kiln_snap *snap, const char *chain_id, struct kiln_err *err);
int snap_overlay_mount(struct kiln_snap *snap, struct kiln_err *err);
/* Unmount whatever is mounted at path (MNT_DETACH); 0 if nothing was. */
int snap_umount_if_mounted(const char *path, struct kiln_err *err);
bool snap_is_mountpoint(const char *path);
int snap_overlay_diff(struct kiln_snap *snap, struct kiln_changes *out, struct kiln_err *err);
/* Remove the l/ link of the committed snapshot hex, already moved to
 * moved_rel (dirfd-relative, in tmp/) on its way out. */
void snap_overlay_forget_link(struct kiln_snapshotter *sn, const char *hex, const char *moved_rel);

/* ---- snap_diff.c ---- */
struct snap_u64set {
	uint64_t *v;
	size_t n, cap;       /* open addressing; 0 is the empty slot (ino 0 is never used) */
};
void snap_u64set_add(struct snap_u64set *s, uint64_t x);
bool snap_u64set_has(const struct snap_u64set *s, uint64_t x);
void snap_u64set_free(struct snap_u64set *s);

struct snap_strset {
	char **v;
	size_t n, cap;
};
void snap_strset_add(struct snap_strset *s, const char *str);
bool snap_strset_has(const struct snap_strset *s, const char *str);
void snap_strset_free(struct snap_strset *s);

/* ---- snap_same.c: is a file's content unchanged? ---- */
/* What may prove a regular file with equal metadata unchanged without
 * reading it (see snap_same.c); all false/NULL: read and compare. */
struct snap_ctimes;
struct snap_proof {
	bool inode_ctime;                 /* btrfs: same inode number and ctime as the parent's */
	const struct snap_ctimes *ctimes; /* vfs: ctimes recorded right after the copy */
	bool extents;                     /* one filesystem: identical extents (FIEMAP) */
};
/* Metadata (snap_meta_same) and, for regular files, content equality. */
int snap_entry_same(int dfa, const char *na, const struct stat *sa, int dfb, const char *nb,
		    const struct stat *sb, const struct snap_proof *proof, bool *same,
		    struct kiln_err *err);
/* Content equality of two regular files of equal size. */
int snap_content_same(int dfa, const char *na, int dfb, const char *nb, bool extents,
		      bool *same, struct kiln_err *err);
/* Wait (a few ms at most, normally) until the coarse clock is past t (whole_seconds:
 * past t's second), so that a later change gets a ctime other than t. */
void snap_clock_pass(const struct timespec *t, bool whole_seconds);
/* Recorded ctimes: dev is the copy's st_dev. */
struct snap_ctimes *snap_ctimes_new(dev_t dev);
void snap_ctimes_add(struct snap_ctimes *c, const struct stat *copy, const struct stat *orig);
/* Write the record to path (a new file), then snap_clock_pass its latest ctime. */
int snap_ctimes_save(struct snap_ctimes *c, const char *path, struct kiln_err *err);
/* NULL on failure (errno ENOENT: no record). */
struct snap_ctimes *snap_ctimes_load(const char *path, struct kiln_err *err);
/* copy is the recorded copy of orig's inode and its ctime has not moved. */
bool snap_ctimes_untouched(const struct snap_ctimes *c, const struct stat *copy,
			   const struct stat *orig);
void snap_ctimes_free(struct snap_ctimes *c);

/* Compare the trees child and parent (directory paths).  prune: btrfs sets
 * (changed inodes, dirty paths) allow skipping entries with the same inode
 * number in both trees that are neither changed nor dirty; NULL compares
 * everything.  proof (may be NULL) spares reading files (snap_same.c). */
int snap_diff_trees(const char *child, const char *parent, const struct snap_u64set *changed,
		    const struct snap_strset *dirty, const struct snap_proof *proof,
		    struct kiln_changes *out, struct kiln_err *err);
/* Every path under dir as ADD. */
int snap_diff_all_added(const char *dir, struct kiln_changes *out, struct kiln_err *err);

/* Shared by the overlay diff. */
struct snap_diff_ctx;
/* Metadata equality by the canonical rules (trusted.overlay.* ignored); not
 * content: see snap_entry_same. */
int snap_meta_same(int dfa, const char *na, const struct stat *sa,
		   int dfb, const char *nb, const struct stat *sb, bool *same,
		   struct kiln_err *err);
/* List the names of the directory fd (without . and ..), sorted. */
int snap_list_dir(int dirfd, struct kiln_strv *out, struct kiln_err *err);
/* Add rel (when not "") and everything beneath dirfd/name as ADD.  skip_whiteouts:
 * ignore overlay whiteouts (char 0/0). */
int snap_add_subtree(int parentfd, const char *name, const char *rel, bool skip_whiteouts,
		     struct kiln_changes *out, struct kiln_err *err);
char *snap_join(const char *rel, const char *name);

#endif
