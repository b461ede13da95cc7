/* kiln ps — list containers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder/cli.h"
#include "common/util.h"
#include "runtime/container.h"

static time_t parse_iso(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!s || !s[0] || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
		return 0;
	return timegm(&tm);
}

static void ago(time_t t, char *buf, size_t len)
{
	long d = (long)(time(NULL) - t);
	if (d < 1)
		snprintf(buf, len, "Less than a second");
	else if (d < 60)
		snprintf(buf, len, "%ld second%s", d, d == 1 ? "" : "s");
	else if (d < 3600)
		snprintf(buf, len, "%ld minute%s", d / 60, d / 60 == 1 ? "" : "s");
	else if (d < 86400)
		snprintf(buf, len, "%ld hour%s", d / 3600, d / 3600 == 1 ? "" : "s");
	else
		snprintf(buf, len, "%ld day%s", d / 86400, d / 86400 == 1 ? "" : "s");
}

int kiln_cmd_ps(int argc, char **argv)
{
	bool all = false, quiet = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln ps [-a] [-q]\n\nList containers.\n\n"
			       "  -a, --all     show all containers (default: running only)\n"
			       "  -q, --quiet   only show ids\n");
			return 0;
		}
		if (a[0] == '-' && a[1] && a[1] != '-') {
			for (const char *c = a + 1; *c; c++) {
				if (*c == 'a') all = true;
				else if (*c == 'q') quiet = true;
				else {
					fprintf(stderr, "kiln: unknown shorthand flag: '%c' in %s\n", *c, a);
					return KILN_EXIT_USAGE;
				}
			}
		} else if (!strcmp(a, "--all")) {
			all = true;
		} else if (!strcmp(a, "--quiet")) {
			quiet = true;
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	struct kiln_container_state *v;
	size_t n;
	struct kiln_err err = {0};
	if (kiln_container_list(kiln_global.root, &v, &n, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	/* rows first, then columns as wide as their widest cell (like docker) */
	enum { NCOL = 7 };
	static const char *const head[NCOL] = {"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
					       "NAMES"};
	struct kiln_strv cells = {0};
	size_t rows = 0;
	for (size_t i = 0; i < n; i++) {
		struct kiln_container_state *s = &v[i];
		bool running = kiln_container_running(s);
		if (!all && !running)
			continue;
		if (quiet) {
			printf("%.12s\n", s->id);
			continue;
		}
		char created[64], status[64], t[48], cmd[32];
		ago(parse_iso(s->created), t, sizeof(t));
		snprintf(created, sizeof(created), "%s ago", t);
		if (running) {
			ago(parse_iso(s->started), t, sizeof(t));
			snprintf(status, sizeof(status), "Up %s", t);
		} else if (!strcmp(s->status, "created")) {
			snprintf(status, sizeof(status), "Created");
		} else {
			ago(parse_iso(s->finished[0] ? s->finished : s->created), t, sizeof(t));
			snprintf(status, sizeof(status), "Exited (%d) %s ago", s->exit_code, t);
		}
		if (strlen(s->command) > 20)
			snprintf(cmd, sizeof(cmd), "\"%.19s…\"", s->command);
		else
			snprintf(cmd, sizeof(cmd), "\"%.20s\"", s->command);
		kiln_strv_push_owned(&cells, kiln_xasprintf("%.12s", s->id));
		kiln_strv_push(&cells, s->image);
		kiln_strv_push(&cells, cmd);
		kiln_strv_push(&cells, created);
		kiln_strv_push(&cells, status);
		kiln_strv_push(&cells, running ? s->ports : "");
		kiln_strv_push(&cells, s->name);
		rows++;
	}
	if (!quiet) {
		size_t w[NCOL];
		for (int c = 0; c < NCOL; c++)
			w[c] = strlen(head[c]);
		for (size_t r = 0; r < rows; r++)
			for (int c = 0; c < NCOL; c++) {
				/* count UTF-8 characters, not bytes (the ellipsis) */
				size_t len = 0;
				for (const char *q = cells.v[r * NCOL + c]; *q; q++)
					len += ((unsigned char)*q & 0xc0) != 0x80;
				if (len > w[c])
					w[c] = len;
			}
		for (int c = 0; c < NCOL - 1; c++)
			printf("%-*s   ", (int)w[c], head[c]);
		printf("%s\n", head[NCOL - 1]);
		for (size_t r = 0; r < rows; r++)
			for (int c = 0; c < NCOL; c++) {
				const char *cell = cells.v[r * NCOL + c];
				size_t len = 0;
				for (const char *q = cell; *q; q++)
					len += ((unsigned char)*q & 0xc0) != 0x80;
				if (c == NCOL - 1)
					printf("%s\n", cell);
				else
					printf("%s%*s   ", cell, (int)(w[c] - len), "");
			}
	}
	kiln_strv_free(&cells);
	free(v);
	return 0;
}
