/* kiln — errors that travel up the stack as one struct and end as one line on stderr. */
#ifndef KILN_COMMON_ERR_H
#define KILN_COMMON_ERR_H

#include <stddef.h>

#define KILN_ERR_MSG_MAX 2048

/*
 * Every fallible function returns 0 on success or -1 on failure and fills a
 * caller-owned struct kiln_err.  The message says what failed and why; callers
 * higher up may prepend context with kiln_err_wrap ("building stage 2: ...").
 */
struct kiln_err {
	int errnum;                 /* errno of the root cause, or 0 */
	int exit_code;              /* suggested process exit code, 0 = default (1) */
	char msg[KILN_ERR_MSG_MAX];
};

/* Set the message (printf-style).  When errnum != 0, ": strerror(errnum)" is
 * appended.  Always returns -1 so that `return kiln_err_set(...)` reads well.
 * err may be NULL (the message is dropped). */
int kiln_err_set(struct kiln_err *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepend context: "<context>: <previous message>".  Returns -1. */
int kiln_err_wrap(struct kiln_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Reset to "no error". */
void kiln_err_clear(struct kiln_err *err);

/* Print "kiln: <message>" as one line on stderr. */
void kiln_err_print(const struct kiln_err *err);

#endif
