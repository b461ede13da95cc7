/* kiln import FILE|- [REPOSITORY[:TAG]] [-c 'CMD ["sh"]']... [-m MESSAGE]
 *
 * A rootfs tarball (plain, gzip, xz, bzip2 or zstd) becomes a one-layer image.
 * The tarball is extracted safely into the store's staging area and written
 * again by the layer writer, so the same tarball always gives the same layer
 * (sorted entries, numeric ids, SOURCE_DATE_EPOCH clamps mtimes). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/layer.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln import [OPTIONS] file|- [REPOSITORY[:TAG]]\n\n"
		   "Import the contents from a tarball to create a filesystem image\n\n"
		   "Options:\n"
		   "  -c, --change list      Apply Dockerfile instruction to the created image\n"
		   "  -m, --message string   Set commit message for imported image\n"
		   "      --compression NAME gzip (default), zstd or none\n");
}

/* A JSON array of strings → strv; NULL when s is not one. */
static char **json_strv(const char *s)
{
	json_t *j = json_loads(s, 0, NULL);
	if (!json_is_array(j)) {
		json_decref(j);
		return NULL;
	}
	char **v = kiln_xcalloc(json_array_size(j) + 1, sizeof(char *));
	size_t i;
	json_t *x;
	json_array_foreach(j, i, x) {
		if (!json_is_string(x)) {
			kiln_strv_free_raw(v);
			json_decref(j);
			return NULL;
		}
		v[i] = kiln_xstrdup(json_string_value(x));
	}
	json_decref(j);
	return v;
}

/* Split "a b 'c d'" into words: whitespace separated, simple quotes. */
static char **split_words(const char *s)
{
	struct kiln_strv v = {0};
	struct kiln_buf b = {0};
	bool in = false;
	char q = 0;
	for (const char *p = s;; p++) {
		char c = *p;
		if (!c || (!q && (c == ' ' || c == '\t'))) {
			if (in)
				kiln_strv_push_owned(&v, kiln_buf_steal(&b));
			in = false;
			if (!c)
				break;
			continue;
		}
		in = true;
		if (q) {
			if (c == q)
				q = 0;
			else
				kiln_buf_putc(&b, c);
		} else if (c == '"' || c == '\'') {
			q = c;
		} else if (c == '\\' && p[1]) {
			kiln_buf_putc(&b, *++p);
		} else {
			kiln_buf_putc(&b, c);
		}
	}
	kiln_buf_free(&b);
	return v.v ? v.v : kiln_xcalloc(1, sizeof(char *));
}

static char **cmd_form(const char *rest)
{
	char **v = json_strv(rest);
	if (v)
		return v;
	v = kiln_xcalloc(4, sizeof(char *));
	v[0] = kiln_xstrdup("/bin/sh");
	v[1] = kiln_xstrdup("-c");
	v[2] = kiln_xstrdup(rest);
	return v;
}

