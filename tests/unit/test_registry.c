/* Unit tests: the registry client's pure parts — WWW-Authenticate parsing,
 * credentials in config.json / auth.json / credential helpers, backoff,
 * error wording, option parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/util.h"
#include "layers/registry.h"
#include "layers/registry_int.h"
#include "layers/store.h"

/* ---- WWW-Authenticate ---- */

static void test_challenge_bearer(void **state)
{
	(void)state;
	struct kiln_registry_challenge c;
	struct kiln_err err = {0};
	assert_int_equal(kiln_registry_parse_challenge(
				 "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
				 "scope=\"repository:library/busybox:pull\"",
				 &c, &err),
			 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:library/busybox:pull");
	assert_null(c.error);
	kiln_registry_challenge_free(&c);

	/* any order, spaces around '=' and ',', case-insensitive names, an
	 * error parameter, escaped quotes and a multi-scope value */
	assert_int_equal(kiln_registry_parse_challenge(
				 "BEARER  Scope = \"repository:a/b:pull,push repository:c:pull\" , "
				 "error=\"insufficient_scope\", REALM=\"http://127.0.0.1:1/t?x=\\\"y\\\"\"",
				 &c, &err),
			 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "http://127.0.0.1:1/t?x=\"y\"");
	assert_string_equal(c.scope, "repository:a/b:pull,push repository:c:pull");
	assert_string_equal(c.error, "insufficient_scope");
	assert_null(c.service);
	kiln_registry_challenge_free(&c);

	/* unquoted values */
	assert_int_equal(kiln_registry_parse_challenge("Bearer realm=https://x/token,service=reg", &c, &err), 0);
	assert_string_equal(c.realm, "https://x/token");
	assert_string_equal(c.service, "reg");
	kiln_registry_challenge_free(&c);
}

static void test_challenge_basic_and_multiple(void **state)
{
	(void)state;
	struct kiln_registry_challenge c;
	struct kiln_err err = {0};
	assert_int_equal(kiln_registry_parse_challenge("Basic realm=\"Registry Realm\"", &c, &err), 0);
	assert_string_equal(c.scheme, "basic");
	assert_string_equal(c.realm, "Registry Realm");
	kiln_registry_challenge_free(&c);

	/* two challenges in one header: Bearer is preferred */
	assert_int_equal(kiln_registry_parse_challenge(
				 "Basic realm=\"basic-realm\", Bearer realm=\"https://t/token\",service=\"s\"", &c,
				 &err),
			 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "https://t/token");
	assert_string_equal(c.service, "s");
	kiln_registry_challenge_free(&c);

	/* a token68 challenge first, then Basic */
	assert_int_equal(kiln_registry_parse_challenge("Negotiate abc==, Basic realm=\"r\"", &c, &err), 0);
	assert_string_equal(c.scheme, "negotiate");
	kiln_registry_challenge_free(&c);
}

static void test_challenge_malformed(void **state)
{
	(void)state;
	struct kiln_registry_challenge c;
	struct kiln_err err = {0};
	assert_int_equal(kiln_registry_parse_challenge("Bearer realm=\"unterminated", &c, &err), -1);
	assert_non_null(strstr(err.msg, "unterminated"));
	assert_int_equal(kiln_registry_parse_challenge("", &c, &err), -1);
	assert_int_equal(kiln_registry_parse_challenge("=x", &c, &err), -1);
	assert_int_equal(kiln_registry_parse_challenge(NULL, &c, &err), -1);
}

/* ---- credentials ---- */

static char tmpdir[256];

static int setup_home(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kiln-unit-registry-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	char *d = kiln_xasprintf("%s/docker", tmpdir);
	setenv("DOCKER_CONFIG", d, 1);
	free(d);
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	return 0;
}

static int teardown_home(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	kiln_rm_rf(tmpdir, &err);
	unsetenv("DOCKER_CONFIG");
	unsetenv("REGISTRY_AUTH_FILE");
	return 0;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
	struct kiln_err err = {0};
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, path, text, strlen(text), mode, &err), 0);
}

