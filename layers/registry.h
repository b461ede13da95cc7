/* kiln — the registry client: distribution v2 over libcurl (pull, push, login).
 *
 * Three levels:
 *   - credentials and challenges (auth.c): WWW-Authenticate parsing, the
 *     docker config.json / containers auth.json / credential helpers,
 *     login/logout storage;
 *   - a connection to one registry (struct kiln_registry): scheme and TLS,
 *     Basic or Bearer authentication with cached tokens per scope, retries
 *     with backoff, blob and manifest requests (also usable for arbitrary OCI
 *     artifacts such as a build cache exported to a registry);
 *   - whole images: kiln_registry_pull / kiln_registry_push on the store.
 */
#ifndef KILN_LAYERS_REGISTRY_H
#define KILN_LAYERS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "layers/image.h"
#include "layers/layer.h"
#include "layers/store.h"

/* The Docker Hub: what `busybox` means. */
#define KILN_REGISTRY_DOCKER_HUB "docker.io"
#define KILN_REGISTRY_DOCKER_HUB_ENDPOINT "registry-1.docker.io"
#define KILN_REGISTRY_DOCKER_HUB_AUTH_KEY "https://index.docker.io/v1/"

enum kiln_tls_mode {
	KILN_TLS_DEFAULT = 0,   /* verify; localhost/127.0.0.1/::1 fall back to plain http */
	KILN_TLS_VERIFY,        /* --tls-verify=true: verify, never fall back */
	KILN_TLS_INSECURE,      /* --tls-verify=false: https without verification, then http */
};

/* Options shared by every operation.  Zero-initialise, then set what you need. */
struct kiln_registry_opts {
	const char *platform;      /* "os/arch[/variant]"; NULL = "linux/amd64" */
	enum kiln_tls_mode tls;
	const char *cert_dir;      /* ca.crt (any *.crt), client.cert + client.key; NULL =
				    * /etc/docker/certs.d/<host> or /etc/containers/certs.d/<host> */
	const char *username;      /* explicit credentials (login); NULL = look them up */
	const char *password;
	FILE *progress;            /* progress lines; NULL = silent */
	bool progress_tty;         /* redraw per-layer lines with bytes and rate */
	int max_parallel;          /* concurrent blob transfers; 0 = 4 */
	int retries;               /* per request on 5xx/429/connection errors; 0 = 6, < 0 = none */
	int64_t chunk_size;        /* push: PATCH chunks of this size; 0 = one request per blob
				    * (env KILN_REGISTRY_CHUNK_SIZE overrides) */
	int64_t limit_rate;        /* bytes/s per transfer, 0 = unlimited (env KILN_REGISTRY_LIMIT_RATE) */
	const char *mount_from;    /* push: a repository on the same registry to mount blobs from */
};

/* The host to connect to: docker.io → registry-1.docker.io, otherwise host
 * itself (references are parsed by kiln_ref_parse in image.h). */
const char *kiln_registry_endpoint(const char *host);

/* ---------------------------------------------------------------------------
 * Authentication challenges and credentials (auth.c).
 */
struct kiln_registry_challenge {
	char scheme[16];   /* "bearer", "basic" (lower case) or "" */
	char *realm;
	char *service;
	char *scope;
	char *error;       /* error="insufficient_scope" etc. */
};
/* Parse a WWW-Authenticate header value (the first challenge in it).
 * Quoted strings with backslash escapes, unquoted tokens, any parameter order. */
int kiln_registry_parse_challenge(const char *header, struct kiln_registry_challenge *out,
				  struct kiln_err *err);
void kiln_registry_challenge_free(struct kiln_registry_challenge *c);

struct kiln_registry_creds {
	char *username;
	char *password;
	char *identity_token;   /* an OAuth2 refresh token (helper answered Username "<token>") */
};
void kiln_registry_creds_free(struct kiln_registry_creds *c);

/* What a user names a registry by ("https://host:5000/v2/", "index.docker.io")
 * → the host as in references ("host:5000", "docker.io"); malloc'd. */
