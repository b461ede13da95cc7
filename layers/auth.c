/* kiln — registry credentials: WWW-Authenticate challenges, the docker
 * config.json, the containers auth.json and docker-credential-* helpers. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/util.h"
#include "layers/registry.h"
#include "layers/registry_int.h"

/* ------------------------------------------------------------------------- */
/* WWW-Authenticate                                                            */

static bool is_tchar(char c)
{
	return isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~/:", c);
}

static void skip_ws(const char **p)
{
	while (**p == ' ' || **p == '\t')
		(*p)++;
}

void kiln_registry_challenge_free(struct kiln_registry_challenge *c)
{
	if (!c)
		return;
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

static void chal_set(struct kiln_registry_challenge *c, const char *name, size_t nlen, char *value)
{
	char **slot = NULL;
	if (nlen == 5 && !strncasecmp(name, "realm", 5))
		slot = &c->realm;
	else if (nlen == 7 && !strncasecmp(name, "service", 7))
		slot = &c->service;
	else if (nlen == 5 && !strncasecmp(name, "scope", 5))
		slot = &c->scope;
	else if (nlen == 5 && !strncasecmp(name, "error", 5))
		slot = &c->error;
	if (!slot) {
		free(value);
		return;
	}
	free(*slot);
	*slot = value;
}

/* Keep the preferred of two challenges: the first, unless a later one is
 * Bearer.  cur is consumed. */
static void keep_preferred(struct kiln_registry_challenge *best, struct kiln_registry_challenge *cur)
{
	if (!best->scheme[0] || (strcmp(best->scheme, "bearer") && !strcmp(cur->scheme, "bearer"))) {
		kiln_registry_challenge_free(best);
		*best = *cur;
		memset(cur, 0, sizeof(*cur));
	} else {
		kiln_registry_challenge_free(cur);
	}
}

int kiln_registry_parse_challenge(const char *header, struct kiln_registry_challenge *out,
				  struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!header)
		return kiln_err_set(err, 0, "no WWW-Authenticate header");
	struct kiln_registry_challenge cur = {0}, best = {0};
	bool have_cur = false;
	const char *p = header;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		const char *tok = p;
		while (*p && is_tchar(*p))
			p++;
		size_t tlen = (size_t)(p - tok);
		if (tlen == 0) {
			kiln_registry_challenge_free(&cur);
			kiln_registry_challenge_free(&best);
			return kiln_err_set(err, 0, "malformed WWW-Authenticate header: unexpected '%c'", *p);
		}
		const char *after = p;
		skip_ws(&p);
		if (*p == '=' && have_cur) {
			/* A parameter of the current challenge (or token68 padding). */
			p++;
			skip_ws(&p);
			char *value;
			if (*p == '"') {
				p++;
				struct kiln_buf v = {0};
				while (*p && *p != '"') {
					if (*p == '\\' && p[1])
						p++;
					kiln_buf_putc(&v, *p++);
				}
				if (*p != '"') {
					kiln_buf_free(&v);
					kiln_registry_challenge_free(&cur);
					kiln_registry_challenge_free(&best);
					return kiln_err_set(err, 0,
							    "malformed WWW-Authenticate header: unterminated quoted string");
				}
				p++;
				value = kiln_buf_steal(&v);
			} else {
				const char *vs = p;
				while (*p && *p != ',' && *p != ' ' && *p != '\t')
					p++;
				value = kiln_xstrndup(vs, (size_t)(p - vs));
			}
			chal_set(&cur, tok, tlen, value);
			continue;
		}
		if (*p == '=' && !have_cur) {
			kiln_registry_challenge_free(&best);
			return kiln_err_set(err, 0, "malformed WWW-Authenticate header: parameter before scheme");
		}
		/* A new scheme: the previous challenge is complete. */
		if (have_cur) {
			keep_preferred(&best, &cur);
		}
		have_cur = true;
		size_t n = tlen < sizeof(cur.scheme) - 1 ? tlen : sizeof(cur.scheme) - 1;
		for (size_t i = 0; i < n; i++)
			cur.scheme[i] = (char)tolower((unsigned char)tok[i]);
		cur.scheme[n] = 0;
		p = after;
		/* token68 (e.g. "Negotiate abc==") is skipped */
		skip_ws(&p);
		const char *q = p;
		while (*q && is_tchar(*q))
			q++;
		if (q > p && *q == '=' && (q[1] == '=' || q[1] == 0 || q[1] == ',')) {
			while (*q == '=')
				q++;
			p = q;
		}
	}
	if (have_cur)
		keep_preferred(&best, &cur);
	if (!best.scheme[0])
		return kiln_err_set(err, 0, "empty WWW-Authenticate header");
	*out = best;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Credentials                                                                 */

