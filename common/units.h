/* kiln — strict parsers for the numbers the command line takes: byte sizes
 * (docker's units), integers, CPU counts, durations.
 *
 * Every parser accepts the whole string or nothing: no leading or trailing
 * blanks, no "nan"/"inf", no exponents, no silent wrap-around on overflow.
 * On failure it returns -1 and says what is wrong with the value without
 * repeating it; the caller adds the context with kiln_units_flag_error
 * ("invalid argument "abc" for "-t, --time" flag: not an integer").
 */
#ifndef KILN_COMMON_UNITS_H
#define KILN_COMMON_UNITS_H

#include <stdint.h>

#include "common/err.h"

/* Docker's smallest memory limit (-m, --memory). */
#define KILN_UNITS_MIN_MEMORY (6LL << 20)

/* A size in bytes as docker's -m reads it: a decimal number (a fraction is
 * allowed: "1.5g"), optionally one space, then an optional case-insensitive
 * unit b, k, m, g, t or p (binary multiples) with an optional "b" or "ib"
 * after it ("64m", "64MB", "512KiB", "100").  The result is truncated to
 * whole bytes and must fit in an int64. */
int kiln_units_parse_bytes(const char *s, int64_t *out, struct kiln_err *err);

/* A memory limit (-m, --memory): a size as above, 0 for none, else at least
 * KILN_UNITS_MIN_MEMORY. */
int kiln_units_parse_memory(const char *s, int64_t *out, struct kiln_err *err);

/* A base-10 integer with an optional sign, within [min, max]. */
int kiln_units_parse_int(const char *s, int64_t min, int64_t max, int64_t *out, struct kiln_err *err);

/* A number of CPUs as docker's --cpus reads it ("1.5", "0.25"), in
 * nano-CPUs: at most 9 decimals, from 0.01 to the CPUs this process may use. */
int kiln_units_parse_cpus(const char *s, int64_t *nano_cpus, struct kiln_err *err);

/* The CPUs this process may run on (its affinity mask), at least 1. */
int kiln_units_host_cpus(void);

/* Go's time.ParseDuration ("30s", "1m30s", "1.5h", "500ms", "0", "-1s") in
 * nanoseconds. */
int kiln_units_parse_duration(const char *s, int64_t *ns, struct kiln_err *err);

/* A size for people, as docker prints it: decimal units (B, kB, MB, GB, TB,
 * PB) and `digits` significant digits, like Go's 'g' verb ("16.4MB" with 3,
 * "16.43MB" with 4, "0B"). */
void kiln_units_format_decimal(int64_t bytes, int digits, char buf[32]);

/* Turn a parser's message into a flag error naming the flag and the value:
 * `invalid argument "VALUE" for "FLAG" flag: <message>`.  Returns -1. */
int kiln_units_flag_error(struct kiln_err *err, const char *flag, const char *value);

#endif
