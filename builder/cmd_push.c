/* kiln push [-q] [--tls-verify=false] [--cert-dir DIR] NAME [DEST_REF] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/registry.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln push [OPTIONS] NAME[:TAG] [DESTINATION]\n\n"
		   "Push an image to a registry (to DESTINATION, a reference, when given)\n\n"
		   "Options:\n"
		   "  -q, --quiet              Suppress verbose output\n"
		   "      --tls-verify[=BOOL]  Require HTTPS and verify certificates (default: verify; plain HTTP\n"
		   "                           is allowed for localhost only)\n"
		   "      --cert-dir DIR       ca.crt, client.cert and client.key for the registry\n");
}

int kiln_cmd_push(int argc, char **argv)
{
	struct kiln_registry_opts o = {0};
	bool quiet = false;
	const char *args[2] = {NULL, NULL};
	int nargs = 0;
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
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = true;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: push: unknown option %s (see 'kiln push --help')\n", a);
			return KILN_EXIT_USAGE;
		} else if (nargs == 2) {
			fprintf(stderr, "kiln: push: too many arguments\n");
			return KILN_EXIT_USAGE;
		} else {
			args[nargs++] = a;
		}
	}
	if (nargs == 0) {
		fprintf(stderr, "kiln: push: an image name is required\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	char *dest = kiln_ref_normalize(args[nargs - 1], &err);
	if (!dest) {
		kiln_err_print(&err);
		return KILN_EXIT_USAGE;
	}
	free(dest);
	kiln_registry_opts_from_env(&o);
	if (!quiet) {
		o.progress = stdout;
		o.progress_tty = isatty(STDOUT_FILENO);
	}
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	char dg[KILN_DIGEST_MAX];
	int rc = kiln_registry_push(s, args[0], args[1], &o, dg, &err);
	kiln_store_close(s);
	if (rc < 0) {
		fflush(stdout);
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	return 0;
}
