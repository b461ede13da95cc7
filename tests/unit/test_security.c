/* security.md item 12 (CVE-2024-23653): the privilege choke point is really
 * on the path of every sandbox start.  test_runtime.c checks the decision
 * function itself; here the real entry points, kiln_sandbox_run() and
 * kiln_sandbox_exec(), are called with requests the origin is not entitled to
 * and must refuse them before anything starts (the program named does not
 * exist, so a bypass would fail differently: "not found", exit 127).
 * Also: healthchecks are never privileged, whatever they are granted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/sandbox.h"

static const enum kiln_sandbox_origin origins[] = {KILN_ORIGIN_RUN, KILN_ORIGIN_BUILD,
	KILN_ORIGIN_EXEC, KILN_ORIGIN_HEALTHCHECK};
static const char *const origin_names[] = {"run", "build", "exec", "healthcheck"};

static char *argv_missing[] = {"/kiln-test-no-such-program", NULL};
static char *cap_sysadmin[] = {"SYS_ADMIN", NULL};

enum request { REQ_PRIVILEGED, REQ_NET_HOST, REQ_CAP_ADD, REQ_UNCONFINED, REQ_N };
static const char *const request_names[] = {"privileged", "host network", "cap-add", "seccomp=unconfined"};
/* a word the refusal names */
static const char *const request_words[] = {"privileged", "network", "capabilit", "seccomp"};

static void fill(struct kiln_sandbox_spec *s, enum kiln_sandbox_origin o, enum request r,
		 const char *rootfs)
{
	kiln_sandbox_spec_init(s);
	s->origin = o;
	s->rootfs = rootfs;
	s->argv = argv_missing;
	s->net = KILN_NET_NONE;
	switch (r) {
	case REQ_PRIVILEGED: s->privileged = true; break;
	case REQ_NET_HOST: s->net = KILN_NET_HOST; break;
	case REQ_CAP_ADD: s->cap_add = cap_sysadmin; break;
	case REQ_UNCONFINED: s->seccomp = KILN_SECCOMP_UNCONFINED; break;
	default: break;
	}
}

static bool contains_ci(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

/* kiln_sandbox_run refuses every unentitled request for every origin, and
 * always refuses them for a healthcheck. */
static void test_run_refuses_unentitled(void **state)
{
	(void)state;
	char dir[] = "/tmp/kiln-sec-unit-XXXXXX";
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(origins) / sizeof(origins[0]); i++) {
		if (origins[i] == KILN_ORIGIN_EXEC)
			continue;   /* exec has its own entry point, below */
		for (int r = 0; r < REQ_N; r++) {
			struct kiln_sandbox_spec s;
			struct kiln_exit ex = {0};
			struct kiln_err err = {0};
			fill(&s, origins[i], r, dir);
			int rc = kiln_sandbox_run(&s, &ex, &err);
			if (rc == 0 || !contains_ci(err.msg, request_words[r]))
				fail_msg("kiln_sandbox_run origin %s, %s without entitlement: rc %d, \"%s\"",
					 origin_names[i], request_names[r], rc, err.msg);
			/* a healthcheck stays refused even when "entitled" */
			if (origins[i] == KILN_ORIGIN_HEALTHCHECK) {
				s.entitlements = KILN_ENT_PRIVILEGED | KILN_ENT_NET_HOST | KILN_ENT_CAP_ADD |
						 KILN_ENT_UNCONFINED;
				memset(&err, 0, sizeof(err));
				rc = kiln_sandbox_run(&s, &ex, &err);
				if (rc == 0 || !contains_ci(err.msg, request_words[r]))
					fail_msg("healthcheck with %s and every entitlement: rc %d, \"%s\"",
						 request_names[r], rc, err.msg);
			}
		}
	}
	assert_int_equal(rmdir(dir), 0);
}

/* kiln_sandbox_exec (kiln exec, joining a container) goes through the same
 * decision: privileged, added caps and an unconfined seccomp are refused
 * without the entitlement.  The pid is our own: a bypass would setns into our
 * own namespaces and fail to find the program. */
static void test_exec_refuses_unentitled(void **state)
{
	(void)state;
	static const enum request reqs[] = {REQ_PRIVILEGED, REQ_CAP_ADD, REQ_UNCONFINED};
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct kiln_sandbox_spec s;
		struct kiln_exit ex = {0};
		struct kiln_err err = {0};
		fill(&s, KILN_ORIGIN_EXEC, reqs[i], NULL);
		int rc = kiln_sandbox_exec(getpid(), &s, &ex, &err);
		if (rc == 0 || !contains_ci(err.msg, request_words[reqs[i]]))
			fail_msg("kiln_sandbox_exec with %s without entitlement: rc %d, \"%s\"",
				 request_names[reqs[i]], rc, err.msg);
	}
	/* a healthcheck joining a container is never privileged */
	struct kiln_sandbox_spec s;
	struct kiln_exit ex = {0};
	struct kiln_err err = {0};
	fill(&s, KILN_ORIGIN_HEALTHCHECK, REQ_PRIVILEGED, NULL);
	s.entitlements = KILN_ENT_PRIVILEGED;
	assert_int_equal(kiln_sandbox_exec(getpid(), &s, &ex, &err), -1);
	assert_true(contains_ci(err.msg, "privileged"));
}

/* The decision for a plain request never grants more than Docker's default
 * set, and a healthcheck never gets added capabilities even with ALL. */
static void test_decide_no_escalation(void **state)
{
	(void)state;
	char *all[] = {"ALL", NULL};
	for (size_t i = 0; i < sizeof(origins) / sizeof(origins[0]); i++) {
		struct kiln_sandbox_spec s;
		struct kiln_privileges p;
		struct kiln_err err = {0};
		kiln_sandbox_spec_init(&s);
		s.origin = origins[i];
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
		assert_true((p.caps & ~KILN_DEFAULT_CAPS) == 0);
		assert_false(p.host_devices || p.sys_rw || p.host_net);
		s.cap_add = all;
		s.entitlements = origins[i] == KILN_ORIGIN_HEALTHCHECK ? KILN_ENT_CAP_ADD : 0;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide_no_escalation),
		cmocka_unit_test(test_run_refuses_unentitled),
		cmocka_unit_test(test_exec_refuses_unentitled),
	};
	if (geteuid() != 0)
		fprintf(stderr, "test_security: not root; the sandbox entry points refuse early anyway\n");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