static void test_creds_save_lookup_erase(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	struct kiln_registry_creds c;
	/* nothing stored: not an error, nothing found */
	assert_int_equal(kiln_registry_creds_lookup("127.0.0.1:5000", &c, &err), 0);
	assert_null(c.username);

	/* an existing config with other settings, which must survive */
	char *dir = kiln_xasprintf("%s/docker", tmpdir);
	assert_int_equal(kiln_mkdir_p(dir, 0700, &err), 0);
	char *path = kiln_xasprintf("%s/config.json", dir);
	write_text(path, "{\"psFormat\": \"table {{.ID}}\", \"auths\": {\"other.example\": {\"auth\": \"eDp5\"}}}", 0644);

	assert_int_equal(kiln_registry_creds_save("127.0.0.1:5000", "alice", "s3cr:et", &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	json_t *j = json_load_file(path, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "psFormat")), "table {{.ID}}");
	json_t *auths = json_object_get(j, "auths");
	/* base64("alice:s3cr:et") */
	assert_string_equal(json_string_value(json_object_get(json_object_get(auths, "127.0.0.1:5000"), "auth")),
			    "YWxpY2U6czNjcjpldA==");
	assert_non_null(json_object_get(auths, "other.example"));
	json_decref(j);

	assert_int_equal(kiln_registry_creds_lookup("127.0.0.1:5000", &c, &err), 0);
	assert_string_equal(c.username, "alice");
	assert_string_equal(c.password, "s3cr:et");   /* split at the first colon only */
	kiln_registry_creds_free(&c);
	/* the other entry: base64("x:y") */
	assert_int_equal(kiln_registry_creds_lookup("other.example", &c, &err), 0);
	assert_string_equal(c.username, "x");
	assert_string_equal(c.password, "y");
	kiln_registry_creds_free(&c);

	bool removed = false;
	assert_int_equal(kiln_registry_creds_erase("127.0.0.1:5000", &removed, &err), 0);
	assert_true(removed);
	assert_int_equal(kiln_registry_creds_lookup("127.0.0.1:5000", &c, &err), 0);
	assert_null(c.username);
	assert_int_equal(kiln_registry_creds_erase("127.0.0.1:5000", &removed, &err), 0);
	assert_false(removed);
	/* the unrelated entry is still there */
	assert_int_equal(kiln_registry_creds_lookup("other.example", &c, &err), 0);
	assert_string_equal(c.username, "x");
	kiln_registry_creds_free(&c);
	free(path);
	free(dir);
}

