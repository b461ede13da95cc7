/* Unit tests: parser/expand — BuildKit's shell-lexer suites (read from
 * $KILN_TESTDATA/shell at run time) and our own cases. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/util.h"
#include "parser/expand.h"

static char *testdata_path(const char *rel)
{
	const char *base = getenv("KILN_TESTDATA");
	if (!base || !*base)
		base = "../shared/testdata";
	return kiln_xasprintf("%s/%s", base, rel);
}

static char *read_testdata(const char *rel)
{
	char *path = testdata_path(rel);
	char *data = NULL;
	size_t len = 0;
	struct kiln_err err = {0};
	if (kiln_read_file(path, 0, &data, &len, &err) < 0) {
		print_error("cannot read %s: %s (set KILN_TESTDATA)\n", path, err.msg);
		free(path);
		fail();
	}
	free(path);
	return data;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = 0;
	return s;
}

/* ---- envVarTest: PLATFORM|INPUT|EXPECTED */
static void test_envvar_suite(void **state)
{
	(void)state;
	char *data = read_testdata("shell/envVarTest");
	struct kiln_env env = {0};
	kiln_env_set(&env, "PWD", "/home");
	kiln_env_set(&env, "SHELL", "bash");
	kiln_env_set(&env, "KOREAN", "한국어");
	kiln_env_set(&env, "NULL", "");
	int cases = 0, failures = 0;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *l = trim(line);
		if (!*l || *l == '#')
			continue;
		char *f1 = strchr(l, '|');
		assert_non_null(f1);
		char *f2 = strchr(f1 + 1, '|');
		assert_non_null(f2);
		*f1 = *f2 = 0;
		char *plat = trim(l), *input = trim(f1 + 1), *expected = trim(f2 + 1);
		if (strcmp(plat, "W") == 0)
			continue;
		cases++;
		char *out = NULL;
		struct kiln_err err = {0};
		int rc = kiln_expand_word(input, &env, '\\', &out, &err);
		if (strcmp(expected, "error") == 0) {
			if (rc == 0) {
				print_error("envVarTest %s: expected an error, got %s\n", input, out);
				failures++;
			}
		} else if (rc != 0) {
			print_error("envVarTest %s: unexpected error %s\n", input, err.msg);
			failures++;
		} else if (strcmp(out, expected) != 0) {
			print_error("envVarTest %s: got [%s] want [%s]\n", input, out, expected);
			failures++;
		}
		free(out);
	}
	kiln_env_free(&env);
	free(data);
	assert_true(cases > 100);
	assert_int_equal(failures, 0);
}

/* ---- wordsTest: INPUT | w1,w2 ; ENV k=v lines accumulate */
static void test_words_suite(void **state)
{
	(void)state;
	char *data = read_testdata("shell/wordsTest");
	struct kiln_env env = {0};
	int cases = 0, failures = 0;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[--n] = 0;
		if (line[0] == '#' || !*line)
			continue;
		if (strncmp(line, "ENV ", 4) == 0) {
			char *kv = line + 3;
			while (*kv == ' ')
				kv++;
			kiln_env_set_kv(&env, kv);
			continue;
		}
		char *bar = strchr(line, '|');
		assert_non_null(bar);
		assert_null(strchr(bar + 1, '|'));
		*bar = 0;
		char *input = trim(line);
		char *exp = bar + 1;
		while (*exp == ' ')
			exp++;
		cases++;
		struct kiln_strv got = {0};
		struct kiln_err err = {0};
		if (kiln_expand_words(input, &env, '\\', &got, &err) < 0) {
			kiln_strv_free(&got);
			kiln_strv_push(&got, "error");
		}
		struct kiln_strv want = {0};
		char *p = exp;
		for (;;) {
			char *c = strchr(p, ',');
			if (!c) {
				kiln_strv_push(&want, p);
				break;
			}
			kiln_strv_push_owned(&want, kiln_xstrndup(p, (size_t)(c - p)));
			p = c + 1;
		}
		bool ok = got.n == want.n;
		for (size_t i = 0; ok && i < got.n; i++)
			ok = strcmp(got.v[i], want.v[i]) == 0;
		if (!ok) {
			print_error("wordsTest [%s]: got %zu words:", input, got.n);
			for (size_t i = 0; i < got.n; i++)
				print_error(" [%s]", got.v[i]);
			print_error(" want [%s]\n", exp);
			failures++;
		}
		kiln_strv_free(&got);
		kiln_strv_free(&want);
	}
	kiln_env_free(&env);
	free(data);
	assert_true(cases > 20);
	assert_int_equal(failures, 0);
}

