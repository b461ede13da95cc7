/* kiln parse — print the parse tree of a Dockerfile (BuildKit's dump format),
 * or with --json the build plan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "builder/cli.h"
#include "common/err.h"
#include "common/util.h"
#include "parser/expand.h"
#include "parser/parser.h"
#include "parser/plan.h"

/* The plan is another engineer's module: link it when present, otherwise
 * fall back to the parse tree as JSON. */
#pragma weak kiln_plan_build
#pragma weak kiln_plan_free
#pragma weak kiln_plan_to_json

#define MAX_DOCKERFILE (64u << 20)

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln parse [OPTIONS] [FILE]\n\n"
		"Parse a Dockerfile and print its parse tree, one (instruction ...) line per\n"
		"instruction, in BuildKit's dump format.\n\n"
		"Options:\n"
		"  -f, --file FILE        the Dockerfile (default ./Dockerfile, '-' reads stdin,\n"
		"                         a directory means its Dockerfile)\n"
		"      --check            also validate every instruction (arguments, flags, durations)\n"
		"                         and the stages, as a build would\n"
		"      --json             print the build plan as JSON (implies --check)\n"
		"      --target STAGE     the stage to plan for (with --json/--check)\n"
		"      --build-arg K=V    a build argument for the plan (repeatable)\n"
		"  -h, --help             show this help\n");
}

static json_t *strv_json(const struct kiln_strv *v)
{
	json_t *a = json_array();
	for (size_t i = 0; i < v->n; i++)
		json_array_append_new(a, json_string(v->v[i]));
	return a;
}

static json_t *node_json(const struct kiln_df_node *n)
{
	json_t *o = json_object();
	json_object_set_new(o, "instruction", json_string(n->instr));
	json_object_set_new(o, "start_line", json_integer(n->start_line));
	json_object_set_new(o, "end_line", json_integer(n->end_line));
	if (n->flags.n)
		json_object_set_new(o, "flags", strv_json(&n->flags));
	json_object_set_new(o, "args", strv_json(&n->args));
	json_object_set_new(o, "json", json_boolean(n->json));
	if (n->n_heredocs) {
		json_t *h = json_array();
		for (size_t i = 0; i < n->n_heredocs; i++) {
			const struct kiln_df_heredoc *d = &n->heredocs[i];
			json_array_append_new(h, json_pack("{s:s, s:s, s:b, s:b, s:i}", "name", d->name, "content",
							   d->content ? d->content : "", "expand", d->expand, "chomp",
							   d->chomp, "fd", d->fd));
		}
		json_object_set_new(o, "heredocs", h);
	}
	if (n->onbuild)
		json_object_set_new(o, "onbuild", node_json(n->onbuild));
	json_object_set_new(o, "original", json_string(n->original));
	return o;
}

static json_t *df_json(const struct kiln_df *df)
{
	json_t *o = json_object();
	char esc[2] = {df->escape, 0};
	json_object_set_new(o, "file", json_string(df->filename));
	json_object_set_new(o, "escape", json_string(esc));
	if (df->syntax)
		json_object_set_new(o, "syntax", json_string(df->syntax));
	if (df->check)
		json_object_set_new(o, "check", json_string(df->check));
	json_t *nodes = json_array();
	for (size_t i = 0; i < df->n_nodes; i++)
		json_array_append_new(nodes, node_json(&df->nodes[i]));
	json_object_set_new(o, "instructions", nodes);
	return o;
}

static int print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	if (!s) {
		fprintf(stderr, "kiln: cannot encode JSON output (invalid UTF-8 in the Dockerfile?)\n");
		return KILN_EXIT_FAIL;
	}
	puts(s);
	free(s);
	return KILN_EXIT_OK;
}

