/* kiln logout [SERVER] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "common/util.h"
#include "layers/registry.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln logout [SERVER]\n\n"
		   "Log out from a registry (the Docker Hub when SERVER is not given)\n");
}

int kiln_cmd_logout(int argc, char **argv)
{
	const char *server = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: logout: unknown option %s (see 'kiln logout --help')\n", a);
			return KILN_EXIT_USAGE;
		} else if (server) {
			fprintf(stderr, "kiln: logout: too many arguments\n");
			return KILN_EXIT_USAGE;
		} else {
			server = a;
		}
	}
	KILN_AUTOFREE char *host = kiln_registry_server_host(server ? server : "docker.io");
	struct kiln_err err = {0};
	bool removed = false;
	if (kiln_registry_creds_erase(host, &removed, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	if (removed)
		printf("Removing login credentials for %s\n", kiln_registry_auth_key(host));
	else
		printf("Not logged in to %s\n", kiln_registry_auth_key(host));
	/* kiln also reads podman's/skopeo's auth.json (and credential helpers);
	 * logout edits only the docker config, as `docker logout` does, so say
	 * when credentials for the server are still found elsewhere */
	struct kiln_registry_creds left = {0};
	struct kiln_err lerr = {0};
	if (kiln_registry_creds_lookup(host, &left, &lerr) == 0 && (left.username || left.identity_token)) {
		KILN_AUTOFREE char *cpath = kiln_registry_containers_auth_path();
		fprintf(stderr, "kiln: credentials for %s are still found elsewhere (%s%s); kiln keeps using them\n",
			kiln_registry_auth_key(host), cpath ? cpath : "", cpath ? " or a credential helper"
			: "a credential helper");
	}
	kiln_registry_creds_free(&left);
	return 0;
}
