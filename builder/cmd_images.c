/* kiln images [-q] [-a] [--digests] [--no-trunc] [REPOSITORY[:TAG]] — docker's table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln images [OPTIONS] [REPOSITORY[:TAG]]\n\n"
		   "List images\n\n"
		   "Options:\n"
		   "  -a, --all         Show all images (no intermediate images are hidden anyway)\n"
		   "      --digests     Show digests\n"
		   "      --no-trunc    Don't truncate output\n"
		   "      --format string  Pretty-print images using a (simple) Go template\n"
		   "  -q, --quiet       Only show image IDs\n");
}

struct row {
	char *repo, *tag, *digest, *id, *created, *size, *created_at;
};

/* --format: {{.Repository}} {{.Tag}} {{.ID}} {{.Digest}} {{.CreatedSince}}
 * {{.CreatedAt}} {{.Size}}; \t and \n escapes as docker's templates allow. */
static int print_format(const char *fmt, const struct row *r)
{
	struct kiln_buf b = {0};
	for (const char *p = fmt; *p;) {
		if (p[0] == '\\' && p[1] == 't') {
			kiln_buf_putc(&b, '\t');
			p += 2;
			continue;
		}
		if (p[0] == '\\' && p[1] == 'n') {
			kiln_buf_putc(&b, '\n');
			p += 2;
			continue;
		}
		if (strncmp(p, "{{", 2)) {
			kiln_buf_putc(&b, *p++);
			continue;
		}
		const char *end = strstr(p, "}}");
		if (!end) {
			kiln_buf_free(&b);
			fprintf(stderr, "kiln: images: unclosed action in --format\n");
			return -1;
		}
		char *act = kiln_xstrndup(p + 2, (size_t)(end - p - 2));
		char *a = act;
		while (*a == ' ')
			a++;
		for (char *e = a + strlen(a); e > a && e[-1] == ' ';)
			*--e = '\0';
		static const char *const names[] = {".Repository", ".Tag", ".ID", ".Digest", ".CreatedSince",
						    ".CreatedAt", ".Size"};
		const char *vals[] = {r->repo, r->tag, r->id, r->digest, r->created, r->created_at, r->size};
		size_t k;
		for (k = 0; k < 7; k++)
			if (!strcmp(a, names[k]))
				break;
		if (k == 7) {
			fprintf(stderr, "kiln: images: unsupported --format action {{%s}}\n", act);
			free(act);
			kiln_buf_free(&b);
			return -1;
		}
		kiln_buf_puts(&b, vals[k]);
		free(act);
		p = end + 2;
	}
	printf("%s\n", b.data ? b.data : "");
	kiln_buf_free(&b);
	return 0;
}

/* Does the filter (as given by the user) match this reference? */
static bool matches(const char *filter, const char *ref)
{
	if (!filter)
		return true;
	if (!ref)
		return false;
	struct kiln_ref fr, rr;
	struct kiln_err e = {0};
	if (kiln_ref_parse(ref, &rr, &e) < 0)
		return false;
	bool has_tag = strchr(filter + (strrchr(filter, '/') ? strrchr(filter, '/') - filter : 0), ':') != NULL;
	bool ok = false;
	if (kiln_ref_parse(filter, &fr, &e) == 0) {
		ok = !strcmp(fr.domain, rr.domain) && !strcmp(fr.path, rr.path) &&
		     (!has_tag || (fr.tag && rr.tag && !strcmp(fr.tag, rr.tag)));
		kiln_ref_free(&fr);
	}
	kiln_ref_free(&rr);
	return ok;
}