/* ---- modifiers.jsonl */
static void test_modifiers_suite(void **state)
{
	(void)state;
	char *data = read_testdata("shell/modifiers.jsonl");
	int cases = 0, failures = 0;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!*trim(line))
			continue;
		json_error_t jerr;
		json_t *o = json_loads(line, 0, &jerr);
		if (!o) {
			print_error("modifiers.jsonl: bad line %s: %s\n", line, jerr.text);
			fail();
		}
		const char *input = json_string_value(json_object_get(o, "input"));
		assert_non_null(input);
		struct kiln_env env = {0};
		const char *k;
		json_t *v;
		json_object_foreach(json_object_get(o, "env"), k, v)
			kiln_env_set(&env, k, json_string_value(v));
		json_t *experr = json_object_get(o, "error");
		const char *expected = json_string_value(json_object_get(o, "expected"));
		cases++;
		char *out = NULL;
		struct kiln_err err = {0};
		int rc = kiln_expand_word(input, &env, '\\', &out, &err);
		if (json_is_true(experr)) {
			if (rc == 0) {
				print_error("modifiers %s: expected an error, got [%s]\n", input, out);
				failures++;
			}
		} else {
			assert_non_null(expected);
			if (rc != 0) {
				print_error("modifiers %s: unexpected error %s\n", input, err.msg);
				failures++;
			} else if (strcmp(out, expected) != 0) {
				print_error("modifiers %s: got [%s] want [%s]\n", input, out, expected);
				failures++;
			}
		}
		free(out);
		kiln_env_free(&env);
		json_decref(o);
	}
	free(data);
	assert_true(cases > 40);
	assert_int_equal(failures, 0);
}

/* ---- our own cases */

static char *xw(const char *in, const struct kiln_env *env, char esc)
{
	char *out = NULL;
	struct kiln_err err = {0};
	if (kiln_expand_word(in, env, esc, &out, &err) < 0)
		return kiln_xasprintf("ERR:%s", err.msg);
	return out;
}

#define CHECK_WORD(in, env, esc, want)                                      \
	do {                                                                \
		char *_o = xw(in, env, esc);                                \
		assert_string_equal(_o, want);                              \
		free(_o);                                                   \
	} while (0)

static void test_env_type(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	assert_null(kiln_env_get(&env, "A"));
	kiln_env_set(&env, "A", "1");
	kiln_env_set(&env, "B", "");
	kiln_env_set_kv(&env, "C=x=y");
	kiln_env_set_kv(&env, "D");
	kiln_env_set(&env, "A", "2"); /* keeps its place */
	assert_string_equal(kiln_env_get(&env, "A"), "2");
	assert_string_equal(kiln_env_get(&env, "B"), "");
	assert_true(kiln_env_has(&env, "B"));
	assert_false(kiln_env_has(&env, "b"));
	assert_string_equal(kiln_env_get(&env, "C"), "x=y");
	assert_string_equal(kiln_env_get(&env, "D"), "");
	char **v = kiln_env_to_strv(&env);
	assert_string_equal(v[0], "A=2");
	assert_string_equal(v[1], "B=");
	assert_string_equal(v[2], "C=x=y");
	assert_string_equal(v[3], "D=");
	assert_null(v[4]);
	kiln_strv_free_raw(v);
	struct kiln_env copy = {0};
	kiln_env_copy(&copy, &env);
	assert_true(kiln_env_unset(&env, "B"));
	assert_false(kiln_env_unset(&env, "B"));
	assert_int_equal(env.n, 3);
	assert_string_equal(env.v[1].key, "C");
	assert_int_equal(copy.n, 4);
	assert_string_equal(kiln_env_get(&copy, "B"), "");
	kiln_env_free(&copy);
	kiln_env_free(&env);
	assert_int_equal(env.n, 0);
}