void kiln_registry_creds_free(struct kiln_registry_creds *c)
{
	if (!c)
		return;
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	if (c->identity_token)
		explicit_bzero(c->identity_token, strlen(c->identity_token));
	free(c->username);
	free(c->password);
	free(c->identity_token);
	memset(c, 0, sizeof(*c));
}

static bool is_hub(const char *host)
{
	return !strcmp(host, "docker.io") || !strcmp(host, "index.docker.io") ||
	       !strcmp(host, "registry-1.docker.io") || !strcmp(host, "registry.hub.docker.com") ||
	       !strcmp(host, KILN_REGISTRY_DOCKER_HUB_AUTH_KEY) || !strcmp(host, "https://index.docker.io/v1");
}

const char *kiln_registry_auth_key(const char *host)
{
	return is_hub(host) ? KILN_REGISTRY_DOCKER_HUB_AUTH_KEY : host;
}

/* "https://host:5000/v1/" → "host:5000" (newly allocated). */
static char *key_host(const char *key)
{
	const char *s = key;
	if (!strncasecmp(s, "https://", 8))
		s += 8;
	else if (!strncasecmp(s, "http://", 7))
		s += 7;
	size_t n = strcspn(s, "/");
	return kiln_xstrndup(s, n);
}

char *kiln_registry_server_host(const char *server)
{
	char *h = key_host(server);
	if (is_hub(h)) {
		free(h);
		h = kiln_xstrdup(KILN_REGISTRY_DOCKER_HUB);
	}
	return h;
}

static bool key_matches(const char *key, const char *host)
{
	KILN_AUTOFREE char *h = key_host(key);
	if (!strcasecmp(h, host))
		return true;
	return is_hub(host) && is_hub(h);
}

char *kiln_registry_docker_config_path(void)
{
	const char *d = getenv("DOCKER_CONFIG");
	if (d && *d)
		return kiln_xasprintf("%s/config.json", d);
	const char *home = getenv("HOME");
	if (!home || !*home)
		home = "/root";
	return kiln_xasprintf("%s/.docker/config.json", home);
}

char *kiln_registry_containers_auth_path(void)
{
	const char *f = getenv("REGISTRY_AUTH_FILE");
	if (f && *f)
		return kiln_xstrdup(f);
	const char *x = getenv("XDG_RUNTIME_DIR");
	if (x && *x)
		return kiln_xasprintf("%s/containers/auth.json", x);
	return NULL;
}

/* Load a JSON object file; a missing file gives NULL without error. */
static int load_json_file(const char *path, json_t **out, struct kiln_err *err)
{
	*out = NULL;
	KILN_AUTOFREE char *data = NULL;
	size_t len = 0;
	struct kiln_err e2 = {0};
	if (kiln_read_file(path, 16 << 20, &data, &len, &e2) < 0) {
		if (e2.errnum == ENOENT)
			return 0;
		*err = e2;
		return -1;
	}
	json_error_t je;
	json_t *j = json_loadb(data, len, 0, &je);
	if (!j)
		return kiln_err_set(err, 0, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_err_set(err, 0, "%s: not a JSON object", path);
	}
	*out = j;
	return 0;
}

