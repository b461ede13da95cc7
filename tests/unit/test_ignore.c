/* Unit tests: parser/ignore — .dockerignore reading and matching. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "parser/ignore.h"

static struct kiln_ignore *mk(const char *text)
{
	struct kiln_ignore *ig = NULL;
	struct kiln_err err = {0};
	if (kiln_ignore_parse(text, strlen(text), &ig, &err) < 0) {
		print_error("parse failed: %s\n", err.msg);
		fail();
	}
	return ig;
}

static void test_clean(void **state)
{
	(void)state;
	const char *cases[][2] = {
		{"", "."}, {".", "."}, {"a", "a"}, {"a/", "a"}, {"a//b", "a/b"}, {"./a/./b/", "a/b"},
		{"a/b/..", "a"}, {"a/../..", ".."}, {"../a/../b", "../b"}, {"/", "/"}, {"/..", "/"},
		{"/../a", "/a"}, {"//a//", "/a"}, {"a/b/../../c", "c"}, {"..", ".."}, {"...", "..."},
		{"a/.b/..c", "a/.b/..c"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *c = kiln_ignore_clean_path(cases[i][0]);
		if (strcmp(c, cases[i][1]) != 0)
			print_error("clean(%s) = %s, want %s\n", cases[i][0], c, cases[i][1]);
		assert_string_equal(c, cases[i][1]);
		free(c);
	}
}

static void test_read_rules(void **state)
{
	(void)state;
	/* BOM, comments (only at column 0), blanks, cleaning, leading '/' removed,
	 * '!' with blanks after it */
	const char *text = "\xef\xbb\xbftest1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n"
			   "  # not a comment  \n! /inverted/abs/path\n  spaced/../name/  \r\n";
	struct kiln_ignore *ig = mk(text);
	const char *want[] = {"test1", "test2", "a/file/here", "lastfile", "#", "inverted/abs/path", "name"};
	bool want_ex[] = {false, false, false, false, false, true, false};
	assert_int_equal(kiln_ignore_count(ig), 7);
	for (size_t i = 0; i < 7; i++) {
		bool ex;
		const char *p = kiln_ignore_pattern(ig, i, &ex);
		assert_non_null(p);
		/* "  # not a comment  " is a pattern "#" ... "not a comment" */
		if (i == 4) {
			assert_string_equal(p, "# not a comment");
			continue;
		}
		assert_string_equal(p, want[i]);
		assert_int_equal(ex, want_ex[i]);
	}
	assert_null(kiln_ignore_pattern(ig, 7, NULL));
	assert_true(kiln_ignore_has_exceptions(ig));
	assert_true(kiln_ignore_match(ig, "test2"));
	assert_true(kiln_ignore_match(ig, "/test2"));
	assert_true(kiln_ignore_match(ig, "./a/file/here"));
	assert_true(kiln_ignore_match(ig, "name/sub"));
	assert_false(kiln_ignore_match(ig, "spaced"));
	kiln_ignore_free(ig);
}

static void test_errors(void **state)
{
	(void)state;
	struct kiln_ignore *ig = NULL;
	struct kiln_err err = {0};
	assert_int_equal(kiln_ignore_parse("a\n!\n", 4, &ig, &err), -1);
	assert_non_null(strstr(err.msg, "illegal exclusion pattern"));
	/* the message names the line (comments and blank lines count) */
	assert_int_equal(kiln_ignore_parse("# c\n\nok\n  b[\n", 14, &ig, &err), -1);
	assert_non_null(strstr(err.msg, ".dockerignore:4: syntax error in pattern: b["));
	assert_int_equal(kiln_ignore_parse("! \n", 3, &ig, &err), -1);
	assert_int_equal(kiln_ignore_parse("[a-\n", 4, &ig, &err), -1);
	assert_non_null(strstr(err.msg, "syntax error in pattern"));
	assert_int_equal(kiln_ignore_parse("abc[\n", 5, &ig, &err), -1);
	assert_int_equal(kiln_ignore_parse("x\\\n", 3, &ig, &err), -1);
	assert_int_equal(kiln_ignore_parse("[]a]\n", 5, &ig, &err), -1);
	assert_int_equal(kiln_ignore_parse("[z-a]\n", 6, &ig, &err), -1);
	assert_int_equal(kiln_ignore_parse("[a]\n[^a-c]x\n\\[\n", 15, &ig, &err), 0);
	kiln_ignore_free(ig);
	/* empty text: nothing ignored */
	assert_int_equal(kiln_ignore_parse("", 0, &ig, &err), 0);
	assert_false(kiln_ignore_match(ig, "a"));
	kiln_ignore_free(ig);
	assert_false(kiln_ignore_match(NULL, "a"));
}

