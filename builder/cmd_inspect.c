/* kiln inspect [--type image|container] [-f FORMAT] NAME...
 *
 * Images print docker-like JSON (Id, RepoTags, RepoDigests, Created, Config,
 * Architecture, Os, Size, RootFS, History, ...).  A NAME that is not an image
 * goes to the runtime's kiln_container_inspect_cmd when it is linked in.
 * -f understands the simple Go-template actions {{.A.B}}, {{json .A}} and {{.}}. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/store.h"

/* Provided by the runtime (runtime/container.c) when linked in. */
int kiln_container_inspect_cmd(const char *name) __attribute__((weak));

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln inspect [OPTIONS] NAME|ID [NAME|ID...]\n\n"
		   "Return low-level information on images or containers\n\n"
		   "Options:\n"
		   "  -f, --format string   Format the output using a (simple) Go template\n"
		   "      --type string     Return JSON for specified type (image or container)\n");
}

static json_t *image_json(struct kiln_store *s, struct kiln_image *img)
{
	json_t *tags = json_array(), *digests = json_array();
	struct kiln_tag *tv = NULL;
	size_t tn = 0;
	struct kiln_err e = {0};
	if (kiln_store_tag_list(s, &tv, &tn, &e) == 0) {
		for (size_t i = 0; i < tn; i++) {
			if (!tv[i].ref || strcmp(tv[i].desc.digest, img->manifest.digest))
				continue;
			struct kiln_ref r;
			if (kiln_ref_parse(tv[i].ref, &r, &e) < 0)
				continue;
			char *fam = kiln_ref_familiar(&r);
			char *repo = kiln_ref_familiar_repo(&r);
			json_array_append_new(tags, json_string(fam));
			char *rd = kiln_xasprintf("%s@%s", repo, tv[i].desc.digest);
			bool dup = false;
			size_t k;
			json_t *x;
			json_array_foreach(digests, k, x)
				if (!strcmp(json_string_value(x), rd))
					dup = true;
			if (!dup)
				json_array_append_new(digests, json_string(rd));
			free(rd);
			free(fam);
			free(repo);
			kiln_ref_free(&r);
		}
		kiln_store_tags_free(tv, tn);
	}
	json_t *c = img->config;
	json_t *diff_ids = json_array();
	for (size_t i = 0; i < img->n_layers; i++)
		json_array_append_new(diff_ids, json_string(img->layers[i].diff_id));
	json_t *cfg = json_object_get(c, "config");
	const char *comment = "";
	json_t *hist = json_object_get(c, "history");
	if (json_array_size(hist)) {
		const char *cm = json_string_value(json_object_get(json_array_get(hist, json_array_size(hist) - 1), "comment"));
		if (cm)
			comment = cm;
	}
	json_t *o = json_object();
	json_object_set_new(o, "Id", json_string(img->id));
	json_object_set_new(o, "RepoTags", tags);
	json_object_set_new(o, "RepoDigests", digests);
	json_object_set_new(o, "Parent", json_string(""));
	json_object_set_new(o, "Comment", json_string(comment));
	json_object_set(o, "Created", json_object_get(c, "created") ? json_object_get(c, "created") : json_string(""));
	json_object_set_new(o, "DockerVersion", json_string(""));
	json_object_set_new(o, "Author", json_string(json_string_value(json_object_get(c, "author")) ?: ""));
	json_object_set_new(o, "Config", cfg ? json_deep_copy(cfg) : json_object());
	json_object_set_new(o, "Architecture", json_string(json_string_value(json_object_get(c, "architecture")) ?: ""));
	if (json_object_get(c, "variant"))
		json_object_set(o, "Variant", json_object_get(c, "variant"));
	json_object_set_new(o, "Os", json_string(json_string_value(json_object_get(c, "os")) ?: ""));
	json_object_set_new(o, "Size", json_integer(kiln_image_size(img)));
	json_object_set_new(o, "RootFS", json_pack("{s:s, s:o}", "Type", "layers", "Layers", diff_ids));
	json_object_set_new(o, "History", hist ? json_deep_copy(hist) : json_array());
	json_object_set_new(o, "Descriptor", kiln_desc_to_json(&img->manifest));
	json_object_set_new(o, "Metadata", json_pack("{s:s}", "LastTagTime", "0001-01-01T00:00:00Z"));
	return o;
}

/* ---- a small subset of Go templates ---- */

