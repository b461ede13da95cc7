/* kiln logs — print a container's log (json lines written by its supervisor). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "common/units.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/logrelay.h"

/* Records go out as they come: the pieces of a long line are printed one
 * after the other, with one timestamp, which joins the line back. */
struct out {
	bool timestamps;
	bool mid[2];        /* stdout / stderr: inside a line split in pieces */
};

static void emit(void *arg, const struct kiln_log_rec *r)
{
	struct out *o = arg;
	int s = !strcmp(r->stream, "stderr");
	FILE *f = s ? stderr : stdout;
	if (o->timestamps && !o->mid[s] && r->time[0])
		fprintf(f, "%s ", r->time);
	fwrite(r->log, 1, r->len, f);
	o->mid[s] = r->partial;
	if (!r->partial)
		fflush(f);
}

int kiln_cmd_logs(int argc, char **argv)
{
	bool follow = false, timestamps = false;
	int64_t tail = -1;
	const char *ref = NULL;
	const char *tval = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln logs [-f] [-t] [--tail N] CONTAINER\n\nFetch the logs of a container.\n\n"
			       "  -f, --follow       follow the log output\n"
			       "  -t, --timestamps   show timestamps\n"
			       "  -n, --tail N       number of lines from the end (default all)\n");
			return 0;
		}
		if (!strcmp(a, "-f") || !strcmp(a, "--follow")) follow = true;
		else if (!strcmp(a, "-t") || !strcmp(a, "--timestamps")) timestamps = true;
		else if (!strcmp(a, "-ft") || !strcmp(a, "-tf")) follow = timestamps = true;
		else if (!strcmp(a, "--tail") || !strcmp(a, "-n")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: flag needs an argument: %s\n", a);
				return KILN_EXIT_USAGE;
			}
			tval = argv[++i];
		} else if (!strncmp(a, "--tail=", 7)) {
			tval = a + 7;
		} else if (a[0] == '-') {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		} else if (!ref) {
			ref = a;
		} else {
			fprintf(stderr, "kiln: \"kiln logs\" requires exactly 1 argument\n");
			return KILN_EXIT_USAGE;
		}
	}
	struct kiln_err err = {0};
	/* a number of lines, or "all" */
	if (tval && strcmp(tval, "all") && kiln_units_parse_int(tval, 0, INT64_MAX, &tail, &err) < 0) {
		kiln_units_flag_error(&err, "-n, --tail", tval);
		kiln_err_print(&err);
		return KILN_EXIT_USAGE;
	}
	if (!ref) {
		fprintf(stderr, "kiln: \"kiln logs\" requires exactly 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_container_state st;
	if (kiln_container_find(kiln_global.root, ref, &st, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	char *dir = kiln_container_dir(kiln_global.root, st.id);
	struct kiln_logcursor c;
	int r = kiln_logcursor_open(&c, dir, tail, &err);
	free(dir);
	if (r < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	struct out o = {.timestamps = timestamps};
	kiln_logcursor_read(&c, emit, &o);
	while (follow) {
		struct kiln_container_state now;
		bool running = kiln_container_load(kiln_global.root, st.id, &now, NULL) == 0 &&
			       (kiln_container_running(&now) || !strcmp(now.status, "created"));
		/* read once more after the container ended: its last lines */
		bool got = kiln_logcursor_read(&c, emit, &o) > 0;
		if (!running && !got)
			break;
		if (!got)
			usleep(100000);
	}
	fflush(stdout);
	fflush(stderr);
	kiln_logcursor_close(&c);
	return 0;
}
