/* kiln — the build context: a directory, a tar on stdin (extracted into a
 * private temporary directory with the safe extractor), or none (a Dockerfile
 * on stdin); the Dockerfile text; .dockerignore; and a stat cache persisted
 * under <root>/cache/context/ so that unchanged files are not re-hashed. */
#ifndef KILN_BUILDER_CONTEXT_H
#define KILN_BUILDER_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/util.h"

struct kiln_statcache;
struct kiln_ignore;

struct kiln_context {
	int dirfd;                 /* O_RDONLY|O_DIRECTORY of the context root; -1 = no context */
	char *dir;                 /* its absolute path (NULL = no context) */
	char *tmpdir;              /* an extracted tar context, removed by close */
	char *dockerfile;          /* the Dockerfile text (NUL-terminated) */
	size_t dockerfile_len;
	char *dockerfile_name;     /* for messages: "Dockerfile", "-", "sub/Dockerfile.dev" */
	struct kiln_ignore *ignore;/* .dockerignore (parser/ignore.h), never NULL once open */
	struct kiln_statcache *sc;
	char *sc_path;             /* where the stat cache is persisted (NULL = not persisted) */
	uint64_t hashed_bytes;     /* statistics: bytes hashed this run */
	uint64_t cache_hits;
};

struct kiln_context_opts {
	const char *path;          /* the CONTEXT argument: a directory or "-" */
	const char *dockerfile;    /* -f: a path, "-" (stdin), or NULL (CONTEXT/Dockerfile) */
	const char *root;          /* the kiln root: stat cache and temporary directories */
	int stdin_fd;              /* normally 0 */
};

int kiln_context_open(const struct kiln_context_opts *opts, struct kiln_context *ctx,
		      struct kiln_err *err);
/* Persist the stat cache, remove a temporary context, free everything. */
void kiln_context_close(struct kiln_context *ctx);

/* kiln_copy_filter_fn for the context: KILN_COPY_EXCLUDED when relpath is
 * excluded by .dockerignore (KILN_COPY_DESCEND for an excluded directory
 * that an exception pattern may re-include below).  The Dockerfile and
 * .dockerignore are read by the build even when listed. */
int kiln_context_excluded(void *ctx, const char *relpath, bool is_dir);

/* kiln_copy_hash_fn: a file's sha256, from the stat cache when (size, mtime,
 * ctime, inode, mode) are unchanged, else hashed and remembered. */
int kiln_context_hash(void *ctx, int fd, const char *relpath, const struct stat *st,
		      unsigned char out[32], struct kiln_err *err);

#endif