static void go_print(struct kiln_buf *b, const json_t *v, bool top)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		kiln_buf_puts(b, json_string_value(v));
		break;
	case JSON_INTEGER:
		kiln_buf_printf(b, "%lld", (long long)json_integer_value(v));
		break;
	case JSON_REAL:
		kiln_buf_printf(b, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		kiln_buf_puts(b, "true");
		break;
	case JSON_FALSE:
		kiln_buf_puts(b, "false");
		break;
	case JSON_NULL:
		kiln_buf_puts(b, top ? "<no value>" : "<nil>");
		break;
	case JSON_ARRAY: {
		kiln_buf_putc(b, '[');
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x) {
			if (i)
				kiln_buf_putc(b, ' ');
			go_print(b, x, false);
		}
		kiln_buf_putc(b, ']');
		break;
	}
	case JSON_OBJECT: {
		/* map[k:v ...] with sorted keys */
		size_t n = json_object_size(v), k = 0;
		const char **keys = kiln_xcalloc(n + 1, sizeof(char *));
		const char *key;
		json_t *x;
		json_object_foreach((json_t *)v, key, x)
			keys[k++] = key;
		for (size_t i = 1; i < k; i++)
			for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
				const char *t = keys[j];
				keys[j] = keys[j - 1];
				keys[j - 1] = t;
			}
		kiln_buf_puts(b, "map[");
		for (size_t i = 0; i < k; i++) {
			if (i)
				kiln_buf_putc(b, ' ');
			kiln_buf_printf(b, "%s:", keys[i]);
			go_print(b, json_object_get(v, keys[i]), false);
		}
		kiln_buf_putc(b, ']');
		free(keys);
		break;
	}
	}
}

static int render(const char *tmpl, const json_t *root, struct kiln_buf *out, struct kiln_err *err)
{
	const char *p = tmpl;
	while (*p) {
		const char *open = strstr(p, "{{");
		if (!open) {
			kiln_buf_puts(out, p);
			break;
		}
		kiln_buf_append(out, p, (size_t)(open - p));
		const char *close = strstr(open + 2, "}}");
		if (!close)
			return kiln_err_set(err, 0, "template: unclosed action");
		char *act = kiln_xstrndup(open + 2, (size_t)(close - open - 2));
		char *a = act;
		if (*a == '-')
			a++;
		size_t al = strlen(a);
		if (al && a[al - 1] == '-')
			a[--al] = '\0';
		while (*a == ' ')
			a++;
		while (al && (a[strlen(a) - 1] == ' '))
			a[strlen(a) - 1] = '\0';
		bool as_json = false, as_index = false;
		if (!strncmp(a, "json ", 5)) {
			as_json = true;
			a += 5;
			while (*a == ' ')
				a++;
		} else if (!strncmp(a, "index ", 6)) {
			as_index = true;
			a += 6;
			while (*a == ' ')
				a++;
		}
		/* index .Path "key" | index .Path N */
		char *key = NULL;
		if (as_index) {
			char *sp = strchr(a, ' ');
			if (sp) {
				*sp = '\0';
				key = sp + 1;
				while (*key == ' ')
					key++;
				size_t kl = strlen(key);
				if (kl >= 2 && key[0] == '"' && key[kl - 1] == '"') {
					key[kl - 1] = '\0';
					key++;
				}
			}
			if (!key) {
				kiln_err_set(err, 0, "template: index needs a key: \"{{%s}}\"", act);
				free(act);
				return -1;
			}
		}
		if (*a != '.') {
			kiln_err_set(err, 0, "template: unsupported action \"{{%s}}\"", act);
			free(act);
			return -1;
		}
		const json_t *v = root;
		for (char *seg = a + 1; *seg && v;) {
			char *dot = strchr(seg, '.');
			if (dot)
				*dot = '\0';
			v = json_is_object(v) ? json_object_get(v, seg) : NULL;
			seg = dot ? dot + 1 : seg + strlen(seg);
		}
		if (key && v) {
			if (json_is_object(v))
				v = json_object_get(v, key);
			else if (json_is_array(v))
				v = json_array_get(v, (size_t)strtoul(key, NULL, 10));
			else
				v = NULL;
		}
		if (as_json) {
			char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : kiln_xstrdup("null");
			kiln_buf_puts(out, t);
			free(t);
		} else if (!v) {
			kiln_buf_puts(out, "<no value>");
		} else {
			go_print(out, v, true);
		}
		free(act);
		p = close + 2;
	}
	return 0;
}

/* Run the runtime's container inspect with stdout captured; *out is an array
 * (the printed JSON, an object wrapped) or NULL with *raw set when the output
 * is not JSON.  Returns 0 when a container was found. */