static void test_creds_key_spellings(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *dir = kiln_xasprintf("%s/docker", tmpdir);
	assert_int_equal(kiln_mkdir_p(dir, 0700, &err), 0);
	char *path = kiln_xasprintf("%s/config.json", dir);
	/* Hub under its v1 URL, a host under https://host/v2/, a token entry */
	write_text(path,
		   "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"aHViOnB3\"},"
		   " \"https://reg.example:5000/v2/\": {\"auth\": \"YTpi\"},"
		   " \"tok.example\": {\"auth\": \"\", \"identitytoken\": \"refresh-me\"},"
		   " \"bad.example\": {\"auth\": \"bm9jb2xvbg==\"}}}",
		   0600);
	struct kiln_registry_creds c;
	assert_int_equal(kiln_registry_creds_lookup("docker.io", &c, &err), 0);
	assert_string_equal(c.username, "hub");
	assert_string_equal(c.password, "pw");
	kiln_registry_creds_free(&c);
	assert_int_equal(kiln_registry_creds_lookup("reg.example:5000", &c, &err), 0);
	assert_string_equal(c.username, "a");
	assert_string_equal(c.password, "b");
	kiln_registry_creds_free(&c);
	assert_int_equal(kiln_registry_creds_lookup("reg.example", &c, &err), 0);   /* port matters */
	assert_null(c.username);
	assert_int_equal(kiln_registry_creds_lookup("tok.example", &c, &err), 0);
	assert_null(c.username);
	assert_string_equal(c.identity_token, "refresh-me");
	kiln_registry_creds_free(&c);
	/* "nocolon" is not user:password */
	assert_int_equal(kiln_registry_creds_lookup("bad.example", &c, &err), -1);
	assert_non_null(strstr(err.msg, "user:password"));

	/* saving the Hub uses its v1 key and replaces other spellings */
	assert_int_equal(kiln_registry_creds_save("docker.io", "u2", "p2", &err), 0);
	json_t *j = json_load_file(path, 0, NULL);
	assert_non_null(json_object_get(json_object_get(j, "auths"), "https://index.docker.io/v1/"));
	json_decref(j);
	assert_int_equal(kiln_registry_creds_lookup("index.docker.io", &c, &err), 0);
	assert_string_equal(c.username, "u2");
	kiln_registry_creds_free(&c);
	char *h = kiln_registry_server_host("https://index.docker.io/v1/");
	assert_string_equal(h, "docker.io");
	free(h);
	h = kiln_registry_server_host("http://127.0.0.1:5000/v2/");
	assert_string_equal(h, "127.0.0.1:5000");
	free(h);
	h = kiln_registry_server_host("quay.io");
	assert_string_equal(h, "quay.io");
	free(h);
	assert_string_equal(kiln_registry_auth_key("docker.io"), "https://index.docker.io/v1/");
	assert_string_equal(kiln_registry_auth_key("quay.io"), "quay.io");
	free(path);
	free(dir);
}

static void test_creds_containers_auth_json(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *path = kiln_xasprintf("%s/auth.json", tmpdir);
	write_text(path, "{\"auths\": {\"podman.example\": {\"auth\": \"cG9kOm1hbg==\"}}}", 0600);
	setenv("REGISTRY_AUTH_FILE", path, 1);
	struct kiln_registry_creds c;
	assert_int_equal(kiln_registry_creds_lookup("podman.example", &c, &err), 0);
	assert_string_equal(c.username, "pod");
	assert_string_equal(c.password, "man");
	kiln_registry_creds_free(&c);
	unsetenv("REGISTRY_AUTH_FILE");
	/* XDG_RUNTIME_DIR/containers/auth.json */
	char *xdg = kiln_xasprintf("%s/xdg", tmpdir);
	char *cdir = kiln_xasprintf("%s/containers", xdg);
	assert_int_equal(kiln_mkdir_p(cdir, 0700, &err), 0);
	char *p2 = kiln_xasprintf("%s/auth.json", cdir);
	write_text(p2, "{\"auths\": {\"xdg.example\": {\"auth\": \"eDp5\"}}}", 0600);
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	char *want = kiln_registry_containers_auth_path();
	assert_string_equal(want, p2);
	free(want);
	assert_int_equal(kiln_registry_creds_lookup("xdg.example", &c, &err), 0);
	assert_string_equal(c.username, "x");
	kiln_registry_creds_free(&c);
	unsetenv("XDG_RUNTIME_DIR");
	free(p2);
	free(cdir);
	free(xdg);
	free(path);
}