char *reg_base64(const void *data, size_t len)
{
	char *out = kiln_xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* Decode standard base64 (padding optional, whitespace ignored). */
static int b64_decode(const char *in, char **out, size_t *outlen)
{
	struct kiln_buf clean = {0};
	for (const char *p = in; *p; p++)
		if (!isspace((unsigned char)*p))
			kiln_buf_putc(&clean, *p);
	while (clean.len % 4)
		kiln_buf_putc(&clean, '=');
	if (clean.len == 0) {
		kiln_buf_free(&clean);
		*out = kiln_xstrdup("");
		*outlen = 0;
		return 0;
	}
	unsigned char *buf = kiln_xmalloc(clean.len / 4 * 3 + 1);
	int n = EVP_DecodeBlock(buf, (unsigned char *)clean.data, (int)clean.len);
	if (n < 0) {
		kiln_buf_free(&clean);
		free(buf);
		return -1;
	}
	/* EVP_DecodeBlock counts padding as zero bytes */
	for (size_t i = clean.len; i > 0 && clean.data[i - 1] == '='; i--)
		n--;
	kiln_buf_free(&clean);
	buf[n] = 0;
	*out = (char *)buf;
	*outlen = (size_t)n;
	return 0;
}

/* Fill creds from one auths entry. */
static int creds_from_entry(json_t *entry, const char *where, struct kiln_registry_creds *out,
			    struct kiln_err *err)
{
	const char *auth = json_string_value(json_object_get(entry, "auth"));
	const char *user = json_string_value(json_object_get(entry, "username"));
	const char *pass = json_string_value(json_object_get(entry, "password"));
	const char *tok = json_string_value(json_object_get(entry, "identitytoken"));
	if (auth && *auth) {
		char *dec;
		size_t dlen;
		if (b64_decode(auth, &dec, &dlen) < 0)
			return kiln_err_set(err, 0, "%s: invalid base64 in \"auth\"", where);
		char *colon = memchr(dec, ':', dlen);
		if (!colon) {
			explicit_bzero(dec, dlen);
			free(dec);
			return kiln_err_set(err, 0, "%s: \"auth\" is not base64 of user:password", where);
		}
		out->username = kiln_xstrndup(dec, (size_t)(colon - dec));
		out->password = kiln_xstrndup(colon + 1, dlen - (size_t)(colon + 1 - dec));
		explicit_bzero(dec, dlen);
		free(dec);
	} else if (user && pass) {
		out->username = kiln_xstrdup(user);
		out->password = kiln_xstrdup(pass);
	}
	if (tok && *tok)
		out->identity_token = kiln_xstrdup(tok);
	return 0;
}

static json_t *find_auth_entry(json_t *auths, const char *host)
{
	if (!json_is_object(auths))
		return NULL;
	json_t *e = json_object_get(auths, host);
	if (e)
		return e;
	e = json_object_get(auths, kiln_registry_auth_key(host));
	if (e)
		return e;
	const char *k;
	json_t *v;
	json_object_foreach(auths, k, v) {
		if (key_matches(k, host))
			return v;
	}
	return NULL;
}

static const char *find_helper(json_t *cfg, const char *host)
{
	json_t *helpers = json_object_get(cfg, "credHelpers");
	if (json_is_object(helpers)) {
		const char *k;
		json_t *v;
		json_object_foreach(helpers, k, v) {
			if (key_matches(k, host) && json_is_string(v))
				return json_string_value(v);
		}
	}
	const char *store = json_string_value(json_object_get(cfg, "credsStore"));
	return store && *store ? store : NULL;
}

static int creds_from_helper(const char *helper, const char *host, struct kiln_registry_creds *out,
			     struct kiln_err *err)
{
	KILN_AUTOFREE char *answer = NULL;
	struct kiln_err e2 = {0};
	if (kiln_registry_cred_helper(helper, "get", kiln_registry_auth_key(host), &answer, &e2) < 0) {
		/* "credentials not found" is not an error */
		if (strstr(e2.msg, "not found"))
			return 0;
		*err = e2;
		return -1;
	}
	json_error_t je;
	json_t *j = json_loads(answer, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_err_set(err, 0, "docker-credential-%s get: the answer is not a JSON object", helper);
	}
	const char *user = json_string_value(json_object_get(j, "Username"));
	const char *secret = json_string_value(json_object_get(j, "Secret"));
	if (user && secret) {
		if (!strcmp(user, "<token>")) {
			out->identity_token = kiln_xstrdup(secret);
		} else {
			out->username = kiln_xstrdup(user);
			out->password = kiln_xstrdup(secret);
		}
	}
	json_decref(j);
	explicit_bzero(answer, strlen(answer));
	return 0;
}

int kiln_registry_creds_lookup(const char *host, struct kiln_registry_creds *out,
			       struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	KILN_AUTOFREE char *path = kiln_registry_docker_config_path();
	json_t *cfg = NULL;
	if (load_json_file(path, &cfg, err) < 0)
		return -1;
	if (cfg) {
		const char *helper = find_helper(cfg, host);
		int r = 0;
		if (helper) {
			r = creds_from_helper(helper, host, out, err);
		} else {
			json_t *e = find_auth_entry(json_object_get(cfg, "auths"), host);
			if (e)
				r = creds_from_entry(e, path, out, err);
		}
		json_decref(cfg);
		if (r < 0)
			return -1;
		if (out->username || out->identity_token)
			return 0;
	}
	KILN_AUTOFREE char *cpath = kiln_registry_containers_auth_path();
	if (!cpath)
		return 0;
	if (load_json_file(cpath, &cfg, err) < 0)
		return -1;
	if (!cfg)
		return 0;
	json_t *e = find_auth_entry(json_object_get(cfg, "auths"), host);
	int r = e ? creds_from_entry(e, cpath, out, err) : 0;
	json_decref(cfg);
	return r;
}

static int write_config(const char *path, json_t *cfg, struct kiln_err *err)
{
	char *dir = kiln_xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (kiln_mkdir_p(dir, 0700, err) < 0) {
			free(dir);
			return kiln_err_wrap(err, "saving credentials");
		}
	}
	free(dir);
	char *text = json_dumps(cfg, JSON_INDENT(8));
	if (!text)
		return kiln_err_set(err, ENOMEM, "encoding %s", path);
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, text);
	kiln_buf_putc(&b, '\n');
	free(text);
	int r = kiln_write_file_atomic(AT_FDCWD, path, b.data, b.len, 0600, err);
	explicit_bzero(b.data, b.len);
	kiln_buf_free(&b);
	if (r < 0)
		return kiln_err_wrap(err, "saving credentials");
	return 0;
}

