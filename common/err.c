#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int kiln_err_set(struct kiln_err *err, int errnum, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		err->msg[0] = '\0';
	err->errnum = errnum;
	if (errnum) {
		size_t len = strlen(err->msg);
		snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(errnum));
	}
	return -1;
}

int kiln_err_wrap(struct kiln_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[KILN_ERR_MSG_MAX];
	char old[KILN_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* Truncating an over-long chain of context is fine. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
	snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
	return -1;
}

void kiln_err_clear(struct kiln_err *err)
{
	if (!err)
		return;
	err->errnum = 0;
	err->exit_code = 0;
	err->msg[0] = '\0';
}

void kiln_err_print(const struct kiln_err *err)
{
	const char *m = (err && err->msg[0]) ? err->msg : "unknown error";
	/* One line: replace embedded newlines so the message stays one line. */
	char line[KILN_ERR_MSG_MAX];
	size_t i;
	for (i = 0; m[i] && i < sizeof(line) - 1; i++)
		line[i] = (m[i] == '\n' || m[i] == '\r') ? ' ' : m[i];
	line[i] = '\0';
	fprintf(stderr, "kiln: %s\n", line);
}