static void test_creds_helper(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	/* a fake docker-credential-kilntest on PATH: get answers for one
	 * server, store/erase log their input */
	char *bin = kiln_xasprintf("%s/bin", tmpdir);
	assert_int_equal(kiln_mkdir_p(bin, 0755, &err), 0);
	char *script = kiln_xasprintf("%s/docker-credential-kilntest", bin);
	char *text = kiln_xasprintf(
		"#!/bin/sh\n"
		"read -r input\n"
		"case \"$1\" in\n"
		"get) if [ \"$input\" = helper.example ]; then\n"
		"       echo '{\"ServerURL\":\"helper.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n"
		"     elif [ \"$input\" = token.example ]; then\n"
		"       echo '{\"ServerURL\":\"token.example\",\"Username\":\"<token>\",\"Secret\":\"rt\"}'\n"
		"     else echo 'credentials not found in native keychain'; exit 1; fi;;\n"
		"store) echo \"$input\" > %s/stored;;\n"
		"erase) echo \"$input\" > %s/erased;;\n"
		"esac\n",
		tmpdir, tmpdir);
	write_text(script, text, 0755);
	free(text);
	const char *old = getenv("PATH");
	char *oldpath = kiln_xstrdup(old ? old : "/usr/bin:/bin");
	char *newpath = kiln_xasprintf("%s:%s", bin, oldpath);
	setenv("PATH", newpath, 1);

	char *dir = kiln_xasprintf("%s/docker", tmpdir);
	assert_int_equal(kiln_mkdir_p(dir, 0700, &err), 0);
	char *path = kiln_xasprintf("%s/config.json", dir);
	write_text(path, "{\"credsStore\": \"kilntest\", \"credHelpers\": {\"nohelper.example\": \"missing-helper\"}}",
		   0600);
	struct kiln_registry_creds c;
	assert_int_equal(kiln_registry_creds_lookup("helper.example", &c, &err), 0);
	assert_string_equal(c.username, "hu");
	assert_string_equal(c.password, "hs");
	kiln_registry_creds_free(&c);
	assert_int_equal(kiln_registry_creds_lookup("token.example", &c, &err), 0);
	assert_null(c.username);
	assert_string_equal(c.identity_token, "rt");
	kiln_registry_creds_free(&c);
	/* "not found" from the helper is no credentials, not an error */
	assert_int_equal(kiln_registry_creds_lookup("unknown.example", &c, &err), 0);
	assert_null(c.username);
	/* a per-host helper that does not exist is an error that names it */
	assert_int_equal(kiln_registry_creds_lookup("nohelper.example", &c, &err), -1);
	assert_non_null(strstr(err.msg, "docker-credential-missing-helper"));

	/* save goes to the helper, not into the file */
	assert_int_equal(kiln_registry_creds_save("helper.example", "nu", "np", &err), 0);
	char *stored = kiln_xasprintf("%s/stored", tmpdir);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(kiln_read_file(stored, 0, &data, &len, &err), 0);
	json_t *j = json_loads(data, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "ServerURL")), "helper.example");
	assert_string_equal(json_string_value(json_object_get(j, "Username")), "nu");
	assert_string_equal(json_string_value(json_object_get(j, "Secret")), "np");
	json_decref(j);
	free(data);
	char *cfg = NULL;
	assert_int_equal(kiln_read_file(path, 0, &cfg, &len, &err), 0);
	assert_null(strstr(cfg, "np"));
	free(cfg);
	bool removed = false;
	assert_int_equal(kiln_registry_creds_erase("helper.example", &removed, &err), 0);
	assert_true(removed);
	char *erased = kiln_xasprintf("%s/erased", tmpdir);
	assert_int_equal(access(erased, F_OK), 0);

	/* helper names are checked before anything is executed */
	char *out = NULL;
	assert_int_equal(kiln_registry_cred_helper("../evil", "get", "x", &out, &err), -1);
	assert_non_null(strstr(err.msg, "invalid credential helper"));

	setenv("PATH", oldpath, 1);
	free(erased);
	free(stored);
	free(path);
	free(dir);
	free(newpath);
	free(oldpath);
	free(script);
	free(bin);
}

/* ---- backoff, endpoint, options ---- */