/* Apply one Dockerfile instruction (the ones docker import --change knows). */
static int apply_change(struct kiln_image *img, const char *change, struct kiln_err *err)
{
	while (*change == ' ' || *change == '\t')
		change++;
	size_t kl = strcspn(change, " \t");
	char *kw = kiln_xstrndup(change, kl);
	for (char *p = kw; *p; p++)
		*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	const char *rest = change + kl;
	while (*rest == ' ' || *rest == '\t')
		rest++;
	int rc = 0;
	if (!strcmp(kw, "CMD") || !strcmp(kw, "ENTRYPOINT")) {
		char **v = cmd_form(rest);
		kiln_image_set_strv(img, !strcmp(kw, "CMD") ? "Cmd" : "Entrypoint", v);
		kiln_strv_free_raw(v);
	} else if (!strcmp(kw, "USER") || !strcmp(kw, "WORKDIR") || !strcmp(kw, "STOPSIGNAL")) {
		if (!*rest)
			rc = kiln_err_set(err, 0, "%s requires an argument", kw);
		else
			kiln_image_set_string(img, !strcmp(kw, "USER") ? "User" :
						   !strcmp(kw, "WORKDIR") ? "WorkingDir" : "StopSignal", rest);
	} else if (!strcmp(kw, "ENV") || !strcmp(kw, "LABEL")) {
		bool env = !strcmp(kw, "ENV");
		char **w = split_words(rest);
		if (w[0] && !strchr(w[0], '=')) {
			/* legacy form: ENV NAME value with spaces */
			const char *val = rest + strcspn(rest, " \t");
			while (*val == ' ' || *val == '\t')
				val++;
			if (env)
				kiln_image_env_set(img, w[0], val);
			else
				kiln_image_label_set(img, w[0], val);
		} else {
			for (size_t i = 0; w[i]; i++) {
				char *eq = strchr(w[i], '=');
				if (!eq) {
					rc = kiln_err_set(err, 0, "%s: \"%s\" is not NAME=VALUE", kw, w[i]);
					break;
				}
				*eq = '\0';
				if (env)
					kiln_image_env_set(img, w[i], eq + 1);
				else
					kiln_image_label_set(img, w[i], eq + 1);
			}
		}
		kiln_strv_free_raw(w);
	} else if (!strcmp(kw, "EXPOSE")) {
		char **w = split_words(rest);
		for (size_t i = 0; w[i]; i++)
			kiln_image_expose(img, w[i]);
		kiln_strv_free_raw(w);
	} else if (!strcmp(kw, "VOLUME")) {
		char **w = json_strv(rest);
		if (!w)
			w = split_words(rest);
		for (size_t i = 0; w[i]; i++)
			kiln_image_volume_add(img, w[i]);
		kiln_strv_free_raw(w);
	} else if (!strcmp(kw, "ONBUILD")) {
		json_t *c = kiln_image_cfg(img);
		json_t *a = json_object_get(c, "OnBuild");
		if (!json_is_array(a)) {
			a = json_array();
			json_object_set_new(c, "OnBuild", a);
		}
		json_array_append_new(a, json_string(rest));
	} else {
		rc = kiln_err_set(err, 0, "%s is not a valid change command", kw);
	}
	free(kw);
	return rc;
}

static struct kiln_changes *walk_changes;
static size_t walk_prefix;

static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (ftw->level == 0)
		return 0;
	kiln_changes_add(walk_changes, path + walk_prefix, KILN_CHANGE_ADD);
	return 0;
}

