/* kiln exec — run a command in a running container (setns into its
 * namespaces and cgroups; the same privilege decision as every sandbox). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/sandbox.h"

int kiln_cmd_exec(int argc, char **argv)
{
	bool interactive = false, tty = false, privileged = false;
	const char *user = NULL, *workdir = NULL;
	struct kiln_strv env = {0};
	int i = 1;
	/* a bad command line is exit 125, as for docker exec */
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln exec [-i] [-t] [-e K=V] [-u USER] [-w DIR] CONTAINER COMMAND [ARG...]\n\n"
			       "Run a command in a running container.\n");
			kiln_strv_free(&env);
			return 0;
		}
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "-e") || !strcmp(a, "--env") || !strcmp(a, "-u") || !strcmp(a, "--user") ||
		    !strcmp(a, "-w") || !strcmp(a, "--workdir")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: flag needs an argument: %s\n", a);
				kiln_strv_free(&env);
				return KILN_EXIT_SETUP;
			}
			const char *v = argv[++i];
			if (a[1] == 'e' || !strcmp(a, "--env"))
				kiln_strv_push(&env, v);
			else if (a[1] == 'u' || !strcmp(a, "--user"))
				user = v;
			else if (v[0] == '/')
				workdir = v;
			else {
				fprintf(stderr, "kiln: invalid argument \"%s\" for \"-w, --workdir\" flag: the working "
					"directory must be an absolute path\n", v);
				kiln_strv_free(&env);
				return KILN_EXIT_SETUP;
			}
		} else if (!strcmp(a, "--privileged")) {
			privileged = true;
		} else if (!strcmp(a, "--interactive")) {
			interactive = true;
		} else if (!strcmp(a, "--tty")) {
			tty = true;
		} else if (a[1] != '-') {
			for (const char *c = a + 1; *c; c++) {
				if (*c == 'i') interactive = true;
				else if (*c == 't') tty = true;
				else if (*c == 'd') {
					fprintf(stderr, "kiln: exec -d is not supported\n");
					kiln_strv_free(&env);
					return KILN_EXIT_SETUP;
				} else {
					fprintf(stderr, "kiln: unknown shorthand flag: '%c' in %s\n", *c, a);
					kiln_strv_free(&env);
					return KILN_EXIT_SETUP;
				}
			}
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			kiln_strv_free(&env);
			return KILN_EXIT_SETUP;
		}
	}
	if (argc - i < 2) {
		fprintf(stderr, "kiln: \"kiln exec\" requires at least 2 arguments (CONTAINER COMMAND)\n");
		kiln_strv_free(&env);
		return KILN_EXIT_SETUP;
	}
	struct kiln_err err = {0};
	struct kiln_container_state st;
	if (kiln_container_find(kiln_global.root, argv[i], &st, &err) < 0) {
		kiln_err_print(&err);
		kiln_strv_free(&env);
		return KILN_EXIT_FAIL;
	}
	if (!kiln_container_running(&st)) {
		fprintf(stderr, "kiln: container %s is not running\n", argv[i]);
		kiln_strv_free(&env);
		return KILN_EXIT_FAIL;
	}
	/* the container's own environment, user and workdir first */
	struct kiln_strv full = {0};
	char *cfgp = kiln_xasprintf("%s/containers/%s/config.json", kiln_global.root, st.id);
	json_t *cfg = json_load_file(cfgp, 0, NULL);
	free(cfgp);
	size_t k;
	json_t *v;
	json_array_foreach(json_object_get(cfg, "env"), k, v)
		if (json_string_value(v))
			kiln_strv_push(&full, json_string_value(v));
	for (size_t j = 0; j < env.n; j++)
		kiln_strv_push(&full, env.v[j]);
	if (!user)
		user = json_string_value(json_object_get(cfg, "user"));
	if (!workdir)
		workdir = json_string_value(json_object_get(cfg, "workdir"));

	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	spec.origin = KILN_ORIGIN_EXEC;
	spec.id = st.id;   /* joins the cgroups named after it (its device filter) */
	spec.entitlements = privileged ? KILN_ENT_PRIVILEGED : 0;
	spec.privileged = privileged;
	spec.argv = argv + i + 1;
	spec.env = full.v;
	spec.user = user && user[0] ? user : NULL;
	spec.cwd = workdir && workdir[0] ? workdir : "/";
	spec.tty = tty;
	spec.interactive = interactive;
	int devnull = -1;
	if (!interactive) {
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		spec.stdin_fd = devnull;
	}
	struct kiln_exit ex;
	int rc;
	if (kiln_sandbox_exec(st.pid, &spec, &ex, &err) < 0) {
		kiln_err_print(&err);
		rc = err.exit_code ? err.exit_code : KILN_EXIT_SETUP;
	} else {
		rc = ex.code;
	}
	if (devnull >= 0)
		close(devnull);
	json_decref(cfg);
	kiln_strv_free(&full);
	kiln_strv_free(&env);
	return rc;
}
