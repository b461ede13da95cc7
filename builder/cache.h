/* kiln — the build cache: one record per executed step, keyed by a sha256
 * over everything the step's result depends on (security.md item 18).
 *
 * Records live in <root>/cache/records/<hex>.json, written atomically:
 *   {"key": "sha256:…", "config": <the whole image config after the step>,
 *    "layers": [{"digest","diff_id","size","mediaType"}…] (all layers after the step),
 *    "chain_id": "sha256:…" (top chain id, "" for none), "created": unix seconds}
 * Restoring the whole image state makes a fully cached rebuild produce the
 * same image id.  The layer blobs named by records are GC roots of the store
 * (kiln_store_gc_extra_roots is defined here).
 */
#ifndef KILN_BUILDER_CACHE_H
#define KILN_BUILDER_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/util.h"
#include "layers/layer.h"

/* A running key computation. */
struct kiln_cache_key {
	void *md;          /* EVP_MD_CTX */
};

/* Start a key with a kind tag ("step", "from"). */
void kiln_cache_key_begin(struct kiln_cache_key *k, const char *kind);
/* Add a named field (name and value are both hashed, length-prefixed, so
 * fields cannot run into each other).  value may be NULL ("absent"). */
void kiln_cache_key_add(struct kiln_cache_key *k, const char *name, const char *value);
/* Add a JSON value in canonical form (sorted keys, compact); NULL = absent. */
void kiln_cache_key_add_json(struct kiln_cache_key *k, const char *name, const json_t *value);
/* Finish: "sha256:<hex>". */
void kiln_cache_key_end(struct kiln_cache_key *k, char out[KILN_DIGEST_MAX]);

struct kiln_cache_layer {
	char digest[KILN_DIGEST_MAX];
	char diff_id[KILN_DIGEST_MAX];
	int64_t size;
	char media_type[128];
};

struct kiln_cache_record {
	char key[KILN_DIGEST_MAX];
	json_t *config;                  /* owned */
	struct kiln_cache_layer *layers; /* owned */
	size_t n_layers;
	char chain_id[KILN_DIGEST_MAX];
	int64_t created;
};

/* Look a key up under root.  Returns 1 and fills *rec on a hit, 0 on a miss,
 * -1 on an error (an unreadable/corrupt record counts as a miss). */
int kiln_cache_get(const char *root, const char *key, struct kiln_cache_record *rec,
		   struct kiln_err *err);
/* Write a record atomically (rec->key names it). */
int kiln_cache_put(const char *root, const struct kiln_cache_record *rec, struct kiln_err *err);
void kiln_cache_record_free(struct kiln_cache_record *rec);

/* Remove records: all of them (all = true) or those whose layer blobs are
 * missing from root/blobs (all = false).  Counts removed records, and the
 * chain ids they named (for the caller to drop snapshots) go to chains when
 * not NULL. */
int kiln_cache_prune(const char *root, bool all, size_t *removed, struct kiln_strv *chains,
		     struct kiln_err *err);

/* Every layer digest named by a record (GC roots). */
int kiln_cache_roots(const char *root, struct kiln_strv *digests, struct kiln_err *err);

#endif
