/* kiln — registry client internals shared by registry_http.c and registry.c.
 * Not for use outside layers/registry*.c. */
#ifndef KILN_LAYERS_REGISTRY_INT_H
#define KILN_LAYERS_REGISTRY_INT_H

#include <curl/curl.h>

#include "common/util.h"
#include "layers/registry.h"

struct reg_token {
	char *scope;
	char *value;
	uint64_t expires_ns;
};

struct kiln_registry {
	char *host;                 /* as in the reference */
	char *endpoint;             /* host[:port] to connect to */
	char *base;                 /* "https://endpoint" once pinged */
	struct kiln_registry_opts opts;
	bool pinged;
	bool insecure_http;         /* plain http allowed as a fallback */
	char auth_scheme[16];       /* "", "basic", "bearer" */
	char *realm;
	char *service;
	struct kiln_registry_creds creds;
	bool creds_loaded;
	struct reg_token *tokens;
	size_t n_tokens;
	CURLSH *share;
	CURL *easy;                 /* reused for synchronous requests */
	struct kiln_buf ca_pem;     /* concatenated *.crt of the cert dir */
	char *client_cert;
	char *client_key;
	int64_t chunk_size;
	int64_t limit_rate;
	int retries;
	int max_parallel;
};

/* A request and its response. */
struct reg_xfer {
	CURL *easy;                 /* owned when own_easy */
	bool own_easy;
	struct curl_slist *hdrs;
	char *method;               /* "GET", "HEAD", "PUT", "POST", "PATCH" */
	char *url;                  /* absolute */
	char *scope;                /* token scope(s), space separated; NULL = none */
	char *accept;
	char *content_type;
	char *content_range;
	bool follow;                /* follow redirects (GET/HEAD) */
	bool no_auth;               /* send no Authorization (token endpoint) */
	const char *basic_user;     /* force Basic with these (token endpoint) */
	const char *basic_pass;
	/* request body: memory or a file range */
	const unsigned char *body;
	size_t body_len;
	int body_fd;                /* -1 = none */
	int64_t body_off;
	int64_t body_fd_len;
	int64_t body_pos;
	bool has_body;
	/* Range: bytes=N- when > 0 */
	int64_t range_from;
	/* response */
	CURLcode rc;
	char errbuf[CURL_ERROR_SIZE];
	long status;
	char *location;
	char *www_auth;
	char *docker_digest;
	char *ctype;
	char *range_hdr;
	char *content_range_hdr;
	char *retry_after;
	int64_t clen;
	struct kiln_buf resp;
	size_t resp_max;            /* 0 = 4 MiB */
	bool resp_overflow;
	/* success body sink: begin(offset) once per response, then data */
	int (*sink_begin)(void *ctx, int64_t offset, struct kiln_err *err);
	int (*sink)(void *ctx, const void *data, size_t len, struct kiln_err *err);
	void *sink_ctx;
	int body_mode;              /* 0 undecided, 1 sink, 2 resp buffer */
	bool sink_failed;
	struct kiln_err sink_err;
	/* progress: bytes of body moved in this attempt */
	int64_t moved;
	bool auth_retried;
};

void reg_xfer_init(struct reg_xfer *x);
/* Forget the request and response (keeps the easy handle). */
void reg_xfer_clear(struct reg_xfer *x);
void reg_xfer_free(struct reg_xfer *x);
/* Set method and URL (absolute, or a path below the registry base). */
void reg_xfer_set(struct kiln_registry *r, struct reg_xfer *x, const char *method, const char *url_or_path);
void reg_xfer_body_mem(struct reg_xfer *x, const void *data, size_t len);
void reg_xfer_body_fd(struct reg_xfer *x, int fd, int64_t off, int64_t len);

/* Configure x->easy for the request (auth header included). */
int reg_xfer_prepare(struct kiln_registry *r, struct reg_xfer *x, struct kiln_err *err);
/* After the transfer: status and CURLcode. */
void reg_xfer_done(struct reg_xfer *x, CURLcode rc);

/* True when the response (or the transport error) is worth retrying. */
bool reg_xfer_transient(const struct reg_xfer *x);
/* Delay before the next attempt (Retry-After honoured, capped). */
unsigned reg_xfer_retry_delay(const struct reg_xfer *x, int attempt);
/* 401 handling: learn the challenge, drop the cached token; true when a
 * retry with new credentials can help. */
bool reg_auth_on_401(struct kiln_registry *r, struct reg_xfer *x);

/* Synchronous request with auth and (when retry) transient retries.
 * 0 when an HTTP response arrived (any status: check x->status), -1 when the
 * transport failed after the retries. */
int reg_do(struct kiln_registry *r, struct reg_xfer *x, bool retry, struct kiln_err *err);

/* Fill err from a failed response: the registry's JSON errors as
 * "code: message" (Docker's wording), else "HTTP <status>". Returns -1. */
int reg_error(const struct reg_xfer *x, struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Percent-encoding for a URL parameter (malloc'd). */
char *reg_url_escape(const char *s);
/* Standard base64 with padding (malloc'd). */
char *reg_base64(const void *data, size_t len);

/* Scope strings. */
char *reg_scope_repo(const char *repo, bool push);

/* The parallel engine: jobs are small state machines, each with one request
 * in flight at a time. */
enum { REG_JOB_NEXT = 1, REG_JOB_DONE = 0, REG_JOB_BACKGROUND = 2 };
struct reg_job {
	struct reg_xfer x;
	/* fill x with the first request: REG_JOB_NEXT, REG_JOB_DONE (nothing to do) or -1 */
	int (*start)(struct reg_job *j, struct kiln_err *err);
	/* x finished with a response that is neither a 401 to retry nor a
	 * transient error still to retry: REG_JOB_NEXT (x refilled), DONE or -1 */
	int (*done)(struct reg_job *j, struct kiln_err *err);
	/* before a transient retry: adjust the request (resume); 0 or -1 */
	int (*retry)(struct reg_job *j, struct kiln_err *err);
	/* after done returned REG_JOB_BACKGROUND (work handed to a thread, e.g.
	 * fsync + rename of a blob): 1 still busy, REG_JOB_DONE or -1 */
	int (*poll)(struct reg_job *j, struct kiln_err *err);
	void *ctx;
	/* engine state */
	int attempt;
	uint64_t not_before;
	int state;                  /* 0 waiting, 1 queued, 2 in flight, 3 finished, 4 background */
	/* progress */
	uint64_t start_ns;
	const char *label;
	int64_t total;
	int64_t progress_base;      /* bytes done before the current attempt */
	int64_t bytes;              /* body bytes actually moved (all attempts) */
	const char *status_text;
	bool show;
};
int reg_run_jobs(struct kiln_registry *r, struct reg_job **jobs, size_t n, struct kiln_err *err);

/* Ensure the registry is pinged. */
int reg_ensure_ping(struct kiln_registry *r, struct kiln_err *err);

#endif
