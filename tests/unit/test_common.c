/* Unit tests: common/err and common/util. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/util.h"

static void test_err_set_and_wrap(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	assert_int_equal(kiln_err_set(&err, ENOENT, "open %s", "x"), -1);
	assert_string_equal(err.msg, "open x: No such file or directory");
	assert_int_equal(err.errnum, ENOENT);
	kiln_err_wrap(&err, "step %d", 3);
	assert_string_equal(err.msg, "step 3: open x: No such file or directory");
	kiln_err_clear(&err);
	assert_string_equal(err.msg, "");
	assert_int_equal(kiln_err_set(NULL, 0, "ignored"), -1);
}

static void test_buf_and_strv(void **state)
{
	(void)state;
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, "ab");
	kiln_buf_putc(&b, 'c');
	kiln_buf_printf(&b, "%d-%s", 42, "x");
	assert_string_equal(b.data, "abc42-x");
	assert_int_equal(b.len, 7);
	char *s = kiln_buf_steal(&b);
	assert_null(b.data);
	free(s);

	struct kiln_strv v = {0};
	for (int i = 0; i < 20; i++)
		kiln_strv_push_owned(&v, kiln_xasprintf("%d", i));
	assert_int_equal(v.n, 20);
	assert_string_equal(v.v[19], "19");
	assert_null(v.v[20]);
	char **d = kiln_strv_dup(v.v);
	assert_string_equal(d[7], "7");
	kiln_strv_free_raw(d);
	kiln_strv_free(&v);
}

static void test_atomic_write_and_rm(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char tmpl[] = "/tmp/kiln-unit-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	char *sub = kiln_xasprintf("%s/a/b/c", tmpl);
	assert_int_equal(kiln_mkdir_p(sub, 0755, &err), 0);
	char *file = kiln_xasprintf("%s/f", sub);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, file, "hello", 5, 0600, &err), 0);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(kiln_read_file(file, 0, &data, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_string_equal(data, "hello");
	free(data);
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* A size limit is enforced. */
	assert_int_equal(kiln_read_file(file, 3, &data, &len, &err), -1);
	/* rm -rf does not follow a symlink out of the tree. */
	char *outside = kiln_xasprintf("%s-outside", tmpl);
	assert_int_equal(mkdir(outside, 0755), 0);
	char *keep = kiln_xasprintf("%s/keep", outside);
	assert_int_equal(kiln_write_file_atomic(AT_FDCWD, keep, "k", 1, 0644, &err), 0);
	char *link = kiln_xasprintf("%s/a/link", tmpl);
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(kiln_rm_rf(tmpl, &err), 0);
	assert_int_equal(access(tmpl, F_OK), -1);
	assert_int_equal(access(keep, F_OK), 0);
	assert_int_equal(kiln_rm_rf(outside, &err), 0);
	free(sub); free(file); free(outside); free(keep); free(link);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_err_set_and_wrap),
		cmocka_unit_test(test_buf_and_strv),
		cmocka_unit_test(test_atomic_write_and_rm),
	};
	return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