static void test_backoff(void **state)
{
	(void)state;
	assert_int_equal(kiln_registry_backoff_ms(0), 250);
	assert_int_equal(kiln_registry_backoff_ms(1), 500);
	assert_int_equal(kiln_registry_backoff_ms(2), 1000);
	assert_int_equal(kiln_registry_backoff_ms(3), 2000);
	assert_int_equal(kiln_registry_backoff_ms(4), 4000);
	assert_int_equal(kiln_registry_backoff_ms(5), 8000);
	assert_int_equal(kiln_registry_backoff_ms(60), 8000);
	assert_int_equal(kiln_registry_backoff_ms(-3), 250);
	/* Retry-After wins over the backoff, capped at 30 s */
	struct reg_xfer x;
	reg_xfer_init(&x);
	x.rc = CURLE_OK;
	x.status = 503;
	assert_true(reg_xfer_transient(&x));
	assert_int_equal(reg_xfer_retry_delay(&x, 2), 1000);
	x.retry_after = kiln_xstrdup("3");
	assert_int_equal(reg_xfer_retry_delay(&x, 2), 3000);
	free(x.retry_after);
	x.retry_after = kiln_xstrdup("3600");
	assert_int_equal(reg_xfer_retry_delay(&x, 0), 30000);
	x.status = 404;
	assert_false(reg_xfer_transient(&x));
	x.status = 429;
	assert_true(reg_xfer_transient(&x));
	x.rc = CURLE_COULDNT_CONNECT;
	assert_true(reg_xfer_transient(&x));
	x.rc = CURLE_PEER_FAILED_VERIFICATION;
	assert_false(reg_xfer_transient(&x));
	reg_xfer_free(&x);
}

static void test_endpoint_and_flags(void **state)
{
	(void)state;
	assert_string_equal(kiln_registry_endpoint("docker.io"), "registry-1.docker.io");
	assert_string_equal(kiln_registry_endpoint("localhost:5000"), "localhost:5000");
	struct kiln_err err = {0};
	enum kiln_tls_mode m;
	assert_int_equal(kiln_registry_tls_parse("false", &m, &err), 0);
	assert_int_equal(m, KILN_TLS_INSECURE);
	assert_int_equal(kiln_registry_tls_parse("", &m, &err), -1);
	assert_int_equal(kiln_registry_tls_parse(NULL, &m, &err), 0);
	assert_int_equal(m, KILN_TLS_VERIFY);
	assert_int_equal(kiln_registry_tls_parse("maybe", &m, &err), -1);

	struct kiln_registry_opts o = {0};
	char *argv[] = {"pull", "--tls-verify=false", "--cert-dir", "/d", "--cert-dir=/e", "x", "--cert-dir", NULL};
	int argc = 7;
	int i = 1;
	assert_int_equal(kiln_registry_opts_flag(argc, argv, &i, &o, &err), 1);
	assert_int_equal(o.tls, KILN_TLS_INSECURE);
	i = 2;
	assert_int_equal(kiln_registry_opts_flag(argc, argv, &i, &o, &err), 1);
	assert_int_equal(i, 3);
	assert_string_equal(o.cert_dir, "/d");
	i = 4;
	assert_int_equal(kiln_registry_opts_flag(argc, argv, &i, &o, &err), 1);
	assert_string_equal(o.cert_dir, "/e");
	i = 5;
	assert_int_equal(kiln_registry_opts_flag(argc, argv, &i, &o, &err), 0);
	i = 6;
	assert_int_equal(kiln_registry_opts_flag(argc, argv, &i, &o, &err), -1);

	struct kiln_registry *r = NULL;
	assert_int_equal(kiln_registry_open("bad/host", NULL, &r, &err), -1);
	assert_null(r);
	struct kiln_registry_opts o2 = {.cert_dir = "/nonexistent/kiln-certs"};
	assert_int_equal(kiln_registry_open("127.0.0.1:1", &o2, &r, &err), -1);
	assert_non_null(strstr(err.msg, "cert dir"));
}

/* ---- error wording ---- */

