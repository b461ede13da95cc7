/* Unit tests: parser/parser (Dockerfile → BuildKit parse tree), its dump,
 * the instruction checks and the flag helper.  The shared BuildKit suites
 * and the real Dockerfiles are read at run time from $KILN_TESTDATA. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/util.h"
#include "parser/parser.h"

/* ---- helpers -------------------------------------------------------------- */

/* The dump of text, or NULL (err filled) when parsing fails. */
static char *dump_text(const char *text, size_t len, struct kiln_err *err)
{
	struct kiln_df *df = NULL;
	if (kiln_parse(text, len, "Dockerfile", &df, err) < 0)
		return NULL;
	struct kiln_buf b = {0};
	kiln_df_dump(df, &b);
	kiln_df_free(df);
	kiln_buf_append(&b, "", 0);
	return kiln_buf_steal(&b);
}

static void expect_dump(const char *text, const char *want)
{
	struct kiln_err err = {0};
	char *got = dump_text(text, strlen(text), &err);
	if (!got)
		fail_msg("parse failed: %s\n--- input:\n%s", err.msg, text);
	if (strcmp(got, want))
		fail_msg("dump differs\n--- input:\n%s\n--- got:\n%s--- want:\n%s", text, got, want);
	free(got);
}

/* Parsing must fail with a message containing every given fragment. */
static void expect_parse_error(const char *text, const char *frag1, const char *frag2)
{
	struct kiln_err err = {0};
	char *got = dump_text(text, strlen(text), &err);
	if (got)
		fail_msg("parse succeeded, expected an error\n--- input:\n%s\n--- dump:\n%s", text, got);
	if (frag1 && !strstr(err.msg, frag1))
		fail_msg("error '%s' lacks '%s'", err.msg, frag1);
	if (frag2 && !strstr(err.msg, frag2))
		fail_msg("error '%s' lacks '%s'", err.msg, frag2);
}

/* Parsing succeeds, the instruction check fails with the fragments. */
static void expect_check_error(const char *text, const char *frag1, const char *frag2)
{
	struct kiln_err err = {0};
	struct kiln_df *df = NULL;
	if (kiln_parse(text, strlen(text), "Dockerfile", &df, &err) < 0)
		fail_msg("parse failed: %s\n--- input:\n%s", err.msg, text);
	int rc = kiln_df_check(df, &err);
	kiln_df_free(df);
	if (rc == 0)
		fail_msg("check succeeded, expected an error\n--- input:\n%s", text);
	if (frag1 && !strstr(err.msg, frag1))
		fail_msg("error '%s' lacks '%s'", err.msg, frag1);
	if (frag2 && !strstr(err.msg, frag2))
		fail_msg("error '%s' lacks '%s'", err.msg, frag2);
}

static void expect_check_ok(const char *text)
{
	struct kiln_err err = {0};
	struct kiln_df *df = NULL;
	if (kiln_parse(text, strlen(text), "Dockerfile", &df, &err) < 0)
		fail_msg("parse failed: %s\n--- input:\n%s", err.msg, text);
	if (kiln_df_check(df, &err) < 0)
		fail_msg("check failed: %s\n--- input:\n%s", err.msg, text);
	kiln_df_free(df);
}

static struct kiln_df *parse_ok(const char *text)
{
	struct kiln_err err = {0};
	struct kiln_df *df = NULL;
	if (kiln_parse(text, strlen(text), "Dockerfile", &df, &err) < 0)
		fail_msg("parse failed: %s\n--- input:\n%s", err.msg, text);
	return df;
}

