/* Unit tests of container logs (runtime/logrelay.c): the line splitter,
 * the record format, --log-opt, rotation within max-size * max-file,
 * reading back across rotations (--tail, partial lines joined). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/logrelay.h"

/* ---------------------------------------------------------------- splitter */

struct got {
	struct kiln_buf all;     /* every byte emitted, in order */
	size_t n;
	size_t lens[64];
	bool partial[64];
	size_t max_len;
};

static void collect(void *arg, const char *data, size_t len, bool partial)
{
	struct got *g = arg;
	kiln_buf_append(&g->all, data, len);
	if (g->n < 64) {
		g->lens[g->n] = len;
		g->partial[g->n] = partial;
	}
	g->n++;
	if (len > g->max_len)
		g->max_len = len;
}

static void test_split_lines(void **state)
{
	(void)state;
	struct kiln_logsplit *s = kiln_xcalloc(1, sizeof(*s));
	struct got g = {0};
	kiln_logsplit_feed(s, "one\ntw", 6, collect, &g);
	kiln_logsplit_feed(s, "o\nthree\n", 8, collect, &g);
	kiln_logsplit_feed(s, "tail", 4, collect, &g);
	assert_int_equal(g.n, 3);
	assert_int_equal(g.lens[0], 4);
	assert_int_equal(g.lens[1], 4);
	assert_int_equal(g.lens[2], 6);
	kiln_logsplit_flush(s, collect, &g);
	assert_int_equal(g.n, 4);
	assert_false(g.partial[3]);
	assert_string_equal(g.all.data, "one\ntwo\nthree\ntail");
	kiln_buf_free(&g.all);
	free(s);
}

/* A 40 KiB line: 16 KiB pieces marked partial, then the rest; the same
 * whatever size the reads come in. */
static void test_split_long_line(void **state)
{
	(void)state;
	size_t n = 40 * 1024 + 1;
	char *line = kiln_xmalloc(n);
	memset(line, 'a', n - 1);
	line[n - 1] = '\n';
	static const size_t chunks[] = {1, 7, 4096, 16384, 65536};
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct kiln_logsplit *s = kiln_xcalloc(1, sizeof(*s));
		struct got g = {0};
		for (size_t off = 0; off < n; off += chunks[c])
			kiln_logsplit_feed(s, line + off, n - off < chunks[c] ? n - off : chunks[c], collect, &g);
		kiln_logsplit_flush(s, collect, &g);
		assert_int_equal(g.n, 3);
		assert_true(g.partial[0] && g.partial[1] && !g.partial[2]);
		assert_int_equal(g.lens[0], KILN_LOG_PIECE);
		assert_int_equal(g.lens[2], n - 2 * KILN_LOG_PIECE);
		assert_int_equal(g.all.len, n);
		assert_memory_equal(g.all.data, line, n);
		kiln_buf_free(&g.all);
		free(s);
	}
	free(line);
}

/* Bytes without a newline never pile up: a piece at a time. */
static void test_split_no_newline_bounded(void **state)
{
	(void)state;
	struct kiln_logsplit *s = kiln_xcalloc(1, sizeof(*s));
	struct got g = {0};
	char zeros[65536] = {0};
	for (int i = 0; i < 64; i++)
		kiln_logsplit_feed(s, zeros, sizeof(zeros), collect, &g);
	assert_int_equal(g.n, 64 * sizeof(zeros) / KILN_LOG_PIECE);
	assert_int_equal(g.max_len, KILN_LOG_PIECE);
	assert_int_equal(s->len, 0);
	kiln_buf_free(&g.all);
	free(s);
}

/* A piece is not cut inside a UTF-8 character. */
static void test_split_utf8(void **state)
{
	(void)state;
	size_t n = KILN_LOG_PIECE + 10;
	char *line = kiln_xmalloc(n);
	memset(line, 'x', n);
	/* "é" (c3 a9) straddles the 16 KiB mark */
	line[KILN_LOG_PIECE - 1] = (char)0xc3;
	line[KILN_LOG_PIECE] = (char)0xa9;
	line[n - 1] = '\n';
	struct kiln_logsplit *s = kiln_xcalloc(1, sizeof(*s));
	struct got g = {0};
	kiln_logsplit_feed(s, line, KILN_LOG_PIECE, collect, &g);   /* the second byte comes later */
	kiln_logsplit_feed(s, line + KILN_LOG_PIECE, n - KILN_LOG_PIECE, collect, &g);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.lens[0], KILN_LOG_PIECE - 1);
	assert_memory_equal(g.all.data, line, n);
	kiln_buf_free(&g.all);
	free(s);
	free(line);
}