struct mcase {
	const char *pattern;
	const char *path;
	bool match;
};

static void test_matching(void **state)
{
	(void)state;
	const struct mcase cases[] = {
		{"*.go", "a.go", true},
		{"*.go", "dir/a.go", false},        /* * does not cross / */
		{"*/*.go", "dir/a.go", true},
		{"**/*.go", "dir/a.go", true},
		{"**/*.go", "a.go", true},
		{"**/*.go", "x/y/z/a.go", true},
		{"**/*.go", "x/y/z/a.got", false},
		{"dir", "dir", true},
		{"dir", "dir/x/y", true},           /* parent matches */
		{"dir", "dirx", false},
		{"dir", "x/dir", false},
		{"dir/**", "dir/x", true},
		{"dir/**", "dir", false},
		{"dir**", "dirx/y", true},
		{"**", "anything/at/all", true},
		{"a/**/b", "a/b", true},
		{"a/**/b", "a/x/y/b", true},
		{"a/**/b", "a/x/y/c", false},
		{"a/**/b", "a/xb", false},
		{"**/b", "b", true},
		{"**/b", "x/b", true},
		{"**/b", "x/ab", false},
		{"**/b", "x/b/c", true},            /* parent x/b */
		{"?.txt", "a.txt", true},
		{"?.txt", "ab.txt", false},
		{"?.txt", "/.txt", false},
		{"[a-c].txt", "b.txt", true},
		{"[a-c].txt", "d.txt", false},
		{"[^a-c].txt", "d.txt", true},
		{"[^a-c].txt", "a.txt", false},
		{"\\*.txt", "*.txt", true},
		{"\\*.txt", "a.txt", false},
		{"a.b", "a.b", true},
		{"a.b", "axb", false},              /* . is literal */
		{"a+(b)", "a+(b)", true},
		{"한*", "한국어", true},
		{"?국어", "한국어", true},
		{"./x/../y", "y", true},
		{"/abs", "abs", true},
		{"*", "x/y", true},                 /* parent x matches * */
		{"x/*", "x", false},
		{"x/*", "x/y/z", true},
		{"*.md", ".md", true},
		{"a/b", "a/b/c", true},
		{"a/b", "a", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kiln_ignore *ig = mk(cases[i].pattern);
		bool m = kiln_ignore_match(ig, cases[i].path);
		if (m != cases[i].match)
			print_error("pattern %s path %s: got %d want %d\n", cases[i].pattern, cases[i].path, m,
				    cases[i].match);
		assert_int_equal(m, cases[i].match);
		kiln_ignore_free(ig);
	}
}

/* Cases of moby/patternmatcher's and Go filepath.Match's behaviour
 * (match = the path or one of its parents matches). */
static void test_docker_cases(void **state)
{
	(void)state;
	const struct mcase cases[] = {
		{"**", "file", true}, {"**/", "file", true}, {"**", "dir/file", true},
		{"**/**", "dir/file", true}, {"dir/**", "dir/file", true}, {"dir/**", "dir/dir2/file", true},
		{"**/dir", "dir", true}, {"**/dir", "dir/file", true}, {"**/dir2/*", "dir/dir2/file", true},
		{"**/dir2/*", "dir/dir2/file/", true}, {"**/dir2/**", "dir/dir2/dir3/file", true},
		{"**file", "file", true}, {"**file", "dir/file", true}, {"**/file", "dir/dir/file", true},
		{"**/file*", "dir/dir/file.txt", true}, {"**/file*txt", "dir/dir/file.txt", true},
		{"**/file*.txt*", "dir/dir/file.txt", true}, {"**/**/*.txt", "dir/dir/file.txt", true},
		{"**/**/*.txt2", "dir/dir/file.txt", false}, {"**/*.txt", "file.txt", true},
		{"**/**/*.txt", "file.txt", true}, {"a**/*.txt", "a/file.txt", true},
		{"a**/*.txt", "a/dir/dir/file.txt", true}, {"a/*.txt", "a/dir/file.txt", false},
		{"a/*.txt", "a/file.txt", true}, {"a/*.txt**", "a/file.txt", true},
		{"a[b-d]e", "ae", false}, {"a[b-d]e", "ace", true}, {"a[b-d]e", "aae", false},
		{"a[^b-d]e", "aze", true}, {".*", ".foo", true}, {".*", "foo", false},
		{"abc.def", "abcdef", false}, {"abc.def", "abc.def", true}, {"abc.def", "abcZdef", false},
		{"abc?def", "abcZdef", true}, {"abc?def", "abcdef", false},
		{"**/foo/bar", "foo/bar", true}, {"**/foo/bar", "dir/dir2/foo/bar", true},
		{"abc/**", "abc", false}, {"abc/**", "abc/def/ghi", true},
		{"**/.foo", ".foo", true}, {"**/.foo", "bar.foo", false},
		{"a(b)c/def", "a(b)c/def", true}, {"a(b)c/def", "a(b)c/xyz", false},
		{"a.|)$(}+{bc", "a.|)$(}+{bc", true},
		{"dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true},
		{"a\\\\", "a\\", true}, {"a\\*b", "a*b", true}, {"a\\*b", "ab", false},
		{"*c", "abc", true}, {"a*", "ab/c", true}, {"a*/b", "abc/b", true}, {"a*/b", "a/c/b", false},
		{"a*b*c*d*e*/f", "axbxcxdxe/f", true}, {"a*b*c*d*e*/f", "axbxcxdxexxx/f", true},
		{"a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false}, {"a*b*c*d*e*/f", "axbxcxdxexxx/fff", false},
		{"a*b?c*x", "abxbbxdbxebxczzx", true}, {"a*b?c*x", "abxbbxdbxebxczzy", false},
		{"ab[^c]", "abc", false}, {"ab[^e-g]", "abc", true}, {"a?b", "a\xe2\x98\xba" "b", true},
		{"a[^a]b", "a\xe2\x98\xba" "b", true}, {"a???b", "a\xe2\x98\xba" "b", false},
		{"[a-\xce\xb6]*", "\xce\xb1", true}, {"*[a-\xce\xb6]", "A", false},
		{"a?b", "a/b", false}, {"a*b", "a/b", false}, {"[\\]a]", "]", true}, {"[\\-]", "-", true},
		{"[x\\-]", "x", true}, {"[x\\-]", "-", true}, {"[x\\-]", "z", false}, {"[\\-x]", "a", false},
		{"*x", "xxx", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kiln_ignore *ig = mk(cases[i].pattern);
		bool m = kiln_ignore_match(ig, cases[i].path);
		if (m != cases[i].match)
			print_error("pattern %s path %s: got %d want %d\n", cases[i].pattern, cases[i].path, m,
				    cases[i].match);
		assert_int_equal(m, cases[i].match);
		kiln_ignore_free(ig);
	}
	const char *bad[] = {"[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a["};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_ignore *ig = NULL;
		struct kiln_err err = {0};
		if (kiln_ignore_parse(bad[i], strlen(bad[i]), &ig, &err) == 0) {
			print_error("pattern %s should be rejected\n", bad[i]);
			kiln_ignore_free(ig);
			fail();
		}
	}
	/* several patterns */
	struct kiln_ignore *ig = mk("**\n!util/docker/web\n");
	assert_false(kiln_ignore_match(ig, "util/docker/web/foo"));
	kiln_ignore_free(ig);
	ig = mk("**\n!util/docker/web\nutil/docker/web/foo\n");
	assert_true(kiln_ignore_match(ig, "util/docker/web/foo"));
	kiln_ignore_free(ig);
	ig = mk("**\n!dist/*.whl\n");
	assert_false(kiln_ignore_match(ig, "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"));
	kiln_ignore_free(ig);
	ig = mk("!fileutils.go\n*.go\n");
	assert_true(kiln_ignore_match(ig, "fileutils.go"));
	kiln_ignore_free(ig);
	ig = mk("docs/\n!docs/README.md\n");
	assert_false(kiln_ignore_match(ig, "docs/README.md"));
	assert_true(kiln_ignore_match(ig, "docs/other.md"));
	kiln_ignore_free(ig);
	ig = mk("docs/*\n!docs/README.md\n");
	assert_false(kiln_ignore_match(ig, "docs/README.md"));
	kiln_ignore_free(ig);
}

static void test_exceptions_last_wins(void **state)
{
	(void)state;
	struct kiln_ignore *ig = mk("*.md\n!README*.md\nREADME-secret.md\n");
	assert_true(kiln_ignore_match(ig, "CHANGES.md"));
	assert_false(kiln_ignore_match(ig, "README.md"));
	assert_true(kiln_ignore_match(ig, "README-secret.md"));
	assert_false(kiln_ignore_match(ig, "main.c"));
	kiln_ignore_free(ig);

	ig = mk("build\n!build/keep\n");
	assert_true(kiln_ignore_match(ig, "build"));
	assert_true(kiln_ignore_match(ig, "build/x.o"));
	assert_false(kiln_ignore_match(ig, "build/keep"));
	assert_false(kiln_ignore_match(ig, "build/keep/inner")); /* exception matches a parent */
	assert_true(kiln_ignore_dir_may_include(ig, "build"));
	assert_false(kiln_ignore_dir_may_include(ig, "other"));
	kiln_ignore_free(ig);

	/* everything, then back in */
	ig = mk("**\n!src\n");
	assert_true(kiln_ignore_match(ig, "Dockerfile"));
	assert_false(kiln_ignore_match(ig, "src/a/b.c"));
	assert_false(kiln_ignore_match(ig, "."));
	assert_false(kiln_ignore_match(ig, ""));
	kiln_ignore_free(ig);
}

static void test_dir_may_include(void **state)
{
	(void)state;
	struct kiln_ignore *ig = mk("node_modules\n");
	assert_true(kiln_ignore_match(ig, "node_modules"));
	assert_false(kiln_ignore_dir_may_include(ig, "node_modules"));
	kiln_ignore_free(ig);

	ig = mk("*\n!*/keep\n");
	assert_true(kiln_ignore_dir_may_include(ig, "a"));
	assert_false(kiln_ignore_dir_may_include(ig, "a/b"));
	assert_false(kiln_ignore_match(ig, "a/keep"));
	assert_true(kiln_ignore_match(ig, "a/b/keep"));
	kiln_ignore_free(ig);

	ig = mk("a\n!**/keep\n");
	assert_true(kiln_ignore_dir_may_include(ig, "a/b/c"));
	kiln_ignore_free(ig);

	ig = mk("a\n!a/b/c/d.txt\n");
	assert_true(kiln_ignore_dir_may_include(ig, "a"));
	assert_true(kiln_ignore_dir_may_include(ig, "a/b"));
	assert_true(kiln_ignore_dir_may_include(ig, "a/b/c"));
	assert_false(kiln_ignore_dir_may_include(ig, "a/x"));
	assert_false(kiln_ignore_match(ig, "a/b/c/d.txt"));
	assert_true(kiln_ignore_match(ig, "a/b/c/e.txt"));
	kiln_ignore_free(ig);

	ig = mk("a\n!a/b*/**\n");
	assert_true(kiln_ignore_dir_may_include(ig, "a"));
	assert_true(kiln_ignore_dir_may_include(ig, "a/bcd"));
	assert_false(kiln_ignore_dir_may_include(ig, "a/c"));
	kiln_ignore_free(ig);
}

static void test_from_patterns(void **state)
{
	(void)state;
	char *pats[] = {" *.tmp ", "!keep.tmp", "cache/"};
	struct kiln_ignore *ig = NULL;
	struct kiln_err err = {0};
	assert_int_equal(kiln_ignore_from_patterns(pats, 3, &ig, &err), 0);
	assert_true(kiln_ignore_match(ig, "x.tmp"));
	assert_false(kiln_ignore_match(ig, "keep.tmp"));
	assert_true(kiln_ignore_match(ig, "cache/a"));
	kiln_ignore_free(ig);
	char *bad[] = {"["};
	assert_int_equal(kiln_ignore_from_patterns(bad, 1, &ig, &err), -1);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char *p = kiln_xasprintf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	free(p);
}

static void test_load(void **state)
{
	(void)state;
	char tmpl[] = "/tmp/kiln-ignore-XXXXXX";
	char *dir = mkdtemp(tmpl);
	assert_non_null(dir);
	char *sub = kiln_xasprintf("%s/df", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	struct kiln_ignore *ig = NULL;
	struct kiln_err err = {0};
	char *used = NULL;

	/* nothing at all: an empty set */
	assert_int_equal(kiln_ignore_load(dir, NULL, &ig, &used, &err), 0);
	assert_non_null(ig);
	assert_null(used);
	assert_int_equal(kiln_ignore_count(ig), 0);
	kiln_ignore_free(ig);

	write_file(dir, ".dockerignore", "from-context\n");
	char *df = kiln_xasprintf("%s/Dockerfile.app", sub);
	write_file(sub, "Dockerfile.app", "FROM scratch\n");
	assert_int_equal(kiln_ignore_load(dir, df, &ig, &used, &err), 0);
	assert_true(kiln_ignore_match(ig, "from-context"));
	assert_non_null(used);
	assert_true(kiln_str_has_suffix(used, "/.dockerignore"));
	free(used);
	kiln_ignore_free(ig);

	/* <Dockerfile>.dockerignore next to the Dockerfile wins */
	write_file(sub, "Dockerfile.app.dockerignore", "from-dockerfile\n");
	assert_int_equal(kiln_ignore_load(dir, df, &ig, &used, &err), 0);
	assert_true(kiln_ignore_match(ig, "from-dockerfile"));
	assert_false(kiln_ignore_match(ig, "from-context"));
	assert_true(kiln_str_has_suffix(used, "Dockerfile.app.dockerignore"));
	free(used);
	kiln_ignore_free(ig);

	/* through a directory fd */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(kiln_ignore_load_at(dfd, NULL, &ig, &used, &err), 0);
	assert_true(kiln_ignore_match(ig, "from-context"));
	assert_string_equal(used, ".dockerignore");
	free(used);
	kiln_ignore_free(ig);
	assert_int_equal(kiln_ignore_load_at(dfd, df, &ig, NULL, &err), 0);
	assert_true(kiln_ignore_match(ig, "from-dockerfile"));
	kiln_ignore_free(ig);
	close(dfd);

	/* a bad pattern names the file */
	write_file(dir, ".dockerignore", "ok\n[bad\n");
	assert_int_equal(kiln_ignore_load(dir, NULL, &ig, NULL, &err), -1);
	assert_non_null(strstr(err.msg, ".dockerignore"));
	assert_non_null(strstr(err.msg, "[bad"));

	kiln_rm_rf(dir, &err);
	free(df);
	free(sub);
}

static void test_pathological(void **state)
{
	(void)state;
	struct kiln_buf b = {0};
	for (int i = 0; i < 30; i++)
		kiln_buf_puts(&b, "*a");
	kiln_buf_puts(&b, "b\n");
	struct kiln_ignore *ig = mk(b.data);
	/* memoised: without it this would take ~ 1000^30 steps */
	char path[1001];
	memset(path, 'a', 1000);
	path[1000] = 0;
	uint64_t t0 = kiln_now_ns();
	assert_false(kiln_ignore_match(ig, path));
	assert_true(kiln_now_ns() - t0 < 20000000000ull);
	kiln_ignore_free(ig);
	kiln_buf_free(&b);

	/* a very long pattern is walked, not recursed per character */
	struct kiln_buf lp = {0};
	kiln_buf_puts(&lp, "?");
	for (int i = 0; i < 300000; i++)
		kiln_buf_putc(&lp, 'a');
	kiln_buf_putc(&lp, '\n');
	ig = mk(lp.data);
	char *longp = kiln_xstrndup(lp.data, lp.len - 1);
	longp[0] = 'z';
	assert_true(kiln_ignore_match(ig, longp));
	longp[lp.len - 2] = 'b';
	assert_false(kiln_ignore_match(ig, longp));
	free(longp);
	kiln_ignore_free(ig);
	kiln_buf_free(&lp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean),
		cmocka_unit_test(test_read_rules),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_matching),
		cmocka_unit_test(test_docker_cases),
		cmocka_unit_test(test_exceptions_last_wins),
		cmocka_unit_test(test_dir_may_include),
		cmocka_unit_test(test_from_patterns),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_pathological),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
