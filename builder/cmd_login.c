/* kiln login [-u USER] [-p PASSWORD | --password-stdin] [--tls-verify=false] [SERVER] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "builder/cli.h"
#include "common/util.h"
#include "layers/registry.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln login [OPTIONS] [SERVER]\n\n"
		   "Log in to a registry (the Docker Hub when SERVER is not given).\n"
		   "The credentials are checked against the registry, then stored in\n"
		   "$DOCKER_CONFIG/config.json or ~/.docker/config.json (mode 0600) or its credential helper.\n\n"
		   "Options:\n"
		   "  -u, --username string    Username\n"
		   "  -p, --password string    Password\n"
		   "      --password-stdin     Take the password from stdin\n"
		   "      --tls-verify[=BOOL]  Require HTTPS and verify certificates\n"
		   "      --cert-dir DIR       ca.crt, client.cert and client.key for the registry\n");
}

/* One line from fd (newline dropped); NULL at EOF with nothing read. */
static char *read_line(FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	return line;
}

static char *prompt(const char *what, bool echo)
{
	FILE *tty = fopen("/dev/tty", "r+e");
	if (!tty)
		return NULL;
	fprintf(tty, "%s: ", what);
	fflush(tty);
	struct termios old, noecho;
	bool restore = false;
	if (!echo && tcgetattr(fileno(tty), &old) == 0) {
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		restore = tcsetattr(fileno(tty), TCSAFLUSH, &noecho) == 0;
	}
	char *line = read_line(tty);
	if (restore) {
		tcsetattr(fileno(tty), TCSAFLUSH, &old);
		fprintf(tty, "\n");
	}
	fclose(tty);
	return line;
}

/* Check the credentials against the registry (no retries: a wrong password
 * is an answer). */
static int verify(const char *host, const struct kiln_registry_opts *base, const char *user,
		  const char *pass, struct kiln_err *err)
{
	struct kiln_registry_opts o = *base;
	kiln_registry_opts_from_env(&o);
	o.username = user;
	o.password = pass;
	o.retries = -1;
	struct kiln_registry *r = NULL;
	int rc = kiln_registry_open(host, &o, &r, err);
	if (rc == 0)
		rc = kiln_registry_check_login(r, err);
	kiln_registry_close(r);
	return rc;
}

int kiln_cmd_login(int argc, char **argv)
{
	struct kiln_registry_opts o = {0};
	const char *user = NULL, *pass = NULL, *server = NULL;
	bool pass_stdin = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		struct kiln_err ferr = {0};
		int r = kiln_registry_opts_flag(argc, argv, &i, &o, &ferr);
		if (r < 0) {
			kiln_err_print(&ferr);
			return KILN_EXIT_USAGE;
		}
		if (r > 0)
			continue;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if ((!strcmp(a, "-u") || !strcmp(a, "--username")) && i + 1 < argc) {
			user = argv[++i];
		} else if (!strncmp(a, "--username=", 11)) {
			user = a + 11;
		} else if ((!strcmp(a, "-p") || !strcmp(a, "--password")) && i + 1 < argc) {
			pass = argv[++i];
		} else if (!strncmp(a, "--password=", 11)) {
			pass = a + 11;
		} else if (!strcmp(a, "--password-stdin")) {
			pass_stdin = true;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: login: unknown option %s (see 'kiln login --help')\n", a);
			return KILN_EXIT_USAGE;
		} else if (server) {
			fprintf(stderr, "kiln: login: too many arguments\n");
			return KILN_EXIT_USAGE;
		} else {
			server = a;
		}
	}
	if (pass && pass_stdin) {
		fprintf(stderr, "kiln: --password and --password-stdin are mutually exclusive\n");
		return KILN_EXIT_USAGE;
	}
	if (pass_stdin && !user) {
		fprintf(stderr, "kiln: must provide --username with --password-stdin\n");
		return KILN_EXIT_USAGE;
	}
	if (pass)
		fprintf(stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n");
	KILN_AUTOFREE char *host = kiln_registry_server_host(server ? server : "docker.io");
	if (!user && !pass && !pass_stdin) {
		/* as docker: stored credentials are checked again, no prompt */
		struct kiln_registry_creds c;
		struct kiln_err lerr = {0};
		if (kiln_registry_creds_lookup(host, &c, &lerr) == 0 && c.username && c.password) {
			printf("Authenticating with existing credentials...\n");
			int rc = verify(host, &o, c.username, c.password, &lerr);
			kiln_registry_creds_free(&c);
			if (rc == 0) {
				printf("Login Succeeded\n");
				return 0;
			}
			fprintf(stderr, "kiln: stored credentials for %s are not valid: %s\n", host, lerr.msg);
		} else {
			kiln_registry_creds_free(&c);
		}
	}
	KILN_AUTOFREE char *user_buf = NULL;
	char *pass_buf = NULL;
	if (!user) {
		user_buf = prompt("Username", true);
		if (!user_buf) {
			fprintf(stderr, "kiln: cannot perform an interactive login from a non TTY device\n");
			return KILN_EXIT_FAIL;
		}
		user = user_buf;
	}
	if (!*user) {
		fprintf(stderr, "kiln: login: the username is empty\n");
		return KILN_EXIT_FAIL;
	}
	if (pass_stdin) {
		pass_buf = read_line(stdin);
		if (!pass_buf)
			pass_buf = kiln_xstrdup("");
		pass = pass_buf;
	} else if (!pass) {
		pass_buf = prompt("Password", false);
		if (!pass_buf) {
			fprintf(stderr, "kiln: cannot perform an interactive login from a non TTY device\n");
			return KILN_EXIT_FAIL;
		}
		pass = pass_buf;
	}
	if (!*pass) {
		fprintf(stderr, "kiln: login: the password is empty\n");
		free(pass_buf);
		return KILN_EXIT_FAIL;
	}
	struct kiln_err err = {0};
	int rc = verify(host, &o, user, pass, &err);
	if (rc == 0)
		rc = kiln_registry_creds_save(host, user, pass, &err);
	if (pass_buf) {
		explicit_bzero(pass_buf, strlen(pass_buf));
		free(pass_buf);
	}
	if (rc < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	printf("Login Succeeded\n");
	return 0;
}