/* ---------------------------------------------------------------- records */

static void test_encode_decode(void **state)
{
	(void)state;
	const char raw[] = "a\"b\\c\n\t\x01\x7f\xc3\xa9\xff\0z";
	size_t rl = sizeof(raw) - 1;
	struct kiln_buf b = {0};
	kiln_log_encode(&b, "stderr", raw, rl, true, "2024-01-02T03:04:05.000000006Z");
	assert_true(b.len > 0 && b.data[b.len - 1] == '\n');
	assert_null(memchr(b.data, '\n', b.len - 1));   /* one line */
	struct kiln_log_rec r;
	void *h;
	assert_true(kiln_log_decode(b.data, b.len - 1, &r, &h));
	assert_string_equal(r.stream, "stderr");
	assert_string_equal(r.time, "2024-01-02T03:04:05.000000006Z");
	assert_true(r.partial);
	/* every byte back, the invalid 0xff as U+FFFD */
	const char want[] = "a\"b\\c\n\t\x01\x7f\xc3\xa9\xef\xbf\xbd\0z";
	assert_int_equal(r.len, sizeof(want) - 1);
	assert_memory_equal(r.log, want, sizeof(want) - 1);
	kiln_log_rec_done(h);
	b.len = 0;
	kiln_log_encode(&b, "stdout", "x\n", 2, false, "t");
	assert_string_equal(b.data, "{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n");
	kiln_buf_free(&b);
}

static void test_logopts(void **state)
{
	(void)state;
	struct kiln_logopts o;
	struct kiln_err err = {0};
	kiln_logopts_default(&o);
	assert_true(o.max_size == 20 << 20 && o.max_file == 5);
	assert_int_equal(kiln_logopts_parse("max-size=1m,max-file=2", &o, &err), 0);
	assert_true(o.max_size == 1 << 20 && o.max_file == 2);
	assert_int_equal(kiln_logopts_parse("max-size=10k", &o, &err), 0);
	assert_true(o.max_size == 10 << 10);
	assert_int_equal(kiln_logopts_parse("max-size=2g", &o, &err), 0);
	assert_true(o.max_size == 2LL << 30);
	assert_int_equal(kiln_logopts_parse("max-size=-1", &o, &err), 0);
	assert_true(o.max_size == 0);
	static const char *const bad[] = {"max-size=abc", "max-size=", "max-size=0", "max-size=5x", "max-file=0",
		"max-file=-3", "max-file=two", "max-file=", "mode=non-blocking", "max-size", "", "=1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = '\0';
		assert_int_equal(kiln_logopts_parse(bad[i], &o, &err), -1);
		assert_non_null(strstr(err.msg, "--log-opt"));
	}
}

/* ---------------------------------------------------------------- files */

static char *tmpdir(void)
{
	char t[] = "/tmp/kiln-test-logs-XXXXXX";
	assert_non_null(mkdtemp(t));
	return kiln_xstrdup(t);
}

static int64_t fsize(const char *dir, const char *name)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	struct stat st;
	return stat(p, &st) == 0 ? st.st_size : -1;
}

struct lines {
	struct kiln_buf out;
	size_t records, partials;
	bool mid;
};

static void gather(void *arg, const struct kiln_log_rec *r)
{
	struct lines *l = arg;
	kiln_buf_append(&l->out, r->log, r->len);
	l->records++;
	l->partials += r->partial;
}

/* Many lines through max-size=4k, max-file=3: never more than 3 files of at
 * most 4 KiB; what is left reads back in order and ends with the last line. */