static int container_json(const char *name, json_t **out, char **raw)
{
	*out = NULL;
	*raw = NULL;
	fflush(stdout);
	int tf = memfd_create("kiln-inspect", MFD_CLOEXEC);
	int saved = fcntl(1, F_DUPFD_CLOEXEC, 3);
	if (tf < 0 || saved < 0) {
		if (tf >= 0)
			close(tf);
		if (saved >= 0)
			close(saved);
		return kiln_container_inspect_cmd(name) == 0 ? 0 : 1;
	}
	dup2(tf, 1);
	int r = kiln_container_inspect_cmd(name);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	if (r != 0) {
		close(tf);
		return 1;
	}
	lseek(tf, 0, SEEK_SET);
	char *data = NULL;
	size_t len = 0;
	struct kiln_err e = {0};
	if (kiln_read_fd(tf, 64u << 20, &data, &len, &e) < 0) {
		close(tf);
		return 1;
	}
	close(tf);
	json_t *j = json_loadb(data, len, 0, NULL);
	if (!j) {
		*raw = data;
		return 0;
	}
	free(data);
	if (json_is_array(j)) {
		*out = j;
	} else {
		*out = json_array();
		json_array_append_new(*out, j);
	}
	return 0;
}

int kiln_cmd_inspect(int argc, char **argv)
{
	const char *format = NULL, *type = NULL;
	struct kiln_strv names = {0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			kiln_strv_free(&names);
			return 0;
		} else if ((!strcmp(a, "-f") || !strcmp(a, "--format")) && i + 1 < argc) {
			format = argv[++i];
		} else if (!strncmp(a, "--format=", 9)) {
			format = a + 9;
		} else if (!strcmp(a, "--type") && i + 1 < argc) {
			type = argv[++i];
		} else if (!strncmp(a, "--type=", 7)) {
			type = a + 7;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: inspect: unknown option %s\n", a);
			kiln_strv_free(&names);
			return KILN_EXIT_USAGE;
		} else {
			kiln_strv_push(&names, a);
		}
	}
	if (!names.n) {
		fprintf(stderr, "kiln: \"inspect\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	if (type && strcmp(type, "image") && strcmp(type, "container")) {
		fprintf(stderr, "kiln: inspect: \"%s\" is not a valid value for --type\n", type);
		kiln_strv_free(&names);
		return KILN_EXIT_USAGE;
	}
	bool images = !type || !strcmp(type, "image");
	bool containers = !type || !strcmp(type, "container");
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	int rc = 0;
	if (images && kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		kiln_strv_free(&names);
		return KILN_EXIT_FAIL;
	}
	json_t *arr = json_array();
	struct kiln_buf out = {0};
	for (size_t i = 0; i < names.n && rc != KILN_EXIT_USAGE; i++) {
		const char *name = names.v[i];
		json_t *found = NULL;      /* an array of objects for this name */
		kiln_err_clear(&err);
		/* docker's order: a container first, then an image */
		if (containers && kiln_container_inspect_cmd) {
			char *raw = NULL;
			if (container_json(name, &found, &raw) == 0 && !found && raw) {
				/* not JSON: pass it through as it is */
				fputs(raw, stdout);
				free(raw);
				continue;
			}
			free(raw);
		}
		if (!found && images) {
			struct kiln_image *img = NULL;
			if (kiln_image_load(s, name, &img, &err) == 0) {
				found = json_array();
				json_array_append_new(found, image_json(s, img));
				kiln_image_free(img);
			} else if (err.errnum != ENOENT) {
				kiln_err_print(&err);
				rc = KILN_EXIT_FAIL;
				continue;
			}
		}
		if (!found) {
			fprintf(stderr, "kiln: Error: No such %s: %s\n",
				!containers ? "image" : !images ? "container" : "object", name);
			rc = KILN_EXIT_FAIL;
			continue;
		}
		size_t k;
		json_t *o;
		json_array_foreach(found, k, o) {
			if (!format) {
				json_array_append(arr, o);
				continue;
			}
			if (render(format, o, &out, &err) < 0) {
				kiln_err_print(&err);
				rc = KILN_EXIT_USAGE;
				break;
			}
			kiln_buf_putc(&out, '\n');
		}
		json_decref(found);
	}
	if (format) {
		if (out.len)
			fwrite(out.data, 1, out.len, stdout);
	} else {
		char *t = json_dumps(arr, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
		printf("%s\n", t);
		free(t);
	}
	kiln_buf_free(&out);
	json_decref(arr);
	kiln_store_close(s);
	kiln_strv_free(&names);
	return rc;
}
