/* kiln — the build cache shared through a registry:
 *   kiln build --cache-to   type=registry,ref=R[,mode=min|max][,ignore-error=true]
 *   kiln build --cache-from type=registry,ref=R      (or just --cache-from R)
 *
 * Export pushes one OCI image manifest to R.  Its config blob (media type
 * KILN_MT_BUILDCACHE_CONFIG) holds the cache records (builder/cache.h) of the
 * build's steps:
 *   {"kiln.buildcache": 1,
 *    "records": [{"key", "parent", "config", "layers": [{digest, diff_id,
 *                 size, mediaType}…], "created"}…]}
 * and its layers are every layer blob those records name (pushed HEAD-first,
 * so blobs the registry has are not sent again).  mode=min (default) exports
 * the records along the chain that produced the final image; mode=max every
 * record the build used or wrote (all stages).
 *
 * Import reads the manifest and config, validates every record (key and
 * digest syntax, known layer media types, each layer listed in the manifest
 * with the same size) and writes the records into <root>/cache/records
 * atomically.  A working local record (its blobs present) is kept unless the
 * remote one is newer and needs no download.  Layers are fetched lazily: when a step hits a record whose
 * blob is missing, the builder calls kiln_remote_cache_fetch, which downloads
 * it into the store (digest- and size-verified) from the cache it came from;
 * so only the layers of steps that hit are downloaded.  A missing snapshot is
 * re-created from the blob by the builder on first use.
 * Import failures are warnings (the build runs without the cache); export
 * failures fail the command unless ignore-error=true.
 *
 * Cache keys never contain local paths or ids (see builder/cache.h), so two
 * machines compute the same keys.  Secret contents are never part of a key,
 * a record or a layer (RUN --mount=type=secret is a bind mount).
 */
#ifndef KILN_BUILDER_REMOTE_CACHE_H
#define KILN_BUILDER_REMOTE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "builder/cache.h"
#include "common/err.h"
#include "common/util.h"
#include "layers/registry.h"
#include "layers/store.h"

#define KILN_MT_BUILDCACHE_CONFIG "application/vnd.kiln.buildcache.config.v1+json"
/* The most records one import reads (the config is at most 16 MiB anyway). */
#define KILN_REMOTE_CACHE_MAX_RECORDS 100000

enum kiln_remote_cache_mode {
	KILN_REMOTE_CACHE_MIN = 0,   /* the steps that produced the final image */
	KILN_REMOTE_CACHE_MAX,       /* every step of every stage built */
};

struct kiln_remote_cache_spec {
	char *ref;                          /* normalised reference (tag or digest) */
	enum kiln_remote_cache_mode mode;   /* --cache-to only */
	bool ignore_error;                  /* --cache-to: a failed export only warns */
	enum kiln_tls_mode tls;             /* registry.insecure=true → KILN_TLS_INSECURE */
};

/* Parse a --cache-to (to = true) or --cache-from value.  Accepted keys:
 * type=registry (the only type; default when a plain reference is given),
 * ref=, mode=min|max (to), ignore-error=true|false (to),
 * registry.insecure=true|false; oci-mediatypes, image-manifest and
 * compression are accepted and ignored (BuildKit's).  Errors have exit_code 2. */
int kiln_remote_cache_parse(const char *text, bool to, struct kiln_remote_cache_spec *out,
			    struct kiln_err *err);
void kiln_remote_cache_spec_free(struct kiln_remote_cache_spec *s);

/* The builder's hook: a step used (cache hit) or wrote (miss) the record
 * key, computed on top of parent_key.  Called from builder/build.c. */
void kiln_remote_cache_note(const char *parent_key, const char *key);
/* Forget every noted key (frees memory). */
void kiln_remote_cache_reset(void);
/* The noted keys to export, bottom (first step) first: MIN follows the
 * parents back from the last noted key (the final image's step); MAX is every
 * noted key in the order noted.  Appends to *out. */
