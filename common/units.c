/* kiln — strict parsers for sizes, integers, CPU counts and durations. */
#include <sched.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "common/units.h"

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* A decimal "123", "1.5", "1." or ".5" at *p: the integer part (saturated
 * when it does not fit, with *overflow set), up to max_frac fractional
 * digits as a numerator over 10^*frac_digits (more digits are dropped,
 * *extra_frac says whether any of them was not 0).  Returns false when no
 * digit is there. */
struct decimal {
	uint64_t ip;
	bool overflow;
	uint64_t frac;
	int frac_digits;
	bool extra_frac;
};

static bool scan_decimal(const char **p, int max_frac, struct decimal *d)
{
	const char *s = *p;
	memset(d, 0, sizeof(*d));
	bool any = false;
	while (is_digit(*s)) {
		unsigned dig = (unsigned)(*s - '0');
		if (d->ip > (UINT64_MAX - dig) / 10)
			d->overflow = true;
		else
			d->ip = d->ip * 10 + dig;
		any = true;
		s++;
	}
	if (*s == '.') {
		s++;
		while (is_digit(*s)) {
			if (d->frac_digits < max_frac) {
				d->frac = d->frac * 10 + (uint64_t)(*s - '0');
				d->frac_digits++;
			} else if (*s != '0') {
				d->extra_frac = true;
			}
			any = true;
			s++;
		}
	}
	*p = s;
	return any;
}

static uint64_t pow10u(int n)
{
	uint64_t v = 1;
	while (n-- > 0)
		v *= 10;
	return v;
}

int kiln_units_parse_bytes(const char *s, int64_t *out, struct kiln_err *err)
{
	const char *p = s;
	struct decimal d;
	if (!s || !scan_decimal(&p, 18, &d))
		return kiln_err_set(err, 0, "not a size (a number with an optional unit b, k, m, g, t or p, "
				    "e.g. 512m or 1.5g)");
	/* one blank may separate the number from its unit ("1 g"), as in docker */
	if (*p == ' ' && p[1])
		p++;
	unsigned shift = 0;
	char u = lower(*p);
	const char *units = "kmgtp";
	const char *hit = u ? strchr(units, u) : NULL;
	if (hit) {
		shift = 10 * (unsigned)(hit - units + 1);
		p++;
		if (lower(*p) == 'i' && lower(p[1]) == 'b')
			p += 2;
		else if (lower(*p) == 'b')
			p++;
	} else if (u == 'b') {
		p++;
	}
	if (*p)
		return kiln_err_set(err, 0, "invalid unit \"%s\" (b, k, m, g, t or p, optionally followed by b or ib)",
				    p);
	unsigned __int128 v = (unsigned __int128)d.ip << shift;
	v += ((unsigned __int128)d.frac << shift) / pow10u(d.frac_digits);
	if (d.overflow || v > (unsigned __int128)INT64_MAX)
		return kiln_err_set(err, 0, "size out of range (at most %lld bytes)", (long long)INT64_MAX);
	*out = (int64_t)v;
	return 0;
}

int kiln_units_parse_memory(const char *s, int64_t *out, struct kiln_err *err)
{
	int64_t v;
	if (kiln_units_parse_bytes(s, &v, err) < 0)
		return -1;
	if (v > 0 && v < KILN_UNITS_MIN_MEMORY)
		return kiln_err_set(err, 0, "minimum memory limit allowed is 6MB");
	*out = v;
	return 0;
}

int kiln_units_parse_int(const char *s, int64_t min, int64_t max, int64_t *out, struct kiln_err *err)
{
	const char *p = s;
	bool neg = false;
	if (p && (*p == '-' || *p == '+')) {
		neg = *p == '-';
		p++;
	}
	if (!p || !is_digit(*p))
		return kiln_err_set(err, 0, "not an integer");
	uint64_t v = 0;
	bool overflow = false;
	for (; is_digit(*p); p++) {
		unsigned dig = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - dig) / 10)
			overflow = true;
		else
			v = v * 10 + dig;
	}
	if (*p)
		return kiln_err_set(err, 0, "not an integer");
	int64_t r;
	if (overflow || v > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
		return kiln_err_set(err, 0, "value out of range (%lld to %lld)", (long long)min, (long long)max);
	r = neg ? (int64_t)(0 - v) : (int64_t)v;
	if (r < min || r > max)
		return kiln_err_set(err, 0, "value out of range (%lld to %lld)", (long long)min, (long long)max);
	*out = r;
	return 0;
}