static void test_error_wording(void **state)
{
	(void)state;
	struct reg_xfer x;
	reg_xfer_init(&x);
	struct kiln_err err = {0};
	x.status = 401;
	kiln_buf_puts(&x.resp, "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\","
			       "\"detail\":[{\"Type\":\"repository\"}]}]}\n");
	reg_error(&x, &err, "pulling %s", "x");
	assert_string_equal(err.msg, "pulling x: unauthorized: authentication required");

	x.resp.len = 0;
	kiln_buf_puts(&x.resp, "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\"},"
			       "{\"code\":\"DENIED\",\"message\":\"no\"}]}");
	x.status = 404;
	reg_error(&x, &err, NULL);
	assert_string_equal(err.msg, "blob unknown: blob unknown to registry; denied: no");
	assert_int_equal(err.errnum, ENOENT);

	/* the token server's {"details": ...} */
	x.resp.len = 0;
	kiln_buf_puts(&x.resp, "{\"details\":\"incorrect username or password\"}");
	x.status = 401;
	reg_error(&x, &err, "t");
	assert_string_equal(err.msg, "t: incorrect username or password");

	/* no body */
	x.resp.len = 0;
	x.resp.data[0] = 0;
	x.status = 502;
	reg_error(&x, &err, "p");
	assert_string_equal(err.msg, "p: HTTP 502");
	reg_xfer_free(&x);
}

/* ---- against a live docker-registry (skipped when it is not installed):
 * the transfer engine under ASan/UBSan ---- */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static bool port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void fill_random(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (char)(seed >> 16);
	}
}

