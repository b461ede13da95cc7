/* kiln — container logs: the relay that turns a container's stdout/stderr
 * into log records, the size-capped files they are written to, and reading
 * them back (across rotations, for `kiln logs`).
 *
 * A log is one JSON object per line:
 *     {"log":"text\n","stream":"stdout","time":"2024-01-02T03:04:05.000000006Z"}
 * A line longer than KILN_LOG_PIECE bytes (16 KiB, Docker's split) becomes
 * several records of the same stream, every one but the last marked
 * "partial":true (that key is always the last one of its record); readers
 * join them back into the line.  "log" is the bytes as written; invalid
 * UTF-8 becomes U+FFFD.
 *
 * Files: "log" in the container's directory is written; when the next record
 * would take it past max-size it is renamed "log.1" (log.1 to log.2, ...),
 * the oldest beyond max-file is removed, and a new "log" is started.  Readers
 * hold the files open, so a rotation never loses what they are reading. */
#ifndef KILN_RUNTIME_LOGRELAY_H
#define KILN_RUNTIME_LOGRELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/util.h"

#define KILN_LOG_PIECE 16384
#define KILN_LOG_DEFAULT_MAX_SIZE (20LL << 20)   /* Docker's `local` driver */
#define KILN_LOG_DEFAULT_MAX_FILE 5
#define KILN_LOG_MAX_FILES 1000

/* ---- options (--log-opt) ---- */

struct kiln_logopts {
	int64_t max_size;   /* bytes per file; 0 = unlimited (max-size=-1) */
	int max_file;       /* files kept, >= 1 */
};

void kiln_logopts_default(struct kiln_logopts *o);

/* Apply one --log-opt value, "key=value" (several may be joined by commas):
 * max-size=SIZE (k, m, g as docker; -1 = unlimited), max-file=N (>= 1). */
int kiln_logopts_parse(const char *arg, struct kiln_logopts *o, struct kiln_err *err);

/* ---- splitting a stream into records ---- */

/* Called for each complete line (ending in '\n') and for each piece of a
 * line longer than KILN_LOG_PIECE (partial = more of the line follows). */
typedef void (*kiln_log_emit_fn)(void *arg, const char *data, size_t len, bool partial);

/* One stream's unfinished line: at most KILN_LOG_PIECE bytes.  Zero-init. */
struct kiln_logsplit {
	char buf[KILN_LOG_PIECE];
	size_t len;
};

/* Feed n bytes: every byte is looked at once and copied at most once. */
void kiln_logsplit_feed(struct kiln_logsplit *s, const char *data, size_t n, kiln_log_emit_fn emit,
			void *arg);
/* The stream ended: emit what is left (a last line without '\n'). */
void kiln_logsplit_flush(struct kiln_logsplit *s, kiln_log_emit_fn emit, void *arg);

/* ---- writing ---- */

struct kiln_logwriter {
	int dirfd;           /* the container's directory */
	int fd;              /* "log", O_APPEND */
	int64_t size;        /* of "log" */
	struct kiln_logopts opts;
	struct kiln_buf rec; /* the record being encoded */
};

/* Open (append to) dir/log. */
int kiln_logwriter_open(struct kiln_logwriter *w, const char *dir, const struct kiln_logopts *o,
			struct kiln_err *err);
/* Write one record (rotating first when it would not fit); a record larger
 * than max-size is split into partial pieces that fit.  Returns 0 or -1. */
int kiln_logwriter_write(struct kiln_logwriter *w, const char *stream, const char *data, size_t len,
			 bool partial);
void kiln_logwriter_close(struct kiln_logwriter *w);

/* Append the JSON record (with its '\n') to b; time is RFC 3339. */
void kiln_log_encode(struct kiln_buf *b, const char *stream, const char *data, size_t len, bool partial,
		     const char *time);

/* RFC 3339 UTC with nanoseconds, now. */
void kiln_log_time_now(char *buf, size_t len);

/* ---- the relay (the supervisor's log thread) ---- */

struct kiln_logrelay {
	int fds[2];          /* stdout, stderr (or a tty master in fds[0]); -1 = none */
	int echo[2];         /* also copy the raw bytes here (foreground run), or -1 */
	struct kiln_logwriter *w;
	struct kiln_logsplit split[2];
};

/* Relay until every fd reached EOF (closing them).  Memory: two pieces. */
void kiln_logrelay_pump(struct kiln_logrelay *r);

/* ---- reading ---- */

struct kiln_log_rec {
	const char *log;     /* not NUL-terminated */
	size_t len;
	const char *stream;  /* "stdout" or "stderr" */
	const char *time;
	bool partial;
};

typedef void (*kiln_log_rec_fn)(void *arg, const struct kiln_log_rec *r);

/* Reads a container's log files in order, from the oldest (or from the
 * start of the tail-th last line), then follows rotations. */
struct kiln_logcursor {
	int dirfd;
	int *fds;            /* files still to read, oldest first; fds[0] is current */
	ino_t *inos;
	size_t n;
	struct kiln_buf pend;  /* an incomplete record at the end of what was read */
};

/* tail < 0: everything. */
int kiln_logcursor_open(struct kiln_logcursor *c, const char *dir, long tail, struct kiln_err *err);
/* Deliver every complete record there is now; moves to the next file when
 * the current one was rotated away.  Returns 1 when anything was read,
 * 0 when at the end of the newest file. */
int kiln_logcursor_read(struct kiln_logcursor *c, kiln_log_rec_fn fn, void *arg);
void kiln_logcursor_close(struct kiln_logcursor *c);

/* Decode one record line (without '\n'); false when it is not one.  r's
 * strings live in *holder (a json_t), freed with kiln_log_rec_done. */
bool kiln_log_decode(const char *line, size_t len, struct kiln_log_rec *r, void **holder);
void kiln_log_rec_done(void *holder);

#endif
