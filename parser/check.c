/* kiln — instruction-level checks of a parsed Dockerfile (what BuildKit
 * rejects when it turns the tree into instructions), flag parsing for the
 * plan, and Go-style durations. */
#include "parser/parser.h"
#include "parser/parser_int.h"
#include "common/units.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- flag specs --------------------------------------------------------- */

static const struct kiln_flag_spec spec_from[] = {
	{"platform", KILN_FLAG_STRING},
	{NULL, 0},
};
static const struct kiln_flag_spec spec_run[] = {
	{"mount", KILN_FLAG_STRINGS},
	{"network", KILN_FLAG_STRING},
	{"security", KILN_FLAG_STRING},
	{NULL, 0},
};
static const struct kiln_flag_spec spec_copy[] = {
	{"from", KILN_FLAG_STRING},
	{"chown", KILN_FLAG_STRING},
	{"chmod", KILN_FLAG_STRING},
	{"link", KILN_FLAG_BOOL},
	{"parents", KILN_FLAG_BOOL},
	{"exclude", KILN_FLAG_STRINGS},
	{NULL, 0},
};
static const struct kiln_flag_spec spec_add[] = {
	{"chown", KILN_FLAG_STRING},
	{"chmod", KILN_FLAG_STRING},
	{"checksum", KILN_FLAG_STRING},
	{"link", KILN_FLAG_BOOL},
	{"keep-git-dir", KILN_FLAG_BOOL},
	{"unpack", KILN_FLAG_BOOL},
	{"exclude", KILN_FLAG_STRINGS},
	{NULL, 0},
};
static const struct kiln_flag_spec spec_healthcheck[] = {
	{"interval", KILN_FLAG_STRING},
	{"timeout", KILN_FLAG_STRING},
	{"start-period", KILN_FLAG_STRING},
	{"start-interval", KILN_FLAG_STRING},
	{"retries", KILN_FLAG_STRING},
	{NULL, 0},
};
static const struct kiln_flag_spec spec_none[] = {
	{NULL, 0},
};

const struct kiln_flag_spec *kiln_df_flag_spec(const char *instr_lower)
{
	if (!instr_lower)
		return NULL;
	if (!strcmp(instr_lower, "from"))
		return spec_from;
	if (!strcmp(instr_lower, "run"))
		return spec_run;
	if (!strcmp(instr_lower, "copy"))
		return spec_copy;
	if (!strcmp(instr_lower, "add"))
		return spec_add;
	if (!strcmp(instr_lower, "healthcheck"))
		return spec_healthcheck;
	return NULL;
}

static char *upper(const char *s)
{
	char *u = kiln_xstrdup(s);
	for (char *p = u; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	return u;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	size_t row[65];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cur = row[j];
			size_t best = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			prev = cur;
		}
	}
	return row[lb];
}

static void unknown_flag(const struct kiln_df *df, const struct kiln_df_node *node,
			 const struct kiln_flag_spec *spec, const char *name, struct kiln_err *err)
{
	char *instr = upper(node->instr_lower ? node->instr_lower : "");
	struct kiln_buf hint = {0};
	if (!spec || !spec[0].name) {
		kiln_buf_printf(&hint, "%s takes no flags", instr);
	} else {
		kiln_buf_printf(&hint, "%s accepts", instr);
		const char *best = NULL;
		size_t best_d = SIZE_MAX;
		for (size_t i = 0; spec[i].name; i++) {
			kiln_buf_printf(&hint, "%s --%s", i ? "," : "", spec[i].name);
			size_t d = edit_distance(name, spec[i].name);
			if (d < best_d) {
				best_d = d;
				best = spec[i].name;
			}
		}
		size_t len = strlen(name);
		if (best && (best_d <= 2 || (len >= 2 && !strncmp(best, name, len))) && best_d < len + 1)
			kiln_buf_printf(&hint, "; did you mean --%s?", best);
	}
	kiln_df_errorf(df, node, err, "unknown flag: --%s (%s)", name, hint.data);
	kiln_buf_free(&hint);
	free(instr);
}

void kiln_flag_values_free(struct kiln_flag_value *vals, size_t n)
{
	if (!vals)
		return;
	for (size_t i = 0; i < n; i++)
		kiln_strv_free(&vals[i].values);
}

