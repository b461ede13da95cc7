/* kiln — copy-on-write snapshots of root filesystems and the change sets
 * (layer diffs) between a writable snapshot and its parent.
 *
 * Three drivers share one interface:
 *   btrfs    subvolumes; a snapshot is O(1); diffs use the btrfs tree search
 *            (changed inodes since the snapshot) to skip unchanged subtrees.
 *   overlay  each committed snapshot is one diff directory; a writable child is
 *            an upper+work directory over the chain of its ancestors; diffs
 *            read the upper directory only.
 *   vfs      a full copy (reflink when the filesystem can, else
 *            copy_file_range); diffs compare the two trees.
 *
 * The module works on a directory given by the caller (normally
 * <root>/snapshots) and does not know about the content store.  Data lives in
 * <snapshots_dir>/<driver>/ so that several drivers can coexist:
 *   snaps/<hex>/    committed, read-only snapshots keyed by chain id (sha256)
 *   active/<key>/   writable snapshots keyed by a caller-chosen key
 *   l/              overlay: short links to the diff directories
 *   tmp/            removals in progress
 *
 * Keys of the form NAME-PID-N (NAME lowercase letters, PID and N decimal,
 * e.g. "build-4242-3") are temporary: kiln_snap_open removes them (and
 * unmounts them) once process PID no longer exists, so a killed build leaves
 * nothing behind for long.  Use other keys (e.g. "ctr-<hex id>") for
 * snapshots that must outlive their process.
 *
 * Committed snapshots are published with an atomic rename, so two processes
 * may commit the same chain id concurrently: the second commit finds it and
 * succeeds (its own copy is discarded).
 *
 * Canonical change sets (the same on every driver, so the same changes give
 * the same layer digest): a path is
 *   ADD     when it is in the child only (every path of a new subtree is listed);
 *   DELETE  when it is in the parent only (only the topmost removed path);
 *   MODIFY  when it is in both and type, permission bits, uid, gid, size
 *           (regular files), mtime (ns), symlink target, device number or
 *           xattrs (except trusted.overlay.*) differ, or, all these equal, a
 *           regular file's content differs (a rewrite that keeps size and
 *           mtime is a change).  A type change (file→dir, dir→file) is a
 *           MODIFY of the path; the new directory's contents are ADDs.
 * OPAQUE is never produced: a directory that was removed and created again
 * (`rm -rf d && mkdir d`) gives a MODIFY of d (when its metadata differ), a
 * DELETE for each old entry that is gone and ADD/MODIFY for the new ones.
 * The tree root itself is never listed.
 *
 * Costs and limits: a btrfs diff first syncs the filesystem (delayed inode
 * updates reach the tree only on commit), then reads only the directories
 * above changed inodes; an overlay diff reads the upper directory only; a vfs
 * diff compares whole trees.  File contents are read only for files whose
 * metadata are equal and whose content nothing else proves the same: btrfs
 * and vfs take an untouched ctime as proof (vfs records the ctimes of its
 * copies at prepare time, in active/<key>/ctimes), overlay reads the
 * copied-up files that kept their metadata (see snap_same.c).  Overlay breaks hard links on copy-up; the diff
 * re-links the other names of a changed hard-linked lower file so the layer
 * matches btrfs/vfs, except when one name was deleted and written anew (see
 * snap_overlay.c).
 */
#ifndef KILN_LAYERS_SNAPSHOT_H
#define KILN_LAYERS_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "common/util.h"
#include "layers/layer.h"

struct kiln_snapshotter;
struct kiln_snap;

/* Open (creating what is missing) the snapshot area in snapshots_dir.
 * driver: "btrfs", "overlay", "vfs" or NULL/"" for auto: btrfs when the
 * directory is on btrfs, else a driver already used there, else overlay when
 * a probe mount works, else vfs.  Cleans leftovers of dead processes in tmp/.
 * *out is freed with kiln_snap_close (after every snapshot handle). */
int kiln_snap_open(const char *snapshots_dir, const char *driver,
		   struct kiln_snapshotter **out, struct kiln_err *err);
void kiln_snap_close(struct kiln_snapshotter *sn);
/* "btrfs", "overlay" or "vfs" (static string). */
const char *kiln_snap_driver_name(const struct kiln_snapshotter *sn);

/* ChainID(n) = parent ? sha256(parent + " " + diff_id) : diff_id.
 * out must hold KILN_DIGEST_MAX bytes. */