static const char *testdata(void)
{
	const char *t = getenv("KILN_TESTDATA");
	return t && *t ? t : "../shared/testdata";
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of a directory (no dot files). */
static void list_dir(const char *path, struct kiln_strv *out)
{
	DIR *d = opendir(path);
	if (!d)
		fail_msg("cannot open %s (set KILN_TESTDATA)", path);
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			kiln_strv_push(out, e->d_name);
	closedir(d);
	qsort(out->v, out->n, sizeof(char *), cmp_names);
}

static char *read_all(const char *path, size_t *len)
{
	char *t = NULL;
	struct kiln_err err = {0};
	if (kiln_read_file(path, 0, &t, len, &err) < 0)
		fail_msg("%s", err.msg);
	return t;
}

/* ---- the shared suites ---------------------------------------------------- */

static void test_buildkit_testfiles(void **state)
{
	(void)state;
	char *dir = kiln_xasprintf("%s/buildkit-parser/testfiles", testdata());
	struct kiln_strv cases = {0};
	list_dir(dir, &cases);
	assert_true(cases.n >= 10);
	int failures = 0;
	for (size_t i = 0; i < cases.n; i++) {
		char *df = kiln_xasprintf("%s/%s/Dockerfile", dir, cases.v[i]);
		char *res = kiln_xasprintf("%s/%s/result", dir, cases.v[i]);
		size_t dl, rl;
		char *text = read_all(df, &dl), *want = read_all(res, &rl);
		struct kiln_err err = {0};
		char *got = dump_text(text, dl, &err);
		if (!got) {
			print_error("case %s: parse failed: %s\n", cases.v[i], err.msg);
			failures++;
		} else if (strlen(got) != rl || memcmp(got, want, rl)) {
			print_error("case %s: dump differs\n--- got:\n%s--- want:\n%s", cases.v[i], got, want);
			failures++;
		}
		free(got);
		free(text);
		free(want);
		free(df);
		free(res);
	}
	kiln_strv_free(&cases);
	free(dir);
	assert_int_equal(failures, 0);
}

static void test_buildkit_negative(void **state)
{
	(void)state;
	char *dir = kiln_xasprintf("%s/buildkit-parser/testfiles-negative", testdata());
	struct kiln_strv cases = {0};
	list_dir(dir, &cases);
	assert_true(cases.n >= 1);
	int failures = 0;
	for (size_t i = 0; i < cases.n; i++) {
		char *df = kiln_xasprintf("%s/%s/Dockerfile", dir, cases.v[i]);
		size_t dl;
		char *text = read_all(df, &dl);
		struct kiln_err err = {0};
		char *got = dump_text(text, dl, &err);
		if (got) {
			print_error("negative case %s parsed:\n%s", cases.v[i], got);
			failures++;
		} else if (strncmp(err.msg, "Dockerfile", 10)) {
			print_error("negative case %s: message lacks the file name: %s\n", cases.v[i], err.msg);
			failures++;
		}
		free(got);
		free(text);
		free(df);
	}
	kiln_strv_free(&cases);
	free(dir);
	assert_int_equal(failures, 0);
}

static void test_real_dockerfiles(void **state)
{
	(void)state;
	char *dir = kiln_xasprintf("%s/real-dockerfiles/files", testdata());
	struct kiln_strv files = {0};
	list_dir(dir, &files);
	assert_true(files.n >= 100);
	int failures = 0;
	for (size_t i = 0; i < files.n; i++) {
		char *path = kiln_xasprintf("%s/%s", dir, files.v[i]);
		char *res = kiln_xasprintf("%s/real-dockerfiles/dumps/%s.result", testdata(), files.v[i]);
		size_t dl, rl;
		char *text = read_all(path, &dl), *want = read_all(res, &rl);
		struct kiln_err err = {0};
		struct kiln_df *df = NULL;
		if (kiln_parse(text, dl, files.v[i], &df, &err) < 0) {
			print_error("%s: parse failed: %s\n", files.v[i], err.msg);
			failures++;
		} else {
			struct kiln_buf b = {0};
			kiln_df_dump(df, &b);
			if (b.len != rl || memcmp(b.data, want, rl)) {
				print_error("%s: dump differs\n--- got:\n%s--- want:\n%s", files.v[i], b.data, want);
				failures++;
			}
			kiln_buf_free(&b);
			/* Real files are valid Dockerfiles: the instruction check passes too. */
			if (kiln_df_check(df, &err) < 0) {
				print_error("%s: check failed: %s\n", files.v[i], err.msg);
				failures++;
			}
			kiln_df_free(df);
		}
		free(text);
		free(want);
		free(path);
		free(res);
	}
	kiln_strv_free(&files);
	free(dir);
	assert_int_equal(failures, 0);
}

/* ---- BuildKit cases written out (the rules behind the suites) ------------- */

static void test_flags_case(void **state)
{
	(void)state;
	expect_dump("FROM scratch\n"
		    "COPY foo /tmp/\n"
		    "COPY --user=me foo /tmp/\n"
		    "COPY --doit=true foo /tmp/\n"
		    "COPY --user=me --doit=true foo /tmp/\n"
		    "COPY --doit=true -- foo /tmp/\n"
		    "COPY -- foo /tmp/\n"
		    "CMD --doit [ \"a\", \"b\" ]\n"
		    "CMD --doit=true -- [ \"a\", \"b\" ]\n"
		    "CMD --doit -- [ ]\n",
		    "(from \"scratch\")\n"
		    "(copy \"foo\" \"/tmp/\")\n"
		    "(copy [\"--user=me\"] \"foo\" \"/tmp/\")\n"
		    "(copy [\"--doit=true\"] \"foo\" \"/tmp/\")\n"
		    "(copy [\"--user=me\" \"--doit=true\"] \"foo\" \"/tmp/\")\n"
		    "(copy [\"--doit=true\"] \"foo\" \"/tmp/\")\n"
		    "(copy \"foo\" \"/tmp/\")\n"
		    "(cmd [\"--doit\"] \"a\" \"b\")\n"
		    "(cmd [\"--doit=true\"] \"a\" \"b\")\n"
		    "(cmd [\"--doit\"])\n");
	/* Quotes inside flag words are removed; flags work on unknown instructions. */
	expect_dump("FROM a\nCOPY --chown=\"1:1\" --from='b c' x y\nFOO --bar=1 x\n",
		    "(from \"a\")\n(copy [\"--chown=1:1\" \"--from=b c\"] \"x\" \"y\")\n(foo [\"--bar=1\"] \"\")\n");
}

static void test_health_case(void **state)
{
	(void)state;
	expect_dump("FROM debian\n"
		    "ADD check.sh main.sh /app/\n"
		    "CMD /app/main.sh\n"
		    "HEALTHCHECK\n"
		    "HEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n"
		    "  CMD /app/check.sh --quiet\n"
		    "HEALTHCHECK CMD\n"
		    "HEALTHCHECK   CMD   a b\n"
		    "HEALTHCHECK --timeout=3s CMD [\"foo\"]\n"
		    "HEALTHCHECK CONNECT TCP 7000\n"
		    "HEALTHCHECK --start-period=0s --interval=5s --timeout=0s --retries=0 CMD [\"foo\"]\n",
		    "(from \"debian\")\n"
		    "(add \"check.sh\" \"main.sh\" \"/app/\")\n"
		    "(cmd \"/app/main.sh\")\n"
		    "(healthcheck)\n"
		    "(healthcheck [\"--interval=5s\" \"--timeout=3s\" \"--retries=3\"] \"CMD\" \"/app/check.sh --quiet\")\n"
		    "(healthcheck \"CMD\")\n"
		    "(healthcheck \"CMD\" \"a b\")\n"
		    "(healthcheck [\"--timeout=3s\"] \"CMD\" \"foo\")\n"
		    "(healthcheck \"CONNECT\" \"TCP 7000\")\n"
		    "(healthcheck [\"--start-period=0s\" \"--interval=5s\" \"--timeout=0s\" \"--retries=0\"] \"CMD\" \"foo\")\n");
	/* Zero durations and zero retries are valid (defaults). */
	expect_check_ok("FROM a\nHEALTHCHECK --start-period=0s --interval=5s --timeout=0s --retries=0 CMD [\"foo\"]\n");
}

static void test_json_case(void **state)
{
	(void)state;
	expect_dump("CMD []\n"
		    "CMD [\"\"]\n"
		    "CMD [\"a\"]\n"
		    "CMD [\"a\",\"b\"]\n"
		    "CMD [ \"a\", \"b\" ]\n"
		    "CMD [\t\"a\",\t\"b\"\t]\n"
		    "CMD\t[\t\"a\",\t\"b\"\t]\t\n"
		    "CMD [\"abc 123\", \"\xe2\x99\xa5\", \"\xe2\x98\x83\", \"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000\"]\n",
		    "(cmd)\n"
		    "(cmd \"\")\n"
		    "(cmd \"a\")\n"
		    "(cmd \"a\" \"b\")\n"
		    "(cmd \"a\" \"b\")\n"
		    "(cmd \"a\" \"b\")\n"
		    "(cmd \"a\" \"b\")\n"
		    "(cmd \"abc 123\" \"\xe2\x99\xa5\" \"\xe2\x98\x83\" \"\\\" \\\\ / \\b \\f \\n \\r \\t \\x00\")\n");
}

static void test_json_edges(void **state)
{
	(void)state;
	/* Not JSON: the raw text. */
	expect_dump("CMD ['echo', 'single quotes are invalid JSON']\n",
		    "(cmd \"['echo', 'single quotes are invalid JSON']\")\n");
	expect_dump("CMD [\"echo\", \"look ma, no brackets!\"\n",
		    "(cmd \"[\\\"echo\\\", \\\"look ma, no brackets!\\\"\")\n");
	expect_dump("RUN [\"a\",]\n", "(run \"[\\\"a\\\",]\")\n");
	/* Data after the array makes it shell form (json.Unmarshal, moby/buildkit#5107);
	 * trailing blanks are fine. */
	expect_dump("CMD [\"a\"] b\n", "(cmd \"[\\\"a\\\"] b\")\n");
	expect_dump("ENTRYPOINT []<-x\n", "(entrypoint \"[]<-x\")\n");
	expect_dump("CMD [\"a\"] \t\r\n", "(cmd \"a\")\n");
	/* A number too big for a float64 is a decoding error: shell form. */
	expect_dump("CMD [1e400]\n", "(cmd \"[1e400]\")\n");
	/* Surrogate pairs combine; a lone surrogate becomes U+FFFD. */
	expect_dump("CMD [\"\\ud83d\\ude00\", \"\\ud800x\"]\n", "(cmd \"\xf0\x9f\x98\x80\" \"\xef\xbf\xbdx\")\n");
	/* Invalid UTF-8 inside a JSON string is replaced, outside it stays as is. */
	expect_dump("CMD [\"a\xff\"]\n", "(cmd \"a\xef\xbf\xbd\")\n");
	expect_dump("CMD echo \xff\n", "(cmd \"echo \\xff\")\n");
	/* COPY/ADD/VOLUME: JSON or split on blanks (no quote handling). */
	expect_dump("VOLUME [\"/a\", \"/b\"]\nVOLUME /c  \"/d e\"\nADD [\"test file\", \"/tmp/test file\"]\n",
		    "(volume \"/a\" \"/b\")\n(volume \"/c\" \"\\\"/d\" \"e\\\"\")\n(add \"test file\" \"/tmp/test file\")\n");
	/* A JSON array holding a non-string is an error with the line. */
	expect_parse_error("FROM a\nRUN [\"a\", 1]\n", "Dockerfile:2:", "strings only");
	expect_parse_error("FROM a\nCMD [[\"a\"]]\n", "Dockerfile:2:", "strings only");
	expect_parse_error("FROM a\nCOPY [\"a\", null]\n", "Dockerfile:2:", "strings only");
	expect_parse_error("FROM a\n\nENTRYPOINT [true]\n", "Dockerfile:3:", NULL);
	/* exec form flag */
	struct kiln_df *df = parse_ok("FROM a\nRUN [\"ls\", \"-l\"]\nRUN ls -l\nSHELL [\"/bin/bash\", \"-c\"]\n");
	assert_true(df->nodes[1].json);
	assert_false(df->nodes[2].json);
	assert_true(df->nodes[3].json);
	assert_int_equal(df->nodes[3].args.n, 2);
	kiln_df_free(df);
}

static void test_continue_indent_case(void **state)
{
	(void)state;
	expect_dump("FROM ubuntu:14.04\n"
		    "\n"
		    "RUN echo hello\\\n"
		    "    world\\\n"
		    "    goodnight  \\\n"
		    "    moon\\\n"
		    "    light\\\n"
		    "ning\n"
		    "RUN echo hello  \\\n"
		    "  world\n"
		    "RUN echo hello  \\\n"
		    "world\n"
		    "RUN echo hello \\\n"
		    "goodbye\\\n"
		    "frog\n"
		    "RUN echo hello  \\  \n"
		    "world\n"
		    "RUN echo hi \\\n"
		    " \\\n"
		    " world \\\n"
		    "\\\n"
		    " good\\\n"
		    "\\\n"
		    "night\n"
		    "RUN echo goodbye\\\n"
		    "frog\n"
		    "RUN echo good\\\n"
		    "bye\\\n"
		    "frog\n"
		    "\n"
		    "RUN echo hello \\\n"
		    "# this is a comment\n"
		    "\n"
		    "# this is a comment with a blank line surrounding it\n"
		    "\n"
		    "this is some more useful stuff\n",
		    "(from \"ubuntu:14.04\")\n"
		    "(run \"echo hello    world    goodnight      moon    lightning\")\n"
		    "(run \"echo hello    world\")\n"
		    "(run \"echo hello  world\")\n"
		    "(run \"echo hello goodbyefrog\")\n"
		    "(run \"echo hello  world\")\n"
		    "(run \"echo hi   world  goodnight\")\n"
		    "(run \"echo goodbyefrog\")\n"
		    "(run \"echo goodbyefrog\")\n"
		    "(run \"echo hello this is some more useful stuff\")\n");
}

static void test_continuation_edges(void **state)
{
	(void)state;
	/* An escaped escape at the end does not continue. */
	expect_dump("FROM a\nRUN echo \\\\\nRUN b\n", "(from \"a\")\n(run \"echo \\\\\\\\\")\n(run \"b\")\n");
	/* Continuation at end of file. */
	expect_dump("FROM a\nRUN x \\", "(from \"a\")\n(run \"x\")\n");
	/* Blank and comment lines inside a continuation are dropped. */
	expect_dump("FROM a\nRUN a \\\n\n  # note\n   \n  b\n", "(from \"a\")\n(run \"a   b\")\n");
	/* A trailing blank after the escape still continues; a trailing \r is a newline. */
	expect_dump("FROM a\nRUN a \\ \t\nb\n", "(from \"a\")\n(run \"a b\")\n");
	/* An empty continuation line is a warning with its line. */
	struct kiln_df *w = parse_ok("FROM a\nRUN a \\\n\n b\nRUN c \\\n d\n");
	assert_int_equal(w->warnings.n, 1);
	assert_non_null(strstr(w->warnings.v[0], "Dockerfile:4: empty continuation line"));
	kiln_df_free(w);
	/* Line numbers span the continuation. */
	struct kiln_df *df = parse_ok("# c\n\nFROM a\nRUN a \\\n b \\\n\n c\nUSER x\n");
	assert_int_equal(df->n_nodes, 3);
	assert_int_equal(df->nodes[0].start_line, 3);
	assert_int_equal(df->nodes[1].start_line, 4);
	assert_int_equal(df->nodes[1].end_line, 7);
	assert_int_equal(df->nodes[2].start_line, 8);
	assert_string_equal(df->nodes[1].original, "RUN a  b  c");
	kiln_df_free(df);
}

/* BuildKit's TestParseIncludesLineNumbers file. */
static void test_line_numbers(void **state)
{
	(void)state;
	struct kiln_df *df = parse_ok("# ESCAPE=\\\n\n\n\n"
				      "FROM brimstone/ubuntu:14.04@sha256:f58e9b93e0cbbcb22ca4f995a14447732cce2aa6ff4d66d6112374272790f4e1\n"
				      "\n\n# TORUN -v /var/run/docker.sock:/var/run/docker.sock\n\n\n"
				      "ENV GOPATH \\\n/go\n\n\n\n"
				      "# Install the packages we need, clean up after them and us\n"
				      "RUN apt-get update \\\n"
				      "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\n\n"
				      "    && apt-get --no-install-recommends install -y git golang ca-certificates \\\n"
				      "    && apt-get clean \\\n"
				      "    && rm -rf /var/lib/apt/lists \\\n\n"
				      "\t&& go get -v github.com/brimstone/consuldock \\\n"
				      "    && mv $GOPATH/bin/consuldock /usr/local/bin/consuldock \\\n\n"
				      "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.dirty \\\n"
				      "\t&& apt-get remove --purge -y $(diff /tmp/dpkg.clean /tmp/dpkg.dirty | awk '/^>/ {print $2}') \\\n"
				      "\t&& rm /tmp/dpkg.* \\\n"
				      "\t&& rm -rf $GOPATH\n\n\n\n\n");
	assert_int_equal(df->n_nodes, 3);
	assert_int_equal(df->escape_line, 1);
	const int want[3][2] = {{5, 5}, {11, 12}, {17, 31}};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(df->nodes[i].start_line, want[i][0]);
		assert_int_equal(df->nodes[i].end_line, want[i][1]);
	}
	assert_int_equal(df->warnings.n, 1);
	kiln_df_free(df);
	/* BuildKit's TestParseWords, through ARG. */
	expect_dump("ARG foo\nARG foo bar\nARG foo\\ bar\nARG foo=bar\nARG foo bar 'abc xyz'\nARG foo bar \"abc xyz\"\n"
		    "ARG \xc3\xa0\xc3\xb6\xc3\xbb\nARG f\xc3\xb6o b\xc3\xa0r \"\xc3\xa2""bc x\xc3\xbfz\"\n",
		    "(arg \"foo\")\n(arg \"foo\" \"bar\")\n(arg \"foo\\\\ bar\")\n(arg \"foo=bar\")\n"
		    "(arg \"foo\" \"bar\" \"'abc xyz'\")\n(arg \"foo\" \"bar\" \"\\\"abc xyz\\\"\")\n"
		    "(arg \"\xc3\xa0\xc3\xb6\xc3\xbb\")\n(arg \"f\xc3\xb6o\" \"b\xc3\xa0r\" \"\\\"\xc3\xa2""bc x\xc3\xbfz\\\"\")\n");
}

