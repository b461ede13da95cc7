/* kiln — registry client: connections, authentication, requests over
 * libcurl, retries, and the parallel transfer engine (curl multi). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/units.h"
#include "layers/image.h"
#include "layers/registry_int.h"

#define USER_AGENT "kiln/0.1"

static bool reg_debug(void)
{
	const char *d = getenv("KILN_DEBUG");
	return d && *d && strcmp(d, "0");
}

/* ------------------------------------------------------------------------- */
/* curl global init, once                                                      */

static void curl_global_once(void)
{
	static bool done;
	if (!done) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		done = true;
	}
}

const char *kiln_registry_endpoint(const char *host)
{
	if (!strcmp(host, "docker.io") || !strcmp(host, "index.docker.io"))
		return KILN_REGISTRY_DOCKER_HUB_ENDPOINT;
	return host;
}

/* localhost, 127.0.0.0/8 and ::1, with or without a port. */
static bool host_is_local(const char *endpoint)
{
	char h[256];
	const char *s = endpoint;
	size_t n;
	if (*s == '[') {
		const char *e = strchr(s, ']');
		if (!e)
			return false;
		n = (size_t)(e - s - 1);
		s++;
	} else {
		n = strcspn(s, ":");
	}
	if (n >= sizeof(h))
		return false;
	memcpy(h, s, n);
	h[n] = 0;
	return !strcasecmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1");
}

/* ------------------------------------------------------------------------- */
/* TLS material from a cert dir                                                */

static void load_cert_dir(struct kiln_registry *r, const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		KILN_AUTOFREE char *path = kiln_xasprintf("%s/%s", dir, name);
		if (kiln_str_has_suffix(name, ".crt")) {
			char *data = NULL;
			size_t len = 0;
			struct kiln_err e = {0};
			if (kiln_read_file(path, 4 << 20, &data, &len, &e) == 0) {
				kiln_buf_append(&r->ca_pem, data, len);
				kiln_buf_putc(&r->ca_pem, '\n');
				free(data);
			}
		} else if (kiln_str_has_suffix(name, ".cert") && !r->client_cert) {
			size_t base = strlen(name) - 5;
			KILN_AUTOFREE char *key = kiln_xasprintf("%s/%.*s.key", dir, (int)base, name);
			if (access(key, R_OK) == 0) {
				r->client_cert = kiln_xstrdup(path);
				r->client_key = kiln_xstrdup(key);
			}
		}
	}
	closedir(d);
}

static int64_t env_size(const char *name, int64_t dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	int64_t x;
	struct kiln_err e = {0};
	if (kiln_units_parse_bytes(v, &x, &e) < 0)
		return dflt;
	return x;
}

void kiln_registry_opts_from_env(struct kiln_registry_opts *opts)
{
	opts->chunk_size = env_size("KILN_REGISTRY_CHUNK_SIZE", opts->chunk_size);
	opts->limit_rate = env_size("KILN_REGISTRY_LIMIT_RATE", opts->limit_rate);
	const char *r = getenv("KILN_REGISTRY_RETRIES");
	int64_t n;
	if (r && *r && kiln_units_parse_int(r, 0, 100, &n, NULL) == 0)
		opts->retries = n == 0 ? -1 : (int)n;
}

int kiln_registry_tls_parse(const char *value, enum kiln_tls_mode *out, struct kiln_err *err)
{
	/* the bare flag means true; an empty value is no boolean (as Go's flags) */
	if (!value || !strcasecmp(value, "true") || !strcmp(value, "1")) {
		*out = KILN_TLS_VERIFY;
		return 0;
	}
	if (!strcasecmp(value, "false") || !strcmp(value, "0")) {
		*out = KILN_TLS_INSECURE;
		return 0;
	}
	return kiln_err_set(err, EINVAL, "invalid value \"%s\" for --tls-verify (true or false)", value);
}

int kiln_registry_opts_flag(int argc, char **argv, int *i, struct kiln_registry_opts *o,
			    struct kiln_err *err)
{
	const char *a = argv[*i];
	if (!strcmp(a, "--tls-verify") || !strncmp(a, "--tls-verify=", 13))
		return kiln_registry_tls_parse(a[12] == '=' ? a + 13 : NULL, &o->tls, err) < 0 ? -1 : 1;
	if (!strcmp(a, "--cert-dir") || !strncmp(a, "--cert-dir=", 11)) {
		if (a[10] == '=')
			o->cert_dir = a + 11;
		else if (*i + 1 < argc)
			o->cert_dir = argv[++*i];
		else
			return kiln_err_set(err, EINVAL, "option --cert-dir needs a value");
		return 1;
	}
	return 0;
}

