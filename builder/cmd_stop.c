/* kiln stop — stop signal, then SIGKILL after a grace period. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "common/util.h"
#include "runtime/container.h"

int kiln_cmd_stop(int argc, char **argv)
{
	long timeout = 10;
	const char *signame = NULL;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln stop [-t SECONDS] [-s SIGNAL] CONTAINER [CONTAINER...]\n\n"
			       "Send the stop signal (the image's StopSignal, default SIGTERM), then SIGKILL\n"
			       "after the grace period (default 10 s).\n");
			return 0;
		}
		if (!strcmp(a, "-t") || !strcmp(a, "--time") || !strcmp(a, "--timeout") ||
		    !strcmp(a, "-s") || !strcmp(a, "--signal")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: flag needs an argument: %s\n", a);
				return KILN_EXIT_USAGE;
			}
			if (a[1] == 's' || !strcmp(a, "--signal"))
				signame = argv[++i];
			else
				timeout = strtol(argv[++i], NULL, 10);
		} else if (!strncmp(a, "--time=", 7)) {
			timeout = strtol(a + 7, NULL, 10);
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "kiln: \"kiln stop\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	int rc = 0;
	for (; i < argc; i++) {
		struct kiln_err err = {0};
		struct kiln_container_state st;
		if (kiln_container_find(kiln_global.root, argv[i], &st, &err) < 0) {
			kiln_err_print(&err);
			rc = KILN_EXIT_FAIL;
			continue;
		}
		if (kiln_container_running(&st)) {
			int sig = kiln_signal_from_name(signame ? signame : st.stop_signal[0] ? st.stop_signal : "TERM");
			if (sig < 0)
				sig = SIGTERM;
			kiln_container_signal(&st, sig, NULL);
			if (!kiln_container_wait_stopped(kiln_global.root, &st, (int)(timeout < 0 ? 0 : timeout * 1000))) {
				kiln_container_signal(&st, SIGKILL, NULL);
				if (!kiln_container_wait_stopped(kiln_global.root, &st, 10000)) {
					fprintf(stderr, "kiln: container %s did not stop\n", argv[i]);
					rc = KILN_EXIT_FAIL;
					continue;
				}
			}
		}
		printf("%s\n", argv[i]);
	}
	return rc;
}
