/* Unit tests: common/units — tables of good and bad values for every parser. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/units.h"

struct good {
	const char *in;
	int64_t want;
};

static void test_bytes(void **state)
{
	(void)state;
	static const struct good good[] = {
		{"0", 0}, {"100", 100}, {"100b", 100}, {"100B", 100},
		{"1k", 1024}, {"1K", 1024}, {"1kb", 1024}, {"1KiB", 1024}, {"512KiB", 512 << 10},
		{"64m", 64LL << 20}, {"64M", 64LL << 20}, {"64MB", 64LL << 20}, {"64mib", 64LL << 20},
		{"1g", 1LL << 30}, {"1.5g", 3LL << 29}, {"1.5G", 3LL << 29}, {"0.5k", 512}, {".5k", 512},
		{"1.k", 1024}, {"0.1k", 102}, {"1 g", 1LL << 30}, {"2t", 2LL << 40}, {"3p", 3LL << 50},
		{"6m", 6LL << 20}, {"9223372036854775807", INT64_MAX}, {"8191p", 8191LL << 50},
		{"007m", 7LL << 20}, {"1.000000000000000000000001k", 1024},
	};
	static const char *const bad[] = {
		"", " ", " 1g", "1g ", "1 ", "1  g", "-1", "-5m", "+5m", "nan", "NaN", "inf", "-inf", "Infinity",
		"abc", "m", ".", "..5", "1..5", "1.5.5", "1e3", "1E3", "0x10", "1_000", "12q", "1kk", "1kbb",
		"1ib", "1bb", "1mi", "1mbit", "1,5g", "1g\n", "\t1", "99999999999999999999",
		"9223372036854775808", "8192p", "10000000t", "1.5 ", "1 b ", "1\x01",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_bytes(good[i].in, &v, &err) != 0 || v != good[i].want)
			fail_msg("bytes \"%s\": got %lld (%s), want %lld", good[i].in, (long long)v, err.msg,
				 (long long)good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_bytes(bad[i], &v, &err) != -1 || v != -7 || !err.msg[0])
			fail_msg("bytes \"%s\" accepted as %lld", bad[i], (long long)v);
	}
}

static void test_int(void **state)
{
	(void)state;
	static const struct good good[] = {
		{"0", 0}, {"10", 10}, {"+10", 10}, {"-1", -1}, {"007", 7},
		{"9223372036854775807", INT64_MAX}, {"-9223372036854775808", INT64_MIN},
	};
	static const char *const bad[] = {
		"", "-", "+", " 1", "1 ", "abc", "1a", "1.0", "1.5", "1e3", "0x10", "nan", "inf", "--1", "+-1",
		"9223372036854775808", "-9223372036854775809", "99999999999999999999999", "1\n", "1,000", "١",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_int(good[i].in, INT64_MIN, INT64_MAX, &v, &err) != 0 || v != good[i].want)
			fail_msg("int \"%s\": got %lld (%s)", good[i].in, (long long)v, err.msg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_int(bad[i], INT64_MIN, INT64_MAX, &v, &err) != -1 || v != -7 || !err.msg[0])
			fail_msg("int \"%s\" accepted as %lld", bad[i], (long long)v);
	}
	/* the range is the caller's */
	struct kiln_err err = {0};
	int64_t v = -7;
	assert_int_equal(kiln_units_parse_int("-2", -1, 10, &v, &err), -1);
	assert_non_null(strstr(err.msg, "out of range (-1 to 10)"));
	assert_int_equal(kiln_units_parse_int("11", -1, 10, &v, &err), -1);
	assert_int_equal(v, -7);
	assert_int_equal(kiln_units_parse_int("10", -1, 10, &v, &err), 0);
	assert_int_equal(v, 10);
	assert_int_equal(kiln_units_parse_int("-1", -1, 10, &v, &err), 0);
	assert_int_equal(v, -1);
}