static void test_set_empty_vs_unset(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "E", "");
	CHECK_WORD("${E-def}", &env, '\\', "");
	CHECK_WORD("${E:-def}", &env, '\\', "def");
	CHECK_WORD("${U-def}", &env, '\\', "def");
	CHECK_WORD("${E+alt}", &env, '\\', "alt");
	CHECK_WORD("${E:+alt}", &env, '\\', "");
	CHECK_WORD("${E?}", &env, '\\', "");
	/* a NULL env is an empty one */
	CHECK_WORD("a${X:-b}c", NULL, '\\', "abc");
	kiln_env_free(&env);
}

static void test_error_messages(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "E", "");
	CHECK_WORD("${}", &env, '\\', "ERR:failed to process \"${}\": syntax error: bad substitution");
	CHECK_WORD("${U:?}", &env, '\\', "ERR:failed to process \"${U:?}\": U: is not allowed to be unset");
	CHECK_WORD("${E:?}", &env, '\\', "ERR:failed to process \"${E:?}\": E: is not allowed to be empty");
	CHECK_WORD("${U?must be set}", &env, '\\', "ERR:failed to process \"${U?must be set}\": U: must be set");
	CHECK_WORD("${E:=x}", &env, '\\', "ERR:failed to process \"${E:=x}\": unsupported modifier (:=) in substitution");
	CHECK_WORD("${E=x}", &env, '\\', "ERR:failed to process \"${E=x}\": unsupported modifier (=) in substitution");
	CHECK_WORD("${E:#x}", &env, '\\', "ERR:failed to process \"${E:#x}\": unsupported modifier (:#) in substitution");
	CHECK_WORD("${abc", &env, '\\', "ERR:failed to process \"${abc\": syntax error: missing '}'");
	CHECK_WORD("${abc:-x", &env, '\\', "ERR:failed to process \"${abc:-x\": syntax error: missing '}'");
	CHECK_WORD("${abc/x", &env, '\\', "ERR:failed to process \"${abc/x\": syntax error: missing '/' in ${}");
	CHECK_WORD("'abc", &env, '\\',
		   "ERR:failed to process \"'abc\": unexpected end of statement while looking for matching single-quote");
	CHECK_WORD("\"abc", &env, '\\',
		   "ERR:failed to process \"\\\"abc\": unexpected end of statement while looking for matching double-quote");
	kiln_env_set(&env, "V", "abc");
	CHECK_WORD("${V#\\x}", &env, '\\', "ERR:failed to process \"${V#\\\\x}\": invalid pattern (\\x) in substitution: invalid escape '\\x'");
	kiln_env_free(&env);
}