int kiln_df_node_flags(const struct kiln_df *df, const struct kiln_df_node *node,
		       const struct kiln_flag_spec *spec, struct kiln_flag_value *out,
		       struct kiln_err *err)
{
	size_t nspec = 0;
	if (spec)
		while (spec[nspec].name)
			nspec++;
	if (out)
		memset(out, 0, nspec * sizeof(*out));
	struct kiln_flag_value scratch = {0};
	for (size_t f = 0; f < node->flags.n; f++) {
		const char *arg = node->flags.v[f];
		if (strncmp(arg, "--", 2)) {
			kiln_df_errorf(df, node, err, "arg should start with -- : %s", arg);
			goto fail;
		}
		if (!strcmp(arg, "--"))
			return 0;
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const char *value = eq ? eq + 1 : "";
		size_t i;
		for (i = 0; i < nspec; i++)
			if (strlen(spec[i].name) == nlen && !strncmp(spec[i].name, name, nlen))
				break;
		if (i == nspec) {
			char *nm = kiln_xstrndup(name, nlen);
			unknown_flag(df, node, spec, nm, err);
			free(nm);
			goto fail;
		}
		struct kiln_flag_value *v = out ? &out[i] : &scratch;
		if (v->set && spec[i].type != KILN_FLAG_STRINGS) {
			kiln_df_errorf(df, node, err, "duplicate flag specified: --%s (give it once)", spec[i].name);
			goto fail;
		}
		v->set = true;
		switch (spec[i].type) {
		case KILN_FLAG_BOOL:
			if (eq && !*value) {
				kiln_df_errorf(df, node, err, "missing a value on flag: --%s (write --%s or --%s=true|false)",
					       spec[i].name, spec[i].name, spec[i].name);
				goto fail;
			}
			if (!*value || !strcasecmp(value, "true")) {
				v->value = "true";
				v->b = true;
			} else if (!strcasecmp(value, "false")) {
				v->value = "false";
				v->b = false;
			} else {
				kiln_df_errorf(df, node, err, "expecting boolean value for flag --%s, not: %s (use true or false)",
					       spec[i].name, value);
				goto fail;
			}
			break;
		case KILN_FLAG_STRING:
			if (!eq) {
				kiln_df_errorf(df, node, err, "missing a value on flag: --%s (write --%s=VALUE)",
					       spec[i].name, spec[i].name);
				goto fail;
			}
			v->value = value;
			break;
		case KILN_FLAG_STRINGS:
			if (!eq) {
				kiln_df_errorf(df, node, err, "missing a value on flag: --%s (write --%s=VALUE)",
					       spec[i].name, spec[i].name);
				goto fail;
			}
			v->value = value;
			kiln_strv_push(&v->values, value);
			break;
		}
	}
	kiln_strv_free(&scratch.values);
	return 0;
fail:
	kiln_strv_free(&scratch.values);
	if (out)
		kiln_flag_values_free(out, nspec);
	if (out)
		memset(out, 0, nspec * sizeof(*out));
	return -1;
}

/* ---- instruction checks --------------------------------------------------- */

static int need_exactly_one(const struct kiln_df *df, const struct kiln_df_node *n, const char *name,
			    struct kiln_err *err)
{
	if (n->args.n != 1)
		return kiln_df_errorf(df, n, err, "%s requires exactly one argument (quote or join the words into one)", name);
	return 0;
}

static int need_at_least_one(const struct kiln_df *df, const struct kiln_df_node *n, const char *name,
			     struct kiln_err *err)
{
	if (n->args.n == 0)
		return kiln_df_errorf(df, n, err, "%s requires at least one argument (write %s VALUE)", name, name);
	return 0;
}

static int flags_only(const struct kiln_df *df, const struct kiln_df_node *n, struct kiln_err *err)
{
	const struct kiln_flag_spec *spec = kiln_df_flag_spec(n->instr_lower);
	size_t ns = 0;
	if (spec)
		while (spec[ns].name)
			ns++;
	struct kiln_flag_value *vals = kiln_xcalloc(ns + 1, sizeof(*vals));
	int rc = kiln_df_node_flags(df, n, spec ? spec : spec_none, vals, err);
	kiln_flag_values_free(vals, ns);
	free(vals);
	return rc;
}

static const char *known_names[] = {
	"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
	"MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
};

static int check_kv(const struct kiln_df *df, const struct kiln_df_node *n, const char *name, struct kiln_err *err)
{
	if (flags_only(df, n, err) < 0)
		return -1;
	if (n->args.n == 0)
		return kiln_df_errorf(df, n, err, "%s requires at least one argument (write %s NAME=VALUE)", name, name);
	for (size_t i = 0; i < n->args.n; i += 3)
		if (!n->args.v[i][0])
			return kiln_df_errorf(df, n, err, "%s names can not be blank (write %s NAME=VALUE)", name, name);
	return 0;
}

