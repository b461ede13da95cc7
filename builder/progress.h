/* kiln — build progress output: BuildKit-like "#N [stage i/n] INSTR" lines,
 * "#N CACHED", "#N DONE 0.3s", the live output of RUN steps prefixed with
 * the step number and elapsed time (plain) or passed through (tty), and the
 * final "writing image" / "naming to" lines.  Quiet mode prints nothing. */
#ifndef KILN_BUILDER_PROGRESS_H
#define KILN_BUILDER_PROGRESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/err.h"

enum kiln_progress_mode { KILN_PROGRESS_AUTO = 0, KILN_PROGRESS_PLAIN, KILN_PROGRESS_TTY, KILN_PROGRESS_QUIET };

struct kiln_progress {
	FILE *out;                  /* stderr by default */
	enum kiln_progress_mode mode;   /* resolved: PLAIN, TTY or QUIET */
	int next_id;                /* next "#N" */
	int cur_id;
	uint64_t build_start_ns;
	uint64_t step_start_ns;
	/* live output relay of the current RUN step */
	int relay_fd;               /* write end handed to the sandbox, or -1 */
	pid_t relay_pid;            /* the relay process */
	pthread_mutex_t lock;
};

/* "auto", "plain", "tty" → mode; -1 on an unknown name. */
int kiln_progress_parse(const char *name, enum kiln_progress_mode *out, struct kiln_err *err);
void kiln_progress_init(struct kiln_progress *p, enum kiln_progress_mode mode, bool quiet, FILE *out);
void kiln_progress_destroy(struct kiln_progress *p);

/* A step begins: label is e.g. "stage-0 2/5" or "build 1/3"; text is the instruction. */
void kiln_progress_step(struct kiln_progress *p, const char *label, const char *text);
void kiln_progress_cached(struct kiln_progress *p);
void kiln_progress_done(struct kiln_progress *p);
void kiln_progress_error(struct kiln_progress *p, const char *msg);
/* A line of information about the current step ("#N <msg>"). */
void kiln_progress_info(struct kiln_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line not tied to a step ("#N <msg>" with its own number, DONE at once). */
void kiln_progress_note(struct kiln_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Start relaying a RUN step's output: returns the fd to hand to the sandbox
 * as stdout and stderr (owned by the progress; -1 on failure = inherit). */
int kiln_progress_relay_begin(struct kiln_progress *p);
/* Close our copy of the write end and wait until the relay drained. */
void kiln_progress_relay_end(struct kiln_progress *p);

#endif
