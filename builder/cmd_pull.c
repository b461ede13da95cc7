/* kiln pull [-q] [--platform P] [--tls-verify=false] [--cert-dir DIR] REF */
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
	fprintf(f, "Usage: kiln pull [OPTIONS] NAME[:TAG|@DIGEST]\n\n"
		   "Pull an image from a registry\n\n"
		   "Options:\n"
		   "      --platform string    Set platform if server is multi-platform capable (default linux/<host arch>)\n"
		   "  -q, --quiet              Suppress verbose output\n"
		   "      --tls-verify[=BOOL]  Require HTTPS and verify certificates (default: verify; plain HTTP\n"
		   "                           is allowed for localhost only)\n"
		   "      --cert-dir DIR       ca.crt, client.cert and client.key for the registry\n");
}

int kiln_cmd_pull(int argc, char **argv)
{
	struct kiln_registry_opts o = {0};
	bool quiet = false;
	const char *ref = NULL;
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
		} else if (!strcmp(a, "--platform") && i + 1 < argc) {
			o.platform = argv[++i];
		} else if (!strncmp(a, "--platform=", 11)) {
			o.platform = a + 11;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: pull: unknown option %s (see 'kiln pull --help')\n", a);
			return KILN_EXIT_USAGE;
		} else if (ref) {
			fprintf(stderr, "kiln: pull: too many arguments\n");
			return KILN_EXIT_USAGE;
		} else {
			ref = a;
		}
	}
	if (!ref) {
		fprintf(stderr, "kiln: pull: an image name is required\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	char *full = kiln_ref_normalize(ref, &err);
	if (!full) {
		kiln_err_print(&err);
		return KILN_EXIT_USAGE;
	}
	kiln_registry_opts_from_env(&o);
	if (!quiet) {
		o.progress = stdout;
		o.progress_tty = isatty(STDOUT_FILENO);
	}
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		free(full);
		return KILN_EXIT_FAIL;
	}
	char dg[KILN_DIGEST_MAX];
	int rc = kiln_registry_pull(s, ref, &o, dg, &err);
	kiln_store_close(s);
	if (rc < 0) {
		fflush(stdout);
		kiln_err_print(&err);
		free(full);
		return KILN_EXIT_FAIL;
	}
	printf("%s\n", full);
	free(full);
	return 0;
}