static void test_crlf_and_bom(void **state)
{
	(void)state;
	expect_dump("\xEF\xBB\xBF# escape=`\r\nFROM a\r\nRUN x `\r\n  y\r\nENV A=b\r\n",
		    "(from \"a\")\n(run \"x   y\")\n(env \"A\" \"b\" \"=\")\n");
	/* The BOM is only dropped at the start of the file. */
	expect_dump("FROM a\n\xEF\xBB\xBFRUN x\n", "(from \"a\")\n(\xEF\xBB\xBFrun \"\")\n");
	struct kiln_df *df = parse_ok("\xEF\xBB\xBF# syntax=docker/dockerfile:1\nFROM a\n");
	assert_string_equal(df->syntax, "docker/dockerfile:1");
	kiln_df_free(df);
}

static void test_directives(void **state)
{
	(void)state;
	struct kiln_df *df = parse_ok("# Syntax = docker/dockerfile:1.4 \n#ESCAPE=`\n# check=skip=all;error=true\nFROM a\n");
	assert_string_equal(df->syntax, "docker/dockerfile:1.4");
	assert_int_equal(df->escape, '`');
	assert_string_equal(df->check, "skip=all;error=true");
	assert_int_equal(df->syntax_line, 1);
	assert_int_equal(df->escape_line, 2);
	assert_int_equal(df->check_line, 3);
	kiln_df_free(df);
	/* escape with a backtick: backslash is plain, backtick continues. */
	expect_dump("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo x\nCOPY a\\b c:\\\n",
		    "(from \"a\")\n(run \"dir c:\\\\   && echo x\")\n(copy \"a\\\\b\" \"c:\\\\\")\n");
	/* Directives only at the very top: after a comment, blank line or instruction they are comments. */
	expect_dump("# comment\n# escape=`\nFROM a\nRUN a \\\nb\n", "(from \"a\")\n(run \"a b\")\n");
	expect_dump("\n# escape=`\nFROM a\nRUN a \\\nb\n", "(from \"a\")\n(run \"a b\")\n");
	expect_dump("FROM a\n# escape=`\nRUN a \\\nb\n", "(from \"a\")\n(run \"a b\")\n");
	/* Leading blanks before '#' are trimmed first, as for every line, so an
	 * indented directive still counts (BuildKit's processLine). */
	expect_dump("  \t# escape = `\nFROM a\nENV k `\nv\n", "(from \"a\")\n(env \"k\" \"v\" \"\")\n");
	/* An unknown directive ends the directives. */
	df = parse_ok("# foo=bar\n# escape=`\nFROM a\n");
	assert_int_equal(df->escape, '\\');
	kiln_df_free(df);
	/* Errors. */
	expect_parse_error("# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2:", "only one escape parser directive");
	expect_parse_error("# syntax=a\n# SYNTAX=b\nFROM a\n", "Dockerfile:2:", "only one syntax");
	expect_parse_error("# escape=x\nFROM a\n", "Dockerfile:1:", "invalid escape token 'x'");
	expect_parse_error("# escape=\\\\\nFROM a\n", "Dockerfile:1:", "invalid escape token");
}

