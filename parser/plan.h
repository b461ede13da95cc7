/* kiln — the build plan: the parse tree (parser/parser.h) turned into stages
 * of typed steps, with the stage graph.
 *
 * Words stay unexpanded in the plan: the builder expands them with the
 * stage's environment when it runs a step (parser/expand.h), as Docker does
 * for ADD COPY ENV EXPOSE LABEL STOPSIGNAL USER VOLUME WORKDIR ARG and the
 * RUN --mount values; RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK commands are never
 * expanded by the builder (the shell does it).  The exception is FROM: its
 * image and --platform are expanded here with the global ARGs (those declared
 * before the first FROM, overridden by --build-arg, plus the automatic
 * platform args BUILDPLATFORM/TARGETPLATFORM/... ).
 *
 * Errors are "<file>:<line>: <what>": unknown instruction, an instruction
 * other than ARG before the first FROM, invalid or duplicate stage names,
 * unknown --target, COPY --from / RUN --mount from= stage references that
 * form a cycle (a stage needing itself, directly or through others) or name
 * a stage index that does not exist, unknown flags, bad mount specs, bad
 * HEALTHCHECK options.  As in BuildKit, --from may name a later stage.
 */
#ifndef KILN_PARSER_PLAN_H
#define KILN_PARSER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/util.h"
#include "parser/expand.h"
#include "parser/parser.h"

enum kiln_step_kind {
	KILN_STEP_RUN,
	KILN_STEP_COPY,
	KILN_STEP_ADD,
	KILN_STEP_ENV,
	KILN_STEP_LABEL,
	KILN_STEP_ARG,
	KILN_STEP_EXPOSE,
	KILN_STEP_VOLUME,
	KILN_STEP_USER,
	KILN_STEP_WORKDIR,
	KILN_STEP_ENTRYPOINT,
	KILN_STEP_CMD,
	KILN_STEP_SHELL,
	KILN_STEP_HEALTHCHECK,
	KILN_STEP_STOPSIGNAL,
	KILN_STEP_MAINTAINER,
	KILN_STEP_ONBUILD,
};

/* "RUN", "COPY", ... */
const char *kiln_step_kind_name(enum kiln_step_kind kind);

/* ENV / LABEL pairs (has_value always true) and ARG declarations
 * (has_value false for "ARG NAME"). Values are unexpanded, quotes kept. */
struct kiln_plan_kv {
	char *key;
	char *value;      /* NULL when !has_value */
	bool has_value;
};

/* A heredoc body (RUN script or COPY/ADD inline file). */
struct kiln_plan_heredoc {
	char *name;       /* delimiter word, e.g. "EOF" (the file name for COPY) */
	char *content;    /* body, each line with its '\n' (for <<- tabs already removed) */
	bool expand;      /* unquoted delimiter: expand variables in the body */
	bool chomp;       /* <<- */
	int fd;           /* "3<<EOF" → 3, else -1 */
};

enum kiln_plan_mount_type {
	KILN_PLAN_MOUNT_BIND,
	KILN_PLAN_MOUNT_CACHE,
	KILN_PLAN_MOUNT_TMPFS,
	KILN_PLAN_MOUNT_SECRET,
	KILN_PLAN_MOUNT_SSH,
};
enum kiln_plan_mount_sharing {
	KILN_PLAN_SHARING_SHARED,   /* the default */
	KILN_PLAN_SHARING_PRIVATE,
	KILN_PLAN_SHARING_LOCKED,
};

/* RUN --mount=...: keys are case-insensitive; src/source, dst/destination/
 * target, ro/readonly, rw/readwrite are aliases.  Values are unexpanded.
 * source of a bind mount must still be resolved inside its root by the
 * builder ("..", symlinks). */