static void test_mandatory_messages_expand(void **state)
{
	(void)state;
	struct kiln_env set = {0}, empty = {0}, unset = {0};
	kiln_env_set(&set, "VAR", "plain");
	kiln_env_set(&set, "ARG", "x");
	kiln_env_set(&empty, "VAR", "");
	kiln_env_set(&empty, "ARG", "x");
	kiln_env_set(&unset, "ARG", "x");
	/* the message is itself expanded */
	CHECK_WORD("${VAR:?message here$ARG}", &set, '\\', "plain");
	CHECK_WORD("${VAR:?message here$ARG}", &empty, '\\',
		   "ERR:failed to process \"${VAR:?message here$ARG}\": VAR: message herex");
	CHECK_WORD("${VAR:?message here$ARG}", &unset, '\\',
		   "ERR:failed to process \"${VAR:?message here$ARG}\": VAR: message herex");
	CHECK_WORD("${VAR?message here$ARG}", &set, '\\', "plain");
	CHECK_WORD("${VAR?message here$ARG}", &empty, '\\', "");
	CHECK_WORD("${VAR?message here$ARG}", &unset, '\\',
		   "ERR:failed to process \"${VAR?message here$ARG}\": VAR: message herex");
	/* BuildKit's release-file pattern */
	struct kiln_env pe = {0};
	kiln_env_set(&pe, "VERSION", "v1.2.3");
	kiln_env_set(&pe, "TARGETOS", "linux");
	kiln_env_set(&pe, "TARGETARCH", "arm");
	kiln_env_set(&pe, "TARGETVARIANT", "v7");
	const char *rel = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
	CHECK_WORD(rel, &pe, '\\', "something-v1.2.3.linux-arm-v7.tar.gz");
	kiln_env_set(&pe, "TARGETVARIANT", "");
	CHECK_WORD(rel, &pe, '\\', "something-v1.2.3.linux-arm.tar.gz");
	/* pattern compiler: a lone or trailing escape is invalid */
	char *o = NULL;
	struct kiln_err err = {0};
	assert_int_equal(kiln_expand_trim("x", "\\", false, false, &o, &err), -1);
	assert_int_equal(kiln_expand_trim("x", "\\\\\\", false, false, &o, &err), -1);
	assert_int_equal(kiln_expand_trim("\\x", "\\\\", false, false, &o, &err), 0);
	assert_string_equal(o, "x");
	free(o);
	kiln_env_free(&set);
	kiln_env_free(&empty);
	kiln_env_free(&unset);
	kiln_env_free(&pe);
}

static void test_backtick_escape(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "P", "/p");
	/* with ` as escape, backslashes are ordinary (Windows paths) */
	CHECK_WORD("C:\\dir\\$P", &env, '`', "C:\\dir\\/p");
	CHECK_WORD("a`$P", &env, '`', "a$P");
	CHECK_WORD("\"a`\"b\"", &env, '`', "a\"b");
	CHECK_WORD("a` b", &env, '`', "a b");
	CHECK_WORD("a\\$P", &env, '\\', "a$P");
	kiln_env_free(&env);
}

static void test_word_splitting(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "L", "a  b");
	kiln_env_set(&env, "EMPTY", "");
	struct kiln_strv w = {0};
	struct kiln_err err = {0};
	assert_int_equal(kiln_expand_words("x $L 'q r' \"$L\" \"\" $EMPTY y\\ z", &env, '\\', &w, &err), 0);
	assert_int_equal(w.n, 6);
	assert_string_equal(w.v[0], "x");
	assert_string_equal(w.v[1], "a");
	assert_string_equal(w.v[2], "b");
	assert_string_equal(w.v[3], "q r");
	assert_string_equal(w.v[4], "a  b");
	assert_string_equal(w.v[5], "y z");
	kiln_strv_free(&w);
	/* the unsplit form keeps everything */
	CHECK_WORD("x $L 'q r'", &env, '\\', "x a  b q r");
	/* tabs and newlines from a value split too */
	kiln_env_set(&env, "T", "1\t2\n3");
	assert_int_equal(kiln_expand_words("$T", &env, '\\', &w, &err), 0);
	assert_int_equal(w.n, 3);
	assert_string_equal(w.v[2], "3");
	kiln_strv_free(&w);
	/* errors leave out untouched */
	assert_int_equal(kiln_expand_words("a 'b", &env, '\\', &w, &err), -1);
	assert_int_equal(w.n, 0);
	kiln_env_free(&env);
}