int kiln_registry_open(const char *host, const struct kiln_registry_opts *opts,
		       struct kiln_registry **out, struct kiln_err *err)
{
	*out = NULL;
	if (!host || !*host || strpbrk(host, "/ \t\r\n@?#"))
		return kiln_err_set(err, 0, "invalid registry host \"%s\"", host ? host : "");
	curl_global_once();
	struct kiln_registry *r = kiln_xcalloc(1, sizeof(*r));
	if (opts)
		r->opts = *opts;
	r->host = kiln_xstrdup(host);
	r->endpoint = kiln_xstrdup(kiln_registry_endpoint(host));
	r->insecure_http = r->opts.tls == KILN_TLS_INSECURE ||
			   (r->opts.tls == KILN_TLS_DEFAULT && host_is_local(r->endpoint));
	r->retries = r->opts.retries == 0 ? 6 : (r->opts.retries < 0 ? 0 : r->opts.retries);
	r->max_parallel = r->opts.max_parallel > 0 ? r->opts.max_parallel
						   : (int)env_size("KILN_REGISTRY_PARALLEL", 4);
	if (r->max_parallel < 1)
		r->max_parallel = 1;
	r->chunk_size = env_size("KILN_REGISTRY_CHUNK_SIZE", r->opts.chunk_size);
	r->limit_rate = env_size("KILN_REGISTRY_LIMIT_RATE", r->opts.limit_rate);
	r->share = curl_share_init();
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	r->easy = curl_easy_init();
	if (!r->share || !r->easy) {
		kiln_registry_close(r);
		return kiln_err_set(err, ENOMEM, "initialising libcurl");
	}
	if (r->opts.cert_dir) {
		struct stat st;
		if (stat(r->opts.cert_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
			int e = errno ? errno : ENOTDIR;
			kiln_err_set(err, e, "cert dir %s", r->opts.cert_dir);
			kiln_registry_close(r);
			return -1;
		}
		load_cert_dir(r, r->opts.cert_dir);
	} else {
		KILN_AUTOFREE char *d1 = kiln_xasprintf("/etc/docker/certs.d/%s", host);
		KILN_AUTOFREE char *d2 = kiln_xasprintf("/etc/containers/certs.d/%s", host);
		load_cert_dir(r, d1);
		load_cert_dir(r, d2);
	}
	*out = r;
	return 0;
}

void kiln_registry_close(struct kiln_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_tokens; i++) {
		free(r->tokens[i].scope);
		if (r->tokens[i].value)
			explicit_bzero(r->tokens[i].value, strlen(r->tokens[i].value));
		free(r->tokens[i].value);
	}
	free(r->tokens);
	if (r->easy)
		curl_easy_cleanup(r->easy);
	if (r->share)
		curl_share_cleanup(r->share);
	kiln_registry_creds_free(&r->creds);
	kiln_buf_free(&r->ca_pem);
	free(r->client_cert);
	free(r->client_key);
	free(r->host);
	free(r->endpoint);
	free(r->base);
	free(r->realm);
	free(r->service);
	free(r);
}

/* ------------------------------------------------------------------------- */
/* Transfers                                                                   */

void reg_xfer_init(struct reg_xfer *x)
{
	memset(x, 0, sizeof(*x));
	x->body_fd = -1;
}

/* Forget the headers of a response (a redirect or 100 Continue starts another). */
static void clear_headers(struct reg_xfer *x)
{
	free(x->location);
	free(x->www_auth);
	free(x->docker_digest);
	free(x->ctype);
	free(x->range_hdr);
	free(x->content_range_hdr);
	free(x->retry_after);
	x->location = x->www_auth = x->docker_digest = x->ctype = x->range_hdr = NULL;
	x->content_range_hdr = x->retry_after = NULL;
	x->clen = -1;
}

static void clear_response(struct reg_xfer *x)
{
	clear_headers(x);
	x->status = 0;
	x->rc = CURLE_OK;
	x->errbuf[0] = 0;
	x->resp.len = 0;
	if (x->resp.data)
		x->resp.data[0] = 0;
	x->resp_overflow = false;
	x->body_mode = 0;
	x->moved = 0;
	x->body_pos = 0;
}

void reg_xfer_clear(struct reg_xfer *x)
{
	clear_response(x);
	if (x->hdrs)
		curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	free(x->method);
	free(x->url);
	free(x->scope);
	free(x->accept);
	free(x->content_type);
	free(x->content_range);
	x->method = x->url = x->scope = x->accept = x->content_type = x->content_range = NULL;
	x->follow = false;
	x->no_auth = false;
	x->basic_user = x->basic_pass = NULL;
	x->body = NULL;
	x->body_len = 0;
	x->body_fd = -1;
	x->body_off = x->body_fd_len = 0;
	x->has_body = false;
	x->range_from = 0;
	x->sink = NULL;
	x->sink_begin = NULL;
	x->sink_ctx = NULL;
	x->sink_failed = false;
	x->auth_retried = false;
	x->resp_max = 0;
}

void reg_xfer_free(struct reg_xfer *x)
{
	reg_xfer_clear(x);
	kiln_buf_free(&x->resp);
	if (x->own_easy && x->easy)
		curl_easy_cleanup(x->easy);
	x->easy = NULL;
}

void reg_xfer_set(struct kiln_registry *r, struct reg_xfer *x, const char *method, const char *url_or_path)
{
	reg_xfer_clear(x);
	x->method = kiln_xstrdup(method);
	if (strstr(url_or_path, "://"))
		x->url = kiln_xstrdup(url_or_path);
	else
		x->url = kiln_xasprintf("%s%s", r->base ? r->base : "", url_or_path);
	x->follow = !strcmp(method, "GET") || !strcmp(method, "HEAD");
}

void reg_xfer_body_mem(struct reg_xfer *x, const void *data, size_t len)
{
	x->body = data;
	x->body_len = len;
	x->body_fd = -1;
	x->has_body = true;
}

void reg_xfer_body_fd(struct reg_xfer *x, int fd, int64_t off, int64_t len)
{
	x->body = NULL;
	x->body_fd = fd;
	x->body_off = off;
	x->body_fd_len = len;
	x->has_body = true;
}

static int64_t body_total(const struct reg_xfer *x)
{
	if (!x->has_body)
		return 0;
	return x->body_fd >= 0 ? x->body_fd_len : (int64_t)x->body_len;
}

