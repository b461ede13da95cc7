/* kiln — the Dockerfile parser: text → parse tree (AST), exactly as BuildKit's
 * frontend/dockerfile/parser does it (directives, escapes, continuations,
 * heredocs, JSON vs shell form, per-instruction argument cutting, flags).
 *
 * The parser does not expand variables and does not know about stages; the
 * plan (parser/plan.h) builds on this tree.
 *
 * Two levels of checks:
 *   kiln_parse()     what BuildKit's parser rejects (bad directives, nested
 *                    JSON, ENV without value, line too long, unterminated
 *                    heredoc, a file with no instructions, ...).
 *   kiln_df_check()  what BuildKit rejects when it turns the tree into
 *                    instructions, apart from stage/ARG semantics: argument
 *                    counts, unknown/duplicate flags, bad durations,
 *                    HEALTHCHECK type, ONBUILD triggers, SHELL form, ...
 * Every message starts with "<file>:<line>: ".
 */
#ifndef KILN_PARSER_PARSER_H
#define KILN_PARSER_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/util.h"

/* A line of this many bytes or more (without its '\n') is rejected, as
 * BuildKit's scanner does ("max allowed size of 65535"). */
#define KILN_DF_MAX_LINE (64 * 1024)

struct kiln_df_heredoc {
	char *name;      /* delimiter word without quotes, e.g. "EOF" */
	char *content;   /* body: every line with its '\n'; for <<- leading tabs removed */
	bool expand;     /* delimiter was unquoted: expand variables in the body */
	bool chomp;      /* <<- */
	int fd;          /* file descriptor prefix as in "3<<EOF", or -1 when none */
};

struct kiln_df_node {
	char *instr;           /* the instruction word as written, e.g. "Run" */
	char *instr_lower;     /* lower-cased: "run" (what the dump prints) */
	int start_line;        /* 1-based line of the instruction word */
	int end_line;          /* last line, continuation and heredoc bodies included */
	struct kiln_strv flags;/* "--from=x" as written, quotes removed; "--" dropped */
	struct kiln_strv args; /* arguments cut as the instruction requires (see the dump rules);
				* a "\u0000" in a JSON argument is kept as the bytes C0 80 */
	bool json;             /* exec form: args came from a JSON array */
	struct kiln_df_heredoc *heredocs; /* RUN/COPY/ADD (shell form) only; for ONBUILD they sit on
					   * the ONBUILD node, as in BuildKit */
	size_t n_heredocs;
	char *original;        /* the whole logical line (continuations joined), as BuildKit's Original */
	char *rest;            /* text after the instruction word, flags included, trimmed */
	struct kiln_strv comments; /* BuildKit's PrevComment: '#' lines since the previous
				    * instruction (text after '#', trimmed); a bare '#' clears them */
	struct kiln_df_node *onbuild; /* ONBUILD: the wrapped instruction (args stay empty), else NULL */
};

struct kiln_df {
	char *filename;        /* for messages, e.g. "Dockerfile" */
	char escape;           /* '\\' (default) or '`' */
	char *syntax;          /* "# syntax=" directive value, or NULL */
	char *check;           /* "# check=" directive value, or NULL */
	int escape_line, syntax_line, check_line; /* 0 when absent */
	struct kiln_df_node *nodes; /* in file order */
	size_t n_nodes;
	struct kiln_strv warnings;  /* "<file>:<line>: ..." notes a build should print (empty
				     * continuation lines), not errors */
};

/* Parse a Dockerfile.  text need not be NUL-terminated; filename is used in
 * messages (NULL = "Dockerfile").  On success *out is owned by the caller
 * (kiln_df_free).  On failure returns -1 with "<file>:<line>: <what>" in err.
 * Unlike BuildKit, a NUL byte in the text is an error (C strings). */
int kiln_parse(const char *text, size_t len, const char *filename, struct kiln_df **out,
	       struct kiln_err *err);
void kiln_df_free(struct kiln_df *df);

/* BuildKit's AST dump: one "(instr [flags] "arg" ...)" line per instruction,
 * each ending in '\n' (appended to out). */
void kiln_df_dump(const struct kiln_df *df, struct kiln_buf *out);
/* The dump of one node: "(instr ...)" without a newline. */
void kiln_df_node_dump(const struct kiln_df_node *node, struct kiln_buf *out);

/* Go's strconv.Quote of s (appended to out). */
void kiln_df_quote(const char *s, struct kiln_buf *out);

/* Instruction-level validation of the whole tree (see the top of this file).
 * Does not know about stages: "instruction before FROM", stage names and
 * ARG scoping belong to the plan. */
int kiln_df_check(const struct kiln_df *df, struct kiln_err *err);
/* The same for one node (for ONBUILD only the trigger word is checked, as
 * BuildKit does; the trigger itself is checked when it runs). */
int kiln_df_check_node(const struct kiln_df *df, const struct kiln_df_node *node,
		       struct kiln_err *err);

/* Set err to "<file>:<line>: <message>" for node (node may be NULL: no line). */
int kiln_df_errorf(const struct kiln_df *df, const struct kiln_df_node *node, struct kiln_err *err,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* BuildKit's ParseHeredoc for one word ("<<EOF", "<<-'EOF'", "3<<EOF"): returns
 * 1 and fills h (h->content NULL; free h->name) when word is a heredoc
 * reference, 0 when it is not, -1 on a lexing error.  The plan uses it to
 * tell heredoc sources of COPY/ADD from paths. */
int kiln_df_parse_heredoc_word(const char *word, struct kiln_df_heredoc *h, struct kiln_err *err);

/* ---- flags ------------------------------------------------------------ */

enum kiln_flag_type {
	KILN_FLAG_STRING,   /* --name=value, once */
	KILN_FLAG_BOOL,     /* --name, --name=true, --name=false, once */
	KILN_FLAG_STRINGS,  /* --name=value, may repeat (e.g. RUN --mount) */
};

struct kiln_flag_spec {
	const char *name;   /* without the leading "--"; a {NULL} entry ends the list */
	enum kiln_flag_type type;
};

struct kiln_flag_value {
	bool set;           /* the flag was given */
	const char *value;  /* STRING: the value (points into node->flags); BOOL: "true"/"false" */
	bool b;             /* BOOL: the value */
	struct kiln_strv values; /* STRINGS: every value in order (owned copies) */
};

/* Validate node->flags against spec and fill out[i] for spec[i] (out must have
 * as many entries as spec has before its {NULL} end; it is zeroed first).
 * Errors, all "<file>:<line>: ...": unknown flag (the message lists the flags
 * the instruction accepts), duplicate flag, missing value, bad boolean, a
 * flag not starting with "--".  Free with kiln_flag_values_free. */
int kiln_df_node_flags(const struct kiln_df *df, const struct kiln_df_node *node,
		       const struct kiln_flag_spec *spec, struct kiln_flag_value *out,
		       struct kiln_err *err);
void kiln_flag_values_free(struct kiln_flag_value *vals, size_t n);

/* The flags kiln accepts for an instruction (lower-case name), or NULL for an
 * instruction that takes none / is unknown.  Shared with the plan. */
const struct kiln_flag_spec *kiln_df_flag_spec(const char *instr_lower);

/* True for the instructions of the Dockerfile reference (lower-case name). */
bool kiln_df_known_instruction(const char *instr_lower);

#endif