static bool valid_stage_name(const char *s)
{
	if (!(*s >= 'a' && *s <= 'z'))
		return false;
	for (s++; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static int check_duration_flag(const struct kiln_df *df, const struct kiln_df_node *n, const char *flag,
			       const struct kiln_flag_value *v, struct kiln_err *err)
{
	if (!v->set || !v->value || !*v->value)
		return 0;
	int64_t d;
	struct kiln_err e2 = {0};
	if (kiln_units_parse_duration(v->value, &d, &e2) < 0)
		return kiln_df_errorf(df, n, err, "HEALTHCHECK --%s: %s", flag, e2.msg);
	if (d != 0 && d < 1000000)
		return kiln_df_errorf(df, n, err, "Interval \"%s\" cannot be less than 1ms (HEALTHCHECK --%s=%s)", flag,
				      flag, v->value);
	return 0;
}

static int check_healthcheck(const struct kiln_df *df, const struct kiln_df_node *n, struct kiln_err *err)
{
	if (n->args.n == 0)
		return kiln_df_errorf(df, n, err,
				      "HEALTHCHECK requires at least one argument (HEALTHCHECK CMD command or HEALTHCHECK NONE)");
	char *typ = upper(n->args.v[0]);
	int rc = 0;
	if (!strcmp(typ, "NONE")) {
		if (n->args.n != 1)
			rc = kiln_df_errorf(df, n, err, "HEALTHCHECK NONE takes no arguments (remove what follows NONE)");
		free(typ);
		return rc;
	}
	struct kiln_flag_value v[5];
	if (kiln_df_node_flags(df, n, spec_healthcheck, v, err) < 0) {
		free(typ);
		return -1;
	}
	if (strcmp(typ, "CMD")) {
		struct kiln_buf q = {0};
		kiln_df_quote(typ, &q);
		rc = kiln_df_errorf(df, n, err, "Unknown type %s in HEALTHCHECK (try CMD)", q.data);
		kiln_buf_free(&q);
	} else if (n->args.n < 2) {
		rc = kiln_df_errorf(df, n, err, "Missing command after HEALTHCHECK CMD (write HEALTHCHECK CMD COMMAND)");
	}
	static const char *dflags[] = {"interval", "timeout", "start-period", "start-interval"};
	for (int i = 0; rc == 0 && i < 4; i++)
		rc = check_duration_flag(df, n, dflags[i], &v[i], err);
	if (rc == 0 && v[4].set) {
		const char *r = v[4].value;
		char *end;
		errno = 0;
		long long val = strtoll(r, &end, 10);
		if (!*r || *end || errno || val > INT32_MAX || val < INT32_MIN)
			rc = kiln_df_errorf(df, n, err, "HEALTHCHECK --retries: strconv.ParseInt: parsing \"%s\": invalid syntax (use a whole number)", r);
		else if (val < 0)
			rc = kiln_df_errorf(df, n, err, "--retries cannot be negative (%lld; use 0 or more)", val);
	}
	kiln_flag_values_free(v, 5);
	free(typ);
	return rc;
}

int kiln_df_check_node(const struct kiln_df *df, const struct kiln_df_node *n, struct kiln_err *err)
{
	const char *i = n->instr_lower ? n->instr_lower : "";
	if (!kiln_df_known_instruction(i)) {
		char *u = upper(i);
		const char *best = NULL;
		size_t best_d = SIZE_MAX;
		for (size_t k = 0; k < sizeof(known_names) / sizeof(known_names[0]); k++) {
			size_t d = edit_distance(u, known_names[k]);
			if (d < best_d) {
				best_d = d;
				best = known_names[k];
			}
		}
		int rc;
		if (best && best_d <= 2 && best_d < strlen(u))
			rc = kiln_df_errorf(df, n, err, "unknown instruction: %s (did you mean %s?)", n->instr, best);
		else
			rc = kiln_df_errorf(df, n, err, "unknown instruction: %s (see the Dockerfile reference for the instructions kiln knows)", n->instr);
		free(u);
		return rc;
	}
	if (!strcmp(i, "env"))
		return check_kv(df, n, "ENV", err);
	if (!strcmp(i, "label"))
		return check_kv(df, n, "LABEL", err);
	if (!strcmp(i, "maintainer")) {
		if (need_exactly_one(df, n, "MAINTAINER", err) < 0)
			return -1;
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "add") || !strcmp(i, "copy")) {
		const char *name = i[0] == 'a' ? "ADD" : "COPY";
		if (n->args.n < 2)
			return kiln_df_errorf(df, n, err,
					      "%s requires at least two arguments, but only one was provided. Destination could not be determined (write %s SOURCE... DEST)",
					      name, name);
		if (flags_only(df, n, err) < 0)
			return -1;
		struct kiln_df_heredoc h;
		struct kiln_err e2 = {0};
		if (kiln_df_parse_heredoc_word(n->args.v[n->args.n - 1], &h, &e2) == 1) {
			free(h.name);
			return kiln_df_errorf(df, n, err, "%s cannot accept a heredoc as a destination (name a path, e.g. %s <<EOF /file)", name, name);
		}
		return 0;
	}
	if (!strcmp(i, "from")) {
		if (n->args.n == 3 && !strcasecmp(n->args.v[1], "as")) {
			char *lower = kiln_go_lower(n->args.v[2], strlen(n->args.v[2]));
			bool ok = valid_stage_name(lower);
			free(lower);
			if (!ok) {
				struct kiln_buf q = {0};
				kiln_df_quote(n->args.v[2], &q);
				kiln_df_errorf(df, n, err,
					       "invalid name for build stage: %s, name can't start with a number or contain symbols (use letters, digits, -, _ and .)",
					       q.data);
				kiln_buf_free(&q);
				return -1;
			}
		} else if (n->args.n != 1) {
			return kiln_df_errorf(df, n, err, "FROM requires either one or three arguments (FROM IMAGE [AS NAME])");
		}
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "onbuild")) {
		if (!n->onbuild)
			return kiln_df_errorf(df, n, err, "ONBUILD requires at least one argument (write ONBUILD INSTRUCTION ...)");
		if (flags_only(df, n, err) < 0)
			return -1;
		const char *t = n->onbuild->instr_lower;
		if (!strcmp(t, "onbuild"))
			return kiln_df_errorf(df, n, err, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed (use one ONBUILD)");
		if (!strcmp(t, "maintainer") || !strcmp(t, "from")) {
			char *u = upper(t);
			kiln_df_errorf(df, n, err, "%s isn't allowed as an ONBUILD trigger (use it directly in the stage)", u);
			free(u);
			return -1;
		}
		return 0;
	}
	if (!strcmp(i, "workdir")) {
		if (need_exactly_one(df, n, "WORKDIR", err) < 0)
			return -1;
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "run") || !strcmp(i, "cmd") || !strcmp(i, "entrypoint"))
		return flags_only(df, n, err);
	if (!strcmp(i, "healthcheck"))
		return check_healthcheck(df, n, err);
	if (!strcmp(i, "expose")) {
		if (need_at_least_one(df, n, "EXPOSE", err) < 0)
			return -1;
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "user")) {
		if (need_exactly_one(df, n, "USER", err) < 0)
			return -1;
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "volume")) {
		if (need_at_least_one(df, n, "VOLUME", err) < 0)
			return -1;
		if (flags_only(df, n, err) < 0)
			return -1;
		for (size_t k = 0; k < n->args.n; k++) {
			const char *s = n->args.v[k];
			size_t len = strlen(s);
			kiln_go_trim_space(&s, &len);
			if (len == 0)
				return kiln_df_errorf(df, n, err, "VOLUME specified can not be an empty string (name a path)");
		}
		return 0;
	}
	if (!strcmp(i, "stopsignal")) {
		if (need_exactly_one(df, n, "STOPSIGNAL", err) < 0)
			return -1;
		return flags_only(df, n, err);
	}
	if (!strcmp(i, "arg")) {
		if (need_at_least_one(df, n, "ARG", err) < 0)
			return -1;
		if (flags_only(df, n, err) < 0)
			return -1;
		for (size_t k = 0; k < n->args.n; k++)
			if (n->args.v[k][0] == '=')
				return kiln_df_errorf(df, n, err, "ARG names can not be blank (write ARG NAME[=DEFAULT])");
		return 0;
	}
	if (!strcmp(i, "shell")) {
		if (flags_only(df, n, err) < 0)
			return -1;
		if (n->args.n == 0)
			return kiln_df_errorf(df, n, err, "SHELL requires at least one argument (write SHELL [\"executable\", \"parameters\"])");
		if (!n->json)
			return kiln_df_errorf(df, n, err,
					      "SHELL requires the arguments to be in JSON form (write SHELL [\"executable\", \"parameters\"])");
		return 0;
	}
	return 0;
}

int kiln_df_check(const struct kiln_df *df, struct kiln_err *err)
{
	for (size_t i = 0; i < df->n_nodes; i++)
		if (kiln_df_check_node(df, &df->nodes[i], err) < 0)
			return -1;
	return 0;
}