static void test_cpus(void **state)
{
	(void)state;
	int n = kiln_units_host_cpus();
	assert_true(n >= 1);
	static const struct good good[] = {
		{"1", 1000000000LL}, {"0.01", 10000000LL}, {"0.5", 500000000LL}, {".25", 250000000LL},
		{"1.0", 1000000000LL}, {"0.123456789", 123456789LL}, {"0.1000000000000", 100000000LL},
	};
	char top[32], over[32], over_frac[32];
	snprintf(top, sizeof(top), "%d", n);
	snprintf(over, sizeof(over), "%d", n + 1);
	snprintf(over_frac, sizeof(over_frac), "%d.000000001", n);
	const char *bad[] = {
		"", "0", "0.0", "0.009", "0.001", "-1", "-0.5", "+1", "nan", "inf", "1e0", "1/2", " 1", "1 ",
		"abc", "1.5x", "0.1234567891", "99999999999999999999", "1000000", over, over_frac, ".",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_cpus(good[i].in, &v, &err) != 0 || v != good[i].want)
			fail_msg("cpus \"%s\": got %lld (%s)", good[i].in, (long long)v, err.msg);
	}
	struct kiln_err err = {0};
	int64_t v = 0;
	assert_int_equal(kiln_units_parse_cpus(top, &v, &err), 0);
	assert_int_equal(v, (int64_t)n * 1000000000LL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = -7;
		kiln_err_clear(&err);
		if (kiln_units_parse_cpus(bad[i], &v, &err) != -1 || v != -7 || !err.msg[0])
			fail_msg("cpus \"%s\" accepted as %lld", bad[i], (long long)v);
	}
	assert_int_equal(kiln_units_parse_cpus(over, &v, &err), -1);
	assert_non_null(strstr(err.msg, "range of CPUs is from 0.01 to"));
}

static void test_duration(void **state)
{
	(void)state;
	static const struct good good[] = {
		{"1m30s", 90000000000LL}, {"1.5h", 5400000000000LL}, {"500ms", 500000000LL}, {"2us", 2000},
		{"0", 0}, {"-1s", -1000000000LL}, {".5s", 500000000LL}, {"1h1m1s1ms1us1ns", 3661001001001LL},
		{"+3s", 3000000000LL}, {"2562047h", 2562047LL * 3600 * 1000000000LL},
	};
	static const char *const bad[] = {
		"1", "", "1x", "s", ".s", "9999999999h", "nan", "inf", " 1s", "1s ", "1.5.5s", "-", "1e3s",
		"99999999999999999999ns", "2562048h",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_duration(good[i].in, &v, &err) != 0 || v != good[i].want)
			fail_msg("duration \"%s\": got %lld (%s)", good[i].in, (long long)v, err.msg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		int64_t v = -7;
		if (kiln_units_parse_duration(bad[i], &v, &err) != -1 || v != -7 || !err.msg[0])
			fail_msg("duration \"%s\" accepted as %lld", bad[i], (long long)v);
	}
}

static void test_format_decimal(void **state)
{
	(void)state;
	char b[32];
	kiln_units_format_decimal(0, 3, b);
	assert_string_equal(b, "0B");
	kiln_units_format_decimal(999, 3, b);
	assert_string_equal(b, "999B");
	kiln_units_format_decimal(16430000, 3, b);
	assert_string_equal(b, "16.4MB");
	kiln_units_format_decimal(16430000, 4, b);
	assert_string_equal(b, "16.43MB");
	kiln_units_format_decimal(1000LL * 1000 * 1000 * 1000 * 1000 * 2000, 3, b);
	assert_string_equal(b, "2e+03PB");
}

static void test_flag_error(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	int64_t v;
	assert_int_equal(kiln_units_parse_int("abc", 0, 10, &v, &err), -1);
	assert_int_equal(kiln_units_flag_error(&err, "-t, --time", "abc"), -1);
	assert_string_equal(err.msg, "invalid argument \"abc\" for \"-t, --time\" flag: not an integer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_int),
		cmocka_unit_test(test_cpus),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_format_decimal),
		cmocka_unit_test(test_flag_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