struct kiln_plan_mount {
	enum kiln_plan_mount_type type;
	char *target;          /* NULL when not given: secret/ssh have defaults, the others mount
				* on the working directory (a relative target is relative to it) */
	char *source;          /* NULL when not given */
	char *from;            /* stage name/index or image, NULL = the build context (bind) / empty (cache) */
	int from_stage;        /* from resolved to a stage index, else -1 */
	char *id;              /* cache/secret/ssh id, NULL when not given */
	enum kiln_plan_mount_sharing sharing;
	bool sharing_set;
	int64_t mode;          /* -1 when not given (octal in the spec) */
	int64_t uid, gid;      /* -1 when not given */
	bool readonly;         /* Docker's default applied: bind/secret/ssh read-only, cache/tmpfs writable */
	bool required;         /* secret/ssh */
	int64_t size;          /* tmpfs size in bytes, 0 when not given */
	char *raw;             /* the spec as written */
};

enum kiln_plan_network { KILN_PLAN_NET_DEFAULT, KILN_PLAN_NET_NONE, KILN_PLAN_NET_HOST };
enum kiln_plan_security { KILN_PLAN_SECURITY_SANDBOX, KILN_PLAN_SECURITY_INSECURE };

struct kiln_step_run {
	bool exec;                      /* JSON form: args is the argv */
	struct kiln_strv args;          /* shell form: one element, the command text */
	struct kiln_plan_heredoc *heredocs;
	size_t n_heredocs;
	bool script_heredoc;            /* shell form whose command is just "<<EOF": run heredocs[0] as the script */
	struct kiln_plan_mount *mounts;
	size_t n_mounts;
	enum kiln_plan_network network;
	bool network_set;
	enum kiln_plan_security security;
};

/* COPY and ADD. */
struct kiln_step_copy {
	struct kiln_strv sources;       /* paths / URLs / git refs as written (no heredocs) */
	struct kiln_plan_heredoc *heredocs; /* inline files ("<<EOF" sources), in order */
	size_t n_heredocs;
	char *dest;
	char *from;                     /* --from as written, NULL when absent */
	int from_stage;                 /* --from resolved to a stage index (earlier or later), else
					   -1 (an image).  A --from with variables is resolved with the
					   global ARGs only (BuildKit does not expand --from at all); a
					   builder that expands it with the stage's environment must
					   resolve the result again with kiln_plan_resolve_from */
	char *chown, *chmod, *checksum; /* NULL when absent */
	bool link, parents, keep_git_dir;
	int unpack;                     /* ADD --unpack: -1 not given, 0 false, 1 true */
	struct kiln_strv excludes;      /* --exclude patterns (repeatable) */
	bool exec;                      /* sources/dest came from a JSON array */
};

struct kiln_step_healthcheck {
	bool none;                      /* HEALTHCHECK NONE */
	bool exec;                      /* CMD in JSON form ("CMD") vs shell form ("CMD-SHELL") */
	struct kiln_strv cmd;           /* the command (shell form: one element) */
	int64_t interval_ns, timeout_ns, start_period_ns, start_interval_ns; /* 0 = default */
	int retries;                    /* 0 = default */
};

struct kiln_step {
	enum kiln_step_kind kind;
	int line;                       /* first line of the instruction */
	int end_line;
	char *original;                 /* the instruction as written, continuations joined */
	struct kiln_step_run run;                 /* RUN */
	struct kiln_step_copy copy;               /* COPY, ADD */
	struct kiln_plan_kv *kvs;                 /* ENV, LABEL, ARG */
	size_t n_kvs;
	struct kiln_strv words;                   /* EXPOSE ports (sorted as Docker does), VOLUME paths,
						     ENTRYPOINT/CMD/SHELL argv (shell form: one element) */
	bool exec;                                /* ENTRYPOINT/CMD/SHELL: JSON form */
	char *value;                              /* USER, WORKDIR, STOPSIGNAL, MAINTAINER; ONBUILD: the raw trigger */
	struct kiln_step_healthcheck health;      /* HEALTHCHECK */
};

struct kiln_stage {
	int index;
	char *name;             /* lower-cased "AS name", NULL when unnamed */
	char *base_raw;         /* the FROM image word as written */
	char *base;             /* after expanding the global ARGs */
	int base_stage;         /* base is this earlier stage, else -1 */
	bool scratch;           /* FROM scratch */
	char *platform;         /* --platform after expansion, NULL when absent */
	int line;
	char *original;
	struct kiln_step *steps;
	size_t n_steps;
	int *deps;              /* stages this one needs (base, COPY --from, RUN --mount from), sorted, unique;
				 * may include later stages (never a cycle) */
	size_t n_deps;
};

