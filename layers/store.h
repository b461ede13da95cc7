/* kiln — the content store: an OCI image layout on disk with blobs, tags,
 * locks, garbage collection and a consistency check.
 *
 * ROOT (default /var/lib/kiln) is itself a valid OCI image layout:
 *
 *   oci-layout            {"imageLayoutVersion":"1.0.0"}
 *   index.json            one manifest descriptor per tag (plus untagged images)
 *   blobs/sha256/<hex>    layers, configs, manifests; written to tmp/, fsynced, renamed
 *   tmp/                  staging (cleaned at open when no other kiln uses the store)
 *   snapshots/ cache/ containers/   owned by the snapshot, build-cache and runtime code
 *   lock                  flock: every RDWR handle holds it SHARED for its life;
 *                         gc and tmp cleanup need it EXCLUSIVE (so a blob written
 *                         but not yet tagged never vanishes).  RDONLY handles
 *                         take no lifetime lock: they read only what index.json
 *                         references (replaced atomically); an image removed
 *                         while it is read may give ENOENT.
 *   index.lock            flock: EXCLUSIVE while index.json (or any other shared
 *                         metadata, see kiln_store_write_lock) is read-modified-written
 *
 * Tag policy: index.json entries carry two annotations,
 *   org.opencontainers.image.ref.name = the FULL normalized reference
 *                                       ("docker.io/library/busybox:latest")
 *   io.containerd.image.name          = the same full reference
 * so `skopeo inspect oci:ROOT:docker.io/library/busybox:latest` and
 * `umoci unpack --image ROOT:docker.io/library/busybox:latest` address it,
 * and podman/containerd name it correctly.  An image without a tag (a build
 * without -t, or the old image after its tag moved) stays in index.json as an
 * entry without annotations: docker's "<none>:<none>" dangling image.
 *
 * Every write is tmp + fsync + rename (+ fsync of the directory), so a kill -9
 * at any moment leaves a consistent store (at worst an unreferenced blob that
 * gc removes, or a stale file in tmp/ cleaned at the next exclusive open).
 *
 * Do not keep an RDWR store open in a long-lived process (a container
 * monitor): while it is open, gc (image prune) cannot run.  Use RDONLY there.
 */
#ifndef KILN_LAYERS_STORE_H
#define KILN_LAYERS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/util.h"
#include "layers/layer.h"      /* KILN_DIGEST_MAX */

/* ---- digests ("sha256:" + 64 lowercase hex) ---- */