int kiln_cmd_import(int argc, char **argv)
{
	struct kiln_strv changes = {0};
	const char *message = NULL, *src = NULL, *name = NULL;
	enum kiln_compression comp = KILN_COMPRESS_GZIP;
	struct kiln_err err = {0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if ((!strcmp(a, "-c") || !strcmp(a, "--change") || !strcmp(a, "-m") || !strcmp(a, "--message") ||
			    !strcmp(a, "--compression")) && i + 1 < argc) {
			if (a[1] == 'c' || !strcmp(a, "--change"))
				kiln_strv_push(&changes, argv[++i]);
			else if (!strcmp(a, "--compression")) {
				if (kiln_compression_parse(argv[++i], &comp, &err) < 0) {
					kiln_err_print(&err);
					kiln_strv_free(&changes);
					return KILN_EXIT_USAGE;
				}
			} else
				message = argv[++i];
		} else if (!strncmp(a, "--change=", 9)) {
			kiln_strv_push(&changes, a + 9);
		} else if (!strncmp(a, "--message=", 10)) {
			message = a + 10;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: import: unknown option %s (see 'kiln import --help')\n", a);
			kiln_strv_free(&changes);
			return KILN_EXIT_USAGE;
		} else if (!src) {
			src = a;
		} else if (!name) {
			name = a;
		} else {
			fprintf(stderr, "kiln: import: too many arguments (see 'kiln import --help')\n");
			kiln_strv_free(&changes);
			return KILN_EXIT_USAGE;
		}
	}
	if (!src) {
		fprintf(stderr, "kiln: \"import\" requires at least 1 argument\n");
		kiln_strv_free(&changes);
		return KILN_EXIT_USAGE;
	}
	char *norm = NULL;
	if (name && !(norm = kiln_ref_normalize(name, &err))) {
		kiln_err_print(&err);
		kiln_strv_free(&changes);
		return KILN_EXIT_USAGE;
	}
	free(norm);

	int rc = KILN_EXIT_FAIL;
	struct kiln_store *s = NULL;
	struct kiln_image *img = NULL;
	char *stage = NULL;
	int in = -1, stagefd = -1;
	struct kiln_blob_writer *w = NULL;
	struct kiln_changes ch = {0};

	img = kiln_image_new_scratch();
	for (size_t i = 0; i < changes.n; i++)
		if (apply_change(img, changes.v[i], &err) < 0) {
			kiln_err_wrap(&err, "--change");
			kiln_err_print(&err);
			rc = KILN_EXIT_USAGE;
			goto out;
		}
	if (!strcmp(src, "-")) {
		in = 0;
	} else {
		in = open(src, O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			kiln_err_set(&err, errno, "open %s", src);
			goto fail;
		}
	}
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0)
		goto fail;
	stage = kiln_xasprintf("%s/tmp/import-%d-XXXXXX", kiln_store_root_path(s), (int)getpid());
	if (!mkdtemp(stage)) {
		kiln_err_set(&err, errno, "create staging directory");
		free(stage);
		stage = NULL;
		goto fail;
	}
	stagefd = open(stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (stagefd < 0) {
		kiln_err_set(&err, errno, "open %s", stage);
		goto fail;
	}
	struct kiln_layer_apply_opts aopts = {
		.whiteouts = false, .allow_devices = geteuid() == 0, .keep_owner = true,
	};
	if (kiln_layer_apply(stagefd, in, &aopts, NULL, &err) < 0) {
		kiln_err_wrap(&err, "import %s", src);
		goto fail;
	}
	walk_changes = &ch;
	walk_prefix = strlen(stage) + 1;
	if (nftw(stage, walk_cb, 64, FTW_PHYS) < 0) {
		kiln_err_set(&err, errno, "walk %s", stage);
		goto fail;
	}
	if (kiln_store_blob_begin(s, &w, &err) < 0)
		goto fail;
	int64_t sde = -1;
	const char *e = getenv("SOURCE_DATE_EPOCH");
	if (e && *e)
		sde = strtoll(e, NULL, 10);
	struct kiln_layer_write_opts wopts = {.compression = comp, .source_date_epoch = sde};
	struct kiln_layer_info info;
	if (kiln_layer_write(stagefd, &ch, &wopts, kiln_blob_writer_fd(w), &info, &err) < 0) {
		kiln_err_wrap(&err, "write the layer");
		goto fail;
	}
	struct kiln_blob_writer *ww = w;
	w = NULL;
	if (kiln_store_blob_commit(ww, info.digest, NULL, NULL, &err) < 0)
		goto fail;
	if (kiln_image_add_layer(img, &info, "", NULL, &err) < 0)
		goto fail;
	/* docker import: empty created_by, the message as comment */
	json_t *h = json_array_get(json_object_get(img->config, "history"), 0);
	json_object_del(h, "created_by");
	/* the base name only: a temporary directory must not change the id */
	const char *base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
	char *comment = message ? kiln_xstrdup(message) : kiln_xasprintf("Imported from %s", base);
	json_object_set_new(h, "comment", json_string(comment));
	free(comment);
	const char *tags[2] = {name, NULL};
	char id[KILN_DIGEST_MAX];
	if (kiln_image_commit(s, img, name ? tags : NULL, id, &err) < 0)
		goto fail;
	printf("%s\n", id);
	rc = 0;
	goto out;
fail:
	kiln_err_print(&err);
out:
	kiln_store_blob_abort(w);
	kiln_changes_free(&ch);
	if (stagefd >= 0)
		close(stagefd);
	if (stage) {
		struct kiln_err e2 = {0};
		kiln_rm_rf(stage, &e2);
		free(stage);
	}
	if (in > 0)
		close(in);
	kiln_image_free(img);
	kiln_store_close(s);
	kiln_strv_free(&changes);
	return rc;
}