static void test_instruction_args(void **state)
{
	(void)state;
	expect_dump("ARG foo bar=baz\nFROM ubuntu\nARG abc=\"123 456\" def\n",
		    "(arg \"foo\" \"bar=baz\")\n(from \"ubuntu\")\n(arg \"abc=\\\"123 456\\\"\" \"def\")\n");
	expect_dump("FROM a AS b\nEXPOSE 80/tcp\t 443\nUSER  a b \nWORKDIR /x y\nSTOPSIGNAL SIGKILL\nMAINTAINER Me <m@x>\n",
		    "(from \"a\" \"AS\" \"b\")\n(expose \"80/tcp\" \"443\")\n(user \"a b\")\n(workdir \"/x y\")\n"
		    "(stopsignal \"SIGKILL\")\n(maintainer \"Me <m@x>\")\n");
	expect_dump("FROM a\nENV A b c\nLABEL a=b \"c d\"=\"e f\"\nENV X=\"1\" Y=2\n",
		    "(from \"a\")\n(env \"A\" \"b c\" \"\")\n(label \"a\" \"b\" \"=\" \"\\\"c d\\\"\" \"\\\"e f\\\"\" \"=\")\n"
		    "(env \"X\" \"\\\"1\\\"\" \"=\" \"Y\" \"2\" \"=\")\n");
	/* ONBUILD nests; unknown instructions print an empty argument. */
	expect_dump("FROM a\nONBUILD RUN [\"echo\", \"test\"]\nonbuild copy --from=x . /\nFOO x y\nBAR\n",
		    "(from \"a\")\n(onbuild (run \"echo\" \"test\"))\n(onbuild (copy [\"--from=x\"] \".\" \"/\"))\n"
		    "(foo \"\")\n(bar \"\")\n");
	/* The instruction word is lower-cased as written. */
	expect_dump("from a\nRuN x\n", "(from \"a\")\n(run \"x\")\n");
	expect_dump("FROM a\n\xc3\x89T\xc3\x89 x\nD\xd0\x90\xce\xa3 y\n",
		    "(from \"a\")\n(\xc3\xa9t\xc3\xa9 \"\")\n(d\xd0\xb0\xcf\x83 \"\")\n");
	struct kiln_df *df = parse_ok("FROM a\nRuN --mount=type=cache,target=/x  echo hi\n");
	assert_string_equal(df->nodes[1].instr, "RuN");
	assert_string_equal(df->nodes[1].instr_lower, "run");
	assert_string_equal(df->nodes[1].rest, "--mount=type=cache,target=/x  echo hi");
	assert_string_equal(df->nodes[1].args.v[0], "echo hi");
	assert_string_equal(df->nodes[1].flags.v[0], "--mount=type=cache,target=/x");
	kiln_df_free(df);
	/* ENV/LABEL errors at parse time. */
	expect_parse_error("FROM a\nENV PATH\n", "Dockerfile:2:", "ENV must have two arguments");
	expect_parse_error("FROM a\nLABEL a=b c\n", "Dockerfile:2:", "can't find = in \"c\"");
	/* Comments above an instruction are kept (BuildKit's PrevComment: an
	 * empty "#" line starts them over, blank lines do not). */
	df = parse_ok("# first\n#\n# about a\n\n# more\nFROM a\n");
	assert_int_equal(df->nodes[0].comments.n, 2);
	assert_string_equal(df->nodes[0].comments.v[0], "about a");
	assert_string_equal(df->nodes[0].comments.v[1], "more");
	kiln_df_free(df);
}

