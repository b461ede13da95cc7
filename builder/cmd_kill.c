/* kiln kill — send a signal to running containers. */
#include <stdio.h>
#include <string.h>

#include "builder/cli.h"
#include "common/util.h"
#include "runtime/container.h"

int kiln_cmd_kill(int argc, char **argv)
{
	const char *signame = "KILL";
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln kill [-s SIGNAL] CONTAINER [CONTAINER...]\n\n"
			       "Send a signal (default KILL) to running containers.\n");
			return 0;
		}
		if (!strcmp(a, "-s") || !strcmp(a, "--signal")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: flag needs an argument: %s\n", a);
				return KILN_EXIT_USAGE;
			}
			signame = argv[++i];
		} else if (!strncmp(a, "--signal=", 9)) {
			signame = a + 9;
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	int sig = kiln_signal_from_name(signame);
	if (sig < 0) {
		fprintf(stderr, "kiln: invalid signal: %s\n", signame);
		return KILN_EXIT_USAGE;
	}
	if (i >= argc) {
		fprintf(stderr, "kiln: \"kiln kill\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	int rc = 0;
	for (; i < argc; i++) {
		struct kiln_err err = {0};
		struct kiln_container_state st;
		if (kiln_container_find(kiln_global.root, argv[i], &st, &err) < 0 ||
		    kiln_container_signal(&st, sig, &err) < 0) {
			kiln_err_print(&err);
			rc = KILN_EXIT_FAIL;
			continue;
		}
		printf("%s\n", argv[i]);
	}
	return rc;
}