int kiln_cmd_parse(int argc, char **argv)
{
	const char *file = NULL, *target = NULL;
	bool want_json = false, want_check = false;
	struct kiln_env build_args = {0};
	int rc = KILN_EXIT_FAIL;
	char *text = NULL;
	size_t len = 0;
	struct kiln_df *df = NULL;
	struct kiln_err err = {0};
	char *joined = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			rc = KILN_EXIT_OK;
			goto out;
		}
		if (!strcmp(a, "--json")) {
			want_json = true;
			continue;
		}
		if (!strcmp(a, "--check")) {
			want_check = true;
			continue;
		}
		const char *names[] = {"-f", "--file", "--target", "--build-arg"};
		size_t which = 99;
		for (size_t k = 0; k < 4; k++) {
			size_t l = strlen(names[k]);
			if (!strcmp(a, names[k])) {
				if (i + 1 >= argc) {
					fprintf(stderr, "kiln: option %s needs a value (see 'kiln parse --help')\n", a);
					rc = KILN_EXIT_USAGE;
					goto out;
				}
				val = argv[++i];
				which = k;
				break;
			}
			if (k > 0 && !strncmp(a, names[k], l) && a[l] == '=') {
				val = a + l + 1;
				which = k;
				break;
			}
		}
		if (which == 0 || which == 1) {
			file = val;
		} else if (which == 2) {
			target = val;
		} else if (which == 3) {
			const char *eq = strchr(val, '=');
			if (eq) {
				kiln_env_set_kv(&build_args, val);
			} else {
				const char *env = getenv(val);
				if (env)
					kiln_env_set(&build_args, val, env);
			}
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kiln: unknown option %s for parse (see 'kiln parse --help')\n", a);
			rc = KILN_EXIT_USAGE;
			goto out;
		} else if (!file) {
			file = a;
		} else {
			fprintf(stderr, "kiln: parse takes one Dockerfile, got '%s' and '%s'\n", file, a);
			rc = KILN_EXIT_USAGE;
			goto out;
		}
	}
	if (!file)
		file = "Dockerfile";
	/* A directory (a build context) means its Dockerfile. */
	struct stat st;
	if (strcmp(file, "-") && stat(file, &st) == 0 && S_ISDIR(st.st_mode)) {
		joined = kiln_xasprintf("%s%sDockerfile", file, kiln_str_has_suffix(file, "/") ? "" : "/");
		file = joined;
	}

	const char *label = file;
	if (!strcmp(file, "-")) {
		label = "Dockerfile";
		if (kiln_read_fd(STDIN_FILENO, MAX_DOCKERFILE, &text, &len, &err) < 0) {
			kiln_err_wrap(&err, "reading the Dockerfile from stdin");
			kiln_err_print(&err);
			goto out;
		}
	} else if (kiln_read_file(file, MAX_DOCKERFILE, &text, &len, &err) < 0) {
		kiln_err_print(&err);
		goto out;
	}

	if (kiln_parse(text, len, label, &df, &err) < 0) {
		kiln_err_print(&err);
		goto out;
	}
	if (want_json || want_check || target) {
		for (size_t i = 0; i < df->warnings.n; i++)
			fprintf(stderr, "kiln: warning: %s\n", df->warnings.v[i]);
		if (kiln_df_check(df, &err) < 0) {
			kiln_err_print(&err);
			goto out;
		}
	}
	if ((want_json || want_check || target) && kiln_plan_build) {
		struct kiln_plan *plan = NULL;
		if (kiln_plan_build(df, &build_args, target, &plan, &err) < 0) {
			kiln_err_print(&err);
			goto out;
		}
		if (want_json) {
			rc = print_json(kiln_plan_to_json(plan));
			kiln_plan_free(plan);
			goto out;
		}
		kiln_plan_free(plan);
	}
	if (want_json) {
		rc = print_json(df_json(df));
		goto out;
	}
	struct kiln_buf b = {0};
	kiln_df_dump(df, &b);
	if (kiln_write_all(STDOUT_FILENO, b.data, b.len) < 0) {
		perror("kiln: writing the dump");
		kiln_buf_free(&b);
		goto out;
	}
	kiln_buf_free(&b);
	rc = KILN_EXIT_OK;
out:
	free(joined);
	kiln_df_free(df);
	free(text);
	kiln_env_free(&build_args);
	return rc;
}