static void test_quote(void **state)
{
	(void)state;
	struct kiln_buf b = {0};
	kiln_df_quote("a\"b\\c\td\x01\x7f\xc2\xa0\xe2\x80\x8b\xf0\x9f\x98\x80\xc3\xa9\xff", &b);
	assert_string_equal(b.data, "\"a\\\"b\\\\c\\td\\x01\\x7f\\u00a0\\u200b\xf0\x9f\x98\x80\xc3\xa9\\xff\"");
	kiln_buf_free(&b);
	/* Unicode 15 (Go's tables): U+1FAE8 printable; private use and tags are not. */
	kiln_df_quote("\xf0\x9f\xab\xa8\xee\x80\x80\xf3\xa0\x80\x81", &b);
	assert_string_equal(b.data, "\"\xf0\x9f\xab\xa8\\ue000\\U000e0001\"");
	kiln_buf_free(&b);
}

static void test_heredocs(void **state)
{
	(void)state;
	const char *text = "FROM alpine:3.6\n"
			   "RUN <<EMPTY\n"
			   "EMPTY\n"
			   "RUN 3<<EMPTY2\n"
			   "EMPTY2\n"
			   "RUN \"<<NOHEREDOC\"\n"
			   "RUN <<INDENT\n"
			   "\tfoo\n"
			   "\tbar\n"
			   "INDENT\n"
			   "RUN <<-UNINDENT\n"
			   "\tbaz\n"
			   "\tquux\n"
			   "\tUNINDENT\n"
			   "RUN <<-'NOEXPAND'\n"
			   "\tdon't expand $NAME\n"
			   "NOEXPAND\n"
			   "RUN --mount=type=cache,target=/foo <<MOUNT\n"
			   "# not a comment\n"
			   "echo hello \\\n"
			   "MOUNT\n"
			   "COPY <<X <<\"Y\" /dest\n"
			   "Y\n"
			   "X\n"
			   "X\n"
			   "Y\n"
			   "RUN [\"<<EOF\"]\n"
			   "USER <<INVALID\n"
			   "ONBUILD RUN <<EOF\n"
			   "x\n"
			   "EOF\n";
	struct kiln_df *df = parse_ok(text);
	struct kiln_buf b = {0};
	kiln_df_dump(df, &b);
	assert_string_equal(b.data, "(from \"alpine:3.6\")\n"
				    "(run \"<<EMPTY\")\n"
				    "(run \"3<<EMPTY2\")\n"
				    "(run \"\\\"<<NOHEREDOC\\\"\")\n"
				    "(run \"<<INDENT\")\n"
				    "(run \"<<-UNINDENT\")\n"
				    "(run \"<<-'NOEXPAND'\")\n"
				    "(run [\"--mount=type=cache,target=/foo\"] \"<<MOUNT\")\n"
				    "(copy \"<<X\" \"<<\\\"Y\\\"\" \"/dest\")\n"
				    "(run \"<<EOF\")\n"
				    "(user \"<<INVALID\")\n"
				    "(onbuild (run \"<<EOF\"))\n");
	kiln_buf_free(&b);
	assert_int_equal(df->n_nodes, 12);
	struct kiln_df_node *n = df->nodes;
	assert_int_equal(n[1].n_heredocs, 1);
	assert_string_equal(n[1].heredocs[0].name, "EMPTY");
	assert_string_equal(n[1].heredocs[0].content, "");
	assert_true(n[1].heredocs[0].expand);
	assert_int_equal(n[1].heredocs[0].fd, -1);
	assert_int_equal(n[1].start_line, 2);
	assert_int_equal(n[1].end_line, 3);
	assert_int_equal(n[2].heredocs[0].fd, 3);
	assert_int_equal(n[3].n_heredocs, 0);
	assert_string_equal(n[4].heredocs[0].content, "\tfoo\n\tbar\n");
	assert_false(n[4].heredocs[0].chomp);
	assert_string_equal(n[5].heredocs[0].content, "baz\nquux\n");
	assert_true(n[5].heredocs[0].chomp);
	assert_string_equal(n[6].heredocs[0].name, "NOEXPAND");
	assert_false(n[6].heredocs[0].expand);
	assert_string_equal(n[7].heredocs[0].content, "# not a comment\necho hello \\\n");
	assert_int_equal(n[8].n_heredocs, 2);
	assert_string_equal(n[8].heredocs[0].name, "X");
	assert_string_equal(n[8].heredocs[0].content, "Y\n");
	assert_true(n[8].heredocs[0].expand);
	assert_string_equal(n[8].heredocs[1].name, "Y");
	assert_string_equal(n[8].heredocs[1].content, "X\n");
	assert_false(n[8].heredocs[1].expand);
	assert_int_equal(n[8].start_line, 22);
	assert_int_equal(n[8].end_line, 26);
	assert_int_equal(n[9].n_heredocs, 0); /* JSON form: no heredoc */
	assert_int_equal(n[10].n_heredocs, 0); /* USER cannot hold one */
	assert_int_equal(n[11].n_heredocs, 1); /* ONBUILD RUN can, on the ONBUILD node */
	assert_string_equal(n[11].heredocs[0].content, "x\n");
	kiln_df_free(df);

	/* A blank between the operator and its word still makes a heredoc
	 * (the word after "<<" is the delimiter, so "<< -X" names "-X"); the
	 * body is consumed and never dumped. */
	df = parse_ok("FROM a\n"
		      "RUN <<  END  > out\n"
		      "body\n"
		      "END\n"
		      "RUN << -X\n"
		      "-X\n"
		      "RUN 7<<- T\n"
		      "\tt\n"
		      "\tT\n"
		      "RUN '<< Q'\n"
		      "USER u\n");
	kiln_df_dump(df, &b);
	assert_string_equal(b.data, "(from \"a\")\n"
				    "(run \"<<  END  > out\")\n"
				    "(run \"<< -X\")\n"
				    "(run \"7<<- T\")\n"
				    "(run \"'<< Q'\")\n"
				    "(user \"u\")\n");
	kiln_buf_free(&b);
	assert_string_equal(df->nodes[1].heredocs[0].name, "END");
	assert_string_equal(df->nodes[1].heredocs[0].content, "body\n");
	assert_string_equal(df->nodes[2].heredocs[0].name, "-X");
	assert_false(df->nodes[2].heredocs[0].chomp);
	assert_string_equal(df->nodes[3].heredocs[0].name, "T");
	assert_true(df->nodes[3].heredocs[0].chomp);
	assert_int_equal(df->nodes[3].heredocs[0].fd, 7);
	assert_int_equal(df->nodes[4].n_heredocs, 0);
	kiln_df_free(df);

	/* CRLF heredoc terminators. */
	df = parse_ok("FROM a\r\nRUN <<EOF\r\necho\r\nEOF\r\nUSER x\r\n");
	assert_int_equal(df->n_nodes, 3);
	assert_string_equal(df->nodes[1].heredocs[0].content, "echo\r\n");
	kiln_df_free(df);

	/* Unterminated heredoc and bad heredoc words are errors. */
	expect_parse_error("FROM a\nRUN <<EOF\necho hi\n", "Dockerfile:2:", "unterminated heredoc");
	expect_parse_error("FROM a\nRUN cat <<A <<B\nA\nx\n", "Dockerfile:2:", "unterminated heredoc");

	/* The word helper. */
	struct kiln_df_heredoc h;
	struct kiln_err err = {0};
	const char *valid[] = {"<<EOF", "<<'EOF'", "<<\"EOF\"", "<<-EOF", "<<-'EOF'", "<<-\"EOF\""};
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(kiln_df_parse_heredoc_word(valid[i], &h, &err), 1);
		assert_string_equal(h.name, "EOF");
		free(h.name);
	}
	const char *invalid[] = {"<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""};
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(kiln_df_parse_heredoc_word(invalid[i], &h, &err), -1);
	const char *not_heredoc[] = {"", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "a<<EOF"};
	for (size_t i = 0; i < 7; i++)
		assert_int_equal(kiln_df_parse_heredoc_word(not_heredoc[i], &h, &err), 0);
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_parse_error("", "Dockerfile", "file with no instructions");
	expect_parse_error("# only\n# comments\n\n   \n", "file with no instructions", NULL);
	/* 64 KiB line limit: 65535 bytes is fine, 65536 is not. */
	size_t n = 65535;
	char *big = kiln_xmalloc(n + 32);
	memcpy(big, "FROM a\nRUN ", 11);
	memset(big + 11, 'x', n - 4);
	memcpy(big + 11 + n - 4, "\n", 2);
	struct kiln_err err = {0};
	char *d = dump_text(big, strlen(big), &err);
	assert_non_null(d);
	free(d);
	memcpy(big + 11 + n - 4, "x\n", 3);
	d = dump_text(big, strlen(big), &err);
	assert_null(d);
	assert_non_null(strstr(err.msg, "Dockerfile:2:"));
	assert_non_null(strstr(err.msg, "max allowed size"));
	free(big);
	/* A NUL byte is refused with its line. */
	d = dump_text("FROM a\nRUN a\0b\n", 15, &err);
	assert_null(d);
	assert_non_null(strstr(err.msg, "Dockerfile:2:"));
	/* The file name given is used. */
	struct kiln_df *df = NULL;
	assert_int_equal(kiln_parse("FROM a\nENV X\n", 13, "sub/Dockerfile.dev", &df, &err), -1);
	assert_non_null(strstr(err.msg, "sub/Dockerfile.dev:2: "));
}