void kiln_remote_cache_select(enum kiln_remote_cache_mode mode, struct kiln_strv *out);

/* Encode the local records of keys (missing ones and those whose layer blobs
 * are not in the store are skipped) as a cache config; *blobs lists the
 * distinct layer blobs (bottom first; media_type points into *config_json,
 * keep it until done).  *n_records counts the records encoded. */
int kiln_remote_cache_encode(const char *root, struct kiln_store *store, char *const *keys, size_t n,
			     json_t **config_json, struct kiln_registry_blob **blobs, size_t *n_blobs,
			     size_t *n_records, struct kiln_err *err);

/* Decode and validate a cache config.  Invalid records are dropped and
 * counted in *invalid; a config that is not a kiln build cache is an error.
 * layers (may be NULL: no check) is the manifest's layer array: every record
 * layer must be listed there with the same size. */
int kiln_remote_cache_decode(const char *data, size_t len, const json_t *layers,
			     struct kiln_cache_record **recs, size_t *n, size_t *invalid,
			     struct kiln_err *err);
void kiln_remote_cache_records_free(struct kiln_cache_record *recs, size_t n);

/* Should rec replace what root holds under rec->key?  True when there is no
 * readable local record, when the local one names a blob missing from the
 * store, or when rec is newer and all its blobs are in the store already (a
 * working local record is never traded for a download). */
bool kiln_remote_cache_wanted(const char *root, struct kiln_store *store,
			      const struct kiln_cache_record *rec);

/* Write rec (when wanted and all its blobs are in the store) into root.
 * Returns 1 written, 0 skipped, -1 error. */
int kiln_remote_cache_store_record(const char *root, struct kiln_store *store,
				   const struct kiln_cache_record *rec, struct kiln_err *err);

/* The builder's hook on a hit whose layer blob is missing: download it from
 * the imported cache that named it.  True when the blob is now in the store;
 * false when no imported cache names it or the download failed (a warning
 * is printed once; the step then runs). */
bool kiln_remote_cache_fetch(struct kiln_store *store, const char *digest);
/* Layers and bytes fetched so far in this process. */
void kiln_remote_cache_fetch_stats(size_t *layers, int64_t *bytes);

/* The whole import/export.  progress (may be NULL) gets one or two lines.
 * import returns 0 also when R does not exist yet (a line says so). */
int kiln_remote_cache_import(const char *root, const struct kiln_remote_cache_spec *spec, FILE *progress,
			     struct kiln_err *err);
int kiln_remote_cache_export(const char *root, const struct kiln_remote_cache_spec *spec, FILE *progress,
			     struct kiln_err *err);

/* ---- what kiln build calls ---------------------------------------------- */

/* The --cache-to or --cache-from values of one command (repeatable). */
struct kiln_remote_cache_list {
	struct kiln_remote_cache_spec *v;
	size_t n;
};
/* Parse text (kiln_remote_cache_parse) and append it. */
int kiln_remote_cache_list_add(struct kiln_remote_cache_list *l, const char *text, bool to,
			       struct kiln_err *err);
void kiln_remote_cache_list_free(struct kiln_remote_cache_list *l);
#define KILN_REMOTE_CACHE_LIST_AUTO __attribute__((cleanup(kiln_remote_cache_list_free)))

/* Before the build: import every --cache-from; a failure prints a warning
 * ("kiln: warning: …" on stderr) and the build goes on.  Nothing is done
 * with no_cache.  Forgets the keys noted by an earlier build. */
void kiln_remote_cache_import_all(const char *root, const struct kiln_remote_cache_list *from,
				  bool no_cache, FILE *progress);
/* After a successful build: say how many layers were fetched from imported
 * caches (when any), then export to every --cache-to.  -1 on the first
 * failure of a destination without ignore-error (those only warn). */
int kiln_remote_cache_export_all(const char *root, const struct kiln_remote_cache_list *to,
				 FILE *progress, struct kiln_err *err);

#endif