int kiln_cmd_images(int argc, char **argv)
{
	bool quiet = false, digests = false, no_trunc = false;
	const char *filter = NULL, *format = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = true;
		} else if (!strcmp(a, "-a") || !strcmp(a, "--all")) {
		} else if (!strcmp(a, "--format") && i + 1 < argc) {
			format = argv[++i];
		} else if (!strncmp(a, "--format=", 9)) {
			format = a + 9;
		} else if (!strcmp(a, "--digests")) {
			digests = true;
		} else if (!strcmp(a, "--no-trunc")) {
			no_trunc = true;
		} else if (!strcmp(a, "-aq") || !strcmp(a, "-qa")) {
			quiet = true;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: images: unknown option %s (see 'kiln images --help')\n", a);
			return KILN_EXIT_USAGE;
		} else if (!filter) {
			filter = a;
		} else {
			fprintf(stderr, "kiln: images: too many arguments (see 'kiln images --help')\n");
			return KILN_EXIT_USAGE;
		}
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	struct kiln_image_entry *v;
	size_t n;
	if (kiln_image_list(s, &v, &n, &err) < 0) {
		kiln_err_print(&err);
		kiln_store_close(s);
		return KILN_EXIT_FAIL;
	}
	struct row *rows = kiln_xcalloc(n * 4 + 8, sizeof(*rows));
	size_t nr = 0, cap = n * 4 + 8;
	for (size_t i = 0; i < n; i++) {
		char shortid[16], since[64], size[32];
		kiln_short_id(v[i].id, shortid);
		kiln_human_since(v[i].created, since);
		kiln_human_size(v[i].size, size);
		size_t nrefs = v[i].refs.n ? v[i].refs.n : 1;
		for (size_t k = 0; k < nrefs; k++) {
			const char *ref = v[i].refs.n ? v[i].refs.v[k] : NULL;
			if (filter && !matches(filter, ref))
				continue;
			if (nr == cap) {
				cap *= 2;
				rows = kiln_xrealloc(rows, cap * sizeof(*rows));
			}
			struct row *r = &rows[nr++];
			struct kiln_ref rr;
			if (ref && kiln_ref_parse(ref, &rr, &err) == 0) {
				r->repo = kiln_ref_familiar_repo(&rr);
				r->tag = kiln_xstrdup(rr.tag ? rr.tag : "<none>");
				kiln_ref_free(&rr);
			} else {
				r->repo = kiln_xstrdup("<none>");
				r->tag = kiln_xstrdup("<none>");
			}
			r->digest = kiln_xstrdup(v[i].manifest.digest);
			r->id = kiln_xstrdup(no_trunc ? v[i].id : shortid);
			r->created = kiln_xstrdup(since);
			r->size = kiln_xstrdup(size);
			r->created_at = kiln_xstrdup(v[i].created ? v[i].created : "");
		}
	}
	int rc = 0;
	if (format && !quiet) {
		if (!strncmp(format, "table ", 6))
			format += 6;
		for (size_t i = 0; i < nr && rc == 0; i++)
			if (print_format(format, &rows[i]) < 0)
				rc = KILN_EXIT_USAGE;
	} else if (quiet) {
		for (size_t i = 0; i < nr; i++) {
			bool seen = false;
			for (size_t j = 0; j < i; j++)
				if (!strcmp(rows[j].id, rows[i].id))
					seen = true;
			if (!seen)
				printf("%s\n", rows[i].id);
		}
	} else {
		size_t w[6] = {strlen("REPOSITORY"), strlen("TAG"), strlen("DIGEST"), strlen("IMAGE ID"),
			       strlen("CREATED"), strlen("SIZE")};
		for (size_t i = 0; i < nr; i++) {
			const char *c[6] = {rows[i].repo, rows[i].tag, rows[i].digest, rows[i].id, rows[i].created,
					    rows[i].size};
			for (int k = 0; k < 6; k++)
				if (strlen(c[k]) > w[k])
					w[k] = strlen(c[k]);
		}
		if (digests)
			printf("%-*s   %-*s   %-*s   %-*s   %-*s   %s\n", (int)w[0], "REPOSITORY", (int)w[1], "TAG",
			       (int)w[2], "DIGEST", (int)w[3], "IMAGE ID", (int)w[4], "CREATED", "SIZE");
		else
			printf("%-*s   %-*s   %-*s   %-*s   %s\n", (int)w[0], "REPOSITORY", (int)w[1], "TAG", (int)w[3],
			       "IMAGE ID", (int)w[4], "CREATED", "SIZE");
		for (size_t i = 0; i < nr; i++) {
			struct row *r = &rows[i];
			if (digests)
				printf("%-*s   %-*s   %-*s   %-*s   %-*s   %s\n", (int)w[0], r->repo, (int)w[1], r->tag,
				       (int)w[2], r->digest, (int)w[3], r->id, (int)w[4], r->created, r->size);
			else
				printf("%-*s   %-*s   %-*s   %-*s   %s\n", (int)w[0], r->repo, (int)w[1], r->tag,
				       (int)w[3], r->id, (int)w[4], r->created, r->size);
		}
	}
	for (size_t i = 0; i < nr; i++) {
		free(rows[i].repo);
		free(rows[i].tag);
		free(rows[i].digest);
		free(rows[i].id);
		free(rows[i].created);
		free(rows[i].size);
		free(rows[i].created_at);
	}
	free(rows);
	kiln_image_list_free(v, n);
	kiln_store_close(s);
	return rc;
}