int kiln_registry_creds_save(const char *host, const char *username, const char *password,
			     struct kiln_err *err)
{
	KILN_AUTOFREE char *path = kiln_registry_docker_config_path();
	json_t *cfg = NULL;
	if (load_json_file(path, &cfg, err) < 0)
		return -1;
	if (!cfg)
		cfg = json_object();
	const char *key = kiln_registry_auth_key(host);
	const char *helper = find_helper(cfg, host);
	if (helper) {
		json_t *in = json_pack("{s:s, s:s, s:s}", "ServerURL", key, "Username", username,
				       "Secret", password);
		char *text = json_dumps(in, JSON_COMPACT);
		json_decref(in);
		KILN_AUTOFREE char *answer = NULL;
		int r = kiln_registry_cred_helper(helper, "store", text, &answer, err);
		explicit_bzero(text, strlen(text));
		free(text);
		if (r < 0) {
			json_decref(cfg);
			return -1;
		}
		/* docker keeps an empty entry so the host is listed as logged in */
		json_t *auths = json_object_get(cfg, "auths");
		if (!json_is_object(auths)) {
			auths = json_object();
			json_object_set_new(cfg, "auths", auths);
		}
		json_object_set_new(auths, key, json_object());
	} else {
		json_t *auths = json_object_get(cfg, "auths");
		if (!json_is_object(auths)) {
			auths = json_object();
			json_object_set_new(cfg, "auths", auths);
		}
		/* drop other spellings of the same host so lookups are unambiguous */
		const char *k;
		json_t *v;
		void *tmp;
		json_object_foreach_safe(auths, tmp, k, v) {
			if (strcmp(k, key) && key_matches(k, host))
				json_object_del(auths, k);
		}
		char *up = kiln_xasprintf("%s:%s", username, password);
		char *enc = reg_base64(up, strlen(up));
		explicit_bzero(up, strlen(up));
		free(up);
		json_object_set_new(auths, key, json_pack("{s:s}", "auth", enc));
		explicit_bzero(enc, strlen(enc));
		free(enc);
	}
	int r = write_config(path, cfg, err);
	json_decref(cfg);
	return r;
}