static void test_patterns(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "F", "path/to/file.tar.gz");
	kiln_env_set(&env, "K", "한국어한국어");
	CHECK_WORD("${F#*/}", &env, '\\', "to/file.tar.gz");
	CHECK_WORD("${F##*/}", &env, '\\', "file.tar.gz");
	CHECK_WORD("${F%.*}", &env, '\\', "path/to/file.tar");
	CHECK_WORD("${F%%.*}", &env, '\\', "path/to/file");
	CHECK_WORD("${F%/*}", &env, '\\', "path/to");
	CHECK_WORD("${F/t?/XX}", &env, '\\', "paXX/to/file.tar.gz");
	CHECK_WORD("${F//t/T}", &env, '\\', "paTh/To/file.Tar.gz");
	CHECK_WORD("${F//[a]/_}", &env, '\\', "path/to/file.tar.gz");
	CHECK_WORD("${F/nomatch/x}", &env, '\\', "path/to/file.tar.gz");
	CHECK_WORD("${K#?}", &env, '\\', "국어한국어");
	CHECK_WORD("${K%?}", &env, '\\', "한국어한국");
	CHECK_WORD("${K%%국*}", &env, '\\', "한");
	/* letters of any script make names; symbols end them */
	kiln_env_set(&env, "é변수", "v");
	CHECK_WORD("$é변수→x", &env, '\\', "v→x");
	CHECK_WORD("${K//국/-}", &env, '\\', "한-어한-어");
	/* a pattern with a quote and an expansion inside */
	kiln_env_set(&env, "SEP", "/");
	CHECK_WORD("${F%$SEP*}", &env, '\\', "path/to");
	/* ${v//p/r}: an empty pattern puts r between every character, as Go does */
	kiln_env_set(&env, "S", "ab");
	CHECK_WORD("${S//$EMPTY/-}", &env, '\\', "-a-b-");
	/* the whole match with $0 in a replace-all replacement (Go template) */
	kiln_env_set(&env, "D", "$0$0");
	CHECK_WORD("${S//a/$D}", &env, '\\', "aab");

	char *out = NULL;
	struct kiln_err err = {0};
	assert_int_equal(kiln_expand_trim("aXbXc", "*X", false, false, &out, &err), 0);
	assert_string_equal(out, "bXc");
	free(out);
	assert_int_equal(kiln_expand_trim("aXbXc", "*X", false, true, &out, &err), 0);
	assert_string_equal(out, "c");
	free(out);
	assert_int_equal(kiln_expand_trim("aXbXc", "X*", true, false, &out, &err), 0);
	assert_string_equal(out, "aXb");
	free(out);
	assert_int_equal(kiln_expand_trim("aXbXc", "X*", true, true, &out, &err), 0);
	assert_string_equal(out, "a");
	free(out);
	assert_int_equal(kiln_expand_replace("aaa", "a", "b", true, &out, &err), 0);
	assert_string_equal(out, "bbb");
	free(out);
	assert_int_equal(kiln_expand_replace("x\ny", "*", "Z", false, &out, &err), 0);
	assert_string_equal(out, "Z\ny"); /* * does not cross a newline */
	free(out);
	assert_int_equal(kiln_expand_replace("abc", "\\q", "Z", false, &out, &err), -1);
	/* a pathological pattern stays fast (memoised) */
	char big[4001];
	memset(big, 'a', 4000);
	big[4000] = 0;
	assert_int_equal(kiln_expand_trim(big, "*a*a*a*a*a*a*b", false, true, &out, &err), 0);
	assert_string_equal(out, big);
	free(out);
	/* long patterns do not recurse per character; absurd ones are refused */
	struct kiln_buf lp = {0};
	for (int i = 0; i < 200000; i++)
		kiln_buf_puts(&lp, "?");
	char *bigv = kiln_xmalloc(200001);
	memset(bigv, 'x', 200000);
	bigv[200000] = 0;
	assert_int_equal(kiln_expand_trim(bigv, lp.data, false, false, &out, &err), 0);
	assert_string_equal(out, "");
	free(out);
	kiln_buf_free(&lp);
	for (int i = 0; i < 5000; i++)
		kiln_buf_puts(&lp, "*x");
	assert_int_equal(kiln_expand_replace(bigv, lp.data, "-", true, &out, &err), -1);
	assert_non_null(strstr(err.msg, "too complex"));
	kiln_buf_free(&lp);
	assert_int_equal(kiln_expand_trim(bigv, "****x", true, true, &out, &err), 0);
	assert_string_equal(out, "");
	free(out);
	free(bigv);
	kiln_env_free(&env);
}

