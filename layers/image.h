/* kiln — image references and the OCI image model (config, manifest, index).
 *
 * References are parsed and normalized as Docker does:
 *   busybox                    → docker.io/library/busybox:latest
 *   me/app:1                   → docker.io/me/app:1
 *   localhost:5000/a/b@sha256:… → localhost:5000/a/b@sha256:…   (digest kept, no default tag)
 * The familiar form is what `docker images` shows: busybox:latest, me/app:1.
 *
 * An image is its config (the whole OCI config as a jansson object, edited in
 * place) plus its layers.  The image id is the config digest, as in Docker.
 * Docker schema2 media types are accepted on input; kiln writes OCI types.
 */
#ifndef KILN_LAYERS_IMAGE_H
#define KILN_LAYERS_IMAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "layers/layer.h"
#include "layers/store.h"

/* ---- media types ---- */
#define KILN_MT_OCI_MANIFEST   "application/vnd.oci.image.manifest.v1+json"
#define KILN_MT_OCI_INDEX      "application/vnd.oci.image.index.v1+json"
#define KILN_MT_OCI_CONFIG     "application/vnd.oci.image.config.v1+json"
#define KILN_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define KILN_MT_DOCKER_LIST    "application/vnd.docker.distribution.manifest.list.v2+json"
#define KILN_MT_DOCKER_CONFIG  "application/vnd.docker.container.image.v1+json"
#define KILN_MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define KILN_MT_DOCKER_LAYER_FOREIGN "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#define KILN_ANNOT_REF_NAME "org.opencontainers.image.ref.name"
#define KILN_ANNOT_IMAGE_NAME "io.containerd.image.name"

/* ---- references ---- */

struct kiln_ref {
	char *domain;   /* "docker.io", "localhost:5000", "ghcr.io" */
	char *path;     /* "library/busybox" (lowercase) */
	char *tag;      /* "latest"; NULL when only a digest was given */
	char *digest;   /* "sha256:<hex>" or NULL */
};

/* Parse and normalize; fills *out (free with kiln_ref_free).  Rejects
 * uppercase repositories, bad tags (>128 chars, bad characters), bad digests. */
int kiln_ref_parse(const char *s, struct kiln_ref *out, struct kiln_err *err);
void kiln_ref_free(struct kiln_ref *r);
/* All malloc'd: */
char *kiln_ref_string(const struct kiln_ref *r);        /* docker.io/library/busybox:latest[@sha256:…] */
char *kiln_ref_familiar(const struct kiln_ref *r);      /* busybox:latest, me/app:1, localhost:5000/a:b */
char *kiln_ref_repo(const struct kiln_ref *r);          /* docker.io/library/busybox */
char *kiln_ref_familiar_repo(const struct kiln_ref *r); /* busybox */
/* Parse + kiln_ref_string in one call; NULL (err set) when invalid. */
char *kiln_ref_normalize(const char *s, struct kiln_err *err);
/* Full reference → familiar string; s returned copied when unparsable. */
char *kiln_ref_familiarize(const char *s);

/* ---- chain ids ---- */

/* ChainID(1) = diff_id(1); ChainID(n) = sha256(ChainID(n-1) + " " + diff_id(n)).
 * parent may be NULL or "" for the first layer. */
void kiln_chain_id_next(const char *parent, const char *diff_id, char out[KILN_DIGEST_MAX]);

/* ---- images ---- */

struct kiln_image_layer {
	char digest[KILN_DIGEST_MAX];     /* blob digest (as in the manifest) */
	char diff_id[KILN_DIGEST_MAX];    /* uncompressed (as in rootfs.diff_ids) */
	int64_t size;
	char media_type[128];
};

struct kiln_image {
	json_t *config;                    /* whole OCI config object, owned; edit freely */
	struct kiln_image_layer *layers;   /* parallel to config.rootfs.diff_ids */
	size_t n_layers;
	/* Filled by load/commit (empty for a new, uncommitted image): */
	char id[KILN_DIGEST_MAX];          /* config digest = image id */
	struct kiln_desc manifest;         /* the manifest descriptor */
	json_t *manifest_json;             /* the manifest as stored (owned), or NULL */
};

/* Load by name ("busybox", full ref, "name@sha256:…"), by image id
 * ("sha256:<hex>", the full hex, or a unique hex prefix of >= 4 chars of the
 * config digest) or by manifest digest.  -1 with errnum ENOENT when no image
 * matches.  An image index is resolved to the linux/<host arch> manifest. */
int kiln_image_load(struct kiln_store *s, const char *name_or_id, struct kiln_image **out,
		    struct kiln_err *err);
/* Load by manifest descriptor (what a tag points at). */
int kiln_image_load_desc(struct kiln_store *s, const struct kiln_desc *manifest,
			 struct kiln_image **out, struct kiln_err *err);
/* Resolve a name or id to its manifest descriptor and image id without
 * loading layers; ENOENT when missing. */
int kiln_image_resolve(struct kiln_store *s, const char *name_or_id, struct kiln_desc *manifest,
		       char id[KILN_DIGEST_MAX], struct kiln_err *err);

/* A new empty image: architecture/os of this host, config {}, no layers,
 * no history, created = kiln_image_now(). */
struct kiln_image *kiln_image_new_scratch(void);
/* Deep copy (the start of a derived image: FROM base).  id/manifest and
 * "created" are cleared (commit sets created); history and layers are kept. */
struct kiln_image *kiln_image_copy(const struct kiln_image *img);
void kiln_image_free(struct kiln_image *img);       /* NULL is fine */

/* RFC 3339 UTC time: SOURCE_DATE_EPOCH when set, else now. malloc'd. */
char *kiln_image_now(void);

