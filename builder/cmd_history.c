/* kiln history [--no-trunc] [-q] IMAGE — docker's table, newest first. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln history [OPTIONS] IMAGE\n\n"
		   "Show the history of an image\n\n"
		   "Options:\n"
		   "      --no-trunc   Don't truncate output\n"
		   "  -q, --quiet      Only show image IDs\n");
}

/* Truncate to n display characters with "…" as docker does. */
static char *trunc_text(const char *s, size_t n)
{
	size_t len = strlen(s);
	if (len <= n)
		return kiln_xstrdup(s);
	size_t cut = n - 1;
	while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
		cut--;
	return kiln_xasprintf("%.*s…", (int)cut, s);
}

int kiln_cmd_history(int argc, char **argv)
{
	bool no_trunc = false, quiet = false;
	const char *name = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--no-trunc")) {
			no_trunc = true;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = true;
		} else if (!strcmp(a, "-H") || !strcmp(a, "--human") || !strcmp(a, "--human=true")) {
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: history: unknown option %s\n", a);
			return KILN_EXIT_USAGE;
		} else if (!name) {
			name = a;
		} else {
			fprintf(stderr, "kiln: history: too many arguments (see 'kiln history --help')\n");
			return KILN_EXIT_USAGE;
		}
	}
	if (!name) {
		fprintf(stderr, "kiln: \"history\" requires exactly 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	struct kiln_image *img = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0 ||
	    kiln_image_load(s, name, &img, &err) < 0) {
		kiln_err_print(&err);
		kiln_store_close(s);
		return KILN_EXIT_FAIL;
	}
	json_t *hist = json_object_get(img->config, "history");
	size_t nh = json_array_size(hist);
	/* layer index of each history entry (-1 for empty_layer) */
	long *layer_of = kiln_xcalloc(nh + 1, sizeof(long));
	size_t li = 0;
	for (size_t i = 0; i < nh; i++) {
		bool empty = json_is_true(json_object_get(json_array_get(hist, i), "empty_layer"));
		layer_of[i] = (!empty && li < img->n_layers) ? (long)li++ : -1;
	}
	char shortid[16];
	kiln_short_id(img->id, shortid);
	const char *idtxt = no_trunc ? img->id : shortid;
	struct kiln_strv cols[5] = {{0}};
	for (size_t k = nh; k-- > 0;) {
		json_t *h = json_array_get(hist, k);
		const char *created = json_string_value(json_object_get(h, "created"));
		const char *by = json_string_value(json_object_get(h, "created_by"));
		const char *comment = json_string_value(json_object_get(h, "comment"));
		char since[64], size[32];
		kiln_human_since(created, since);
		kiln_human_size(layer_of[k] >= 0 ? img->layers[layer_of[k]].size : 0, size);
		kiln_strv_push(&cols[0], k == nh - 1 ? idtxt : "<missing>");
		kiln_strv_push(&cols[1], since);
		kiln_strv_push_owned(&cols[2], no_trunc ? kiln_xstrdup(by ? by : "") : trunc_text(by ? by : "", 45));
		kiln_strv_push(&cols[3], size);
		kiln_strv_push(&cols[4], comment ? comment : "");
	}
	if (quiet) {
		for (size_t i = 0; i < cols[0].n; i++)
			printf("%s\n", cols[0].v[i]);
	} else {
		static const char *const hdr[5] = {"IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"};
		size_t w[5];
		for (int c = 0; c < 5; c++) {
			w[c] = strlen(hdr[c]);
			for (size_t i = 0; i < cols[c].n; i++) {
				/* count UTF-8 characters, not bytes */
				size_t chars = 0;
				for (const char *p = cols[c].v[i]; *p; p++)
					chars += ((unsigned char)*p & 0xC0) != 0x80;
				if (chars > w[c])
					w[c] = chars;
			}
		}
		for (size_t i = 0; i <= cols[0].n; i++) {
			for (int c = 0; c < 5; c++) {
				const char *t = i == 0 ? hdr[c] : cols[c].v[i - 1];
				size_t chars = 0;
				for (const char *p = t; *p; p++)
					chars += ((unsigned char)*p & 0xC0) != 0x80;
				if (c == 4)
					printf("%s\n", t);
				else
					printf("%s%*s", t, (int)(w[c] - chars + 3), "");
			}
		}
	}
	for (int c = 0; c < 5; c++)
		kiln_strv_free(&cols[c]);
	free(layer_of);
	kiln_image_free(img);
	kiln_store_close(s);
	return 0;
}
