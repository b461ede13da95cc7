/* Unit tests: builder/run_opts — kiln run's -v, --tmpfs and -p values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/run_opts.h"

static void test_volumes(void **state)
{
	(void)state;
	static const struct {
		const char *spec, *host, *ctr;
		bool ro;
	} good[] = {
		{"/h:/c", "/h", "/c", false},
		{"/h:/c:ro", "/h", "/c", true},
		{"/h:/c:rw", "/h", "/c", false},
		{"/h:/c:ro,Z", "/h", "/c", true},
		{"/h:/c:z,rprivate,cached", "/h", "/c", false},
		{"/:/host", "/", "/host", false},
	};
	static const char *const bad[] = {
		"", "/h", "/h:", ":/c", "/tmp::/x", "/h:/c:", "/h:/c:ro:", "/h:/c:ro:x", "h:/c", "./h:/c", "/h:c",
		"/h:/", "/h://", "/h:/c:zz", "/h:/c:rw,zz", "/h:/c:ro,rw", "/h:/c:z,Z", "/h:/c:ro,", "/h:/c:,ro",
		"/h:/c:shared", "/h:/c:rslave", "/h:/c:nocopy", "/h:/c:RO", "/h:/c: ro", "vol:/c", "::",
		"/h:/c:private,rprivate",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		char *h = NULL, *c = NULL;
		bool ro = !good[i].ro;
		if (kiln_run_volume_parse(good[i].spec, &h, &c, &ro, &err) != 0)
			fail_msg("volume \"%s\" refused: %s", good[i].spec, err.msg);
		assert_string_equal(h, good[i].host);
		assert_string_equal(c, good[i].ctr);
		assert_int_equal(ro, good[i].ro);
		free(h);
		free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		char *h = NULL, *c = NULL;
		if (kiln_run_volume_parse(bad[i], &h, &c, NULL, &err) != -1 || h || c || !err.msg[0])
			fail_msg("volume \"%s\" accepted", bad[i]);
	}
	/* the option named in the message is still valid memory when it is
	 * formatted (it was read after being freed) */
	struct kiln_err err = {0};
	assert_int_equal(kiln_run_volume_parse("/tmp:/x:rw,zz", NULL, NULL, NULL, &err), -1);
	assert_string_equal(err.msg, "invalid mode \"zz\" (rw, ro, z, Z, private, rprivate)");
}

static void test_tmpfs(void **state)
{
	(void)state;
	static const struct {
		const char *spec, *target, *opts;
	} good[] = {
		{"/run", "/run", NULL},
		{"/run:", "/run", NULL},
		{"/run:rw,noexec,nosuid,size=65536k", "/run", "rw,noexec,nosuid,size=67108864"},
		{"/t:size=1.5g,mode=1777", "/t", "size=1610612736,mode=1777"},
		{"/t:size=50%", "/t", "size=50%"},
		{"/t:uid=1000,gid=0,nr_inodes=1k,exec", "/t", "uid=1000,gid=0,nr_inodes=1024,exec"},
	};
	static const char *const bad[] = {
		"", "run", "./run", "/", "//", ":size=1m", "/t:size=", "/t:size=nan", "/t:size=1q", "/t:size=-1",
		"/t:size=0%", "/t:size=101%", "/t:size", "/t:mode=999", "/t:mode=17777", "/t:mode=", "/t:uid=-1",
		"/t:uid=x", "/t:gid=4294967295", "/t:nr_inodes=inf", "/t:bogus", "/t:bogus=1", "/t:rw,", "/t:,rw",
		"/t:size=1m,,ro", "/t:context=x",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct kiln_err err = {0};
		char *t = NULL, *o = NULL;
		if (kiln_run_tmpfs_parse(good[i].spec, &t, &o, &err) != 0)
			fail_msg("tmpfs \"%s\" refused: %s", good[i].spec, err.msg);
		assert_string_equal(t, good[i].target);
		if (good[i].opts)
			assert_string_equal(o, good[i].opts);
		else
			assert_null(o);
		free(t);
		free(o);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		char *t = NULL, *o = NULL;
		if (kiln_run_tmpfs_parse(bad[i], &t, &o, &err) != -1 || t || o || !err.msg[0])
			fail_msg("tmpfs \"%s\" accepted", bad[i]);
	}
}

static void test_ports(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "0", "65536", "80:0", "0:80", "70000:80", "a:b", "1:2:3:4", "80/sctp", "80/", "/udp", ":80", "80:",
		"::80", "1.2.3.4::80", "1.2.3:80:80", "localhost:80:80", "80-81:80-81", " 80", "80 ", "+80:80", "8e1",
		"99999999999999999999:80", "-1:80", "80:80/tcp/udp",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kiln_err err = {0};
		struct kiln_port p;
		if (kiln_run_parse_port(bad[i], &p, &err) != -1 || p.host_ip || !err.msg[0])
			fail_msg("port \"%s\" accepted", bad[i]);
	}
	struct kiln_err err = {0};
	struct kiln_port p;
	assert_int_equal(kiln_run_parse_port("127.0.0.1:65535:1/udp", &p, &err), 0);
	assert_int_equal(p.host_port, 65535);
	assert_int_equal(p.container_port, 1);
	assert_true(p.udp);
	assert_string_equal(p.host_ip, "127.0.0.1");
	free((char *)p.host_ip);
	assert_int_equal(kiln_run_parse_port("8080:80/tcp", &p, &err), 0);
	assert_int_equal(p.host_port, 8080);
	assert_false(p.udp);
	assert_null(p.host_ip);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_volumes),
		cmocka_unit_test(test_tmpfs),
		cmocka_unit_test(test_ports),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