/* True when s is a well-formed sha256 digest string. */
bool kiln_digest_valid(const char *s);
/* sha256 of a buffer, as "sha256:<hex>". */
void kiln_digest_data(const void *data, size_t len, char out[KILN_DIGEST_MAX]);
/* sha256 of everything readable from fd (from its current position). */
int kiln_digest_fd(int fd, char out[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err);

/* ---- descriptors ---- */

struct kiln_desc {
	char media_type[128];
	char digest[KILN_DIGEST_MAX];
	int64_t size;
};

/* ---- opening ---- */

#define KILN_STORE_RDONLY 0u     /* the layout must exist; write calls fail */
#define KILN_STORE_RDWR   1u     /* creates the layout (0700, root-owned) if missing */

struct kiln_store;

int kiln_store_open(const char *root, unsigned flags, struct kiln_store **out, struct kiln_err *err);
void kiln_store_close(struct kiln_store *s);                /* NULL is fine */
const char *kiln_store_root_path(const struct kiln_store *s);
int kiln_store_dirfd(const struct kiln_store *s);            /* O_RDONLY|O_DIRECTORY fd of ROOT; owned by the store */

/* The exclusive metadata lock (ROOT/index.lock).  Re-entrant within one
 * store handle (a counter).  The tag functions take it themselves; take it
 * around a larger read-modify-write (e.g. the build cache's files). */
int kiln_store_write_lock(struct kiln_store *s, struct kiln_err *err);
void kiln_store_write_unlock(struct kiln_store *s);

/* ---- blobs ---- */

/* A blob being written.  Write through kiln_blob_write (digested while it
 * streams) or through the raw fd (kiln_blob_writer_fd; then commit re-reads
 * the file to digest it).  Exactly one of commit/abort must be called; both
 * free the writer. */
struct kiln_blob_writer;

int kiln_store_blob_begin(struct kiln_store *s, struct kiln_blob_writer **out, struct kiln_err *err);
int kiln_blob_write(struct kiln_blob_writer *w, const void *data, size_t len, struct kiln_err *err);
int kiln_blob_writer_fd(struct kiln_blob_writer *w);        /* O_WRONLY|O_CLOEXEC, owned by the writer */
/* fsync, digest, verify against expected (when not NULL; mismatch = error and
 * the data is dropped), rename into blobs/ (an existing blob is kept). */
int kiln_store_blob_commit(struct kiln_blob_writer *w, const char *expected_digest,
			   char out_digest[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err);
void kiln_store_blob_abort(struct kiln_blob_writer *w);     /* NULL is fine */

/* Copy everything readable from in_fd into a blob (verifying expected when
 * not NULL). */
int kiln_store_blob_import_fd(struct kiln_store *s, int in_fd, const char *expected_digest,
			      char out_digest[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err);
/* A small blob (JSON) from memory. out_digest may be NULL. */
int kiln_store_blob_put(struct kiln_store *s, const void *data, size_t len,
			char out_digest[KILN_DIGEST_MAX], struct kiln_err *err);

/* Open a blob for reading (O_RDONLY|O_CLOEXEC; not verified).  ENOENT in
 * err->errnum when missing. */
int kiln_store_blob_open(struct kiln_store *s, const char *digest, int *fd, struct kiln_err *err);
/* Read a whole blob (at most max bytes, 0 = 64 MiB) and verify its digest.
 * *data is malloc'd and NUL-terminated. */
int kiln_store_blob_read(struct kiln_store *s, const char *digest, size_t max,
			 char **data, size_t *len, struct kiln_err *err);
bool kiln_store_blob_exists(struct kiln_store *s, const char *digest);
int kiln_store_blob_size(struct kiln_store *s, const char *digest, int64_t *size, struct kiln_err *err);
/* Re-digest the stored blob; error when it does not match its name. */
int kiln_store_blob_verify(struct kiln_store *s, const char *digest, struct kiln_err *err);
/* "ROOT/blobs/sha256/<hex>", malloc'd; NULL for an invalid digest. */
char *kiln_store_blob_path(const struct kiln_store *s, const char *digest);
/* Remove one blob (no reference check: gc is the safe way). */
int kiln_store_blob_remove(struct kiln_store *s, const char *digest, struct kiln_err *err);

/* ---- tags and the index (index.json) ---- */

struct kiln_tag {
	char *ref;                 /* full normalized reference, NULL for an untagged entry */
	struct kiln_desc desc;     /* the manifest (or image index) it points to */
};

/* Point ref (any form kiln_ref_parse accepts: "busybox", "x/y:1",
 * "localhost:5000/a:b") at a manifest.  The blob must exist.  An image that
 * loses its last tag this way stays as an untagged entry. */
int kiln_store_tag_set(struct kiln_store *s, const char *ref, const struct kiln_desc *manifest,
		       struct kiln_err *err);
/* Look a reference up; -1 with errnum ENOENT when not tagged. */
int kiln_store_tag_get(struct kiln_store *s, const char *ref, struct kiln_desc *out, struct kiln_err *err);
/* Remove a tag; -1 with ENOENT when absent.  When keep_untagged and no other
 * tag names the manifest, an untagged entry keeps the image. */
int kiln_store_tag_remove(struct kiln_store *s, const char *ref, bool keep_untagged, struct kiln_err *err);
/* Add an untagged entry for a manifest (no-op when any entry has it). */
int kiln_store_index_add_untagged(struct kiln_store *s, const struct kiln_desc *manifest, struct kiln_err *err);
/* Remove every index entry (tagged or not) pointing at the manifest digest. */
int kiln_store_index_remove_digest(struct kiln_store *s, const char *manifest_digest, struct kiln_err *err);
/* All entries in index order. Free with kiln_store_tags_free. */
int kiln_store_tag_list(struct kiln_store *s, struct kiln_tag **out, size_t *n, struct kiln_err *err);
void kiln_store_tags_free(struct kiln_tag *v, size_t n);

/* ---- garbage collection and checking ---- */

/* Extra roots: push blob digests to keep (manifests/indexes among them are
 * followed to their config and layers). */
typedef int (*kiln_store_roots_fn)(struct kiln_store *s, struct kiln_strv *roots, void *ctx,
				   struct kiln_err *err);

/* Defined (strongly) by the build cache when it is linked in; gc always asks it. */
int kiln_store_gc_extra_roots(struct kiln_store *s, struct kiln_strv *roots, struct kiln_err *err)
	__attribute__((weak));

/* Take the store lock EXCLUSIVE: no other RDWR handle (build, pull, import,
 * load, tag) is open until kiln_store_unlock_exclusive.  Work that removes
 * what such a process may be about to reference (gc, the snapshot collector)
 * runs under it.  wait: up to ~10 s, then EBUSY; !wait: returns 1 at once when
 * another kiln has the store open.  Nests within one handle; gc called while
 * it is held reuses it. */
int kiln_store_lock_exclusive(struct kiln_store *s, bool wait, struct kiln_err *err);
void kiln_store_unlock_exclusive(struct kiln_store *s);

struct kiln_gc_stats {
	size_t blobs_removed;
	int64_t bytes_removed;
};

/* Remove every blob not reachable from index.json, from roots_fn (may be
 * NULL) or from kiln_store_gc_extra_roots.  Waits (up to ~10 s) for the
 * exclusive store lock: fails with EBUSY when another kiln keeps the store open.
 * Also empties tmp/. */
int kiln_store_gc(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		  struct kiln_gc_stats *stats, struct kiln_err *err);

/* Like kiln_store_gc, but without waiting: returns 1 (and does nothing)
 * when another kiln has the store open, 0 when it collected. */
int kiln_store_gc_try(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		      struct kiln_gc_stats *stats, struct kiln_err *err);

struct kiln_fsck_report {
	struct kiln_strv problems;   /* one human-readable line each */
	size_t blobs_checked;
	size_t images_checked;
};

/* Verify every blob's digest, and every reference: index.json → manifest →
 * config + layers present with the sizes given, diff_ids count = layers count.
 * Returns 0 when the check ran (problems go to the report), -1 when it could
 * not run.  Free the report with kiln_fsck_report_free. */
int kiln_store_fsck(struct kiln_store *s, struct kiln_fsck_report *report, struct kiln_err *err);
void kiln_fsck_report_free(struct kiln_fsck_report *r);

#endif
