/* kiln system df [-v] [--format T], kiln system prune [-a] [-f]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder/cli.h"
#include "builder/reclaim.h"
#include "layers/image.h"
#include "common/units.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln system COMMAND\n\n"
		   "Manage kiln\n\n"
		   "Commands:\n"
		   "  df          Show kiln disk usage\n"
		   "  prune       Remove unused data\n");
}

/* Docker's df sizes: decimal units, 4 significant digits ("16.43MB", "0B"). */
static void size4(int64_t bytes, char buf[32])
{
	kiln_units_format_decimal(bytes, 4, buf);
}

/* ---- a small tab writer: cells padded to the widest + 3, at least 10 ---- */

struct table {
	size_t ncol;
	struct kiln_strv cells;   /* row-major */
};

static void table_row(struct table *t, const char *const *cells)
{
	for (size_t i = 0; i < t->ncol; i++)
		kiln_strv_push(&t->cells, cells[i] ? cells[i] : "");
}

/* Characters, not bytes (UTF-8 continuation bytes do not count). */
static size_t width(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

static void table_print(struct table *t)
{
	size_t *w = kiln_xcalloc(t->ncol, sizeof(*w));
	for (size_t i = 0; i < t->cells.n; i++) {
		size_t l = width(t->cells.v[i]);
		if (l > w[i % t->ncol])
			w[i % t->ncol] = l;
	}
	for (size_t i = 0; i < t->cells.n; i++) {
		size_t c = i % t->ncol;
		if (c + 1 == t->ncol) {
			printf("%s\n", t->cells.v[i]);
			continue;
		}
		size_t pad = w[c] + 3 < 10 ? 10 : w[c] + 3;
		printf("%s%*s", t->cells.v[i], (int)(pad - width(t->cells.v[i])), "");
	}
	free(w);
	kiln_strv_free(&t->cells);
}

static void reclaimable(const struct kiln_usage_row *r, bool percent, char buf[64])
{
	char sz[32];
	size4(r->reclaimable, sz);
	if (percent && r->size > 0)
		snprintf(buf, 64, "%s (%d%%)", sz, (int)(r->reclaimable * 100 / r->size));
	else
		snprintf(buf, 64, "%s", sz);
}

/* --format: {{.Type}} {{.TotalCount}} {{.Active}} {{.Size}} {{.Reclaimable}},
 * "table " prefix for a header, \t and \n escapes. */
static int format_row(const char *fmt, const struct kiln_usage_row *r, bool header, char **out)
{
	struct kiln_buf b = {0};
	for (const char *p = fmt; *p;) {
		if (p[0] == '\\' && (p[1] == 't' || p[1] == 'n')) {
			kiln_buf_putc(&b, p[1] == 't' ? '\t' : '\n');
			p += 2;
			continue;
		}
		if (strncmp(p, "{{", 2)) {
			kiln_buf_putc(&b, *p++);
			continue;
		}
		const char *end = strstr(p, "}}");
		if (!end) {
			fprintf(stderr, "kiln: system df: unclosed action in --format\n");
			kiln_buf_free(&b);
			return -1;
		}
		char act[64] = "";
		const char *a = p + 2;
		while (*a == ' ')
			a++;
		size_t n = (size_t)(end - a);
		while (n && a[n - 1] == ' ')
			n--;
		snprintf(act, sizeof(act), "%.*s", (int)n, a);
		char val[64];
		if (!strcmp(act, ".Type"))
			snprintf(val, sizeof(val), "%s", header ? "TYPE" : r->type);
		else if (!strcmp(act, ".TotalCount"))
			header ? snprintf(val, sizeof(val), "TOTAL") : snprintf(val, sizeof(val), "%zu", r->total);
		else if (!strcmp(act, ".Active"))
			header ? snprintf(val, sizeof(val), "ACTIVE") : snprintf(val, sizeof(val), "%zu", r->active);
		else if (!strcmp(act, ".Size")) {
			if (header)
				snprintf(val, sizeof(val), "SIZE");
			else
				size4(r->size, val);
		} else if (!strcmp(act, ".Reclaimable")) {
			if (header)
				snprintf(val, sizeof(val), "RECLAIMABLE");
			else
				reclaimable(r, strcmp(r->type, "Build Cache") != 0, val);
		} else {
			fprintf(stderr, "kiln: system df: unsupported --format action {{%s}}\n", act);
			kiln_buf_free(&b);
			return -1;
		}
		kiln_buf_puts(&b, val);
		p = end + 2;
	}
	*out = kiln_buf_steal(&b);
	return 0;
}

/* A "table" format: the header and the rows aligned like the default table
 * (cells split at tabs); otherwise each row's text as it is. */
static int print_format(const char *fmt, bool table, const struct kiln_usage_row *rows, size_t n)
{
	struct kiln_strv lines = {0};
	size_t ncol = 1;
	for (size_t i = table ? 0 : 1; i <= n; i++) {
		char *line = NULL;
		if (format_row(fmt, &rows[i ? i - 1 : 0], i == 0, &line) < 0) {
			kiln_strv_free(&lines);
			return -1;
		}
		size_t c = 1;
		for (const char *p = line; *p; p++)
			c += *p == '\t';
		if (c > ncol)
			ncol = c;
		kiln_strv_push_owned(&lines, line);
	}
	if (!table) {
		for (size_t i = 0; i < lines.n; i++)
			printf("%s\n", lines.v[i]);
		kiln_strv_free(&lines);
		return 0;
	}
	struct table t = {.ncol = ncol};
	for (size_t i = 0; i < lines.n; i++) {
		char **cells = kiln_xcalloc(ncol + 1, sizeof(char *));
		char *p = lines.v[i];
		size_t k = 0;
		for (char *tab; k + 1 < ncol && (tab = strchr(p, '\t')); p = tab + 1)
			cells[k++] = kiln_xstrndup(p, (size_t)(tab - p));
		cells[k++] = kiln_xstrdup(p);
		table_row(&t, (const char *const *)cells);
		kiln_strv_free_raw(cells);
	}
	table_print(&t);
	kiln_strv_free(&lines);
	return 0;
}

static void verbose(const struct kiln_usage *df)
{
	struct table t = {.ncol = 8};
	char sz[32], sh[32], un[32], since[64], n[24], id[16];
	printf("Images space usage:\n\n");
	table_row(&t, (const char *const[]){"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE",
					     "UNIQUE SIZE", "CONTAINERS"});
	for (size_t i = 0; i < df->n_images; i++) {
		const struct kiln_usage_image *m = &df->images[i];
		kiln_short_id(m->id, id);
		kiln_human_since(m->created, since);
		size4(m->size, sz);
		size4(m->shared, sh);
		size4(m->size - m->shared, un);
		snprintf(n, sizeof(n), "%zu", m->containers);
		table_row(&t, (const char *const[]){m->repo, m->tag, id, since, sz, sh, un, n});
	}
	table_print(&t);

	printf("\nContainers space usage:\n\n");
	t.ncol = 8;
	table_row(&t, (const char *const[]){"CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED",
					     "STATUS", "NAMES"});
	for (size_t i = 0; i < df->n_containers; i++) {
		const struct kiln_usage_container *c = &df->containers[i];
		char cmd[48], status[48];
		size_t cl = strlen(c->command);
		snprintf(cmd, sizeof(cmd), "\"%.19s%s\"", c->command, cl > 19 ? "…" : "");
		if (c->running)
			snprintf(status, sizeof(status), "Up");
		else if (!strcmp(c->status, "exited"))
			snprintf(status, sizeof(status), "Exited (%d)", c->exit_code);
		else
			snprintf(status, sizeof(status), "%s", c->status[0] ? c->status : "Created");
		kiln_human_since(c->created, since);
		size4(c->size, sz);
		char cid[16];
		snprintf(cid, sizeof(cid), "%.12s", c->id);
		table_row(&t, (const char *const[]){cid, c->image, cmd, "0", sz, since, status, c->name});
	}
	table_print(&t);

	printf("\nLocal Volumes space usage:\n\n");
	t.ncol = 3;
	table_row(&t, (const char *const[]){"VOLUME NAME", "LINKS", "SIZE"});
	table_print(&t);

	size4(df->rows[3].size, sz);
	printf("\nBuild cache usage: %s\n\n", sz);
	t.ncol = 7;
	table_row(&t, (const char *const[]){"CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"});
	for (size_t i = 0; i < df->n_cache; i++) {
		const struct kiln_usage_cache *c = &df->cache[i];
		char created[40] = "";
		time_t tt = (time_t)c->created;
		struct tm tm;
		if (c->created > 0 && gmtime_r(&tt, &tm))
			strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
		kiln_human_since(created[0] ? created : NULL, since);
		size4(c->size, sz);
		char cid[16];
		snprintf(cid, sizeof(cid), "%.12s", c->key + 7);
		table_row(&t, (const char *const[]){cid, "regular", sz, since, "N/A", "N/A", c->shared ? "true" : "false"});
	}
	table_print(&t);
}

static int df_cmd(int argc, char **argv)
{
	bool verb = false;
	const char *format = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln system df [OPTIONS]\n\n"
			       "Show kiln disk usage\n\n"
			       "Options:\n"
			       "      --format string   Format the rows with a Go template\n"
			       "                        ({{.Type}} {{.TotalCount}} {{.Active}} {{.Size}} {{.Reclaimable}})\n"
			       "  -v, --verbose         Show detailed information on space usage\n");
			return 0;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			verb = true;
		} else if (!strcmp(a, "--format")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: system df: flag needs an argument: --format\n");
				return KILN_EXIT_USAGE;
			}
			format = argv[++i];
		} else if (!strncmp(a, "--format=", 9)) {
			format = a + 9;
		} else {
			fprintf(stderr, "kiln: system df: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (verb && format) {
		fprintf(stderr, "kiln: system df: --format and --verbose cannot be combined\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	struct kiln_usage df;
	if (kiln_reclaim_usage(kiln_global.root, &df, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	int rc = 0;
	if (verb) {
		verbose(&df);
	} else if (format) {
		bool table = !strncmp(format, "table", 5) && (format[5] == ' ' || !format[5]);
		const char *f = table ? format + 5 + (format[5] == ' ') : format;
		if (table && !*f)
			f = "{{.Type}}\\t{{.TotalCount}}\\t{{.Active}}\\t{{.Size}}\\t{{.Reclaimable}}";
		if (print_format(f, table, df.rows, 4) < 0)
			rc = KILN_EXIT_USAGE;
	} else {
		struct table t = {.ncol = 5};
		table_row(&t, (const char *const[]){"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"});
		for (size_t i = 0; i < 4; i++) {
			const struct kiln_usage_row *r = &df.rows[i];
			char tot[24], act[24], sz[32], rec[64];
			snprintf(tot, sizeof(tot), "%zu", r->total);
			snprintf(act, sizeof(act), "%zu", r->active);
			size4(r->size, sz);
			reclaimable(r, i < 3, rec);
			table_row(&t, (const char *const[]){r->type, tot, act, sz, rec});
		}
		table_print(&t);
	}
	kiln_reclaim_usage_free(&df);
	return rc;
}

static int prune_cmd(int argc, char **argv)
{
	bool all = false, force = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln system prune [OPTIONS]\n\n"
			       "Remove unused data\n\n"
			       "Options:\n"
			       "  -a, --all     Remove all unused images not just dangling ones, and all build cache\n"
			       "  -f, --force   Do not prompt for confirmation\n");
			return 0;
		} else if (!strcmp(a, "-a") || !strcmp(a, "--all")) {
			all = true;
		} else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
			force = true;
		} else if (!strcmp(a, "-af") || !strcmp(a, "-fa")) {
			all = force = true;
		} else {
			fprintf(stderr, "kiln: system prune: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (!force) {
		printf("WARNING! This will remove:\n"
		       "  - all stopped containers\n"
		       "  - %s\n"
		       "  - %s\n\n"
		       "Are you sure you want to continue? [y/N] ",
		       all ? "all images without at least one container associated to them" : "all dangling images",
		       all ? "all build cache" : "all dangling build cache");
		if (!kiln_cli_confirm())
			return 0;
	}
	struct kiln_err err = {0};
	int64_t total = 0, bytes = 0;
	bool printed = false;
	if (kiln_reclaim_containers(kiln_global.root, &printed, &bytes, &err) < 0)
		goto fail;
	total += bytes;
	if (printed)
		printf("\n");
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0)
		goto fail;
	printed = false;
	if (kiln_reclaim_images(s, all, &printed, &err) < 0) {
		kiln_store_close(s);
		goto fail;
	}
	if (printed)
		printf("\n");
	size_t records = 0;
	if (kiln_reclaim_cache(kiln_global.root, all, &records, &bytes, &err) < 0) {
		kiln_store_close(s);
		goto fail;
	}
	total += bytes;
	if (records)
		printf("Deleted build cache records: %zu\n\n", records);
	struct kiln_reclaim_stats st;
	int rc = kiln_reclaim_gc(s, true, &st, &err);
	kiln_store_close(s);
	if (rc < 0)
		goto fail;
	total += kiln_reclaim_bytes(&st);
	char sz[32];
	size4(total, sz);
	printf("Total reclaimed space: %s\n", sz);
	return 0;
fail:
	kiln_err_print(&err);
	return KILN_EXIT_FAIL;
}

int kiln_cmd_system(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? KILN_EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "df"))
		return df_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "prune"))
		return prune_cmd(argc - 1, argv + 1);
	fprintf(stderr, "kiln: 'system %s' is not a kiln command (see 'kiln system --help')\n", argv[1]);
	return KILN_EXIT_USAGE;
}