static void test_live_registry(void **state)
{
	(void)state;
	if (system("command -v docker-registry >/dev/null 2>&1") != 0) {
		skip();
		return;
	}
	struct kiln_err err = {0};
	int port = free_port();
	assert_true(port > 0);
	char *cfg = kiln_xasprintf("%s/config.yml", tmpdir);
	char *text = kiln_xasprintf("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
				    "storage: {filesystem: {rootdirectory: %s/regdata}}\n"
				    "http: {addr: 127.0.0.1:%d, secret: unit}\n",
				    tmpdir, port);
	write_text(cfg, text, 0644);
	free(text);
	char *logp = kiln_xasprintf("%s/registry.log", tmpdir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("docker-registry", "docker-registry", "serve", cfg, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !port_open(port); i++)
		usleep(50000);
	assert_true(port_open(port));

	char *sroot = kiln_xasprintf("%s/store1", tmpdir);
	char *sroot2 = kiln_xasprintf("%s/store2", tmpdir);
	struct kiln_store *s1 = NULL, *s2 = NULL;
	assert_int_equal(kiln_store_open(sroot, KILN_STORE_RDWR, &s1, &err), 0);
	assert_int_equal(kiln_store_open(sroot2, KILN_STORE_RDWR, &s2, &err), 0);
	/* an empty blob, a small one, one larger than the chunk size */
	size_t sizes[3] = {0, 100000, 3u << 20};
	struct kiln_registry_blob blobs[3];
	char *datas[3];
	for (int i = 0; i < 3; i++) {
		datas[i] = kiln_xmalloc(sizes[i] + 1);
		fill_random(datas[i], sizes[i], (unsigned)i + 7);
		memset(&blobs[i], 0, sizeof(blobs[i]));
		assert_int_equal(kiln_store_blob_put(s1, datas[i], sizes[i], blobs[i].digest, &err), 0);
		blobs[i].size = (int64_t)sizes[i];
		blobs[i].media_type = KILN_MT_LAYER_TAR;
	}
	char host[64];
	snprintf(host, sizeof(host), "127.0.0.1:%d", port);
	struct kiln_registry_opts o = {.chunk_size = 1 << 20, .max_parallel = 2, .retries = 1};
	struct kiln_registry *r = NULL;
	assert_int_equal(kiln_registry_open(host, &o, &r, &err), 0);
	bool exists = true;
	int64_t size = 0;
	assert_int_equal(kiln_registry_blob_exists(r, "unit/cache", blobs[2].digest, &exists, &size, &err), 0);
	assert_false(exists);

	const char *config = "{\"records\":[1,2,3]}";
	json_t *ann = json_pack("{s:s}", "org.example.kind", "cache");
	char mdg[KILN_DIGEST_MAX];
	if (kiln_registry_artifact_push(r, s1, "unit/cache", "c1", "application/vnd.kiln.cache.v1+json", config,
					strlen(config), blobs, 3, ann, mdg, &err) < 0)
		fail_msg("artifact push: %s", err.msg);
	json_decref(ann);
	assert_true(kiln_digest_valid(mdg));
	assert_int_equal(kiln_registry_blob_exists(r, "unit/cache", blobs[2].digest, &exists, &size, &err), 0);
	assert_true(exists);
	assert_int_equal(size, (int64_t)sizes[2]);

	json_t *m = NULL;
	char *cfgdata = NULL;
	size_t cfglen = 0;
	if (kiln_registry_artifact_pull(r, s2, "unit/cache", "c1", &m, &cfgdata, &cfglen, &err) < 0)
		fail_msg("artifact pull: %s", err.msg);
	assert_int_equal(cfglen, strlen(config));
	assert_memory_equal(cfgdata, config, cfglen);
	assert_string_equal(json_string_value(json_object_get(json_object_get(m, "annotations"), "org.example.kind")),
			    "cache");
	assert_int_equal(json_array_size(json_object_get(m, "layers")), 3);
	for (int i = 0; i < 3; i++) {
		assert_true(kiln_store_blob_exists(s2, blobs[i].digest));
		assert_int_equal(kiln_store_blob_verify(s2, blobs[i].digest, &err), 0);
	}
	json_decref(m);
	free(cfgdata);

	/* manifest by digest: the same bytes */
	char *mdata = NULL, *mmt = NULL;
	size_t mlen = 0;
	char dg2[KILN_DIGEST_MAX];
	assert_int_equal(kiln_registry_manifest_get(r, "unit/cache", mdg, &mdata, &mlen, &mmt, dg2, &err), 0);
	assert_string_equal(dg2, mdg);
	assert_string_equal(mmt, KILN_MT_OCI_MANIFEST);
	free(mdata);
	free(mmt);

	/* blobs into memory; a wrong size is refused */
	char *bd = NULL;
	size_t bl = 0;
	assert_int_equal(kiln_registry_blob_get_mem(r, "unit/cache", &blobs[1], 0, &bd, &bl, &err), 0);
	assert_int_equal(bl, sizes[1]);
	assert_memory_equal(bd, datas[1], bl);
	free(bd);
	struct kiln_registry_blob wrong = blobs[1];
	wrong.size = 5;
	assert_int_equal(kiln_registry_blob_get_mem(r, "unit/cache", &wrong, 0, &bd, &bl, &err), -1);

	/* errors as the registry words them */
	assert_int_equal(kiln_registry_manifest_get(r, "unit/cache", "nope", &mdata, &mlen, &mmt, dg2, &err), -1);
	assert_int_equal(err.errnum, ENOENT);
	assert_non_null(strstr(err.msg, "manifest unknown"));
	struct kiln_registry_blob missing = {.size = 3};
	kiln_digest_data("abc", 3, missing.digest);
	assert_int_equal(kiln_registry_blob_get_to_store(r, s2, "unit/cache", &missing, 1, &err), -1);
	assert_non_null(strstr(err.msg, "blob unknown"));
	assert_false(kiln_store_blob_exists(s2, missing.digest));

	kiln_registry_close(r);
	kiln_store_close(s1);
	kiln_store_close(s2);
	for (int i = 0; i < 3; i++)
		free(datas[i]);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	free(sroot);
	free(sroot2);
	free(logp);
	free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_challenge_bearer),
		cmocka_unit_test(test_challenge_basic_and_multiple),
		cmocka_unit_test(test_challenge_malformed),
		cmocka_unit_test_setup_teardown(test_creds_save_lookup_erase, setup_home, teardown_home),
		cmocka_unit_test_setup_teardown(test_creds_key_spellings, setup_home, teardown_home),
		cmocka_unit_test_setup_teardown(test_creds_containers_auth_json, setup_home, teardown_home),
		cmocka_unit_test_setup_teardown(test_creds_helper, setup_home, teardown_home),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_endpoint_and_flags),
		cmocka_unit_test(test_error_wording),
		cmocka_unit_test_setup_teardown(test_live_registry, setup_home, teardown_home),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