char *kiln_registry_server_host(const char *server);
/* The key a host's credentials are stored under (docker.io → the Hub's v1 URL). */
const char *kiln_registry_auth_key(const char *host);
/* $DOCKER_CONFIG/config.json or ~/.docker/config.json (newly allocated). */
char *kiln_registry_docker_config_path(void);
/* $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json, NULL if neither is set. */
char *kiln_registry_containers_auth_path(void);

/* Look up the credentials for host: credHelpers[host], credsStore, auths[host]
 * in the docker config, then the containers auth.json.  Nothing found is not
 * an error (*out stays empty). */
int kiln_registry_creds_lookup(const char *host, struct kiln_registry_creds *out,
			       struct kiln_err *err);
/* Store credentials for host (a helper when configured, else base64 in
 * auths, config.json written atomically with mode 0600). */
int kiln_registry_creds_save(const char *host, const char *username, const char *password,
			     struct kiln_err *err);
/* Remove them; *removed says whether anything was stored. */
int kiln_registry_creds_erase(const char *host, bool *removed, struct kiln_err *err);

/* Run `docker-credential-<helper> <action>` with input on stdin; stdout is
 * returned in *out.  The one process kiln starts besides containers. */
int kiln_registry_cred_helper(const char *helper, const char *action, const char *input,
			      char **out, struct kiln_err *err);

/* Retry delay in milliseconds before attempt n+1 (n >= 0): 250·2^n, at most 8000. */
unsigned kiln_registry_backoff_ms(int attempt);

/* ---------------------------------------------------------------------------
 * A connection to one registry.
 */
struct kiln_registry;

/* host as in a reference ("docker.io", "127.0.0.1:5000").  Nothing is sent yet. */
int kiln_registry_open(const char *host, const struct kiln_registry_opts *opts,
		       struct kiln_registry **out, struct kiln_err *err);
void kiln_registry_close(struct kiln_registry *r);

/* GET /v2/: picks the scheme (https, or http where allowed) and learns the
 * authentication challenge.  Done implicitly by every other call. */
int kiln_registry_ping(struct kiln_registry *r, struct kiln_err *err);
/* Verify the connection's credentials (login): a token for no scope, or
 * /v2/ with Basic. */
int kiln_registry_check_login(struct kiln_registry *r, struct kiln_err *err);

/* Manifests.  get: reference is a tag or digest; the bytes are returned as
 * they were served (caller frees *data and *media_type), *digest is their
 * sha256 (checked against a digest reference and Docker-Content-Digest). */
int kiln_registry_manifest_get(struct kiln_registry *r, const char *repo, const char *reference,
			       char **data, size_t *len, char **media_type,
			       char digest[KILN_DIGEST_MAX], struct kiln_err *err);
/* put: reference is a tag or the digest; digest_out (may be NULL) gets the
 * sha256 of data. */
int kiln_registry_manifest_put(struct kiln_registry *r, const char *repo, const char *reference,
			       const char *media_type, const void *data, size_t len,
			       char digest_out[KILN_DIGEST_MAX], struct kiln_err *err);

/* HEAD a blob: *exists (and *size when known). */
int kiln_registry_blob_exists(struct kiln_registry *r, const char *repo, const char *digest,
			      bool *exists, int64_t *size, struct kiln_err *err);

/* A blob to move. */
struct kiln_registry_blob {
	char digest[KILN_DIGEST_MAX];
	int64_t size;              /* -1 = unknown (get only) */
	const char *media_type;    /* for progress (layer vs config); may be NULL */
};

/* Download blobs into the store, in parallel, digest and size verified
 * (a mismatch leaves nothing in the store), resuming a broken transfer with
 * Range.  Blobs already in the store are skipped. */
int kiln_registry_blob_get_to_store(struct kiln_registry *r, struct kiln_store *store,
				    const char *repo, const struct kiln_registry_blob *blobs,
				    size_t n, struct kiln_err *err);
