/* kiln — the build plan: stages, typed steps, global ARGs, the stage graph.
 * See plan.h.  Rules follow BuildKit's instructions package and
 * dockerfile2llb (written from the behaviour). */
#include "parser/plan.h"
#include "common/units.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

/* ------------------------------------------------------------ helpers */

static char *lower_dup(const char *s)
{
	char *r = kiln_xstrdup(s);
	for (char *p = r; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return r;
}

static char *upper_dup(const char *s)
{
	char *r = kiln_xstrdup(s);
	for (char *p = r; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	return r;
}

static bool parse_go_bool(const char *s, bool *out)
{
	static const char *t[] = {"1", "t", "T", "TRUE", "true", "True"};
	static const char *f[] = {"0", "f", "F", "FALSE", "false", "False"};
	for (size_t i = 0; i < 6; i++) {
		if (strcmp(s, t[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcmp(s, f[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/* strconv.ParseUint(s, base, 32) */
static bool parse_u32(const char *s, int base, int64_t *out)
{
	if (!*s)
		return false;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		int d;
		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else
			return false;
		if (d >= base)
			return false;
		v = v * (uint64_t)base + (uint64_t)d;
		if (v > 0xffffffffull)
			return false;
	}
	*out = (int64_t)v;
	return true;
}

/* a path with a ".." element */
static bool has_dotdot(const char *s)
{
	const char *p = s;
	while (*p) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

static void heredoc_copy(struct kiln_plan_heredoc *dst, const struct kiln_df_heredoc *src)
{
	dst->name = kiln_xstrdup(src->name ? src->name : "");
	dst->content = kiln_xstrdup(src->content ? src->content : "");
	dst->expand = src->expand;
	dst->chomp = src->chomp;
	dst->fd = src->fd;
}

static void heredocs_free(struct kiln_plan_heredoc *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].content);
	}
	free(h);
}

const char *kiln_step_kind_name(enum kiln_step_kind kind)
{
	static const char *names[] = {
		[KILN_STEP_RUN] = "RUN",           [KILN_STEP_COPY] = "COPY",
		[KILN_STEP_ADD] = "ADD",           [KILN_STEP_ENV] = "ENV",
		[KILN_STEP_LABEL] = "LABEL",       [KILN_STEP_ARG] = "ARG",
		[KILN_STEP_EXPOSE] = "EXPOSE",     [KILN_STEP_VOLUME] = "VOLUME",
		[KILN_STEP_USER] = "USER",         [KILN_STEP_WORKDIR] = "WORKDIR",
		[KILN_STEP_ENTRYPOINT] = "ENTRYPOINT", [KILN_STEP_CMD] = "CMD",
		[KILN_STEP_SHELL] = "SHELL",       [KILN_STEP_HEALTHCHECK] = "HEALTHCHECK",
		[KILN_STEP_STOPSIGNAL] = "STOPSIGNAL", [KILN_STEP_MAINTAINER] = "MAINTAINER",
		[KILN_STEP_ONBUILD] = "ONBUILD",
	};
	if ((unsigned)kind < sizeof(names) / sizeof(names[0]) && names[kind])
		return names[kind];
	return "?";
}

static bool kind_from_name(const char *lower, enum kiln_step_kind *k)
{
	static const struct {
		const char *n;
		enum kiln_step_kind k;
	} map[] = {
		{"run", KILN_STEP_RUN},           {"copy", KILN_STEP_COPY},
		{"add", KILN_STEP_ADD},           {"env", KILN_STEP_ENV},
		{"label", KILN_STEP_LABEL},       {"arg", KILN_STEP_ARG},
		{"expose", KILN_STEP_EXPOSE},     {"volume", KILN_STEP_VOLUME},
		{"user", KILN_STEP_USER},         {"workdir", KILN_STEP_WORKDIR},
		{"entrypoint", KILN_STEP_ENTRYPOINT}, {"cmd", KILN_STEP_CMD},
		{"shell", KILN_STEP_SHELL},       {"healthcheck", KILN_STEP_HEALTHCHECK},
		{"stopsignal", KILN_STEP_STOPSIGNAL}, {"maintainer", KILN_STEP_MAINTAINER},
		{"onbuild", KILN_STEP_ONBUILD},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(map[i].n, lower) == 0) {
			*k = map[i].k;
			return true;
		}
	return false;
}

/* ------------------------------------------------------------- mounts */

void kiln_plan_mount_free(struct kiln_plan_mount *m)
{
	if (!m)
		return;
	free(m->target);
	free(m->source);
	free(m->from);
	free(m->id);
	free(m->raw);
	memset(m, 0, sizeof(*m));
}

/* encoding/csv, one record, default settings. */
static int csv_fields(const char *s, struct kiln_strv *out, struct kiln_err *err)
{
	if (!*s)
		return kiln_err_set(err, 0, "failed to parse csv mounts: EOF");
	const char *p = s;
	for (;;) {
		struct kiln_buf f = {0};
		kiln_buf_puts(&f, "");
		if (*p == '"') {
			p++;
			for (;;) {
				if (!*p) {
					kiln_buf_free(&f);
					return kiln_err_set(err, 0,
							    "failed to parse csv mounts: extraneous or missing \" in quoted-field");
				}
				if (*p == '"') {
					if (p[1] == '"') {
						kiln_buf_putc(&f, '"');
						p += 2;
						continue;
					}
					p++;
					break;
				}
				kiln_buf_putc(&f, *p++);
			}
			if (*p && *p != ',') {
				kiln_buf_free(&f);
				return kiln_err_set(err, 0,
						    "failed to parse csv mounts: extraneous or missing \" in quoted-field");
			}
		} else {
			while (*p && *p != ',') {
				if (*p == '"') {
					kiln_buf_free(&f);
					return kiln_err_set(err, 0, "failed to parse csv mounts: bare \" in non-quoted-field");
				}
				kiln_buf_putc(&f, *p++);
			}
		}
		kiln_strv_push_owned(out, kiln_buf_steal(&f));
		if (!*p)
			break;
		p++; /* ',' */
	}
	return 0;
}

static const char *mount_type_name(enum kiln_plan_mount_type t)
{
	switch (t) {
	case KILN_PLAN_MOUNT_BIND: return "bind";
	case KILN_PLAN_MOUNT_CACHE: return "cache";
	case KILN_PLAN_MOUNT_TMPFS: return "tmpfs";
	case KILN_PLAN_MOUNT_SECRET: return "secret";
	case KILN_PLAN_MOUNT_SSH: return "ssh";
	}
	return "?";
}

static const char *sharing_name(enum kiln_plan_mount_sharing s)
{
	switch (s) {
	case KILN_PLAN_SHARING_SHARED: return "shared";
	case KILN_PLAN_SHARING_PRIVATE: return "private";
	case KILN_PLAN_SHARING_LOCKED: return "locked";
	}
	return "?";
}

/* Parse a mount spec.  env == NULL: values stay unexpanded and values that
 * reference variables are not validated (that happens when the builder
 * parses the spec again with the stage's environment). */
static int parse_mount(const char *spec, const struct kiln_env *env, char escape, struct kiln_plan_mount *m,
		       struct kiln_err *err)
{
	memset(m, 0, sizeof(*m));
	m->type = KILN_PLAN_MOUNT_BIND;
	m->from_stage = -1;
	m->mode = m->uid = m->gid = -1;
	m->raw = kiln_xstrdup(spec);
	struct kiln_strv fields = {0};
	bool ro_auto = true;
	int rc = -1;
	if (csv_fields(spec, &fields, err) < 0)
		goto out;
	for (size_t i = 0; i < fields.n; i++) {
		const char *field = fields.v[i];
		const char *eq = strchr(field, '=');
		char *key = lower_dup(field);
		if (eq)
			key[eq - field] = 0;
		if (!eq) {
			if (!strcmp(key, "readonly") || !strcmp(key, "ro")) {
				m->readonly = true;
				ro_auto = false;
			} else if (!strcmp(key, "readwrite") || !strcmp(key, "rw")) {
				m->readonly = false;
				ro_auto = false;
			} else if (!strcmp(key, "required")) {
				if (m->type != KILN_PLAN_MOUNT_SECRET && m->type != KILN_PLAN_MOUNT_SSH) {
					kiln_err_set(err, 0, "unexpected key '%s' for mount type '%s'", key,
						     mount_type_name(m->type));
					free(key);
					goto out;
				}
				m->required = true;
			} else {
				kiln_err_set(err, 0, "invalid field '%s' must be a key=value pair", field);
				free(key);
				goto out;
			}
			free(key);
			continue;
		}
		char *value = NULL;
		bool deferred = false;
		if (env) {
			if (kiln_expand_word(eq + 1, env, escape, &value, err) < 0) {
				free(key);
				goto out;
			}
		} else {
			value = kiln_xstrdup(eq + 1);
			const char *d = strchr(value, '$');
			if (!strcmp(key, "from") && d && d[1]) {
				kiln_err_set(err, 0, "'%s' doesn't support variable expansion, define alias stage instead",
					     key);
				free(key);
				free(value);
				goto out;
			}
			deferred = d != NULL;
		}
		int bad = 0;
		if (!strcmp(key, "type")) {
			char *v = lower_dup(value);
			if (!strcmp(v, "bind"))
				m->type = KILN_PLAN_MOUNT_BIND;
			else if (!strcmp(v, "cache"))
				m->type = KILN_PLAN_MOUNT_CACHE;
			else if (!strcmp(v, "tmpfs"))
				m->type = KILN_PLAN_MOUNT_TMPFS;
			else if (!strcmp(v, "secret"))
				m->type = KILN_PLAN_MOUNT_SECRET;
			else if (!strcmp(v, "ssh"))
				m->type = KILN_PLAN_MOUNT_SSH;
			else
				bad = kiln_err_set(err, 0, "unsupported mount type \"%s\"", value);
			free(v);
		} else if (!strcmp(key, "from")) {
			free(m->from);
			m->from = kiln_xstrdup(value);
		} else if (!strcmp(key, "source") || !strcmp(key, "src")) {
			free(m->source);
			m->source = kiln_xstrdup(value);
		} else if (!strcmp(key, "target") || !strcmp(key, "dst") || !strcmp(key, "destination")) {
			free(m->target);
			m->target = kiln_xstrdup(value);
		} else if (!strcmp(key, "readonly") || !strcmp(key, "ro")) {
			if (!deferred && !parse_go_bool(value, &m->readonly))
				bad = kiln_err_set(err, 0, "invalid value for %s: %s", key, value);
			ro_auto = false;
		} else if (!strcmp(key, "readwrite") || !strcmp(key, "rw")) {
			bool rw = true;
			if (!deferred && !parse_go_bool(value, &rw))
				bad = kiln_err_set(err, 0, "invalid value for %s: %s", key, value);
			m->readonly = !rw;
			ro_auto = false;
		} else if (!strcmp(key, "required")) {
			if (m->type != KILN_PLAN_MOUNT_SECRET && m->type != KILN_PLAN_MOUNT_SSH)
				bad = kiln_err_set(err, 0, "unexpected key '%s' for mount type '%s'", key,
						   mount_type_name(m->type));
			else if (!deferred && !parse_go_bool(value, &m->required))
				bad = kiln_err_set(err, 0, "invalid value for %s: %s", key, value);
		} else if (!strcmp(key, "size")) {
			if (m->type != KILN_PLAN_MOUNT_TMPFS) {
				bad = kiln_err_set(err, 0, "unexpected key '%s' for mount type '%s'", key,
						   mount_type_name(m->type));
			} else if (!deferred) {
				struct kiln_err e2 = {0};
				if (kiln_units_parse_bytes(value, &m->size, &e2) < 0)
					bad = kiln_err_set(err, 0, "invalid value for %s: %s", key, value);
			}
		} else if (!strcmp(key, "id")) {
			free(m->id);
			m->id = kiln_xstrdup(value);
		} else if (!strcmp(key, "sharing")) {
			char *v = lower_dup(value);
			m->sharing_set = true;
			if (!strcmp(v, "shared"))
				m->sharing = KILN_PLAN_SHARING_SHARED;
			else if (!strcmp(v, "private"))
				m->sharing = KILN_PLAN_SHARING_PRIVATE;
			else if (!strcmp(v, "locked"))
				m->sharing = KILN_PLAN_SHARING_LOCKED;
			else if (!deferred)
				bad = kiln_err_set(err, 0, "unsupported sharing value \"%s\"", value);
			free(v);
		} else if (!strcmp(key, "mode")) {
			int64_t v = -1;
			if (!deferred && !parse_u32(value, 8, &v))
				bad = kiln_err_set(err, 0, "invalid value %s for mode", value);
			m->mode = deferred ? 0 : v;
		} else if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
			int64_t v = -1;
			if (!deferred && !parse_u32(value, 10, &v))
				bad = kiln_err_set(err, 0, "invalid value %s for %s", value, key);
			if (key[0] == 'u')
				m->uid = deferred ? 0 : v;
			else
				m->gid = deferred ? 0 : v;
		} else {
			bad = kiln_err_set(err, 0, "unexpected key '%s' in '%s'", key, field);
		}
		free(key);
		free(value);
		if (bad)
			goto out;
	}

	/* validateMount */
	bool file_info = m->type == KILN_PLAN_MOUNT_SECRET || m->type == KILN_PLAN_MOUNT_SSH || m->type == KILN_PLAN_MOUNT_CACHE;
	if (!file_info) {
		if (m->mode >= 0) {
			kiln_err_set(err, 0, "mode not allowed for \"%s\" type mounts", mount_type_name(m->type));
			goto out;
		}
		if (m->uid >= 0) {
			kiln_err_set(err, 0, "uid not allowed for \"%s\" type mounts", mount_type_name(m->type));
			goto out;
		}
		if (m->gid >= 0) {
			kiln_err_set(err, 0, "gid not allowed for \"%s\" type mounts", mount_type_name(m->type));
			goto out;
		}
	}
	if (ro_auto)
		m->readonly = !(m->type == KILN_PLAN_MOUNT_CACHE || m->type == KILN_PLAN_MOUNT_TMPFS);
	if (m->type == KILN_PLAN_MOUNT_SECRET) {
		if (m->from && *m->from) {
			kiln_err_set(err, 0, "secret mount should not have a from");
			goto out;
		}
		if (m->sharing_set) {
			kiln_err_set(err, 0, "secret mount should not define sharing");
			goto out;
		}
		if (!(m->source && *m->source) && !(m->target && *m->target) && !(m->id && *m->id)) {
			kiln_err_set(err, 0, "invalid secret mount. one of source, target required");
			goto out;
		}
		if (m->source && *m->source && m->id && *m->id) {
			kiln_err_set(err, 0, "both source and id can't be set");
			goto out;
		}
	}
	if (m->sharing_set && m->type != KILN_PLAN_MOUNT_CACHE) {
		kiln_err_set(err, 0, "invalid cache sharing set for %s mount", mount_type_name(m->type));
		goto out;
	}
	if (m->id && has_dotdot(m->id)) {
		kiln_err_set(err, 0, "invalid mount id \"%s\": must not contain \"..\"", m->id);
		goto out;
	}
	if ((m->type == KILN_PLAN_MOUNT_SECRET || m->type == KILN_PLAN_MOUNT_SSH) && m->source && has_dotdot(m->source)) {
		kiln_err_set(err, 0, "invalid %s mount source \"%s\": must not contain \"..\"", mount_type_name(m->type),
			     m->source);
		goto out;
	}
	rc = 0;
out:
	kiln_strv_free(&fields);
	if (rc < 0)
		kiln_plan_mount_free(m);
	return rc;
}

int kiln_plan_parse_mount(const char *spec, struct kiln_plan_mount *out, struct kiln_err *err)
{
	return parse_mount(spec, NULL, '\\', out, err);
}

int kiln_plan_expand_mount(const char *spec, const struct kiln_env *env, char escape, struct kiln_plan_mount *out,
			   struct kiln_err *err)
{
	static const struct kiln_env empty;
	return parse_mount(spec, env ? env : &empty, escape ? escape : '\\', out, err);
}

/* ------------------------------------------------------ platform args */

void kiln_plan_platform_args(struct kiln_env *env, const char *platform)
{
	struct utsname u;
	const char *arch = "amd64", *variant = "";
	if (uname(&u) == 0) {
		if (!strcmp(u.machine, "x86_64"))
			arch = "amd64";
		else if (!strcmp(u.machine, "aarch64") || !strcmp(u.machine, "arm64"))
			arch = "arm64";
		else if (!strncmp(u.machine, "armv7", 5)) {
			arch = "arm";
			variant = "v7";
		} else if (!strncmp(u.machine, "armv6", 5)) {
			arch = "arm";
			variant = "v6";
		} else if (!strcmp(u.machine, "i686") || !strcmp(u.machine, "i386"))
			arch = "386";
		else if (!strcmp(u.machine, "ppc64le"))
			arch = "ppc64le";
		else if (!strcmp(u.machine, "s390x"))
			arch = "s390x";
		else if (!strcmp(u.machine, "riscv64"))
			arch = "riscv64";
	}
	char *bp = *variant ? kiln_xasprintf("linux/%s/%s", arch, variant) : kiln_xasprintf("linux/%s", arch);
	kiln_env_set(env, "BUILDPLATFORM", bp);
	kiln_env_set(env, "BUILDOS", "linux");
	kiln_env_set(env, "BUILDARCH", arch);
	kiln_env_set(env, "BUILDVARIANT", variant);
	if (platform && *platform) {
		char *p = kiln_xstrdup(platform);
		char *os = p, *a = strchr(p, '/'), *v = NULL;
		if (a) {
			*a++ = 0;
			v = strchr(a, '/');
			if (v)
				*v++ = 0;
		}
		kiln_env_set(env, "TARGETPLATFORM", platform);
		kiln_env_set(env, "TARGETOS", os);
		kiln_env_set(env, "TARGETARCH", a ? a : "");
		kiln_env_set(env, "TARGETVARIANT", v ? v : "");
		free(p);
	} else {
		kiln_env_set(env, "TARGETPLATFORM", bp);
		kiln_env_set(env, "TARGETOS", "linux");
		kiln_env_set(env, "TARGETARCH", arch);
		kiln_env_set(env, "TARGETVARIANT", variant);
	}
	free(bp);
}

/* -------------------------------------------------------------- flags */

struct flags {
	const struct kiln_flag_spec *spec;
	struct kiln_flag_value *vals;
	size_t n;
};

static const struct kiln_flag_spec no_flags[] = {{NULL, KILN_FLAG_STRING}};

static int flags_parse(const struct kiln_df *df, const struct kiln_df_node *node, struct flags *f,
		       struct kiln_err *err)
{
	const char *lower = node->instr_lower ? node->instr_lower : "";
	f->spec = kiln_df_flag_spec(lower);
	if (!f->spec)
		f->spec = no_flags;
	f->n = 0;
	while (f->spec[f->n].name)
		f->n++;
	f->vals = kiln_xcalloc(f->n + 1, sizeof(struct kiln_flag_value));
	if (kiln_df_node_flags(df, node, f->spec, f->vals, err) < 0) {
		kiln_flag_values_free(f->vals, f->n);
		free(f->vals);
		f->vals = NULL;
		return -1;
	}
	return 0;
}

static void flags_free(struct flags *f)
{
	if (f->vals) {
		kiln_flag_values_free(f->vals, f->n);
		free(f->vals);
	}
	f->vals = NULL;
}

static const struct kiln_flag_value *flag_get(const struct flags *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (!strcmp(f->spec[i].name, name))
			return f->vals[i].set ? &f->vals[i] : NULL;
	return NULL;
}

static char *flag_str(const struct flags *f, const char *name)
{
	const struct kiln_flag_value *v = flag_get(f, name);
	return v && v->value ? kiln_xstrdup(v->value) : NULL;
}

static bool flag_bool(const struct flags *f, const char *name)
{
	const struct kiln_flag_value *v = flag_get(f, name);
	return v && v->b;
}

/* -------------------------------------------------------------- steps */

static void step_free(struct kiln_step *s)
{
	free(s->original);
	kiln_strv_free(&s->run.args);
	heredocs_free(s->run.heredocs, s->run.n_heredocs);
	for (size_t i = 0; i < s->run.n_mounts; i++)
		kiln_plan_mount_free(&s->run.mounts[i]);
	free(s->run.mounts);
	kiln_strv_free(&s->copy.sources);
	heredocs_free(s->copy.heredocs, s->copy.n_heredocs);
	free(s->copy.dest);
	free(s->copy.from);
	free(s->copy.chown);
	free(s->copy.chmod);
	free(s->copy.checksum);
	kiln_strv_free(&s->copy.excludes);
	for (size_t i = 0; i < s->n_kvs; i++) {
		free(s->kvs[i].key);
		free(s->kvs[i].value);
	}
	free(s->kvs);
	kiln_strv_free(&s->words);
	free(s->value);
	kiln_strv_free(&s->health.cmd);
}

static void kv_push(struct kiln_step *s, const char *k, const char *v, bool has)
{
	s->kvs = kiln_xrealloc(s->kvs, (s->n_kvs + 1) * sizeof(*s->kvs));
	s->kvs[s->n_kvs].key = kiln_xstrdup(k);
	s->kvs[s->n_kvs].value = has ? kiln_xstrdup(v ? v : "") : NULL;
	s->kvs[s->n_kvs].has_value = has;
	s->n_kvs++;
}

/* BuildKit's MustParseHeredoc(word) — the same word rules as the parser
 * (kiln_df_parse_heredoc_word: "<<EOF", "<<-'EOF'", "3<<EOF", "<< EOF"; a
 * lexing error means "not a heredoc").  Returns true when word is a heredoc
 * reference; then *out (when out is not NULL) is filled: the node's body of
 * that name, or an empty body named by the word when the node has none.
 * Free out->name. */
static bool heredoc_ref(const struct kiln_df_node *node, const char *word, struct kiln_df_heredoc *out)
{
	struct kiln_df_heredoc h;
	struct kiln_err ignored = {0};
	if (kiln_df_parse_heredoc_word(word, &h, &ignored) != 1)
		return false;
	if (!out) {
		free(h.name);
		return true;
	}
	*out = h;
	out->content = (char *)"";
	for (size_t i = 0; i < node->n_heredocs; i++)
		if (node->heredocs[i].name && !strcmp(node->heredocs[i].name, h.name)) {
			out->content = node->heredocs[i].content;
			out->chomp = node->heredocs[i].chomp;
			break;
		}
	return true;
}

static int healthcheck_duration(const struct kiln_df *df, const struct kiln_df_node *node, const struct flags *f,
				const char *name, int64_t *out, struct kiln_err *err)
{
	*out = 0;
	const struct kiln_flag_value *v = flag_get(f, name);
	if (!v || !v->value || !*v->value)
		return 0;
	struct kiln_err e2 = {0};
	int64_t ns;
	if (kiln_units_parse_duration(v->value, &ns, &e2) < 0)
		return kiln_df_errorf(df, node, err, "%s", e2.msg);
	if (ns == 0)
		return 0;
	if (ns < 1000000)
		return kiln_df_errorf(df, node, err, "Interval \"%s\" cannot be less than 1ms", name);
	*out = ns;
	return 0;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

static const char *instr_upper_name(const struct kiln_df_node *node, char *buf, size_t len)
{
	snprintf(buf, len, "%s", node->instr ? node->instr : "");
	for (char *p = buf; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	return buf;
}

/* Convert one instruction (not FROM) into a step.  The stage graph is
 * resolved later. */
static int convert(const struct kiln_df *df, const struct kiln_df_node *node, enum kiln_step_kind kind,
		   struct kiln_step *s, struct kiln_err *err)
{
	struct flags f = {0};
	char up[64];
	instr_upper_name(node, up, sizeof(up));
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->line = node->start_line;
	s->end_line = node->end_line;
	s->original = kiln_xstrdup(node->original ? node->original : "");
	s->copy.from_stage = -1;
	s->copy.unpack = -1;
	if (flags_parse(df, node, &f, err) < 0)
		return -1;
	const struct kiln_strv *a = &node->args;
	int rc = -1;

	switch (kind) {
	case KILN_STEP_RUN: {
		s->run.exec = node->json;
		for (size_t i = 0; i < a->n; i++)
			kiln_strv_push(&s->run.args, a->v[i]);
		if (node->n_heredocs) {
			s->run.heredocs = kiln_xcalloc(node->n_heredocs, sizeof(struct kiln_plan_heredoc));
			for (size_t i = 0; i < node->n_heredocs; i++)
				heredoc_copy(&s->run.heredocs[i], &node->heredocs[i]);
			s->run.n_heredocs = node->n_heredocs;
			if (node->json) {
				kiln_df_errorf(df, node, err, "parsing produced an invalid run command: heredocs need the shell form");
				goto out;
			}
			/* BuildKit: a command that is itself one heredoc word runs
			 * the first body as the script; anything else is handed
			 * to the shell with the bodies appended */
			if (a->n == 1)
				s->run.script_heredoc = heredoc_ref(node, a->v[0], NULL);
		}
		const struct kiln_flag_value *mv = flag_get(&f, "mount");
		if (mv) {
			s->run.mounts = kiln_xcalloc(mv->values.n + 1, sizeof(struct kiln_plan_mount));
			for (size_t i = 0; i < mv->values.n; i++) {
				struct kiln_err e2 = {0};
				if (parse_mount(mv->values.v[i], NULL, df->escape, &s->run.mounts[i], &e2) < 0) {
					kiln_df_errorf(df, node, err, "--mount=%s: %s", mv->values.v[i], e2.msg);
					goto out;
				}
				s->run.n_mounts++;
			}
		}
		const struct kiln_flag_value *nv = flag_get(&f, "network");
		if (nv && nv->value) {
			s->run.network_set = true;
			if (!strcmp(nv->value, "default"))
				s->run.network = KILN_PLAN_NET_DEFAULT;
			else if (!strcmp(nv->value, "none"))
				s->run.network = KILN_PLAN_NET_NONE;
			else if (!strcmp(nv->value, "host"))
				s->run.network = KILN_PLAN_NET_HOST;
			else {
				kiln_df_errorf(df, node, err, "unsupported network mode \"%s\" (default, none, host)",
					       nv->value);
				goto out;
			}
		}
		const struct kiln_flag_value *sv = flag_get(&f, "security");
		if (sv && sv->value) {
			if (!strcmp(sv->value, "sandbox"))
				s->run.security = KILN_PLAN_SECURITY_SANDBOX;
			else if (!strcmp(sv->value, "insecure"))
				s->run.security = KILN_PLAN_SECURITY_INSECURE;
			else {
				kiln_df_errorf(df, node, err, "unsupported security mode \"%s\" (sandbox, insecure)",
					       sv->value);
				goto out;
			}
		}
		break;
	}
	case KILN_STEP_COPY:
	case KILN_STEP_ADD: {
		if (a->n < 2) {
			kiln_df_errorf(df, node, err,
				       "%s requires at least two arguments, but only one was provided. Destination could not be determined",
				       kiln_step_kind_name(kind));
			goto out;
		}
		s->copy.exec = node->json;
		const char *dest = a->v[a->n - 1];
		if (heredoc_ref(node, dest, NULL)) {
			kiln_df_errorf(df, node, err,
				       "%s cannot accept a heredoc as a destination (name a path, e.g. %s <<EOF /file)",
				       kiln_step_kind_name(kind), kiln_step_kind_name(kind));
			goto out;
		}
		s->copy.dest = kiln_xstrdup(dest);
		for (size_t i = 0; i + 1 < a->n; i++) {
			/* as BuildKit: sources are heredocs only when the line
			 * had heredoc bodies (never in the JSON form) */
			struct kiln_df_heredoc h;
			if (!node->json && node->n_heredocs && heredoc_ref(node, a->v[i], &h)) {
				s->copy.heredocs = kiln_xrealloc(s->copy.heredocs,
								 (s->copy.n_heredocs + 1) * sizeof(struct kiln_plan_heredoc));
				heredoc_copy(&s->copy.heredocs[s->copy.n_heredocs++], &h);
				free(h.name);
			} else {
				kiln_strv_push(&s->copy.sources, a->v[i]);
			}
		}
		s->copy.from = flag_str(&f, "from");
		s->copy.chown = flag_str(&f, "chown");
		s->copy.chmod = flag_str(&f, "chmod");
		s->copy.checksum = flag_str(&f, "checksum");
		s->copy.link = flag_bool(&f, "link");
		s->copy.parents = flag_bool(&f, "parents");
		s->copy.keep_git_dir = flag_bool(&f, "keep-git-dir");
		const struct kiln_flag_value *uv = flag_get(&f, "unpack");
		if (uv)
			s->copy.unpack = uv->b ? 1 : 0;
		const struct kiln_flag_value *ev = flag_get(&f, "exclude");
		if (ev) {
			if (ev->values.n) {
				for (size_t i = 0; i < ev->values.n; i++)
					kiln_strv_push(&s->copy.excludes, ev->values.v[i]);
			} else if (ev->value) {
				kiln_strv_push(&s->copy.excludes, ev->value);
			}
		}
		if (s->copy.from && !*s->copy.from) {
			free(s->copy.from);
			s->copy.from = NULL;
		}
		break;
	}
	case KILN_STEP_ENV:
	case KILN_STEP_LABEL: {
		if (a->n == 0) {
			kiln_df_errorf(df, node, err, "%s requires at least one argument (write %s NAME=VALUE)", kiln_step_kind_name(kind), kiln_step_kind_name(kind));
			goto out;
		}
		if (a->n % 3 != 0) {
			kiln_df_errorf(df, node, err, "Bad input to %s, too many arguments (write %s NAME=VALUE ...)", kiln_step_kind_name(kind), kiln_step_kind_name(kind));
			goto out;
		}
		for (size_t i = 0; i + 2 < a->n; i += 3) {
			if (!*a->v[i]) {
				kiln_df_errorf(df, node, err, "%s names can not be blank (write %s NAME=VALUE)", kiln_step_kind_name(kind), kiln_step_kind_name(kind));
				goto out;
			}
			kv_push(s, a->v[i], a->v[i + 1], true);
		}
		break;
	}
	case KILN_STEP_ARG: {
		if (a->n == 0) {
			kiln_df_errorf(df, node, err, "ARG requires at least one argument (write ARG NAME[=DEFAULT])");
			goto out;
		}
		for (size_t i = 0; i < a->n; i++) {
			const char *eq = strchr(a->v[i], '=');
			if (eq) {
				if (eq == a->v[i]) {
					kiln_df_errorf(df, node, err, "ARG names can not be blank (write ARG NAME[=DEFAULT])");
					goto out;
				}
				char *k = kiln_xstrndup(a->v[i], (size_t)(eq - a->v[i]));
				kv_push(s, k, eq + 1, true);
				free(k);
			} else {
				kv_push(s, a->v[i], NULL, false);
			}
		}
		break;
	}
	case KILN_STEP_EXPOSE:
		if (a->n == 0) {
			kiln_df_errorf(df, node, err, "EXPOSE requires at least one argument (write EXPOSE PORT[/PROTOCOL])");
			goto out;
		}
		for (size_t i = 0; i < a->n; i++)
			kiln_strv_push(&s->words, a->v[i]);
		if (s->words.n > 1)
			qsort(s->words.v, s->words.n, sizeof(char *), cmp_str);
		break;
	case KILN_STEP_VOLUME:
		if (a->n == 0) {
			kiln_df_errorf(df, node, err, "VOLUME requires at least one argument (write VOLUME PATH)");
			goto out;
		}
		for (size_t i = 0; i < a->n; i++) {
			const char *b = a->v[i];
			while (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r')
				b++;
			size_t n = strlen(b);
			while (n && (b[n - 1] == ' ' || b[n - 1] == '\t' || b[n - 1] == '\n' || b[n - 1] == '\r'))
				n--;
			if (n == 0) {
				kiln_df_errorf(df, node, err, "VOLUME specified can not be an empty string (name a path)");
				goto out;
			}
			kiln_strv_push_owned(&s->words, kiln_xstrndup(b, n));
		}
		break;
	case KILN_STEP_USER:
	case KILN_STEP_WORKDIR:
	case KILN_STEP_STOPSIGNAL:
	case KILN_STEP_MAINTAINER:
		if (a->n != 1) {
			kiln_df_errorf(df, node, err, "%s requires exactly one argument (quote or join the words into one)", kiln_step_kind_name(kind));
			goto out;
		}
		s->value = kiln_xstrdup(a->v[0]);
		break;
	case KILN_STEP_ENTRYPOINT:
	case KILN_STEP_CMD:
	case KILN_STEP_SHELL:
		s->exec = node->json;
		for (size_t i = 0; i < a->n; i++)
			kiln_strv_push(&s->words, a->v[i]);
		if (kind == KILN_STEP_SHELL) {
			if (a->n == 0) {
				kiln_df_errorf(df, node, err, "SHELL requires at least one argument (write SHELL [\"executable\", \"parameters\"])");
				goto out;
			}
			if (!node->json) {
				kiln_df_errorf(df, node, err, "SHELL requires the arguments to be in JSON form (write SHELL [\"executable\", \"parameters\"])");
				goto out;
			}
		}
		break;
	case KILN_STEP_HEALTHCHECK: {
		if (a->n == 0) {
			kiln_df_errorf(df, node, err, "HEALTHCHECK requires at least one argument (write HEALTHCHECK CMD COMMAND or HEALTHCHECK NONE)");
			goto out;
		}
		char *typ = upper_dup(a->v[0]);
		if (!strcmp(typ, "NONE")) {
			free(typ);
			if (a->n != 1) {
				kiln_df_errorf(df, node, err, "HEALTHCHECK NONE takes no arguments (remove what follows NONE)");
				goto out;
			}
			s->health.none = true;
			break;
		}
		if (strcmp(typ, "CMD") != 0) {
			kiln_df_errorf(df, node, err, "Unknown type \"%s\" in HEALTHCHECK (try CMD)", typ);
			free(typ);
			goto out;
		}
		free(typ);
		if (a->n < 2) {
			kiln_df_errorf(df, node, err, "Missing command after HEALTHCHECK CMD (write HEALTHCHECK CMD COMMAND)");
			goto out;
		}
		s->health.exec = node->json;
		for (size_t i = 1; i < a->n; i++)
			kiln_strv_push(&s->health.cmd, a->v[i]);
		if (healthcheck_duration(df, node, &f, "interval", &s->health.interval_ns, err) < 0 ||
		    healthcheck_duration(df, node, &f, "timeout", &s->health.timeout_ns, err) < 0 ||
		    healthcheck_duration(df, node, &f, "start-period", &s->health.start_period_ns, err) < 0 ||
		    healthcheck_duration(df, node, &f, "start-interval", &s->health.start_interval_ns, err) < 0)
			goto out;
		const struct kiln_flag_value *rv = flag_get(&f, "retries");
		if (rv && rv->value && *rv->value) {
			char *end = NULL;
			errno = 0;
			long long r = strtoll(rv->value, &end, 10);
			if (errno || !end || *end || r > 0x7fffffffLL || r < -0x80000000LL) {
				kiln_df_errorf(df, node, err, "invalid --retries value \"%s\" (use a whole number)", rv->value);
				goto out;
			}
			if (r < 0) {
				kiln_df_errorf(df, node, err, "--retries cannot be negative (%lld; use 0 or more)", r);
				goto out;
			}
			s->health.retries = (int)r;
		}
		break;
	}
	case KILN_STEP_ONBUILD: {
		const struct kiln_df_node *t = node->onbuild;
		if (!t || !t->instr_lower || !*t->instr_lower) {
			kiln_df_errorf(df, node, err, "ONBUILD requires at least one argument (write ONBUILD INSTRUCTION ...)");
			goto out;
		}
		char *tu = upper_dup(t->instr_lower);
		if (!strcmp(tu, "ONBUILD")) {
			kiln_df_errorf(df, node, err, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed (use one ONBUILD)");
			free(tu);
			goto out;
		}
		if (!strcmp(tu, "FROM") || !strcmp(tu, "MAINTAINER")) {
			kiln_df_errorf(df, node, err, "%s isn't allowed as an ONBUILD trigger (use it directly in the stage)", tu);
			free(tu);
			goto out;
		}
		/* other triggers are checked when they fire, as Docker does */
		free(tu);
		/* the raw trigger: the original without "ONBUILD" and blanks, then
		 * the heredoc bodies */
		const char *o = node->original ? node->original : "";
		while (*o == ' ' || *o == '\t' || *o == '\n' || *o == '\r' || *o == '\v' || *o == '\f')
			o++;
		if (!strncasecmp(o, "onbuild", 7))
			o += 7;
		while (*o == ' ' || *o == '\t' || *o == '\n' || *o == '\r' || *o == '\v' || *o == '\f')
			o++;
		struct kiln_buf b = {0};
		kiln_buf_puts(&b, o);
		const struct kiln_df_node *hn = t->n_heredocs ? t : node;
		for (size_t i = 0; i < hn->n_heredocs; i++)
			kiln_buf_printf(&b, "\n%s%s", hn->heredocs[i].content ? hn->heredocs[i].content : "",
					hn->heredocs[i].name ? hn->heredocs[i].name : "");
		s->value = kiln_buf_steal(&b);
		break;
	}
	}
	rc = 0;
out:
	flags_free(&f);
	return rc;
}

/* -------------------------------------------------------------- stages */

static void stage_free(struct kiln_stage *st)
{
	free(st->name);
	free(st->base_raw);
	free(st->base);
	free(st->platform);
	free(st->original);
	for (size_t i = 0; i < st->n_steps; i++)
		step_free(&st->steps[i]);
	free(st->steps);
	free(st->deps);
}

void kiln_plan_free(struct kiln_plan *plan)
{
	if (!plan)
		return;
	free(plan->filename);
	for (size_t i = 0; i < plan->n_global_args; i++) {
		free(plan->global_args[i].key);
		free(plan->global_args[i].value);
	}
	free(plan->global_args);
	kiln_env_free(&plan->global_env);
	for (size_t i = 0; i < plan->n_stages; i++)
		stage_free(&plan->stages[i]);
	free(plan->stages);
	free(plan);
}

static bool valid_stage_name(const char *s)
{
	if (!(*s >= 'a' && *s <= 'z'))
		return false;
	for (const char *p = s + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return false;
	return true;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Resolve a --from / from= reference made in stage `cur`: the index of a
 * stage (earlier or later: BuildKit allows forward references and rejects
 * only cycles, see check_cycles), -1 for an image; -2 with err for a stage
 * index that does not exist. */
static int resolve_stage_ref(const struct kiln_df *df, const struct kiln_df_node *node, const struct kiln_plan *plan,
			     size_t n_all, char *const *all_names, int cur, const char *ref, const char *what,
			     struct kiln_err *err)
{
	(void)plan;
	(void)cur;
	if (all_digits(ref)) {
		errno = 0;
		long long idx = strtoll(ref, NULL, 10);
		if (errno || idx >= (long long)n_all) {
			kiln_df_errorf(df, node, err,
				       "invalid %s value %s: index out of bounds (the file has %zu stages, numbered from 0)",
				       what, ref, n_all);
			return -2;
		}
		return (int)idx;
	}
	char *l = lower_dup(ref);
	int found = -1;
	for (size_t i = 0; i < n_all; i++)
		if (all_names[i] && !strcmp(all_names[i], l)) {
			found = (int)i;
			break;
		}
	free(l);
	return found;
}

/* The stages `st` needs (base, COPY --from, RUN --mount from=), each with
 * the line that makes the edge, for the cycle check.  *out is malloc'd. */
struct edge {
	int to;
	int line;
};

static size_t stage_edges(const struct kiln_stage *st, struct edge **out)
{
	size_t n = 0;
	struct edge *e = NULL;
	if (st->base_stage >= 0) {
		e = kiln_xrealloc(e, (n + 1) * sizeof(*e));
		e[n++] = (struct edge){st->base_stage, st->line};
	}
	for (size_t i = 0; i < st->n_steps; i++) {
		const struct kiln_step *s = &st->steps[i];
		if ((s->kind == KILN_STEP_COPY || s->kind == KILN_STEP_ADD) && s->copy.from_stage >= 0) {
			e = kiln_xrealloc(e, (n + 1) * sizeof(*e));
			e[n++] = (struct edge){s->copy.from_stage, s->line};
		}
		if (s->kind == KILN_STEP_RUN)
			for (size_t m = 0; m < s->run.n_mounts; m++)
				if (s->run.mounts[m].from_stage >= 0) {
					e = kiln_xrealloc(e, (n + 1) * sizeof(*e));
					e[n++] = (struct edge){s->run.mounts[m].from_stage, s->line};
				}
	}
	*out = e;
	return n;
}

static void stage_label(const struct kiln_stage *st, char *buf, size_t len)
{
	if (st->name)
		snprintf(buf, len, "%s", st->name);
	else
		snprintf(buf, len, "stage-%d", st->index);
}

/* Reject a stage that needs itself, directly or through other stages
 * (BuildKit: "circular dependency detected on stage").  Iterative DFS. */
static int check_cycles(const struct kiln_df *df, const struct kiln_plan *plan, struct kiln_err *err)
{
	size_t n = plan->n_stages;
	int *color = kiln_xcalloc(n + 1, sizeof(int)); /* 0 new, 1 on the path, 2 done */
	struct frame {
		int stage;
		size_t next;
		struct edge *e;
		size_t ne;
	} *stack = kiln_xcalloc(n + 1, sizeof(*stack));
	int rc = 0;
	for (size_t root = 0; root < n && rc == 0; root++) {
		if (color[root])
			continue;
		size_t sp = 0;
		stack[sp].stage = (int)root;
		stack[sp].next = 0;
		stack[sp].ne = stage_edges(&plan->stages[root], &stack[sp].e);
		color[root] = 1;
		sp++;
		while (sp > 0 && rc == 0) {
			struct frame *fr = &stack[sp - 1];
			if (fr->next == fr->ne) {
				color[fr->stage] = 2;
				free(fr->e);
				sp--;
				continue;
			}
			struct edge ed = fr->e[fr->next++];
			if (ed.to < 0 || (size_t)ed.to >= n || color[ed.to] == 2)
				continue;
			if (color[ed.to] == 1) {
				char a[128], b[128];
				stage_label(&plan->stages[ed.to], a, sizeof(a));
				stage_label(&plan->stages[fr->stage], b, sizeof(b));
				char where[64];
				snprintf(where, sizeof(where), "%s:%d: ", plan->filename, ed.line);
				(void)df;
				if (ed.to == fr->stage)
					kiln_err_set(err, 0,
						     "%scircular dependency detected on stage: %s (a stage cannot copy or mount from itself; name another stage)",
						     where, a);
				else
					kiln_err_set(err, 0,
						     "%scircular dependency detected on stage: %s (stage %s needs %s, which already needs %s; break the loop)",
						     where, a, b, a, b);
				rc = -1;
				break;
			}
			color[ed.to] = 1;
			stack[sp].stage = ed.to;
			stack[sp].next = 0;
			stack[sp].ne = stage_edges(&plan->stages[ed.to], &stack[sp].e);
			sp++;
		}
		while (sp > 0)
			free(stack[--sp].e);
	}
	free(stack);
	free(color);
	return rc;
}

static void dep_add(struct kiln_stage *st, int d)
{
	for (size_t i = 0; i < st->n_deps; i++)
		if (st->deps[i] == d)
			return;
	st->deps = kiln_xrealloc(st->deps, (st->n_deps + 1) * sizeof(int));
	st->deps[st->n_deps++] = d;
}

static int cmp_int(const void *x, const void *y)
{
	int a = *(const int *)x, b = *(const int *)y;
	return (a > b) - (a < b);
}

static int plan_error(const struct kiln_df *df, const struct kiln_df_node *node, struct kiln_err *err,
		      const char *msg)
{
	return kiln_df_errorf(df, node, err, "%s", msg);
}

int kiln_plan_build(const struct kiln_df *df, const struct kiln_env *build_args, const char *target,
		    struct kiln_plan **out, struct kiln_err *err)
{
	struct kiln_plan *plan = kiln_xcalloc(1, sizeof(*plan));
	plan->filename = kiln_xstrdup(df->filename ? df->filename : "Dockerfile");
	plan->escape = df->escape ? df->escape : '\\';
	plan->target = -1;
	kiln_plan_platform_args(&plan->global_env, NULL);

	/* names of all stages first (for "refers to a later stage") */
	size_t n_from = 0;
	for (size_t i = 0; i < df->n_nodes; i++)
		if (df->nodes[i].instr_lower && !strcmp(df->nodes[i].instr_lower, "from"))
			n_from++;
	char **all_names = kiln_xcalloc(n_from + 1, sizeof(char *));
	for (size_t i = 0, k = 0; i < df->n_nodes; i++) {
		const struct kiln_df_node *nd = &df->nodes[i];
		if (!nd->instr_lower || strcmp(nd->instr_lower, "from") != 0)
			continue;
		if (nd->args.n == 3 && !strcasecmp(nd->args.v[1], "as"))
			all_names[k] = lower_dup(nd->args.v[2]);
		k++;
	}

	struct kiln_stage *cur = NULL;
	int rc = -1;
	for (size_t ni = 0; ni < df->n_nodes; ni++) {
		const struct kiln_df_node *node = &df->nodes[ni];
		const char *lower = node->instr_lower ? node->instr_lower : "";
		bool is_from = !strcmp(lower, "from");
		enum kiln_step_kind kind = KILN_STEP_RUN;
		/* the parser's checks first: unknown instructions (with a hint),
		 * argument counts, flags, durations */
		if (kiln_df_check_node(df, node, err) < 0)
			goto out;
		if (!is_from && !kind_from_name(lower, &kind)) {
			kiln_df_errorf(df, node, err, "unknown instruction: %s (see the Dockerfile reference for the instructions kiln knows)", node->instr ? node->instr : lower);
			goto out;
		}

		if (is_from) {
			const struct kiln_strv *a = &node->args;
			char *name = NULL;
			if (a->n == 3 && !strcasecmp(a->v[1], "as")) {
				name = lower_dup(a->v[2]);
				if (!valid_stage_name(name)) {
					kiln_df_errorf(df, node, err,
						       "invalid name for build stage: \"%s\", name can't start with a number or contain symbols (use letters, digits, -, _ and .)",
						       a->v[2]);
					free(name);
					goto out;
				}
				for (size_t i = 0; i < plan->n_stages; i++)
					if (plan->stages[i].name && !strcmp(plan->stages[i].name, name)) {
						kiln_df_errorf(df, node, err,
							       "duplicate stage name \"%s\" (first defined on line %d)",
							       name, plan->stages[i].line);
						free(name);
						goto out;
					}
			} else if (a->n != 1) {
				plan_error(df, node, err, "FROM requires either one or three arguments");
				goto out;
			}
			struct flags f = {0};
			if (flags_parse(df, node, &f, err) < 0) {
				free(name);
				goto out;
			}
			char *platform_raw = flag_str(&f, "platform");
			flags_free(&f);

			plan->stages = kiln_xrealloc(plan->stages, (plan->n_stages + 1) * sizeof(struct kiln_stage));
			cur = &plan->stages[plan->n_stages];
			memset(cur, 0, sizeof(*cur));
			cur->index = (int)plan->n_stages;
			plan->n_stages++;
			cur->name = name;
			cur->line = node->start_line;
			cur->original = kiln_xstrdup(node->original ? node->original : "");
			cur->base_raw = kiln_xstrdup(a->v[0]);
			cur->base_stage = -1;
			struct kiln_err e2 = {0};
			if (kiln_expand_word(cur->base_raw, &plan->global_env, plan->escape, &cur->base, &e2) < 0) {
				free(platform_raw);
				kiln_df_errorf(df, node, err, "%s", e2.msg);
				goto out;
			}
			if (!*cur->base) {
				free(platform_raw);
				kiln_df_errorf(df, node, err, "base name (%s) should not be blank (give the ARG a default or pass --build-arg)", cur->base_raw);
				goto out;
			}
			if (platform_raw) {
				if (kiln_expand_word(platform_raw, &plan->global_env, plan->escape, &cur->platform,
						     &e2) < 0) {
					free(platform_raw);
					kiln_df_errorf(df, node, err, "%s", e2.msg);
					goto out;
				}
				free(platform_raw);
			}
			cur->scratch = !strcasecmp(cur->base, "scratch");
			char *bl = lower_dup(cur->base);
			for (int i = 0; i < cur->index; i++)
				if (plan->stages[i].name && !strcmp(plan->stages[i].name, bl)) {
					cur->base_stage = i;
					cur->scratch = false;
					break;
				}
			free(bl);
			if (cur->base_stage >= 0)
				dep_add(cur, cur->base_stage);
			continue;
		}

		if (!cur) {
			if (kind != KILN_STEP_ARG) {
				char *u = upper_dup(node->instr ? node->instr : lower);
				kiln_df_errorf(df, node, err,
					       "no build stage in current context: %s before the first FROM (only ARG may come first)",
					       u);
				free(u);
				goto out;
			}
			/* a global ARG */
			struct kiln_step tmp;
			if (convert(df, node, kind, &tmp, err) < 0) {
				step_free(&tmp);
				goto out;
			}
			for (size_t i = 0; i < tmp.n_kvs; i++) {
				const char *k = tmp.kvs[i].key;
				const char *given = build_args ? kiln_env_get(build_args, k) : NULL;
				char *val = NULL;
				bool has = false;
				if (given) {
					val = kiln_xstrdup(given);
					has = true;
				} else if (tmp.kvs[i].has_value) {
					struct kiln_err e2 = {0};
					if (kiln_expand_word(tmp.kvs[i].value, &plan->global_env, plan->escape, &val,
							     &e2) < 0) {
						step_free(&tmp);
						kiln_df_errorf(df, node, err, "%s", e2.msg);
						goto out;
					}
					has = true;
				} else if (kiln_env_get(&plan->global_env, k)) {
					/* e.g. "ARG TARGETPLATFORM": the automatic value */
					val = kiln_xstrdup(kiln_env_get(&plan->global_env, k));
					has = true;
				}
				plan->global_args = kiln_xrealloc(plan->global_args,
								  (plan->n_global_args + 1) * sizeof(struct kiln_plan_kv));
				struct kiln_plan_kv *g = &plan->global_args[plan->n_global_args++];
				g->key = kiln_xstrdup(k);
				g->value = val;
				g->has_value = has;
				if (has)
					kiln_env_set(&plan->global_env, k, val);
			}
			step_free(&tmp);
			continue;
		}

		cur->steps = kiln_xrealloc(cur->steps, (cur->n_steps + 1) * sizeof(struct kiln_step));
		struct kiln_step *s = &cur->steps[cur->n_steps];
		if (convert(df, node, kind, s, err) < 0) {
			step_free(s);
			goto out;
		}
		cur->n_steps++;
		/* the graph */
		if ((kind == KILN_STEP_COPY || kind == KILN_STEP_ADD) && s->copy.from) {
			/* --from=$VAR: resolved here with the global ARGs only
			 * (BuildKit does not expand --from at all); a builder that
			 * expands it with the stage's environment resolves the
			 * result again with kiln_plan_resolve_from */
			char *ref = NULL;
			struct kiln_err e2 = {0};
			if (!strchr(s->copy.from, '$') ||
			    kiln_expand_word(s->copy.from, &plan->global_env, plan->escape, &ref, &e2) < 0) {
				free(ref);
				ref = kiln_xstrdup(s->copy.from);
			}
			int r = resolve_stage_ref(df, node, plan, n_from, all_names, cur->index, ref, "from flag", err);
			free(ref);
			if (r == -2)
				goto out;
			s->copy.from_stage = r;
			if (r >= 0)
				dep_add(cur, r);
		}
		if (kind == KILN_STEP_RUN) {
			for (size_t i = 0; i < s->run.n_mounts; i++) {
				struct kiln_plan_mount *m = &s->run.mounts[i];
				if (!m->from || !*m->from)
					continue;
				int r = resolve_stage_ref(df, node, plan, n_from, all_names, cur->index, m->from,
							  "mount from", err);
				if (r == -2)
					goto out;
				m->from_stage = r;
				if (r >= 0)
					dep_add(cur, r);
			}
		}
	}
	if (plan->n_stages == 0) {
		kiln_df_errorf(df, NULL, err, "dockerfile contains no stages to build (add a FROM instruction)");
		goto out;
	}
	for (size_t i = 0; i < plan->n_stages; i++)
		if (plan->stages[i].n_deps > 1)
			qsort(plan->stages[i].deps, plan->stages[i].n_deps, sizeof(int), cmp_int);
	if (check_cycles(df, plan, err) < 0)
		goto out;
	if (target && *target) {
		const struct kiln_stage *t = NULL;
		char *tl = lower_dup(target);
		for (size_t i = 0; i < plan->n_stages; i++)
			if (plan->stages[i].name && !strcmp(plan->stages[i].name, tl)) {
				t = &plan->stages[i];
				break;
			}
		free(tl);
		if (!t) {
			kiln_df_errorf(df, NULL, err, "target stage \"%s\" could not be found (name a stage given with FROM IMAGE AS NAME)", target);
			goto out;
		}
		plan->target = t->index;
	} else {
		plan->target = (int)plan->n_stages - 1;
	}
	rc = 0;
out:
	for (size_t i = 0; i < n_from; i++)
		free(all_names[i]);
	free(all_names);
	if (rc < 0) {
		kiln_plan_free(plan);
		*out = NULL;
		return -1;
	}
	*out = plan;
	return 0;
}

int kiln_plan_needed_stages(const struct kiln_plan *plan, int target, int **out, size_t *n, struct kiln_err *err)
{
	if (target < 0)
		target = plan->target;
	if (target < 0 || (size_t)target >= plan->n_stages)
		return kiln_err_set(err, 0, "no stage %d in the plan", target);
	/* depth-first post-order from the target, dependencies in ascending
	 * order: every stage comes after the stages it needs, the target last
	 * (the plan has no cycles, so this terminates) */
	size_t ns = plan->n_stages;
	int *state = kiln_xcalloc(ns + 1, sizeof(int)); /* 0 new, 1 open, 2 emitted */
	int *v = kiln_xcalloc(ns + 1, sizeof(int));
	struct nframe {
		int stage;
		size_t next;
	} *stack = kiln_xcalloc(ns + 1, sizeof(*stack));
	size_t k = 0, sp = 0;
	stack[sp++] = (struct nframe){target, 0};
	state[target] = 1;
	while (sp > 0) {
		struct nframe *fr = &stack[sp - 1];
		const struct kiln_stage *st = &plan->stages[fr->stage];
		if (fr->next < st->n_deps) {
			int d = st->deps[fr->next++];
			if (d >= 0 && (size_t)d < ns && state[d] == 0) {
				state[d] = 1;
				stack[sp++] = (struct nframe){d, 0};
			}
			continue;
		}
		state[fr->stage] = 2;
		v[k++] = fr->stage;
		sp--;
	}
	free(stack);
	free(state);
	*out = v;
	*n = k;
	return 0;
}

int kiln_plan_resolve_from(const struct kiln_plan *plan, int stage, const char *ref, int *out, struct kiln_err *err)
{
	*out = -1;
	if (stage < 0 || (size_t)stage >= plan->n_stages)
		return kiln_err_set(err, 0, "no stage %d in the plan", stage);
	const struct kiln_stage *st = &plan->stages[stage];
	const char *what = ref ? ref : "";
	int found = -1;
	if (*what && all_digits(what)) {
		errno = 0;
		long long idx = strtoll(what, NULL, 10);
		if (errno || idx >= (long long)plan->n_stages)
			return kiln_err_set(err, 0,
					    "%s:%d: invalid from value %s: index out of bounds (the file has %zu stages, numbered from 0)",
					    plan->filename, st->line, what, plan->n_stages);
		found = (int)idx;
	} else {
		char *l = lower_dup(what);
		for (size_t i = 0; i < plan->n_stages; i++)
			if (plan->stages[i].name && !strcmp(plan->stages[i].name, l)) {
				found = (int)i;
				break;
			}
		free(l);
	}
	if (found < 0)
		return 0;
	/* the new edge stage -> found closes a loop when found needs stage */
	bool *seen = kiln_xcalloc(plan->n_stages + 1, sizeof(bool));
	int *todo = kiln_xcalloc(plan->n_stages + 1, sizeof(int));
	size_t nt = 0;
	bool loop = false;
	todo[nt++] = found;
	seen[found] = true;
	while (nt > 0 && !loop) {
		int c = todo[--nt];
		if (c == stage) {
			loop = true;
			break;
		}
		for (size_t d = 0; d < plan->stages[c].n_deps; d++) {
			int j = plan->stages[c].deps[d];
			if (j >= 0 && (size_t)j < plan->n_stages && !seen[j]) {
				seen[j] = true;
				todo[nt++] = j;
			}
		}
	}
	free(seen);
	free(todo);
	if (loop) {
		char a[128];
		stage_label(&plan->stages[found], a, sizeof(a));
		return kiln_err_set(err, 0, "%s:%d: circular dependency detected on stage: %s (from %s; name another stage)",
				    plan->filename, st->line, a, what);
	}
	*out = found;
	return 0;
}

const struct kiln_stage *kiln_plan_find_stage(const struct kiln_plan *plan, const char *name_or_index)
{
	if (!plan || !name_or_index)
		return NULL;
	if (all_digits(name_or_index)) {
		long long i = strtoll(name_or_index, NULL, 10);
		if (i >= 0 && (size_t)i < plan->n_stages)
			return &plan->stages[i];
		return NULL;
	}
	for (size_t i = 0; i < plan->n_stages; i++)
		if (plan->stages[i].name && !strcasecmp(plan->stages[i].name, name_or_index))
			return &plan->stages[i];
	return NULL;
}

/* ------------------------------------------------------------ refs */

static int refs_of(const char *w, char escape, struct kiln_strv *names, struct kiln_err *err)
{
	if (!w || !strchr(w, '$'))
		return 0;
	return kiln_expand_refs(w, escape, names, err);
}

int kiln_plan_step_refs(const struct kiln_step *s, char escape, struct kiln_strv *names, struct kiln_err *err)
{
	int r = 0;
	switch (s->kind) {
	case KILN_STEP_RUN:
		for (size_t i = 0; i < s->run.n_mounts && r == 0; i++) {
			struct kiln_strv fields = {0};
			struct kiln_err e2 = {0};
			if (csv_fields(s->run.mounts[i].raw, &fields, &e2) == 0)
				for (size_t k = 0; k < fields.n && r == 0; k++) {
					const char *eq = strchr(fields.v[k], '=');
					if (eq)
						r = refs_of(eq + 1, escape, names, err);
				}
			kiln_strv_free(&fields);
		}
		break;
	case KILN_STEP_COPY:
	case KILN_STEP_ADD:
		for (size_t i = 0; i < s->copy.sources.n && r == 0; i++)
			r = refs_of(s->copy.sources.v[i], escape, names, err);
		if (r == 0)
			r = refs_of(s->copy.dest, escape, names, err);
		if (r == 0)
			r = refs_of(s->copy.from, escape, names, err);
		if (r == 0)
			r = refs_of(s->copy.chown, escape, names, err);
		if (r == 0)
			r = refs_of(s->copy.chmod, escape, names, err);
		if (r == 0)
			r = refs_of(s->copy.checksum, escape, names, err);
		for (size_t i = 0; i < s->copy.excludes.n && r == 0; i++)
			r = refs_of(s->copy.excludes.v[i], escape, names, err);
		for (size_t i = 0; i < s->copy.n_heredocs && r == 0; i++) {
			if (!s->copy.heredocs[i].expand || !strchr(s->copy.heredocs[i].content, '$'))
				continue;
			struct kiln_expand_opts o = {.escape = '\\', .skip_quotes = true, .skip_unset = true,
						     .refs = names};
			char *tmp = NULL;
			r = kiln_expand(s->copy.heredocs[i].content, NULL, &o, &tmp, NULL, err);
			free(tmp);
		}
		break;
	case KILN_STEP_ENV:
	case KILN_STEP_LABEL:
	case KILN_STEP_ARG:
		for (size_t i = 0; i < s->n_kvs && r == 0; i++) {
			if (s->kind != KILN_STEP_ARG)
				r = refs_of(s->kvs[i].key, escape, names, err);
			if (r == 0 && s->kvs[i].has_value)
				r = refs_of(s->kvs[i].value, escape, names, err);
		}
		break;
	case KILN_STEP_EXPOSE:
	case KILN_STEP_VOLUME:
		for (size_t i = 0; i < s->words.n && r == 0; i++)
			r = refs_of(s->words.v[i], escape, names, err);
		break;
	case KILN_STEP_USER:
	case KILN_STEP_WORKDIR:
	case KILN_STEP_STOPSIGNAL:
		r = refs_of(s->value, escape, names, err);
		break;
	default:
		break;
	}
	return r;
}

/* ---------------------------------------------------------------- JSON */

static json_t *strv_json(const struct kiln_strv *v)
{
	json_t *a = json_array();
	for (size_t i = 0; i < v->n; i++)
		json_array_append_new(a, json_string(v->v[i]));
	return a;
}

static void set_str(json_t *o, const char *k, const char *v)
{
	if (v)
		json_object_set_new(o, k, json_string(v));
}

static json_t *heredocs_json(const struct kiln_plan_heredoc *h, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		set_str(o, "name", h[i].name);
		set_str(o, "content", h[i].content);
		json_object_set_new(o, "expand", json_boolean(h[i].expand));
		json_object_set_new(o, "chomp", json_boolean(h[i].chomp));
		if (h[i].fd >= 0)
			json_object_set_new(o, "fd", json_integer(h[i].fd));
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *kvs_json(const struct kiln_plan_kv *kv, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		set_str(o, "key", kv[i].key);
		if (kv[i].has_value)
			set_str(o, "value", kv[i].value);
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *mount_json(const struct kiln_plan_mount *m)
{
	json_t *o = json_object();
	set_str(o, "type", mount_type_name(m->type));
	set_str(o, "target", m->target);
	set_str(o, "source", m->source);
	set_str(o, "from", m->from);
	if (m->from_stage >= 0)
		json_object_set_new(o, "from_stage", json_integer(m->from_stage));
	set_str(o, "id", m->id);
	if (m->sharing_set)
		set_str(o, "sharing", sharing_name(m->sharing));
	if (m->mode >= 0)
		json_object_set_new(o, "mode", json_integer(m->mode));
	if (m->uid >= 0)
		json_object_set_new(o, "uid", json_integer(m->uid));
	if (m->gid >= 0)
		json_object_set_new(o, "gid", json_integer(m->gid));
	json_object_set_new(o, "readonly", json_boolean(m->readonly));
	if (m->type == KILN_PLAN_MOUNT_SECRET || m->type == KILN_PLAN_MOUNT_SSH)
		json_object_set_new(o, "required", json_boolean(m->required));
	if (m->size > 0)
		json_object_set_new(o, "size", json_integer(m->size));
	return o;
}

static json_t *step_json(const struct kiln_step *s)
{
	json_t *o = json_object();
	set_str(o, "instruction", kiln_step_kind_name(s->kind));
	json_object_set_new(o, "line", json_integer(s->line));
	json_object_set_new(o, "end_line", json_integer(s->end_line));
	set_str(o, "original", s->original);
	switch (s->kind) {
	case KILN_STEP_RUN: {
		json_object_set_new(o, "form", json_string(s->run.exec ? "exec" : "shell"));
		json_object_set_new(o, "args", strv_json(&s->run.args));
		if (s->run.n_heredocs) {
			json_object_set_new(o, "heredocs", heredocs_json(s->run.heredocs, s->run.n_heredocs));
			json_object_set_new(o, "script_heredoc", json_boolean(s->run.script_heredoc));
		}
		if (s->run.n_mounts) {
			json_t *a = json_array();
			for (size_t i = 0; i < s->run.n_mounts; i++)
				json_array_append_new(a, mount_json(&s->run.mounts[i]));
			json_object_set_new(o, "mounts", a);
		}
		static const char *nets[] = {"default", "none", "host"};
		if (s->run.network_set)
			set_str(o, "network", nets[s->run.network]);
		if (s->run.security == KILN_PLAN_SECURITY_INSECURE)
			set_str(o, "security", "insecure");
		break;
	}
	case KILN_STEP_COPY:
	case KILN_STEP_ADD:
		json_object_set_new(o, "sources", strv_json(&s->copy.sources));
		if (s->copy.n_heredocs)
			json_object_set_new(o, "heredocs", heredocs_json(s->copy.heredocs, s->copy.n_heredocs));
		set_str(o, "dest", s->copy.dest);
		set_str(o, "from", s->copy.from);
		if (s->copy.from_stage >= 0)
			json_object_set_new(o, "from_stage", json_integer(s->copy.from_stage));
		set_str(o, "chown", s->copy.chown);
		set_str(o, "chmod", s->copy.chmod);
		set_str(o, "checksum", s->copy.checksum);
		if (s->copy.link)
			json_object_set_new(o, "link", json_true());
		if (s->copy.parents)
			json_object_set_new(o, "parents", json_true());
		if (s->copy.keep_git_dir)
			json_object_set_new(o, "keep_git_dir", json_true());
		if (s->copy.unpack >= 0)
			json_object_set_new(o, "unpack", json_boolean(s->copy.unpack));
		if (s->copy.excludes.n)
			json_object_set_new(o, "excludes", strv_json(&s->copy.excludes));
		break;
	case KILN_STEP_ENV:
	case KILN_STEP_LABEL:
	case KILN_STEP_ARG:
		json_object_set_new(o, "pairs", kvs_json(s->kvs, s->n_kvs));
		break;
	case KILN_STEP_EXPOSE:
	case KILN_STEP_VOLUME:
		json_object_set_new(o, "values", strv_json(&s->words));
		break;
	case KILN_STEP_ENTRYPOINT:
	case KILN_STEP_CMD:
	case KILN_STEP_SHELL:
		json_object_set_new(o, "form", json_string(s->exec ? "exec" : "shell"));
		json_object_set_new(o, "args", strv_json(&s->words));
		break;
	case KILN_STEP_HEALTHCHECK:
		if (s->health.none) {
			json_object_set_new(o, "test", json_pack("[s]", "NONE"));
			break;
		}
		{
			json_t *t = json_array();
			json_array_append_new(t, json_string(s->health.exec ? "CMD" : "CMD-SHELL"));
			for (size_t i = 0; i < s->health.cmd.n; i++)
				json_array_append_new(t, json_string(s->health.cmd.v[i]));
			json_object_set_new(o, "test", t);
		}
		if (s->health.interval_ns)
			json_object_set_new(o, "interval_ns", json_integer(s->health.interval_ns));
		if (s->health.timeout_ns)
			json_object_set_new(o, "timeout_ns", json_integer(s->health.timeout_ns));
		if (s->health.start_period_ns)
			json_object_set_new(o, "start_period_ns", json_integer(s->health.start_period_ns));
		if (s->health.start_interval_ns)
			json_object_set_new(o, "start_interval_ns", json_integer(s->health.start_interval_ns));
		if (s->health.retries)
			json_object_set_new(o, "retries", json_integer(s->health.retries));
		break;
	case KILN_STEP_USER:
	case KILN_STEP_WORKDIR:
	case KILN_STEP_STOPSIGNAL:
	case KILN_STEP_MAINTAINER:
	case KILN_STEP_ONBUILD:
		set_str(o, "value", s->value);
		break;
	}
	return o;
}

json_t *kiln_plan_to_json(const struct kiln_plan *plan)
{
	json_t *o = json_object();
	set_str(o, "file", plan->filename);
	char esc[2] = {plan->escape, 0};
	set_str(o, "escape", esc);
	json_object_set_new(o, "global_args", kvs_json(plan->global_args, plan->n_global_args));
	json_object_set_new(o, "target", json_integer(plan->target));
	json_t *stages = json_array();
	for (size_t i = 0; i < plan->n_stages; i++) {
		const struct kiln_stage *st = &plan->stages[i];
		json_t *so = json_object();
		json_object_set_new(so, "index", json_integer(st->index));
		if (st->name)
			set_str(so, "name", st->name);
		set_str(so, "base", st->base);
		set_str(so, "base_raw", st->base_raw);
		if (st->base_stage >= 0)
			json_object_set_new(so, "base_stage", json_integer(st->base_stage));
		if (st->scratch)
			json_object_set_new(so, "scratch", json_true());
		set_str(so, "platform", st->platform);
		json_object_set_new(so, "line", json_integer(st->line));
		json_t *deps = json_array();
		for (size_t d = 0; d < st->n_deps; d++)
			json_array_append_new(deps, json_integer(st->deps[d]));
		json_object_set_new(so, "deps", deps);
		json_t *steps = json_array();
		for (size_t k = 0; k < st->n_steps; k++)
			json_array_append_new(steps, step_json(&st->steps[k]));
		json_object_set_new(so, "steps", steps);
		json_array_append_new(stages, so);
	}
	json_object_set_new(o, "stages", stages);
	return o;
}