int kiln_registry_creds_erase(const char *host, bool *removed, struct kiln_err *err)
{
	*removed = false;
	KILN_AUTOFREE char *path = kiln_registry_docker_config_path();
	json_t *cfg = NULL;
	if (load_json_file(path, &cfg, err) < 0)
		return -1;
	if (!cfg)
		return 0;
	const char *helper = find_helper(cfg, host);
	if (helper) {
		KILN_AUTOFREE char *answer = NULL;
		struct kiln_err e2 = {0};
		if (kiln_registry_cred_helper(helper, "erase", kiln_registry_auth_key(host), &answer, &e2) == 0)
			*removed = true;
	}
	json_t *auths = json_object_get(cfg, "auths");
	if (json_is_object(auths)) {
		const char *k;
		json_t *v;
		void *tmp;
		json_object_foreach_safe(auths, tmp, k, v) {
			if (key_matches(k, host)) {
				json_object_del(auths, k);
				*removed = true;
			}
		}
	}
	int r = *removed ? write_config(path, cfg, err) : 0;
	json_decref(cfg);
	return r;
}

/* ------------------------------------------------------------------------- */
/* docker-credential-* helpers                                                 */

static bool helper_name_ok(const char *h)
{
	if (!*h)
		return false;
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	return true;
}

int kiln_registry_cred_helper(const char *helper, const char *action, const char *input,
			      char **out, struct kiln_err *err)
{
	*out = NULL;
	if (!helper_name_ok(helper))
		return kiln_err_set(err, 0, "invalid credential helper name \"%s\"", helper);
	char prog[256];
	snprintf(prog, sizeof(prog), "docker-credential-%s", helper);
	int in[2], outp[2];
	if (pipe2(in, O_CLOEXEC) < 0)
		return kiln_err_set(err, errno, "pipe");
	if (pipe2(outp, O_CLOEXEC) < 0) {
		int e = errno;
		close(in[0]);
		close(in[1]);
		return kiln_err_set(err, e, "pipe");
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(in[0]);
		close(in[1]);
		close(outp[0]);
		close(outp[1]);
		return kiln_err_set(err, e, "fork");
	}
	if (pid == 0) {
		/* stdin from the pipe, stdout and stderr into the other one */
		if (dup2(in[0], 0) < 0 || dup2(outp[1], 1) < 0 || dup2(outp[1], 2) < 0)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		char *argv[] = {prog, (char *)action, NULL};
		execvp(prog, argv);
		dprintf(1, "exec %s: %s", prog, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(outp[1]);
	/* the input is small (a URL or a short JSON object): write it, then read */
	void (*old)(int) = signal(SIGPIPE, SIG_IGN);
	size_t ilen = strlen(input);
	(void)kiln_write_all(in[1], input, ilen);
	close(in[1]);
	signal(SIGPIPE, old);
	char *data = NULL;
	size_t len = 0;
	struct kiln_err rerr = {0};
	int rr = kiln_read_fd(outp[0], 1 << 20, &data, &len, &rerr);
	close(outp[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rr < 0) {
		*err = rerr;
		return kiln_err_wrap(err, "%s %s", prog, action);
	}
	while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		data[--len] = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		kiln_err_set(err, 0, "%s %s: %s", prog, action,
			     len ? data : (WIFEXITED(status) ? "failed" : "killed by a signal"));
		free(data);
		return -1;
	}
	*out = data;
	return 0;
}

unsigned kiln_registry_backoff_ms(int attempt)
{
	if (attempt < 0)
		attempt = 0;
	if (attempt >= 5)
		return 8000;
	return 250u << attempt;
}