static char *trim_dup(const char *s, size_t n)
{
	while (n && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	return kiln_xstrndup(s, n);
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	struct reg_xfer *x = ud;
	size_t n = size * nitems;
	if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
		clear_headers(x);
		return n;
	}
	const char *colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	size_t klen = (size_t)(colon - buf);
	const char *v = colon + 1;
	size_t vlen = n - klen - 1;
	char **slot = NULL;
#define HDR(name, field) \
	if (klen == sizeof(name) - 1 && !strncasecmp(buf, name, klen)) slot = &x->field
	HDR("Location", location);
	HDR("WWW-Authenticate", www_auth);
	HDR("Docker-Content-Digest", docker_digest);
	HDR("Content-Type", ctype);
	HDR("Range", range_hdr);
	HDR("Content-Range", content_range_hdr);
	HDR("Retry-After", retry_after);
#undef HDR
	if (slot) {
		/* the first WWW-Authenticate wins; the others are alternatives */
		if (*slot && slot == &x->www_auth)
			return n;
		free(*slot);
		*slot = trim_dup(v, vlen);
	} else if (klen == 14 && !strncasecmp(buf, "Content-Length", 14)) {
		char *t = trim_dup(v, vlen);
		x->clen = strtoll(t, NULL, 10);
		free(t);
	}
	return n;
}

/* "bytes N-M/T" → N, or -1. */
static int64_t content_range_start(const char *h)
{
	if (!h)
		return -1;
	while (*h == ' ')
		h++;
	if (strncasecmp(h, "bytes", 5))
		return -1;
	h += 5;
	while (*h == ' ' || *h == '=')
		h++;
	char *end;
	long long v = strtoll(h, &end, 10);
	if (end == h || *end != '-')
		return -1;
	return v;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct reg_xfer *x = ud;
	size_t n = size * nmemb;
	if (x->body_mode == 0) {
		long code = 0;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200 && code < 300 && x->sink) {
			int64_t off = 0;
			if (code == 206) {
				off = content_range_start(x->content_range_hdr);
				if (off < 0 || off != x->range_from) {
					kiln_err_set(&x->sink_err, 0, "unexpected Content-Range \"%s\" for Range bytes=%lld-",
						     x->content_range_hdr ? x->content_range_hdr : "",
						     (long long)x->range_from);
					x->sink_failed = true;
					return 0;
				}
			}
			if (x->sink_begin && x->sink_begin(x->sink_ctx, off, &x->sink_err) < 0) {
				x->sink_failed = true;
				return 0;
			}
			x->body_mode = 1;
		} else {
			x->body_mode = 2;
		}
	}
	if (x->body_mode == 1) {
		if (x->sink(x->sink_ctx, ptr, n, &x->sink_err) < 0) {
			x->sink_failed = true;
			return 0;
		}
		x->moved += (int64_t)n;
		return n;
	}
	size_t max = x->resp_max ? x->resp_max : (4u << 20);
	if (x->resp.len + n > max) {
		x->resp_overflow = true;
		return 0;
	}
	kiln_buf_append(&x->resp, ptr, n);
	return n;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	struct reg_xfer *x = ud;
	size_t want = size * nitems;
	int64_t total = body_total(x);
	int64_t left = total - x->body_pos;
	if (left <= 0)
		return 0;
	if ((int64_t)want > left)
		want = (size_t)left;
	if (x->body_fd >= 0) {
		ssize_t r;
		do
			r = pread(x->body_fd, buf, want, x->body_off + x->body_pos);
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			return CURL_READFUNC_ABORT;
		want = (size_t)r;
	} else {
		memcpy(buf, x->body + x->body_pos, want);
	}
	x->body_pos += (int64_t)want;
	x->moved += (int64_t)want;
	return want;
}

static int seek_cb(void *ud, curl_off_t offset, int origin)
{
	struct reg_xfer *x = ud;
	if (origin != SEEK_SET || offset < 0 || offset > body_total(x))
		return CURL_SEEKFUNC_CANTSEEK;
	x->body_pos = offset;
	x->moved = offset;
	return CURL_SEEKFUNC_OK;
}

static char *basic_header(const char *user, const char *pass)
{
	char *up = kiln_xasprintf("%s:%s", user, pass ? pass : "");
	char *enc = reg_base64(up, strlen(up));
	explicit_bzero(up, strlen(up));
	free(up);
	char *h = kiln_xasprintf("Authorization: Basic %s", enc);
	explicit_bzero(enc, strlen(enc));
	free(enc);
	return h;
}

static void load_creds(struct kiln_registry *r)
{
	if (r->creds_loaded)
		return;
	r->creds_loaded = true;
	if (r->opts.username) {
		r->creds.username = kiln_xstrdup(r->opts.username);
		r->creds.password = kiln_xstrdup(r->opts.password ? r->opts.password : "");
		return;
	}
	struct kiln_err e = {0};
	if (kiln_registry_creds_lookup(r->host, &r->creds, &e) < 0) {
		/* unreadable credentials: go on anonymously, but say why */
		if (r->opts.progress)
			fprintf(r->opts.progress, "warning: %s\n", e.msg);
	}
}

static void apply_common(struct kiln_registry *r, struct reg_xfer *x)
{
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, x->url);
	curl_easy_setopt(e, CURLOPT_SHARE, r->share);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	/* a large receive buffer is faster, but libcurl 7.88 then ignores
	 * CURLOPT_MAX_RECV_SPEED_LARGE: keep the default when limiting */
	if (!r->limit_rate)
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
	if (r->opts.tls == KILN_TLS_INSECURE) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (r->ca_pem.len) {
		struct curl_blob blob = {.data = r->ca_pem.data, .len = r->ca_pem.len,
					 .flags = CURL_BLOB_NOCOPY};
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (r->client_cert) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, r->client_cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, r->client_key);
	}
	if (r->limit_rate > 0) {
		curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)r->limit_rate);
		curl_easy_setopt(e, CURLOPT_MAX_SEND_SPEED_LARGE, (curl_off_t)r->limit_rate);
	}
	if (x->follow) {
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
	}
}

static int token_for(struct kiln_registry *r, const char *scope, char **out, struct kiln_err *err);

