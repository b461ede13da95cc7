/* kiln — Docker's shell-word expansion (BuildKit's lexer rules) and a small
 * ordered environment type.
 *
 * What expansion does, as Docker does it:
 *   - single quotes keep everything literally (no escapes inside);
 *   - double quotes keep everything but `$`, and the escape character escapes
 *     only `"`, `$` and itself there;
 *   - outside quotes the escape character (`\` or `` ` ``) makes the next
 *     character literal; a trailing escape is dropped;
 *   - `$v ${v} ${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?msg} ${v?msg}`
 *     `${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}` (p: a glob with `*`
 *     and `?`, `\` escapes them);
 *   - word splitting (kiln_expand_words) splits on blanks that come from the
 *     literal text outside quotes or from unquoted expansions only.
 * Errors: "failed to process \"WORD\": <why>" with Docker's wording for why
 * ("syntax error: bad substitution", "unsupported modifier (:=) in
 * substitution", "NAME: is not allowed to be unset", ...).
 */
#ifndef KILN_PARSER_EXPAND_H
#define KILN_PARSER_EXPAND_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "common/util.h"

/* An ordered list of environment variables.  Zero-initialise it.
 * A variable set to "" is different from an unset one. */
struct kiln_env_var {
	char *key;
	char *value;
};
struct kiln_env {
	struct kiln_env_var *v;
	size_t n;
	size_t cap;
};

/* Set key to value (copied).  An existing key keeps its position. */
void kiln_env_set(struct kiln_env *env, const char *key, const char *value);
/* Set from "KEY=VALUE" ("KEY" alone sets KEY to ""). */
void kiln_env_set_kv(struct kiln_env *env, const char *kv);
/* The value, or NULL when unset.  The pointer lives until the next change. */
const char *kiln_env_get(const struct kiln_env *env, const char *key);
bool kiln_env_has(const struct kiln_env *env, const char *key);
/* Remove key; returns true when it was set. */
bool kiln_env_unset(struct kiln_env *env, const char *key);
/* Deep copy into dst (dst's old content is freed). */
void kiln_env_copy(struct kiln_env *dst, const struct kiln_env *src);
/* A NULL-terminated "KEY=VALUE" list in order; free with kiln_strv_free_raw. */
char **kiln_env_to_strv(const struct kiln_env *env);
void kiln_env_free(struct kiln_env *env);

/* Options for kiln_expand. */
struct kiln_expand_opts {
	char escape;             /* '\\' (default when 0) or '`' */
	bool skip_unset;         /* leave references to unset variables as written */
	struct kiln_strv *refs;  /* when non-NULL, every variable name looked up is
				  * appended once, in order of first use */
	bool skip_quotes;        /* quotes are ordinary characters (BuildKit's
				  * SkipProcessQuotes): how Docker expands heredoc
				  * bodies (with escape '\\') */
};

/* The general form: expand text with env (may be NULL = empty).  When word
 * is non-NULL it receives the expanded text without splitting (malloc'd);
 * when words is non-NULL the split words are appended to it. */
int kiln_expand(const char *text, const struct kiln_env *env, const struct kiln_expand_opts *opts,
		char **word, struct kiln_strv *words, struct kiln_err *err);

/* One word, no splitting (ENV, LABEL, WORKDIR, USER, ARG values, ...).
 * *out is malloc'd. */
int kiln_expand_word(const char *word, const struct kiln_env *env, char escape, char **out,
		     struct kiln_err *err);

/* Expansion then splitting into words (appended to out). */
int kiln_expand_words(const char *text, const struct kiln_env *env, char escape,
		      struct kiln_strv *out, struct kiln_err *err);

/* The names of the variables a word references (appended to names once each,
 * in order of first use), e.g. for "build args used by a step".  Fails when
 * the word itself is malformed. */
int kiln_expand_refs(const char *word, char escape, struct kiln_strv *names, struct kiln_err *err);

/* Shell-glob helpers used by the expansion (exposed for tests):
 * `*` any run of characters, `?` one character, `\` escapes; `\}` and `\/`
 * stand for `}` and `/`.  Return -1 with err on a malformed pattern. */
int kiln_expand_trim(const char *value, const char *pattern, bool suffix, bool longest, char **out,
		     struct kiln_err *err);
int kiln_expand_replace(const char *value, const char *pattern, const char *replacement, bool all,
			char **out, struct kiln_err *err);

#endif
