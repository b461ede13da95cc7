/* kiln — small shared helpers: memory, growable strings and string lists,
 * files written atomically, cleanup attributes. */
#ifndef KILN_COMMON_UTIL_H
#define KILN_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* The PATH a container gets when its image sets none (Docker's and
 * BuildKit's default for Linux). */
#define KILN_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Allocation that never returns NULL (aborts with a message on OOM). */
void *kiln_xmalloc(size_t n);
void *kiln_xcalloc(size_t n, size_t size);
void *kiln_xrealloc(void *p, size_t n);
char *kiln_xstrdup(const char *s);
char *kiln_xstrndup(const char *s, size_t n);
char *kiln_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* __attribute__((cleanup)) helpers for early returns. */
void kiln_freep(void *p);        /* free(*(void **)p) */
void kiln_closep(int *fd);       /* close(*fd) when >= 0 */
#define KILN_AUTOFREE __attribute__((cleanup(kiln_freep)))
#define KILN_AUTOCLOSE __attribute__((cleanup(kiln_closep)))

/* A growable NUL-terminated byte buffer. Zero-initialise, then append. */
struct kiln_buf {
	char *data;
	size_t len;
	size_t cap;
};
void kiln_buf_append(struct kiln_buf *b, const void *data, size_t len);
void kiln_buf_puts(struct kiln_buf *b, const char *s);
void kiln_buf_putc(struct kiln_buf *b, char c);
void kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *kiln_buf_steal(struct kiln_buf *b);   /* returns data (never NULL), resets b */
void kiln_buf_free(struct kiln_buf *b);

/* A growable NULL-terminated list of owned strings. Zero-initialise. */
struct kiln_strv {
	char **v;
	size_t n;
	size_t cap;
};
void kiln_strv_push(struct kiln_strv *s, const char *str);       /* copies */
void kiln_strv_push_owned(struct kiln_strv *s, char *str);       /* takes ownership */
void kiln_strv_free(struct kiln_strv *s);
char **kiln_strv_dup(char *const *v);                             /* deep copy of a NULL-terminated list */
void kiln_strv_free_raw(char **v);                               /* free a NULL-terminated list */

/* Read a whole file (at most max bytes, 0 = no limit); *out is NUL-terminated. */
int kiln_read_file(const char *path, size_t max, char **out, size_t *len, struct kiln_err *err);
int kiln_read_fd(int fd, size_t max, char **out, size_t *len, struct kiln_err *err);

/* Write data to dirfd/name atomically: a temporary sibling, fsync, rename,
 * fsync of the directory.  dirfd may be AT_FDCWD. */
int kiln_write_file_atomic(int dirfd, const char *name, const void *data, size_t len,
			   mode_t mode, struct kiln_err *err);

/* A file named on the command line for output (save -o, build --iidfile,
 * build -o type=tar,dest=).  "-" is stdout.  An existing name that is not a
 * regular file (a device such as /dev/null or /dev/full, a fifo, a terminal,
 * a symlink such as /dev/stdout) is opened and written in place, through the
 * link, never replaced (a regular file reached through a link is truncated
 * first).  A regular file or a new path is written to a temporary sibling and
 * renamed over the name when complete (no half-written file under the name). */
struct kiln_outfile {
	int fd;
	char *path;
	char *tmp;     /* the temporary sibling, or NULL when written in place */
};
int kiln_outfile_open(struct kiln_outfile *o, const char *path, mode_t mode, struct kiln_err *err);
/* Finish: fsync+rename (temporary) or close (in place); on failure the name
 * is left as it was (the temporary file removed). */
int kiln_outfile_commit(struct kiln_outfile *o, struct kiln_err *err);
/* Drop an unfinished output (the temporary file is removed). Idempotent. */
void kiln_outfile_abort(struct kiln_outfile *o);
/* kiln_outfile_open + one write + commit. */
int kiln_outfile_write(const char *path, const void *data, size_t len, mode_t mode, struct kiln_err *err);

/* mkdir -p with the given mode for created directories. */
int kiln_mkdir_p(const char *path, mode_t mode, struct kiln_err *err);

/* rm -rf beneath dirfd (does not follow symlinks, stays on the same path). */
int kiln_rm_rf_at(int dirfd, const char *name, struct kiln_err *err);
int kiln_rm_rf(const char *path, struct kiln_err *err);

/* Write all bytes, retrying on EINTR and short writes. */
int kiln_write_all(int fd, const void *data, size_t len);

bool kiln_str_has_prefix(const char *s, const char *prefix);
bool kiln_str_has_suffix(const char *s, const char *suffix);

/* Monotonic clock in nanoseconds. */
uint64_t kiln_now_ns(void);

#endif