static void test_refs(void **state)
{
	(void)state;
	struct kiln_strv names = {0};
	struct kiln_err err = {0};
	assert_int_equal(kiln_expand_refs("$A ${B:-$C} '$NOT' \"${D}\" ${A} ${E:?x} ${F#$G} \\$H ${I//$J/$K}",
					  '\\', &names, &err), 0);
	const char *want[] = {"A", "C", "B", "D", "E", "G", "F", "J", "K", "I"};
	assert_int_equal(names.n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < names.n; i++)
		assert_string_equal(names.v[i], want[i]);
	kiln_strv_free(&names);
	assert_int_equal(kiln_expand_refs("${", '\\', &names, &err), -1);
	kiln_strv_free(&names);
	/* refs through the general API with an env */
	struct kiln_env env = {0};
	kiln_env_set(&env, "A", "1");
	struct kiln_expand_opts o = {.refs = &names};
	char *out = NULL;
	assert_int_equal(kiln_expand("$A-$Z", &env, &o, &out, NULL, &err), 0);
	assert_string_equal(out, "1-");
	assert_int_equal(names.n, 2);
	free(out);
	kiln_strv_free(&names);
	kiln_env_free(&env);
}

static void test_skip_unset(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "A", "1");
	struct kiln_expand_opts o = {.skip_unset = true};
	char *out = NULL;
	struct kiln_err err = {0};
	assert_int_equal(kiln_expand("$A $B ${C} ${D:-x} ${A:-x}", &env, &o, &out, NULL, &err), 0);
	assert_string_equal(out, "1 $B ${C} ${D:-x} 1");
	free(out);
	kiln_env_free(&env);
}

static void test_skip_quotes(void **state)
{
	(void)state;
	struct kiln_env env = {0};
	kiln_env_set(&env, "A", "1");
	struct kiln_expand_opts o = {.escape = '\\', .skip_quotes = true};
	char *out = NULL;
	struct kiln_err err = {0};
	/* a heredoc body: quotes stay, variables inside them expand */
	assert_int_equal(kiln_expand("echo '$A' \"$A\" ${A:-x} 'unterminated\n", &env, &o, &out, NULL, &err), 0);
	assert_string_equal(out, "echo '1' \"1\" 1 'unterminated\n");
	free(out);
	/* the escape character still escapes */
	assert_int_equal(kiln_expand("\\$A", &env, &o, &out, NULL, &err), 0);
	assert_string_equal(out, "$A");
	free(out);
	kiln_env_free(&env);
}

static void test_deep_nesting(void **state)
{
	(void)state;
	struct kiln_buf b = {0};
	for (int i = 0; i < 5000; i++)
		kiln_buf_puts(&b, "${A:-");
	for (int i = 0; i < 5000; i++)
		kiln_buf_puts(&b, "}");
	char *out = NULL;
	struct kiln_err err = {0};
	/* refused cleanly rather than overflowing the stack */
	assert_int_equal(kiln_expand_word(b.data, NULL, '\\', &out, &err), -1);
	kiln_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envvar_suite),
		cmocka_unit_test(test_words_suite),
		cmocka_unit_test(test_modifiers_suite),
		cmocka_unit_test(test_env_type),
		cmocka_unit_test(test_set_empty_vs_unset),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_mandatory_messages_expand),
		cmocka_unit_test(test_backtick_escape),
		cmocka_unit_test(test_word_splitting),
		cmocka_unit_test(test_patterns),
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_skip_unset),
		cmocka_unit_test(test_skip_quotes),
		cmocka_unit_test(test_deep_nesting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