/* ---- checks and flags ----------------------------------------------------- */

static void test_check_errors(void **state)
{
	(void)state;
	expect_check_error("FROM a\nCOPY onlyone\n", "Dockerfile:2:", "at least two arguments");
	expect_check_error("FROM a\nADD x\n", "Dockerfile:2:", "ADD requires at least two arguments");
	expect_check_error("FROM a\nENV\n", "Dockerfile:2:", "ENV requires at least one argument");
	expect_check_error("FROM a\nLABEL =x\n", "Dockerfile:2:", "LABEL names can not be blank");
	expect_check_error("FROM a\nARG =x\n", "ARG names can not be blank", NULL);
	expect_check_error("FROM a\nHEALTHCHECK CONNECT TCP 7000\n", "Dockerfile:2:", "Unknown type \"CONNECT\"");
	expect_check_error("FROM a\nHEALTHCHECK CMD\n", "Missing command after HEALTHCHECK CMD", NULL);
	expect_check_error("FROM a\nHEALTHCHECK NONE x\n", "HEALTHCHECK NONE takes no arguments", NULL);
	expect_check_error("FROM a\nHEALTHCHECK --interval=5 CMD x\n", "Dockerfile:2:", "missing unit");
	expect_check_error("FROM a\nHEALTHCHECK --timeout=1x CMD x\n", "unknown unit", NULL);
	expect_check_error("FROM a\nHEALTHCHECK --interval=1us CMD x\n", "cannot be less than 1ms", NULL);
	expect_check_error("FROM a\nHEALTHCHECK --retries=x CMD x\n", "--retries", NULL);
	expect_check_error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", "cannot be negative", NULL);
	expect_check_error("FROM a\nADD --fro=x a b\n", "Dockerfile:2: unknown flag: --fro", "ADD accepts --chown");
	expect_check_error("FROM a\nCOPY --form=x a b\n", "unknown flag: --form", "did you mean --from?");
	expect_check_error("FROM a\nENV --x=1 A=b\n", "unknown flag: --x", "ENV takes no flags");
	expect_check_error("FROM a\nCOPY --from=a --from=b x y\n", "duplicate flag specified: --from", NULL);
	expect_check_error("FROM a\nCOPY --from x y\n", "missing a value on flag: --from", NULL);
	expect_check_error("FROM a\nCOPY --link= x y\n", "missing a value on flag: --link", NULL);
	expect_check_error("FROM a\nCOPY --link=maybe x y\n", "expecting boolean value for flag --link", NULL);
	expect_check_error("FROM a\nONBUILD FROM b\n", "Dockerfile:2:", "FROM isn't allowed as an ONBUILD trigger");
	expect_check_error("FROM a\nONBUILD MAINTAINER b\n", "MAINTAINER isn't allowed as an ONBUILD trigger", NULL);
	expect_check_error("FROM a\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD", NULL);
	expect_check_error("FROM a\nONBUILD\n", "ONBUILD requires at least one argument", NULL);
	expect_check_error("FROM a\nSHELL /bin/sh -c\n", "Dockerfile:2:", "JSON form");
	expect_check_error("FROM a\nSHELL []\n", "SHELL requires at least one argument", NULL);
	expect_check_error("FROM a\nWORKDIR\n", "WORKDIR requires exactly one argument", NULL);
	expect_check_error("FROM a\nEXPOSE\n", "EXPOSE requires at least one argument", NULL);
	expect_check_error("FROM a\nVOLUME [\" \"]\n", "VOLUME specified can not be an empty string", NULL);
	expect_check_error("FROM a b\n", "Dockerfile:1:", "FROM requires either one or three arguments");
	expect_check_error("FROM a AS 1x\n", "invalid name for build stage", NULL);
	expect_check_error("FROM a\nFOO x\n", "Dockerfile:2:", "unknown instruction: FOO");
	expect_check_error("FROM a\nRUNN x\n", "unknown instruction: RUNN", "did you mean RUN?");
	expect_check_error("FROM a\nCOPY a <<EOF\nx\nEOF\n", "cannot accept a heredoc as a destination", NULL);

	expect_check_ok("FROM --platform=linux/amd64 a AS build\n"
			"RUN --mount=type=cache,target=/x --mount=type=tmpfs,target=/t --network=none make\n"
			"COPY --from=build --chown=1:1 --chmod=644 --link a b\n"
			"COPY --link=false <<EOF /f\nhello\nEOF\n"
			"ADD --checksum=sha256:00 --keep-git-dir=true --unpack=false http://x/y /z\n"
			"HEALTHCHECK --interval=1m30s --timeout=0.5s --start-period=0 --retries=3 CMD curl x\n"
			"HEALTHCHECK NONE\n"
			"ONBUILD RUN echo hi\n"
			"SHELL [\"/bin/bash\", \"-c\"]\n"
			"ENV A=1 B=2\nLABEL a=b\nARG X Y=2\nEXPOSE 80\nUSER a\nWORKDIR /w\nVOLUME /v\n"
			"STOPSIGNAL SIGTERM\nMAINTAINER me\nCMD [\"x\"]\nENTRYPOINT x\n");
}

