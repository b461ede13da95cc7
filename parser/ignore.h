/* kiln — .dockerignore (and COPY --exclude) patterns, with Docker's rules
 * (moby/patternmatcher + ignorefile):
 *   - one pattern a line; lines starting with '#' are comments; blanks around
 *     a pattern are trimmed; empty lines are skipped; a UTF-8 BOM is dropped;
 *   - '!' makes an exception (re-includes); the last matching pattern wins;
 *   - patterns are cleaned like Go's filepath.Clean and a leading '/' is
 *     removed ("/a/../b/" is "b");
 *   - Go filepath.Match syntax ('*' and '?' do not cross '/', '[a-z]',
 *     '[^a]', '\' escapes) plus '**' for any number of directories;
 *   - a path is ignored when a pattern matches it or one of its parent
 *     directories ("build" ignores "build/x/y").
 */
#ifndef KILN_PARSER_IGNORE_H
#define KILN_PARSER_IGNORE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

struct kiln_ignore;

/* Parse the text of a .dockerignore file.  Fails on a malformed pattern
 * ("syntax error in pattern") or a lone "!", as ".dockerignore:<line>: ..."
 * (kiln_ignore_load names the file it read instead). */
int kiln_ignore_parse(const char *text, size_t len, struct kiln_ignore **out, struct kiln_err *err);

/* Build from a list of patterns as given (e.g. COPY --exclude values): each
 * is trimmed and cleaned; "!" prefixes are exceptions. */
int kiln_ignore_from_patterns(char *const *patterns, size_t n, struct kiln_ignore **out,
			      struct kiln_err *err);

/* Load the ignore file for a build: "<dir of dockerfile>/<name>.dockerignore"
 * when it exists (BuildKit's rule), else "<context_dir>/.dockerignore", else
 * an empty set.  dockerfile_path may be NULL.  When used_path is non-NULL it
 * receives the file used (malloc'd) or NULL.  *out is never NULL on success. */
int kiln_ignore_load(const char *context_dir, const char *dockerfile_path, struct kiln_ignore **out,
		     char **used_path, struct kiln_err *err);

/* The same with the context as a directory fd (the ignore file is opened
 * with openat; dockerfile_path as above, relative to the cwd). */
int kiln_ignore_load_at(int context_dirfd, const char *dockerfile_path, struct kiln_ignore **out,
			char **used_path, struct kiln_err *err);

/* Is the context-relative path (slash separated, "./" or "/" prefix allowed)
 * excluded?  The context root itself (".", "") is never excluded.  ig may be
 * NULL (nothing is excluded). */
bool kiln_ignore_match(const struct kiln_ignore *ig, const char *path);

/* For a directory that kiln_ignore_match() excludes: could an exception
 * pattern re-include something below it?  When false the walk may skip the
 * whole directory.  Conservative: true when unsure. */
bool kiln_ignore_dir_may_include(const struct kiln_ignore *ig, const char *dir);

/* True when some pattern is an exception ("!..."). */
bool kiln_ignore_has_exceptions(const struct kiln_ignore *ig);

/* The cleaned patterns, for messages and cache keys. */
size_t kiln_ignore_count(const struct kiln_ignore *ig);
const char *kiln_ignore_pattern(const struct kiln_ignore *ig, size_t i, bool *exception);

void kiln_ignore_free(struct kiln_ignore *ig);

/* Go's filepath.Clean for slash paths (malloc'd): "" → ".", "a//b/./c/.." →
 * "a/b", "/../x" → "/x", "../x/.." → "..". */
char *kiln_ignore_clean_path(const char *path);

#endif