/* Does url point at the registry (scheme, host and port of r->base)? */
static bool same_origin(const struct kiln_registry *r, const char *url)
{
	if (!r->base)
		return false;
	size_t n = strlen(r->base);
	return !strncmp(url, r->base, n) && (url[n] == '/' || url[n] == '?' || url[n] == 0);
}

int reg_xfer_prepare(struct kiln_registry *r, struct reg_xfer *x, struct kiln_err *err)
{
	if (!x->easy) {
		x->easy = curl_easy_init();
		x->own_easy = true;
		if (!x->easy)
			return kiln_err_set(err, ENOMEM, "curl_easy_init");
	} else {
		curl_easy_reset(x->easy);
	}
	clear_response(x);
	x->sink_failed = false;
	kiln_err_clear(&x->sink_err);
	if (x->hdrs)
		curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;

	/* authorization first: it may need a token request of its own.
	 * Registry credentials and tokens go to the registry itself only, never
	 * to another host a Location header points at. */
	char *auth = NULL;
	if (x->basic_user) {
		auth = basic_header(x->basic_user, x->basic_pass);
	} else if (!x->no_auth && same_origin(r, x->url)) {
		load_creds(r);
		if (!strcmp(r->auth_scheme, "basic") && r->creds.username) {
			auth = basic_header(r->creds.username, r->creds.password);
		} else if (!strcmp(r->auth_scheme, "bearer")) {
			char *tok = NULL;
			if (token_for(r, x->scope ? x->scope : "", &tok, err) < 0)
				return -1;
			if (tok && *tok)
				auth = kiln_xasprintf("Authorization: Bearer %s", tok);
		}
	}
	apply_common(r, x);
	struct curl_slist *h = NULL;
	if (auth) {
		h = curl_slist_append(h, auth);
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	if (x->accept) {
		char *a = kiln_xasprintf("Accept: %s", x->accept);
		h = curl_slist_append(h, a);
		free(a);
	}
	if (x->content_range) {
		char *a = kiln_xasprintf("Content-Range: %s", x->content_range);
		h = curl_slist_append(h, a);
		free(a);
	}
	if (x->range_from > 0) {
		char *a = kiln_xasprintf("Range: bytes=%lld-", (long long)x->range_from);
		h = curl_slist_append(h, a);
		free(a);
	}
	CURL *e = x->easy;
	const char *m = x->method ? x->method : "GET";
	if (!strcmp(m, "GET")) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(m, "HEAD")) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(m, "POST") && !x->has_body) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	} else if (!strcmp(m, "POST")) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_total(x));
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
	} else {
		/* PUT, PATCH (and DELETE without body) */
		if (!strcmp(m, "DELETE")) {
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
		} else {
			curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_total(x));
			curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
			curl_easy_setopt(e, CURLOPT_READDATA, x);
			curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
			curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
			if (strcmp(m, "PUT"))
				curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
		}
	}
	if (x->has_body || x->content_type) {
		char *a = kiln_xasprintf("Content-Type: %s",
					 x->content_type ? x->content_type : "application/octet-stream");
		h = curl_slist_append(h, a);
		free(a);
	}
	h = curl_slist_append(h, "Expect:");
	x->hdrs = h;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	return 0;
}

void reg_xfer_done(struct reg_xfer *x, CURLcode rc)
{
	x->rc = rc;
	long code = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	x->status = code;
	if (x->resp_overflow && rc == CURLE_WRITE_ERROR)
		snprintf(x->errbuf, sizeof(x->errbuf), "response larger than %zu bytes",
			 x->resp_max ? x->resp_max : (size_t)(4u << 20));
}

bool reg_xfer_transient(const struct reg_xfer *x)
{
	if (x->sink_failed)
		return false;
	switch (x->rc) {
	case CURLE_OK:
		return x->status == 429 || x->status == 500 || x->status == 502 ||
		       x->status == 503 || x->status == 504;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_READ_ERROR:
		return true;
	default:
		return false;
	}
}

unsigned reg_xfer_retry_delay(const struct reg_xfer *x, int attempt)
{
	unsigned d = kiln_registry_backoff_ms(attempt);
	if (x->retry_after && x->rc == CURLE_OK) {
		char *end;
		long s = strtol(x->retry_after, &end, 10);
		if (end != x->retry_after && s >= 0)
			d = (unsigned)(s > 30 ? 30000 : s * 1000);
	}
	return d;
}

/* ------------------------------------------------------------------------- */
/* Errors                                                                      */

static void describe_response(const struct reg_xfer *x, struct kiln_buf *b)
{
	if (x->rc != CURLE_OK) {
		kiln_buf_puts(b, x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc));
		return;
	}
	json_t *j = NULL;
	if (x->resp.len)
		j = json_loadb(x->resp.data, x->resp.len, 0, NULL);
	json_t *errs = j ? json_object_get(j, "errors") : NULL;
	size_t before = b->len;
	if (json_is_array(errs) && json_array_size(errs) > 0) {
		size_t i;
		json_t *e;
		json_array_foreach(errs, i, e) {
			const char *code = json_string_value(json_object_get(e, "code"));
			const char *msg = json_string_value(json_object_get(e, "message"));
			if (i)
				kiln_buf_puts(b, "; ");
			if (code) {
				for (const char *p = code; *p; p++)
					kiln_buf_putc(b, *p == '_' ? ' ' : (char)tolower((unsigned char)*p));
				if (msg && *msg)
					kiln_buf_puts(b, ": ");
			}
			if (msg)
				kiln_buf_puts(b, msg);
		}
	} else if (j && json_is_string(json_object_get(j, "details"))) {
		kiln_buf_puts(b, json_string_value(json_object_get(j, "details")));
	} else if (j && json_is_string(json_object_get(j, "message"))) {
		kiln_buf_puts(b, json_string_value(json_object_get(j, "message")));
	}
	json_decref(j);
	if (b->len == before) {
		if (x->status == 401)
			kiln_buf_puts(b, "unauthorized: authentication required");
		else if (x->status == 403)
			kiln_buf_puts(b, "denied: requested access to the resource is denied");
		else if (x->status == 404)
			kiln_buf_puts(b, "not found");
		else
			kiln_buf_printf(b, "HTTP %ld", x->status);
		/* a short plain text body helps (proxies, the token server) */
		if (x->resp.len && x->resp.len < 200 && x->ctype && !strncmp(x->ctype, "text/plain", 10)) {
			kiln_buf_puts(b, " (");
			for (size_t i = 0; i < x->resp.len; i++) {
				char c = x->resp.data[i];
				kiln_buf_putc(b, c == '\n' || c == '\r' ? ' ' : c);
			}
			while (b->len && b->data[b->len - 1] == ' ')
				b->data[--b->len] = 0;
			kiln_buf_puts(b, ")");
		}
	}
}