static void test_rotation_bounded_in_order(void **state)
{
	(void)state;
	char *d = tmpdir();
	struct kiln_logopts o = {.max_size = 4096, .max_file = 3};
	struct kiln_logwriter w;
	assert_int_equal(kiln_logwriter_open(&w, d, &o, NULL), 0);
	for (int i = 1; i <= 2000; i++) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%d\n", i);
		assert_int_equal(kiln_logwriter_write(&w, "stdout", line, (size_t)n, false), 0);
		assert_true(fsize(d, "log") <= 4096);
		assert_true(fsize(d, "log.1") <= 4096);
		assert_true(fsize(d, "log.2") <= 4096);
		assert_int_equal(fsize(d, "log.3"), -1);
	}
	kiln_logwriter_close(&w);

	/* a piece larger than a file is split to fit; 40 files hold it all */
	struct kiln_logopts o40 = {.max_size = 4096, .max_file = 40};
	assert_int_equal(kiln_logwriter_open(&w, d, &o40, NULL), 0);
	char big[KILN_LOG_PIECE];
	memset(big, 0, sizeof(big));   /* NULs: 6 bytes each once escaped */
	assert_int_equal(kiln_logwriter_write(&w, "stdout", big, sizeof(big), true), 0);
	assert_int_equal(kiln_logwriter_write(&w, "stdout", "end\n", 4, false), 0);
	assert_int_equal(kiln_logwriter_write(&w, "stdout", "last\n", 5, false), 0);
	kiln_logwriter_close(&w);
	for (int i = 0; i < 40; i++) {
		char name[16];
		snprintf(name, sizeof(name), i ? "log.%d" : "log", i);
		assert_true(fsize(d, name) <= 4096);
	}
	assert_true(fsize(d, "log.30") > 0);

	/* the last 2 lines: the big one joined (with "end"), and "last" */
	struct kiln_logcursor c;
	assert_int_equal(kiln_logcursor_open(&c, d, 2, NULL), 0);
	struct lines l = {0};
	kiln_logcursor_read(&c, gather, &l);
	kiln_logcursor_close(&c);
	assert_int_equal(l.out.len, sizeof(big) + 4 + 5);
	assert_true(l.partials > 20);
	assert_memory_equal(l.out.data, big, sizeof(big));
	assert_string_equal(l.out.data + sizeof(big), "end\nlast\n");
	kiln_buf_free(&l.out);

	/* without the big line: everything left is consecutive numbers */
	char *d2 = tmpdir();
	assert_int_equal(kiln_logwriter_open(&w, d2, &o, NULL), 0);
	for (int i = 1; i <= 2000; i++) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%d\n", i);
		kiln_logwriter_write(&w, i % 2 ? "stdout" : "stderr", line, (size_t)n, false);
	}
	kiln_logwriter_close(&w);
	assert_int_equal(kiln_logcursor_open(&c, d2, -1, NULL), 0);
	memset(&l, 0, sizeof(l));
	kiln_logcursor_read(&c, gather, &l);
	kiln_logcursor_close(&c);
	int first = atoi(l.out.data), expect = first;
	assert_true(first > 1);   /* the oldest were rotated out */
	for (char *p = l.out.data; *p; p = strchr(p, '\n') + 1)
		assert_int_equal(atoi(p), expect++);
	assert_int_equal(expect, 2001);
	kiln_buf_free(&l.out);
	/* --tail 5 across the files */
	assert_int_equal(kiln_logcursor_open(&c, d2, 5, NULL), 0);
	memset(&l, 0, sizeof(l));
	kiln_logcursor_read(&c, gather, &l);
	kiln_logcursor_close(&c);
	assert_string_equal(l.out.data, "1996\n1997\n1998\n1999\n2000\n");
	kiln_buf_free(&l.out);
	assert_int_equal(kiln_logcursor_open(&c, d2, 0, NULL), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(kiln_logcursor_read(&c, gather, &l), 0);
	kiln_logcursor_close(&c);
	kiln_rm_rf(d, NULL);
	kiln_rm_rf(d2, NULL);
	free(d);
	free(d2);
}

/* A reader that started before rotations sees every record once, in order
 * (nothing was dropped: max-size * max-file holds it all). */
