/* kiln — disk space: what images, containers and the build cache use, and
 * giving back what nothing needs (the collectors behind rmi, image prune,
 * builder prune, system df and system prune).
 *
 * What is kept: every image in index.json with the snapshots of its layer
 * chain; every container's writable snapshot and the chain under it (running
 * or stopped, even when its image was removed with rmi -f); every build cache
 * record's blobs and top snapshot with its chain; writable snapshots and views
 * of running builds.  Everything else in blobs/ and snapshots/ goes.
 *
 * Sizes are du-style: allocated blocks (st_blocks), a hard-linked file once.
 * On btrfs a snapshot's size counts extents it shares with its parent too (the
 * exclusive size would need quota groups): an upper estimate.
 */
#ifndef KILN_BUILDER_RECLAIM_H
#define KILN_BUILDER_RECLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/util.h"
#include "layers/store.h"

struct kiln_reclaim_stats {
	size_t snapshots;         /* committed snapshots removed */
	int64_t snapshot_bytes;
	size_t blobs;             /* blobs removed */
	int64_t blob_bytes;
};

/* Collect snapshots (every storage driver present under ROOT/snapshots) and
 * blobs that nothing keeps, with the store to itself (kiln_store_lock_exclusive:
 * no build, pull or import runs meanwhile).  wait: up to ~10 s, then EBUSY;
 * !wait: returns 1 without collecting when another kiln has the store open. */
int kiln_reclaim_gc(struct kiln_store *s, bool wait, struct kiln_reclaim_stats *st, struct kiln_err *err);
int64_t kiln_reclaim_bytes(const struct kiln_reclaim_stats *st);

/* Remove the images nobody uses: dangling ones (all: also tagged ones) that
 * no container names.  Prints docker's "Deleted Images:" section on stdout
 * (*printed set when it printed anything). */
int kiln_reclaim_images(struct kiln_store *s, bool all, bool *printed, struct kiln_err *err);

/* Remove the stopped containers ("exited"; "created" ones are being started
 * by a kiln run and are left alone): their writable snapshots and state.
 * Prints docker's "Deleted Containers:" section; *bytes gets their snapshots'
 * size. */
int kiln_reclaim_containers(const char *root, bool *printed, int64_t *bytes, struct kiln_err *err);

/* Remove build cache records: those whose blobs are gone, or all of them
 * (all: also the RUN cache mounts and the context cache, whose size goes to
 * *bytes).  The snapshots and blobs they kept go with kiln_reclaim_gc. */
int kiln_reclaim_cache(const char *root, bool all, size_t *removed, int64_t *bytes, struct kiln_err *err);

/* The rows of `system df`. */
struct kiln_usage_row {
	const char *type;         /* "Images", "Containers", "Local Volumes", "Build Cache" */
	size_t total, active;
	int64_t size, reclaimable;
};

struct kiln_usage_image {
	char id[KILN_DIGEST_MAX];
	char *repo, *tag;         /* familiar; "<none>" when dangling */
	char *created;            /* RFC 3339 or NULL */
	int64_t size, shared;     /* blobs + snapshots; the part other images use too */
	size_t containers;
};

struct kiln_usage_container {
	char id[65];
	char image[256], command[512], created[40], status[16], name[128];
	bool running;
	int exit_code;
	int64_t size;             /* the writable snapshot */
};

struct kiln_usage_cache {
	char key[KILN_DIGEST_MAX];
	int64_t size;             /* what only this record keeps */
	bool shared;              /* its snapshot is an image's or a container's too */
	int64_t created;          /* unix seconds */
};

struct kiln_usage {
	struct kiln_usage_row rows[4];
	struct kiln_usage_image *images;
	size_t n_images;
	struct kiln_usage_container *containers;
	size_t n_containers;
	struct kiln_usage_cache *cache;
	size_t n_cache;
	int64_t cache_mounts;     /* RUN --mount=type=cache directories and the context cache */
};

/* Measure the store at root (the snapshots of the default storage driver). */
int kiln_reclaim_usage(const char *root, struct kiln_usage *df, struct kiln_err *err);
void kiln_reclaim_usage_free(struct kiln_usage *df);

/* du of a directory tree: allocated bytes, hard links once; 0 when missing. */
int64_t kiln_reclaim_du(const char *path);

#endif