static void test_flag_helper(void **state)
{
	(void)state;
	struct kiln_df *df = parse_ok("FROM a\nRUN --mount=type=cache,target=/a --network=host --mount=type=tmpfs,target=/b x\n"
				      "COPY --link --from=b x y\n");
	struct kiln_err err = {0};
	static const struct kiln_flag_spec spec[] = {
		{"mount", KILN_FLAG_STRINGS}, {"network", KILN_FLAG_STRING}, {"link", KILN_FLAG_BOOL}, {NULL, 0},
	};
	struct kiln_flag_value v[3];
	assert_int_equal(kiln_df_node_flags(df, &df->nodes[1], spec, v, &err), 0);
	assert_true(v[0].set);
	assert_int_equal(v[0].values.n, 2);
	assert_string_equal(v[0].values.v[1], "type=tmpfs,target=/b");
	assert_string_equal(v[1].value, "host");
	assert_false(v[2].set);
	kiln_flag_values_free(v, 3);

	const struct kiln_flag_spec *copy = kiln_df_flag_spec("copy");
	assert_non_null(copy);
	struct kiln_flag_value cv[16] = {0};
	assert_int_equal(kiln_df_node_flags(df, &df->nodes[2], copy, cv, &err), 0);
	for (size_t i = 0; copy[i].name; i++) {
		if (!strcmp(copy[i].name, "link")) {
			assert_true(cv[i].set);
			assert_true(cv[i].b);
		}
		if (!strcmp(copy[i].name, "from"))
			assert_string_equal(cv[i].value, "b");
		if (!strcmp(copy[i].name, "chown"))
			assert_false(cv[i].set);
	}
	kiln_flag_values_free(cv, 16);
	assert_int_equal(kiln_df_node_flags(df, &df->nodes[1], copy, cv, &err), -1);
	assert_non_null(strstr(err.msg, "Dockerfile:2: unknown flag: --mount"));
	assert_null(kiln_df_flag_spec("env"));
	assert_true(kiln_df_known_instruction("healthcheck"));
	assert_false(kiln_df_known_instruction("foo"));
	kiln_df_free(df);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buildkit_testfiles),
		cmocka_unit_test(test_buildkit_negative),
		cmocka_unit_test(test_real_dockerfiles),
		cmocka_unit_test(test_flags_case),
		cmocka_unit_test(test_health_case),
		cmocka_unit_test(test_json_case),
		cmocka_unit_test(test_json_edges),
		cmocka_unit_test(test_continue_indent_case),
		cmocka_unit_test(test_continuation_edges),
		cmocka_unit_test(test_line_numbers),
		cmocka_unit_test(test_crlf_and_bom),
		cmocka_unit_test(test_directives),
		cmocka_unit_test(test_instruction_args),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_heredocs),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_check_errors),
		cmocka_unit_test(test_flag_helper),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