static void test_follow_across_rotation(void **state)
{
	(void)state;
	char *d = tmpdir();
	struct kiln_logopts o = {.max_size = 2048, .max_file = 50};
	struct kiln_logwriter w;
	assert_int_equal(kiln_logwriter_open(&w, d, &o, NULL), 0);
	struct kiln_logcursor c;
	assert_int_equal(kiln_logcursor_open(&c, d, -1, NULL), 0);
	struct lines l = {0};
	int next = 1;
	for (int round = 0; round < 20; round++) {
		for (int k = 0; k < 37; k++, next++) {
			char line[32];
			int n = snprintf(line, sizeof(line), "%d\n", next);
			kiln_logwriter_write(&w, "stdout", line, (size_t)n, false);
		}
		kiln_logcursor_read(&c, gather, &l);
	}
	kiln_logwriter_close(&w);
	kiln_logcursor_read(&c, gather, &l);
	kiln_logcursor_close(&c);
	assert_true(fsize(d, "log.3") > 0);   /* it did rotate */
	int expect = 1;
	for (char *p = l.out.data; *p; p = strchr(p, '\n') + 1)
		assert_int_equal(atoi(p), expect++);
	assert_int_equal(expect, next);
	kiln_buf_free(&l.out);
	/* max-file=1: the file starts again, a follower goes on */
	o.max_file = 1;
	char *d1 = tmpdir();
	assert_int_equal(kiln_logwriter_open(&w, d1, &o, NULL), 0);
	assert_int_equal(kiln_logcursor_open(&c, d1, -1, NULL), 0);
	memset(&l, 0, sizeof(l));
	next = 1;
	for (int round = 0; round < 10; round++) {
		for (int k = 0; k < 30; k++, next++) {
			char line[32];
			int n = snprintf(line, sizeof(line), "%d\n", next);
			kiln_logwriter_write(&w, "stdout", line, (size_t)n, false);
		}
		assert_true(fsize(d1, "log") <= 2048);
		kiln_logcursor_read(&c, gather, &l);
	}
	kiln_logwriter_close(&w);
	kiln_logcursor_close(&c);
	expect = 1;
	for (char *p = l.out.data; *p; p = strchr(p, '\n') + 1)
		assert_int_equal(atoi(p), expect++);
	assert_int_equal(expect, next);
	kiln_buf_free(&l.out);
	kiln_rm_rf(d, NULL);
	kiln_rm_rf(d1, NULL);
	free(d);
	free(d1);
}

/* The relay: a pipe in, records out; a writer that never sends a newline
 * costs a piece of memory, not more. */
static void test_relay_pipe(void **state)
{
	(void)state;
	char *d = tmpdir();
	struct kiln_logopts o = {.max_size = 1 << 20, .max_file = 2};
	struct kiln_logwriter w;
	assert_int_equal(kiln_logwriter_open(&w, d, &o, NULL), 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		char zeros[4096] = {0};
		for (int i = 0; i < 1024; i++)   /* 4 MiB, no newline */
			if (write(p[1], zeros, sizeof(zeros)) < 0)
				_exit(1);
		if (write(p[1], "\nhello\n", 7) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	struct kiln_logrelay *r = kiln_xcalloc(1, sizeof(*r));
	r->fds[0] = p[0];
	r->fds[1] = -1;
	r->echo[0] = r->echo[1] = -1;
	r->w = &w;
	kiln_logrelay_pump(r);
	waitpid(pid, NULL, 0);
	kiln_logwriter_close(&w);
	assert_true(fsize(d, "log") <= 1 << 20 && fsize(d, "log.1") <= 1 << 20 && fsize(d, "log.2") == -1);
	struct kiln_logcursor c;
	assert_int_equal(kiln_logcursor_open(&c, d, 1, NULL), 0);
	struct lines l = {0};
	kiln_logcursor_read(&c, gather, &l);
	kiln_logcursor_close(&c);
	assert_string_equal(l.out.data, "hello\n");
	kiln_buf_free(&l.out);
	free(r);
	kiln_rm_rf(d, NULL);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_lines),
		cmocka_unit_test(test_split_long_line),
		cmocka_unit_test(test_split_no_newline_bounded),
		cmocka_unit_test(test_split_utf8),
		cmocka_unit_test(test_encode_decode),
		cmocka_unit_test(test_logopts),
		cmocka_unit_test(test_rotation_bounded_in_order),
		cmocka_unit_test(test_follow_across_rotation),
		cmocka_unit_test(test_relay_pipe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
