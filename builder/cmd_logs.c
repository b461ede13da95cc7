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

static void emit(const char *line, size_t len, bool timestamps)
{
	json_t *o = json_loadb(line, len, 0, NULL);
	if (!o)
		return;
	const char *log = json_string_value(json_object_get(o, "log"));
	const char *stream = json_string_value(json_object_get(o, "stream"));
	const char *t = json_string_value(json_object_get(o, "time"));
	size_t loglen = json_string_length(json_object_get(o, "log"));
	FILE *f = stream && !strcmp(stream, "stderr") ? stderr : stdout;
	if (log) {
		if (timestamps && t)
			fprintf(f, "%s ", t);
		fwrite(log, 1, loglen, f);
		fflush(f);
	}
	json_decref(o);
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
	char *path = kiln_xasprintf("%s/containers/%s/log", kiln_global.root, st.id);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0) {
		if (errno == ENOENT && !follow)
			return 0;
	}
	struct kiln_buf pend = {0};
	/* first pass: everything there is, keeping only the last `tail` lines */
	char *text = NULL;
	size_t len = 0;
	if (fd >= 0 && kiln_read_fd(fd, 0, &text, &len, &err) < 0) {
		kiln_err_print(&err);
		close(fd);
		return KILN_EXIT_FAIL;
	}
	size_t start = 0;
	if (tail >= 0 && text) {
		long lines = 0;
		size_t i = len;
		while (i > 0) {
			if (text[i - 1] == '\n' && i != len) {
				if (++lines == tail)
					break;
			}
			i--;
		}
		start = tail == 0 ? len : i;
	}
	size_t consumed = start;
	for (size_t i = start; text && i < len; i++)
		if (text[i] == '\n') {
			emit(text + consumed, i - consumed, timestamps);
			consumed = i + 1;
		}
	if (text && consumed < len)
		kiln_buf_append(&pend, text + consumed, len - consumed);
	free(text);
	while (follow) {
		struct kiln_container_state now;
		bool running = kiln_container_load(kiln_global.root, st.id, &now, NULL) == 0 &&
			       (kiln_container_running(&now) || !strcmp(now.status, "created"));
		if (fd < 0) {
			path = kiln_xasprintf("%s/containers/%s/log", kiln_global.root, st.id);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			free(path);
		}
		bool got = false;
		if (fd >= 0) {
			char buf[8192];
			ssize_t r;
			while ((r = read(fd, buf, sizeof(buf))) > 0) {
				got = true;
				kiln_buf_append(&pend, buf, (size_t)r);
			}
			char *s = pend.data, *nl;
			while (s && (nl = memchr(s, '\n', pend.len - (size_t)(s - pend.data)))) {
				emit(s, (size_t)(nl - s), timestamps);
				s = nl + 1;
			}
			if (s) {
				size_t rest = pend.len - (size_t)(s - pend.data);
				memmove(pend.data, s, rest);
				pend.len = rest;
			}
		}
		if (!running && !got)
			break;
		if (!got)
			usleep(100000);
	}
	kiln_buf_free(&pend);
	if (fd >= 0)
		close(fd);
	return 0;
}