int kiln_snap_chain_id(const char *parent_chain_id, const char *diff_id,
		       char out[KILN_DIGEST_MAX], struct kiln_err *err);

/* A committed snapshot with this chain id exists ("sha256:<64 hex>"). */
bool kiln_snap_exists(struct kiln_snapshotter *sn, const char *chain_id);

/* Flags for kiln_snap_prepare / kiln_snap_get. */
#define KILN_SNAP_NOMOUNT 0x1   /* overlay: do not mount on the host; the caller
				 * mounts kiln_snap_mount_spec itself (e.g. in
				 * the sandbox's mount namespace) */

/* Create a writable snapshot named key ([A-Za-z0-9][A-Za-z0-9_.-]{0,127})
 * whose content is the committed snapshot parent_chain_id (NULL: empty).
 * Fails with EEXIST when the key is in use.  On failure nothing is left
 * behind. */
int kiln_snap_prepare(struct kiln_snapshotter *sn, const char *parent_chain_id,
		      const char *key, unsigned flags, struct kiln_snap **out,
		      struct kiln_err *err);

/* Re-open an existing writable snapshot (e.g. a detached container's rootfs
 * in a later process). */
int kiln_snap_get(struct kiln_snapshotter *sn, const char *key, unsigned flags,
		  struct kiln_snap **out, struct kiln_err *err);

/* A read-only view of a committed snapshot (COPY --from, bind mounts from
 * another stage).  btrfs/vfs: the snapshot's own directory (do not write);
 * overlay: a read-only overlay of the chain mounted under key.  Release with
 * kiln_snap_release, which unmounts it.  kiln_snap_diff/commit refuse views. */
int kiln_snap_view(struct kiln_snapshotter *sn, const char *chain_id, const char *key,
		   struct kiln_snap **out, struct kiln_err *err);

/* The root directory of the snapshot as an absolute path, or NULL for an
 * overlay snapshot prepared with KILN_SNAP_NOMOUNT that is not mounted. */
const char *kiln_snap_rootfs(const struct kiln_snap *snap);
const char *kiln_snap_key(const struct kiln_snap *snap);
/* The parent's chain id, or NULL for a snapshot prepared from nothing. */
const char *kiln_snap_parent(const struct kiln_snap *snap);

/* Mount (overlay) / unmount the host mount of a writable snapshot.  No-ops for
 * btrfs and vfs and for overlay snapshots without a parent. */
int kiln_snap_mount(struct kiln_snap *snap, struct kiln_err *err);
int kiln_snap_unmount(struct kiln_snap *snap, struct kiln_err *err);

/* How to mount the snapshot elsewhere (e.g. inside a private mount namespace
 * as the container rootfs).  Note: fsconfig(FSCONFIG_SET_STRING) copies at
 * most 256 bytes, so a colon-joined "lowerdir" value fails with EINVAL for
 * chains longer than a few layers: pass each entry of lowerdirs as its own
 * "lowerdir+" (kernel >= 6.8), use `options` with mount(2), or simply call
 * kiln_snap_mount_spec_apply in the new namespace. */
struct kiln_snap_mount_spec {
	bool overlay;            /* false: bind mount `source` */
	char *source;            /* bind: the directory; overlay: "overlay" */
	char **lowerdirs;        /* overlay: NULL-terminated, topmost first */
	char *upperdir;          /* overlay: NULL for a read-only view */
	char *workdir;           /* overlay: NULL for a read-only view */
	char *options;           /* overlay: the mount(2) data string (short paths) */
};
int kiln_snap_mount_spec(const struct kiln_snap *snap, struct kiln_snap_mount_spec *out,
			 struct kiln_err *err);
void kiln_snap_mount_spec_free(struct kiln_snap_mount_spec *spec);
/* Mount spec at target (a directory): a bind mount (MS_REC) or an overlay
 * (fsopen/fsconfig with one "lowerdir+" per layer where the kernel has it,
 * else mount(2) with spec->options).  Usable in a child mount namespace. */
int kiln_snap_mount_spec_apply(const struct kiln_snap_mount_spec *spec, const char *target,
			       struct kiln_err *err);

/* The change set between the writable snapshot and its parent (appended to
 * *out; see the canonical rules above).  The overlay driver mounts what it
 * needs for the duration of the call. */
int kiln_snap_diff(struct kiln_snap *snap, struct kiln_changes *out, struct kiln_err *err);

/* Diff + kiln_layer_write from the snapshot's tree: the one call the builder
 * needs to turn a finished step into a layer blob.  For overlay the files are
 * read through a (temporary) overlay mount so that overlay's own xattrs never
 * reach the tar.  n_changes (may be NULL) receives the number of changes. */
int kiln_snap_write_layer(struct kiln_snap *snap, const struct kiln_layer_write_opts *opts,
			  int out_fd, struct kiln_layer_info *info, size_t *n_changes,
			  struct kiln_err *err);

/* Make the writable snapshot the committed, read-only snapshot chain_id
 * (unmounting it first).  If chain_id already exists the writable snapshot is
 * discarded and the call succeeds.  The handle stays valid for
 * kiln_snap_release only. */
int kiln_snap_commit(struct kiln_snap *snap, const char *chain_id, struct kiln_err *err);

/* Unmount what this handle mounted and free it; the writable snapshot stays
 * (kiln_snap_get can re-open it). */
void kiln_snap_release(struct kiln_snap *snap);
/* Unmount, remove the writable snapshot unless it was committed, free the
 * handle.  Safe on NULL.  Returns -1 (and still frees) when removal failed. */
int kiln_snap_discard(struct kiln_snap *snap, struct kiln_err *err);

/* Remove a committed snapshot (by chain id) or a writable one (by key,
 * unmounting it if needed).  A committed snapshot that is the parent of
 * another snapshot is refused with EBUSY.  Missing: ENOENT. */
int kiln_snap_remove(struct kiln_snapshotter *sn, const char *key_or_chain_id,
		     struct kiln_err *err);

/* Disk usage of one snapshot: bytes allocated (st_blocks) and inodes in its
 * own directory (overlay: the snapshot's own diff only; btrfs: counts extents
 * shared with other snapshots too). */
int kiln_snap_usage(struct kiln_snapshotter *sn, const char *key_or_chain_id,
		    int64_t *bytes, int64_t *inodes, struct kiln_err *err);

/* Call fn for each committed chain id (sorted) / each writable key. */
int kiln_snap_list(struct kiln_snapshotter *sn, bool committed,
		   int (*fn)(const char *name, void *arg), void *arg, struct kiln_err *err);

/* ---- collection and checking (snap_gc.c) ---- */

struct kiln_snap_gc_stats {
	size_t removed;      /* committed snapshots removed */
	int64_t bytes;       /* their kiln_snap_usage before removal (btrfs: an
			      * estimate that counts shared extents too) */
};

/* Remove every committed snapshot that is neither in keep (chain ids; each
 * keeps its ancestors too) nor under a writable snapshot or view in active/
 * (containers, running steps).  Deepest first, each by one rename into tmp/
 * then deletion, so a crash at any point leaves every remaining snapshot with
 * its parent and only tmp/ leftovers (removed by the next kiln_snap_open).
 * The caller keeps other kiln processes from committing snapshots it has not
 * referenced yet (the store's exclusive lock); a writable snapshot prepared
 * meanwhile by a lock-free reader (kiln run) is seen before each removal. */
int kiln_snap_gc(struct kiln_snapshotter *sn, const struct kiln_strv *keep,
		 struct kiln_snap_gc_stats *stats, struct kiln_err *err);

/* The existing committed snapshots among ids and all their ancestors,
 * appended to out (sorted, each once). */
int kiln_snap_closure(struct kiln_snapshotter *sn, const struct kiln_strv *ids,
		      struct kiln_strv *out, struct kiln_err *err);

/* Consistency: every committed snapshot has its fs, its parent and (overlay)
 * its short link and lower links; every writable snapshot and view stands on
 * an existing one.  One line per problem appended to problems; -1 when the
 * check could not run. */
int kiln_snap_check(struct kiln_snapshotter *sn, struct kiln_strv *problems, struct kiln_err *err);

/* Create the committed snapshot chain_id = ChainID(parent_chain_id, diff_id)
 * by applying the layer read from layer_fd on a child of parent_chain_id
 * (kiln_layer_apply with whiteouts, numeric owners, devices when root).
 * Fails when the uncompressed stream does not hash to diff_id.  If the chain
 * already exists nothing is read.  chain_id_out (may be NULL) receives the
 * chain id. */
int kiln_snap_apply_layer(struct kiln_snapshotter *sn, const char *parent_chain_id,
			  int layer_fd, const char *diff_id, char chain_id_out[KILN_DIGEST_MAX],
			  struct kiln_err *err);

#endif