int reg_error(const struct reg_xfer *x, struct kiln_err *err, const char *fmt, ...)
{
	struct kiln_buf b = {0};
	if (fmt && *fmt) {
		va_list ap;
		va_start(ap, fmt);
		char *ctx = NULL;
		if (vasprintf(&ctx, fmt, ap) < 0)
			ctx = NULL;
		va_end(ap);
		if (ctx) {
			kiln_buf_puts(&b, ctx);
			kiln_buf_puts(&b, ": ");
			free(ctx);
		}
	}
	describe_response(x, &b);
	int e = 0;
	if (x->rc == CURLE_OK && x->status == 404)
		e = ENOENT;
	else if (x->rc == CURLE_OK && (x->status == 401 || x->status == 403))
		e = 0;
	kiln_err_set(err, 0, "%s", b.data ? b.data : "request failed");
	if (err)
		err->errnum = e;
	kiln_buf_free(&b);
	return -1;
}

/* ------------------------------------------------------------------------- */
/* Tokens                                                                      */

char *reg_url_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	if (!e)
		return kiln_xstrdup("");
	char *out = kiln_xstrdup(e);
	curl_free(e);
	return out;
}

char *reg_scope_repo(const char *repo, bool push)
{
	return kiln_xasprintf("repository:%s:%s", repo, push ? "pull,push" : "pull");
}

static void forget_token(struct kiln_registry *r, const char *scope)
{
	for (size_t i = 0; i < r->n_tokens; i++) {
		if (!strcmp(r->tokens[i].scope, scope)) {
			free(r->tokens[i].scope);
			free(r->tokens[i].value);
			r->tokens[i] = r->tokens[--r->n_tokens];
			return;
		}
	}
}

