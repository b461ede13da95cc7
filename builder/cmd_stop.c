/* kiln stop — stop signal, then SIGKILL after a grace period. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "common/units.h"
#include "common/util.h"
#include "runtime/container.h"

int kiln_cmd_stop(int argc, char **argv)
{
	int64_t timeout = 10;
	const char *signame = NULL;
	struct kiln_err ferr = {0};
	const char *tval = NULL;
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
				tval = argv[++i];
		} else if (!strncmp(a, "--time=", 7) || !strncmp(a, "--timeout=", 10)) {
			tval = strchr(a, '=') + 1;
		} else if (!strncmp(a, "--signal=", 9)) {
			signame = a + 9;
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	/* seconds; -1 waits without a limit, as docker's does */
	if (tval && kiln_units_parse_int(tval, -1, INT32_MAX / 1000, &timeout, &ferr) < 0) {
		kiln_units_flag_error(&ferr, "-t, --time", tval);
		kiln_err_print(&ferr);
		return KILN_EXIT_USAGE;
	}
	if (signame && kiln_signal_from_name(signame) < 0) {
		fprintf(stderr, "kiln: invalid argument \"%s\" for \"-s, --signal\" flag: not a signal name or number\n",
			signame);
		return KILN_EXIT_USAGE;
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
			if (!kiln_container_wait_stopped(kiln_global.root, &st,
							 timeout < 0 ? INT32_MAX : (int)(timeout * 1000))) {
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