int kiln_units_host_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int kiln_units_parse_cpus(const char *s, int64_t *nano_cpus, struct kiln_err *err)
{
	const char *p = s;
	struct decimal d;
	int ncpu = kiln_units_host_cpus();
	if (!s || !scan_decimal(&p, 9, &d) || *p)
		return kiln_err_set(err, 0, "not a number of CPUs (a decimal such as 1.5)");
	if (d.extra_frac)
		return kiln_err_set(err, 0, "value is too precise (at most 9 decimals)");
	uint64_t nano = d.frac * pow10u(9 - d.frac_digits);
	if (d.overflow || d.ip > (uint64_t)ncpu || d.ip * 1000000000ULL + nano > (uint64_t)ncpu * 1000000000ULL ||
	    d.ip * 1000000000ULL + nano < 10000000ULL)
		return kiln_err_set(err, 0, "range of CPUs is from 0.01 to %d.00, as there %s only %d CPU%s available",
				    ncpu, ncpu == 1 ? "is" : "are", ncpu, ncpu == 1 ? "" : "s");
	*nano_cpus = (int64_t)(d.ip * 1000000000ULL + nano);
	return 0;
}

/* Go's time.ParseDuration: [-+] then one or more <decimal><unit>, or "0". */
int kiln_units_parse_duration(const char *orig, int64_t *ns, struct kiln_err *err)
{
	const char *s = orig;
	bool neg = false;
	uint64_t total = 0;
	if (*s == '-' || *s == '+') {
		neg = *s == '-';
		s++;
	}
	if (!strcmp(s, "0")) {
		*ns = 0;
		return 0;
	}
	if (!*s)
		goto bad;
	while (*s) {
		struct decimal d;
		if (!scan_decimal(&s, 18, &d) || d.overflow)
			goto bad;
		const char *us = s;
		while (*s && *s != '.' && !is_digit(*s))
			s++;
		size_t ul = (size_t)(s - us);
		uint64_t unit;
		if (ul == 0)
			return kiln_err_set(err, 0, "time: missing unit in duration \"%s\" (use ns, us, ms, s, m or h, "
					    "e.g. 30s)", orig);
		if (ul == 2 && !strncmp(us, "ns", 2))
			unit = 1;
		else if ((ul == 2 && !strncmp(us, "us", 2)) || (ul == 3 && !strncmp(us, "\xC2\xB5s", 3)) ||
			 (ul == 3 && !strncmp(us, "\xCE\xBCs", 3)))
			unit = 1000;
		else if (ul == 2 && !strncmp(us, "ms", 2))
			unit = 1000000;
		else if (ul == 1 && *us == 's')
			unit = 1000000000ULL;
		else if (ul == 1 && *us == 'm')
			unit = 60ULL * 1000000000ULL;
		else if (ul == 1 && *us == 'h')
			unit = 3600ULL * 1000000000ULL;
		else
			return kiln_err_set(err, 0, "time: unknown unit \"%.*s\" in duration \"%s\" (use ns, us, ms, s, "
					    "m or h)", (int)ul, us, orig);
		if (d.ip > (uint64_t)INT64_MAX / unit)
			goto bad;
		unsigned __int128 v = (unsigned __int128)d.ip * unit +
				      (unsigned __int128)d.frac * unit / pow10u(d.frac_digits);
		total += (uint64_t)(v > (unsigned __int128)INT64_MAX ? (uint64_t)INT64_MAX + 1 : (uint64_t)v);
		if (total > (uint64_t)INT64_MAX)
			goto bad;
	}
	*ns = neg ? -(int64_t)total : (int64_t)total;
	return 0;
bad:
	return kiln_err_set(err, 0, "time: invalid duration \"%s\" (use a number with a unit, e.g. 30s, 1m30s, 500ms)",
			    orig);
}

void kiln_units_format_decimal(int64_t bytes, int digits, char buf[32])
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1000.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1000.0;
		u++;
	}
	snprintf(buf, 32, "%.*g%s", digits, v, units[u]);
}

int kiln_units_flag_error(struct kiln_err *err, const char *flag, const char *value)
{
	return kiln_err_wrap(err, "invalid argument \"%s\" for \"%s\" flag", value, flag);
}