static int fetch_token(struct kiln_registry *r, const char *scope, char **out, uint64_t *expires_ns,
		       struct kiln_err *err)
{
	if (!r->realm)
		return kiln_err_set(err, 0, "%s: Bearer challenge without a realm", r->host);
	load_creds(r);
	struct reg_xfer x;
	reg_xfer_init(&x);
	x.easy = r->easy;
	struct kiln_buf url = {0};
	kiln_buf_puts(&url, r->realm);
	char sep = strchr(r->realm, '?') ? '&' : '?';
	struct kiln_buf form = {0};
	if (r->service) {
		char *s = reg_url_escape(r->service);
		kiln_buf_printf(&url, "%cservice=%s", sep, s);
		kiln_buf_printf(&form, "service=%s", s);
		sep = '&';
		free(s);
	}
	/* scopes are space separated; each becomes its own parameter */
	const char *p = scope;
	while (*p) {
		size_t n = strcspn(p, " ");
		if (n) {
			char *one = kiln_xstrndup(p, n);
			char *s = reg_url_escape(one);
			kiln_buf_printf(&url, "%cscope=%s", sep, s);
			kiln_buf_printf(&form, "%sscope=%s", form.len ? "&" : "", s);
			sep = '&';
			free(one);
			free(s);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	int rc;
	if (r->creds.identity_token) {
		/* OAuth2 refresh token grant */
		char *t = reg_url_escape(r->creds.identity_token);
		kiln_buf_printf(&form, "%sgrant_type=refresh_token&client_id=kiln&refresh_token=%s",
				form.len ? "&" : "", t);
		explicit_bzero(t, strlen(t));
		free(t);
		reg_xfer_set(r, &x, "POST", r->realm);
		x.no_auth = true;
		x.content_type = kiln_xstrdup("application/x-www-form-urlencoded");
		reg_xfer_body_mem(&x, form.data, form.len);
	} else {
		if (r->creds.username) {
			char *a = reg_url_escape(r->creds.username);
			kiln_buf_printf(&url, "%caccount=%s", sep, a);
			free(a);
		}
		reg_xfer_set(r, &x, "GET", url.data);
		x.follow = true;
		if (r->creds.username) {
			x.basic_user = r->creds.username;
			x.basic_pass = r->creds.password;
		} else {
			x.no_auth = true;
		}
	}
	x.resp_max = 1 << 20;
	rc = reg_do(r, &x, true, err);
	if (rc == 0 && (x.status < 200 || x.status >= 300))
		rc = reg_error(&x, err, "getting a token from %s", r->realm);
	if (rc == 0) {
		json_t *j = json_loadb(x.resp.data ? x.resp.data : "", x.resp.len, 0, NULL);
		const char *tok = json_string_value(json_object_get(j, "token"));
		if (!tok || !*tok)
			tok = json_string_value(json_object_get(j, "access_token"));
		if (!tok || !*tok) {
			rc = kiln_err_set(err, 0, "getting a token from %s: no token in the answer", r->realm);
		} else {
			*out = kiln_xstrdup(tok);
			json_int_t exp = json_integer_value(json_object_get(j, "expires_in"));
			if (exp < 60)
				exp = 60;
			*expires_ns = kiln_now_ns() + (uint64_t)(exp - 10) * 1000000000ull;
		}
		json_decref(j);
	}
	if (form.data)
		explicit_bzero(form.data, form.len);
	kiln_buf_free(&form);
	kiln_buf_free(&url);
	x.easy = NULL;
	reg_xfer_free(&x);
	return rc;
}

static int token_for(struct kiln_registry *r, const char *scope, char **out, struct kiln_err *err)
{
	uint64_t now = kiln_now_ns();
	for (size_t i = 0; i < r->n_tokens; i++) {
		if (!strcmp(r->tokens[i].scope, scope)) {
			if (r->tokens[i].expires_ns > now) {
				*out = r->tokens[i].value;
				return 0;
			}
			forget_token(r, scope);
			break;
		}
	}
	char *tok = NULL;
	uint64_t exp = 0;
	/* the shared easy handle may be in use by the caller: use a fresh one */
	CURL *saved = r->easy;
	r->easy = curl_easy_init();
	int rc = fetch_token(r, scope, &tok, &exp, err);
	curl_easy_cleanup(r->easy);
	r->easy = saved;
	if (rc < 0)
		return -1;
	r->tokens = kiln_xrealloc(r->tokens, (r->n_tokens + 1) * sizeof(*r->tokens));
	r->tokens[r->n_tokens].scope = kiln_xstrdup(scope);
	r->tokens[r->n_tokens].value = tok;
	r->tokens[r->n_tokens].expires_ns = exp;
	*out = r->tokens[r->n_tokens].value;
	r->n_tokens++;
	return 0;
}

/* Add each scope of add to the space separated list *scope when missing. */
static void scope_merge(char **scope, const char *add)
{
	const char *p = add;
	while (*p) {
		size_t n = strcspn(p, " ");
		if (n) {
			char *one = kiln_xstrndup(p, n);
			bool have = false;
			if (*scope) {
				const char *q = *scope;
				while (*q) {
					size_t m = strcspn(q, " ");
					if (m == n && !strncmp(q, one, n))
						have = true;
					q += m;
					while (*q == ' ')
						q++;
				}
			}
			if (!have) {
				char *ns = *scope && **scope ? kiln_xasprintf("%s %s", *scope, one) : kiln_xstrdup(one);
				free(*scope);
				*scope = ns;
			}
			free(one);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
}

bool reg_auth_on_401(struct kiln_registry *r, struct reg_xfer *x)
{
	if (x->auth_retried || x->no_auth || x->basic_user)
		return false;
	x->auth_retried = true;
	struct kiln_registry_challenge c;
	struct kiln_err e = {0};
	if (!x->www_auth || kiln_registry_parse_challenge(x->www_auth, &c, &e) < 0)
		return false;
	bool retry = false;
	if (!strcmp(c.scheme, "bearer")) {
		snprintf(r->auth_scheme, sizeof(r->auth_scheme), "bearer");
		if (c.realm) {
			free(r->realm);
			r->realm = kiln_xstrdup(c.realm);
		}
		if (c.service) {
			free(r->service);
			r->service = kiln_xstrdup(c.service);
		}
		forget_token(r, x->scope ? x->scope : "");
		if (c.scope)
			scope_merge(&x->scope, c.scope);
		/* retry when the request went out without a token or the token may
		 * have been too narrow or expired */
		retry = true;
	} else if (!strcmp(c.scheme, "basic")) {
		bool had_basic = !strcmp(r->auth_scheme, "basic");
		snprintf(r->auth_scheme, sizeof(r->auth_scheme), "basic");
		load_creds(r);
		retry = r->creds.username && !had_basic;
	}
	kiln_registry_challenge_free(&c);
	return retry;
}

/* ------------------------------------------------------------------------- */
/* Synchronous requests                                                        */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

enum { STEP_FINAL, STEP_AGAIN, STEP_LATER };

/* After a transfer: send it again at once (a 401 that new credentials may
 * answer), later (a transient failure; *delay_ms, counted in *attempt), or
 * it is final. */
static int next_step(struct kiln_registry *r, struct reg_xfer *x, bool retry, int *attempt,
		     unsigned *delay_ms)
{
	if (x->sink_failed)
		return STEP_FINAL;
	if (x->rc == CURLE_OK && x->status == 401 && reg_auth_on_401(r, x))
		return STEP_AGAIN;
	if (!retry || !reg_xfer_transient(x) || *attempt >= r->retries)
		return STEP_FINAL;
	*delay_ms = reg_xfer_retry_delay(x, *attempt);
	(*attempt)++;
	if (reg_debug())
		fprintf(stderr, "kiln: %s %s: %s; retrying in %u ms\n", x->method, x->url,
			x->rc ? (x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc)) : "server error", *delay_ms);
	return STEP_LATER;
}

/* The error of a final transfer that got no usable HTTP response. */
static int transport_error(const struct reg_xfer *x, struct kiln_err *err)
{
	if (x->sink_failed) {
		*err = x->sink_err;
		return -1;
	}
	return kiln_err_set(err, 0, "%s %s: %s", x->method, x->url,
			    x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc));
}

int reg_do(struct kiln_registry *r, struct reg_xfer *x, bool retry, struct kiln_err *err)
{
	bool own = false;
	if (!x->easy) {
		x->easy = r->easy;
		own = true;
	}
	int attempt = 0;
	int rc = -1;
	for (;;) {
		if (reg_xfer_prepare(r, x, err) < 0)
			break;
		reg_xfer_done(x, curl_easy_perform(x->easy));
		unsigned delay = 0;
		int step = next_step(r, x, retry, &attempt, &delay);
		if (step == STEP_LATER)
			sleep_ms(delay);
		if (step != STEP_FINAL)
			continue;
		if (x->sink_failed || x->rc != CURLE_OK)
			transport_error(x, err);
		else
			rc = 0;
		break;
	}
	if (own) {
		/* keep the handle (its connection) for the next request */
		x->easy = NULL;
	}
	return rc;
}

/* ------------------------------------------------------------------------- */
/* Ping and login check                                                        */

static bool tls_trust_failure(CURLcode c)
{
	return c == CURLE_PEER_FAILED_VERIFICATION || c == CURLE_SSL_CERTPROBLEM ||
	       c == CURLE_SSL_CACERT_BADFILE || c == CURLE_SSL_ISSUER_ERROR ||
	       c == CURLE_SSL_PINNEDPUBKEYNOTMATCH || c == CURLE_SSL_INVALIDCERTSTATUS;
}

int kiln_registry_ping(struct kiln_registry *r, struct kiln_err *err)
{
	const char *schemes[2] = {"https", "http"};
	int ns = r->insecure_http ? 2 : 1;
	struct kiln_err first = {0};
	bool have_first = false;
	for (int i = 0; i < ns; i++) {
		char *base = kiln_xasprintf("%s://%s", schemes[i], r->endpoint);
		struct reg_xfer x;
		reg_xfer_init(&x);
		KILN_AUTOFREE char *url = kiln_xasprintf("%s/v2/", base);
		reg_xfer_set(r, &x, "GET", url);
		x.no_auth = true;
		x.resp_max = 1 << 20;
		struct kiln_err e = {0};
		int rc = reg_do(r, &x, false, &e);
		if (rc == 0 && (x.status == 200 || x.status == 401)) {
			free(r->base);
			r->base = base;
			r->pinged = true;
			r->auth_scheme[0] = 0;
			if (x.status == 401) {
				struct kiln_registry_challenge c;
				if (x.www_auth && kiln_registry_parse_challenge(x.www_auth, &c, &e) == 0) {
					snprintf(r->auth_scheme, sizeof(r->auth_scheme), "%s", c.scheme);
					free(r->realm);
					free(r->service);
					r->realm = c.realm ? kiln_xstrdup(c.realm) : NULL;
					r->service = c.service ? kiln_xstrdup(c.service) : NULL;
					kiln_registry_challenge_free(&c);
				}
			}
			reg_xfer_free(&x);
			return 0;
		}
		if (rc == 0)
			reg_error(&x, &e, "GET %s", url);
		free(base);
		bool trust = rc < 0 && tls_trust_failure(x.rc);
		reg_xfer_free(&x);
		if (!have_first) {
			first = e;
			have_first = true;
		}
		/* a certificate that does not verify is an answer, not a reason
		 * to try plain http */
		if (trust)
			break;
	}
	*err = first;
	return kiln_err_wrap(err, "pinging registry %s", r->host);
}

int reg_ensure_ping(struct kiln_registry *r, struct kiln_err *err)
{
	if (r->pinged)
		return 0;
	return kiln_registry_ping(r, err);
}

int kiln_registry_check_login(struct kiln_registry *r, struct kiln_err *err)
{
	if (kiln_registry_ping(r, err) < 0)
		return -1;
	load_creds(r);
	if (!strcmp(r->auth_scheme, "bearer")) {
		/* docker's check: a token for no scope with the credentials */
		forget_token(r, "");
		char *tok = NULL;
		if (token_for(r, "", &tok, err) < 0)
			return kiln_err_wrap(err, "login to %s", r->host);
		return 0;
	}
	if (!strcmp(r->auth_scheme, "basic")) {
		struct reg_xfer x;
		reg_xfer_init(&x);
		reg_xfer_set(r, &x, "GET", "/v2/");
		int rc = reg_do(r, &x, true, err);
		if (rc == 0 && x.status != 200)
			rc = reg_error(&x, err, "login to %s", r->host);
		reg_xfer_free(&x);
		return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* The parallel engine                                                         */

struct progress {
	FILE *f;
	bool tty;
	int lines;
	uint64_t last_draw;
};

static void job_line(struct reg_job *j, char *buf, size_t len)
{
	int64_t done = j->progress_base + j->x.moved;
	if (j->state == 3)
		done = j->total;
	char a[32], b[32], c[32];
	kiln_human_size(done < 0 ? 0 : done, a);
	kiln_human_size(j->total < 0 ? 0 : j->total, b);
	double secs = (double)(kiln_now_ns() - j->start_ns) / 1e9;
	kiln_human_size(secs > 0.05 ? (int64_t)((double)done / secs) : 0, c);
	snprintf(buf, len, "%s: %s %s/%s %s/s", j->label ? j->label : "?",
		 j->status_text ? j->status_text : "", a, b, c);
}

static void draw(struct progress *p, struct reg_job **jobs, size_t n, bool force)
{
	if (!p->f || !p->tty)
		return;
	uint64_t now = kiln_now_ns();
	if (!force && now - p->last_draw < 150000000ull)
		return;
	p->last_draw = now;
	if (p->lines)
		fprintf(p->f, "\033[%dA", p->lines);
	int lines = 0;
	for (size_t i = 0; i < n; i++) {
		if (!jobs[i]->show)
			continue;
		char buf[256];
		if (jobs[i]->state == 0 && jobs[i]->status_text == NULL)
			snprintf(buf, sizeof(buf), "%s: Waiting", jobs[i]->label ? jobs[i]->label : "?");
		else
			job_line(jobs[i], buf, sizeof(buf));
		fprintf(p->f, "\r\033[K%s\n", buf);
		lines++;
	}
	p->lines = lines;
	fflush(p->f);
}

static void finished_line(struct progress *p, struct reg_job *j)
{
	if (!p->f || p->tty || !j->show)
		return;
	char a[32], c[32];
	double secs = (double)(kiln_now_ns() - j->start_ns) / 1e9;
	int64_t moved = j->bytes;
	kiln_human_size(j->total < 0 ? 0 : j->total, a);
	if (moved > 0 && secs > 0.001) {
		kiln_human_size((int64_t)((double)moved / secs), c);
		fprintf(p->f, "%s: %s %s in %.2fs (%s/s)\n", j->label ? j->label : "?",
			j->status_text ? j->status_text : "done", a, secs, c);
	} else {
		fprintf(p->f, "%s: %s\n", j->label ? j->label : "?", j->status_text ? j->status_text : "done");
	}
	fflush(p->f);
}

/* Where a job goes after its request finished. */
enum { J_QUEUE, J_BACKGROUND, J_DONE, J_FAIL };

static int after_transfer(struct kiln_registry *r, struct reg_job *j, CURLcode cc, struct kiln_err *err)
{
	struct reg_xfer *x = &j->x;
	reg_xfer_done(x, cc);
	j->bytes += x->moved;
	j->not_before = 0;
	unsigned delay = 0;
	int step = next_step(r, x, true, &j->attempt, &delay);
	if (step == STEP_AGAIN)
		return J_QUEUE;
	if (step == STEP_LATER) {
		/* the job may resume rather than repeat (Range, upload status) */
		if (j->retry && j->retry(j, err) < 0)
			return J_FAIL;
		j->not_before = kiln_now_ns() + (uint64_t)delay * 1000000ull;
		return J_QUEUE;
	}
	if (x->sink_failed || cc != CURLE_OK) {
		transport_error(x, err);
		return J_FAIL;
	}
	int rc = j->done(j, err);
	if (rc < 0)
		return J_FAIL;
	return rc == REG_JOB_BACKGROUND ? J_BACKGROUND : rc == REG_JOB_DONE ? J_DONE : J_QUEUE;
}

int reg_run_jobs(struct kiln_registry *r, struct reg_job **jobs, size_t n, struct kiln_err *err)
{
	if (n == 0)
		return 0;
	if (reg_ensure_ping(r, err) < 0)
		return -1;
	CURLM *m = curl_multi_init();
	if (!m)
		return kiln_err_set(err, ENOMEM, "curl_multi_init");
	struct progress p = {.f = r->opts.progress, .tty = r->opts.progress_tty};
	size_t next = 0, finished = 0;
	int active = 0;                     /* started, not finished, not in the background */
	bool failed = false;
	for (size_t i = 0; i < n; i++)
		jobs[i]->state = 0;
	while (finished < n && !failed) {
		uint64_t now = kiln_now_ns();
		/* start jobs */
		while (!failed && next < n && active < r->max_parallel) {
			struct reg_job *j = jobs[next++];
			j->start_ns = now;
			j->attempt = 0;
			j->not_before = 0;
			j->bytes = 0;
			int rc = j->start(j, err);
			if (rc < 0) {
				failed = true;
			} else if (rc == REG_JOB_DONE) {
				j->state = 3;
				finished++;
				finished_line(&p, j);
			} else {
				j->state = 1;
				active++;
			}
		}
		/* queued requests whose time has come go out */
		uint64_t wake = now + 200000000ull;
		bool inflight = false, background = false;
		for (size_t i = 0; i < next && !failed; i++) {
			struct reg_job *j = jobs[i];
			if (j->state == 1 && j->not_before > now) {
				if (j->not_before < wake)
					wake = j->not_before;
			} else if (j->state == 1) {
				if (reg_xfer_prepare(r, &j->x, err) < 0) {
					failed = true;
					break;
				}
				curl_multi_add_handle(m, j->x.easy);
				j->state = 2;
			}
			inflight |= j->state == 2;
		}
		if (failed)
			break;
		int running = 0;
		curl_multi_perform(m, &running);
		CURLMsg *msg;
		int left;
		while (!failed && (msg = curl_multi_info_read(m, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			struct reg_xfer *x = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			CURLcode cc = msg->data.result;
			curl_multi_remove_handle(m, msg->easy_handle);
			struct reg_job *j = (struct reg_job *)((char *)x - offsetof(struct reg_job, x));
			switch (after_transfer(r, j, cc, err)) {
			case J_QUEUE:
				j->state = 1;
				break;
			case J_BACKGROUND:
				/* its slot is free for the next transfer meanwhile */
				j->state = 4;
				active--;
				break;
			case J_DONE:
				j->state = 3;
				finished++;
				active--;
				finished_line(&p, j);
				break;
			default:
				j->state = 3;
				failed = true;
				break;
			}
		}
		/* work finishing in the background */
		for (size_t i = 0; i < next && !failed; i++) {
			struct reg_job *j = jobs[i];
			if (j->state != 4)
				continue;
			int rc = j->poll(j, err);
			if (rc == 1) {
				background = true;
			} else if (rc < 0) {
				failed = true;
			} else {
				j->state = 3;
				finished++;
				finished_line(&p, j);
			}
		}
		draw(&p, jobs, n, false);
		if (finished >= n || failed)
			break;
		now = kiln_now_ns();
		int timeout = wake > now ? (int)((wake - now) / 1000000ull) : 0;
		if (timeout > 200)
			timeout = 200;
		if (background && timeout > 5)
			timeout = 5;
		if (inflight)
			curl_multi_poll(m, NULL, 0, timeout, NULL);
		else if (timeout > 0)
			sleep_ms((unsigned)timeout);
	}
	/* on failure: requests still in flight are dropped; the callers clean
	 * up their jobs (and join background work) */
	for (size_t i = 0; i < next; i++)
		if (jobs[i]->state == 2)
			curl_multi_remove_handle(m, jobs[i]->x.easy);
	draw(&p, jobs, n, true);
	curl_multi_cleanup(m);
	return failed ? -1 : 0;
}