/* Download one blob into memory (configs, small artifacts); at most max bytes. */
int kiln_registry_blob_get_mem(struct kiln_registry *r, const char *repo,
			       const struct kiln_registry_blob *blob, size_t max,
			       char **data, size_t *len, struct kiln_err *err);

/* Upload blobs from the store, in parallel: HEAD first (skip existing),
 * cross-repo mount from opts->mount_from or mount_from, then monolithic or
 * chunked uploads. */
int kiln_registry_blob_put(struct kiln_registry *r, struct kiln_store *store, const char *repo,
			   const struct kiln_registry_blob *blobs, size_t n,
			   const char *mount_from, struct kiln_err *err);
/* Upload one blob from memory (configs of an artifact). */
int kiln_registry_blob_put_mem(struct kiln_registry *r, const char *repo, const void *data,
			       size_t len, char digest_out[KILN_DIGEST_MAX], struct kiln_err *err);

/* ---------------------------------------------------------------------------
 * Arbitrary OCI artifacts: a config plus blobs under a reference.  The hook
 * for the build cache shared through a registry (--cache-to/--cache-from
 * type=registry): push the cache records as the config and the layers as
 * blobs, pull them back into the store.
 */
/* Push blobs (from the store, each with its media_type), then the config
 * (from memory) and an OCI image manifest naming them, under repo:reference
 * (a tag).  annotations (may be NULL) is copied into the manifest;
 * out_digest (may be NULL) gets the manifest digest. */
int kiln_registry_artifact_push(struct kiln_registry *r, struct kiln_store *store, const char *repo,
				const char *reference, const char *config_media_type,
				const void *config, size_t config_len,
				const struct kiln_registry_blob *blobs, size_t n, json_t *annotations,
				char out_digest[KILN_DIGEST_MAX], struct kiln_err *err);
/* Fetch repo:reference (an OCI or Docker image manifest): its config into
 * memory (at most 16 MiB) and every layer blob into the store (verified).
 * *manifest is a new reference (caller json_decref's), *config is malloc'd. */
int kiln_registry_artifact_pull(struct kiln_registry *r, struct kiln_store *store, const char *repo,
				const char *reference, json_t **manifest, char **config,
				size_t *config_len, struct kiln_err *err);

/* ---------------------------------------------------------------------------
 * Whole images.
 */
/* Pull ref (Docker's normalisation) into the store: the manifest (and index)
 * bytes exactly as served, config and layers verified; tag the full reference
 * ("docker.io/library/busybox:latest").  out_manifest_digest (may be NULL)
 * receives the digest the reference resolved to (the index's for a list). */
int kiln_registry_pull(struct kiln_store *store, const char *ref,
		       const struct kiln_registry_opts *opts,
		       char out_manifest_digest[KILN_DIGEST_MAX], struct kiln_err *err);

/* Push the local image name (a store reference) to dest (NULL = name itself):
 * blobs, then the manifest under dest's tag (or digest).  out_digest gets the
 * manifest digest. */
int kiln_registry_push(struct kiln_store *store, const char *name, const char *dest,
		       const struct kiln_registry_opts *opts,
		       char out_digest[KILN_DIGEST_MAX], struct kiln_err *err);

/* A --tls-verify value: "true"/"1"/"" → KILN_TLS_VERIFY, "false"/"0" → KILN_TLS_INSECURE. */
int kiln_registry_tls_parse(const char *value, enum kiln_tls_mode *out, struct kiln_err *err);

/* Command-line options shared by pull, push and login: --tls-verify[=BOOL],
 * --cert-dir DIR (or --cert-dir=DIR).  Returns 1 when argv[*i] was one (and
 * advances *i past a separate value), 0 when not, -1 on a bad value. */
int kiln_registry_opts_flag(int argc, char **argv, int *i, struct kiln_registry_opts *o,
			    struct kiln_err *err);

/* Fill opts->progress/progress_tty/chunk_size/limit_rate defaults from the
 * environment and stdout (used by the commands). */
void kiln_registry_opts_from_env(struct kiln_registry_opts *opts);

#endif