struct kiln_plan {
	char *filename;
	char escape;
	/* ARGs before the first FROM, in order, with their effective values
	 * (--build-arg overrides the default; the default is expanded with the
	 * ARGs before it).  has_value false: declared without value and not given. */
	struct kiln_plan_kv *global_args;
	size_t n_global_args;
	/* The environment FROM lines were expanded with: platform args + the
	 * global ARGs that have a value. */
	struct kiln_env global_env;
	struct kiln_stage *stages;
	size_t n_stages;
	int target;             /* index of the target stage */
};

/* Build the plan.  build_args: --build-arg values (may be NULL); target: the
 * --target stage name or NULL for the last stage.  *out is owned by the
 * caller (kiln_plan_free); the plan copies what it keeps from df. */
int kiln_plan_build(const struct kiln_df *df, const struct kiln_env *build_args, const char *target,
		    struct kiln_plan **out, struct kiln_err *err);
void kiln_plan_free(struct kiln_plan *plan);

/* The stages needed to build stage `target` (-1 = plan->target), in build
 * order: every stage after the stages it needs (dependencies taken in
 * ascending index), the target last.  *out is malloc'd. */
int kiln_plan_needed_stages(const struct kiln_plan *plan, int target, int **out, size_t *n,
			    struct kiln_err *err);

/* Resolve a COPY --from / RUN --mount from= value that the builder expanded
 * with the environment of stage `stage` (the plan resolved it with the global
 * ARGs only): *out = the stage it names (name, case-insensitive, or decimal
 * index; earlier or later), or -1 for an image.  Fails ("<file>:<line>: ...")
 * for an index past the last stage, or when the edge would close a cycle
 * (the named stage needs `stage`, or is `stage`). */
int kiln_plan_resolve_from(const struct kiln_plan *plan, int stage, const char *ref, int *out,
			   struct kiln_err *err);

/* A stage by name (case-insensitive) or decimal index; NULL when none. */
const struct kiln_stage *kiln_plan_find_stage(const struct kiln_plan *plan, const char *name_or_index);

/* The variables the words of a step reference (appended once each to
 * names), for "build args used by a step" in cache keys: COPY/ADD sources,
 * dest, flags and expanded heredocs; ENV/LABEL keys and values; ARG
 * defaults; EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL; RUN mount values.
 * A RUN command itself sees every ARG in scope as an environment variable:
 * the builder must count all of them for RUN. */
int kiln_plan_step_refs(const struct kiln_step *step, char escape, struct kiln_strv *names,
			struct kiln_err *err);

/* The whole plan as JSON (new reference), for `kiln parse --json`. */
json_t *kiln_plan_to_json(const struct kiln_plan *plan);

/* The automatic platform args of this host (BUILDPLATFORM, BUILDOS,
 * BUILDARCH, BUILDVARIANT, TARGETPLATFORM, TARGETOS, TARGETARCH,
 * TARGETVARIANT), set into env; platform (e.g. "linux/arm64") overrides the
 * TARGET* ones when non-NULL. */
void kiln_plan_platform_args(struct kiln_env *env, const char *platform);

/* Parse one --mount spec without expanding it (what the plan holds; values
 * with variables are not validated yet). */
int kiln_plan_parse_mount(const char *spec, struct kiln_plan_mount *out, struct kiln_err *err);
/* Parse one --mount spec, expanding every value with env first (what the
 * builder runs with the stage's environment: pass step->run.mounts[i].raw).
 * from_stage is left -1: take it from the plan's mount. */
int kiln_plan_expand_mount(const char *spec, const struct kiln_env *env, char escape, struct kiln_plan_mount *out,
			   struct kiln_err *err);
void kiln_plan_mount_free(struct kiln_plan_mount *m);

#endif