/* ---- editing the config (the "config" member; created on demand) ---- */

json_t *kiln_image_cfg(struct kiln_image *img);    /* borrowed */
/* String fields: "User", "WorkingDir", "StopSignal"; NULL value removes. */
const char *kiln_image_get_string(struct kiln_image *img, const char *key);
void kiln_image_set_string(struct kiln_image *img, const char *key, const char *value);
/* String list fields: "Cmd", "Entrypoint", "Shell", "OnBuild", "Env".
 * get returns a malloc'd NULL-terminated copy (NULL when absent; free with
 * kiln_strv_free_raw); set with v == NULL removes (Cmd null). */
char **kiln_image_get_strv(struct kiln_image *img, const char *key);
void kiln_image_set_strv(struct kiln_image *img, const char *key, char *const *v);
/* Env: set replaces an existing NAME= entry in place, else appends. */
void kiln_image_env_set(struct kiln_image *img, const char *name, const char *value);
const char *kiln_image_env_get(struct kiln_image *img, const char *name);   /* borrowed, NULL when unset */
void kiln_image_label_set(struct kiln_image *img, const char *key, const char *value);
void kiln_image_expose(struct kiln_image *img, const char *port_proto);     /* "80/tcp" */
void kiln_image_volume_add(struct kiln_image *img, const char *path);
/* Healthcheck object (Test, Interval, Timeout, StartPeriod, Retries; Docker's
 * extension); the reference is stolen; NULL removes. */
void kiln_image_set_healthcheck(struct kiln_image *img, json_t *hc);

/* ---- layers and history ---- */

/* Append a layer (digest/diff_id/size/media type from the layer writer) and
 * its history entry {created, created_by, comment (may be NULL), empty_layer
 * absent}. */
int kiln_image_add_layer(struct kiln_image *img, const struct kiln_layer_info *layer,
			 const char *created_by, const char *comment, struct kiln_err *err);
/* Append a history entry; comment may be NULL. */
void kiln_image_add_history(struct kiln_image *img, const char *created_by, const char *comment,
			    bool empty_layer);

/* Chain ids of the layers, bottom first: a NULL-terminated malloc'd list
 * (kiln_strv_free_raw); an image without layers gives an empty list. */
char **kiln_image_chain_ids(const struct kiln_image *img);
/* Chain id of the top layer, "" for no layers. */
void kiln_image_top_chain_id(const struct kiln_image *img, char out[KILN_DIGEST_MAX]);

/* Write config (sorted keys, compact), manifest (an image without layers gets
 * the empty 1024-byte tar layer first, as the schema requires) and tags
 * (tags may be NULL or empty: then the image is kept as an untagged entry).
 * Sets "created" to kiln_image_now() when the config lacks it.  Fills
 * img->id, img->manifest, img->manifest_json and out_id (may be NULL). */
int kiln_image_commit(struct kiln_store *s, struct kiln_image *img, const char *const *tags,
		      char out_id[KILN_DIGEST_MAX], struct kiln_err *err);

/* Total size of the layer blobs (what `images` shows as SIZE). */
int64_t kiln_image_size(const struct kiln_image *img);

/* ---- JSON helpers ---- */

/* Compact, sorted keys: the canonical form kiln hashes. malloc'd. */
char *kiln_json_canonical(const json_t *j);

/* Parse and validate a manifest (OCI or Docker schema2): schemaVersion 2,
 * known mediaType (when present it must match media_type if given), a config
 * descriptor and layer descriptors with valid digests and sizes.  *out is a
 * new reference. */
int kiln_manifest_parse(const char *data, size_t len, const char *media_type, json_t **out,
			struct kiln_err *err);
/* Parse and validate an image index / Docker manifest list. */
int kiln_index_parse(const char *data, size_t len, json_t **out, struct kiln_err *err);
/* A descriptor object → struct (validates digest, size >= 0, mediaType string). */
int kiln_desc_from_json(const json_t *j, struct kiln_desc *out, struct kiln_err *err);
json_t *kiln_desc_to_json(const struct kiln_desc *d);
/* ---- the images in a store (grouped by image id, index order) ---- */

struct kiln_image_entry {
	char id[KILN_DIGEST_MAX];
	struct kiln_desc manifest;
	struct kiln_strv refs;       /* full references naming it (may be empty: dangling) */
	char *created;               /* config "created" or NULL */
	int64_t size;                /* layer blobs */
	bool broken;                 /* manifest/config unreadable (fsck says why) */
};

int kiln_image_list(struct kiln_store *s, struct kiln_image_entry **out, size_t *n, struct kiln_err *err);
void kiln_image_list_free(struct kiln_image_entry *v, size_t n);

/* Image ids named by the containers' ROOT/containers/<id>/state.json
 * ("image" member, resolved like kiln_image_resolve); unresolvable names are
 * skipped.  Used by rmi and image prune to keep images in use. */
void kiln_image_ids_in_use(struct kiln_store *s, struct kiln_strv *ids);

/* ---- display helpers for the image commands ---- */

/* Docker's sizes: "4.26MB", "512B", "1.02kB" (decimal units, 3 digits). */
void kiln_human_size(int64_t bytes, char buf[32]);
/* Docker's "CREATED" column: "5 weeks ago", "About an hour ago", "N/A". */
void kiln_human_since(const char *rfc3339, char buf[64]);
/* "sha256:<hex>" → the 12-hex short id. */
void kiln_short_id(const char *digest, char buf[16]);

/* Host platform as OCI names: "amd64"/"arm64"/..., "linux". */
const char *kiln_host_arch(void);

#endif
