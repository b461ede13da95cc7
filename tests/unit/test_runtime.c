/* Unit tests of the runtime's pure parts: users from passwd/group texts, the
 * privilege decision (security.md item 12), cgroup path computation, `kiln
 * run` option parsing, sizes and signal names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "common/util.h"
#include "runtime/container.h"
#include "runtime/sandbox.h"

/* from builder/cmd_run.c (no header: the CLI's own) */
struct kiln_run_opts {
	bool detach, interactive, tty, rm, privileged, read_only, init, no_new_privs;
	bool entrypoint_set;
	bool help;
	const char *name, *workdir, *user, *entrypoint, *network, *hostname, *rootfs;
	const char *seccomp_file;
	enum kiln_seccomp_mode seccomp;
	struct kiln_strv env, env_files, ports, volumes, tmpfs, cap_add, cap_drop;
	int64_t memory, memory_swap, cpu_shares, pids;
	int64_t nano_cpus;
	uint32_t userns_uid, userns_size;
	const char *image;
	char **cmd;
	int n_cmd;
	struct kiln_strv log_opts;
	struct kiln_strv devices;
};
size_t kiln_run_opts_size(void);
int kiln_run_parse(int argc, char **argv, struct kiln_run_opts *o, struct kiln_err *err);
void kiln_run_opts_free(struct kiln_run_opts *o);
int kiln_run_parse_port(const char *s, struct kiln_port *p, struct kiln_err *err);

static const char *PASSWD =
	"root:x:0:0:root:/root:/bin/sh\n"
	"# a comment line\n"
	"broken line without fields\n"
	"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
	"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
	"bob:x:1001:100::/home/bob:/bin/sh\n"
	"nohome:x:1002:1002::::\n";
static const char *GROUP =
	"root:x:0:\n"
	"users:x:100:\n"
	"alice:x:1000:\n"
	"staff:x:50:alice,bob\n"
	"audio:x:63:bob\n"
	"video:x:44:carol,alice\n"
	"bad:x:notanumber:alice\n";

static void test_user_root_default(void **state)
{
	(void)state;
	struct kiln_user u;
	struct kiln_err err = {0};
	assert_int_equal(kiln_user_resolve(NULL, PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.uid, 0);
	assert_int_equal(u.gid, 0);
	assert_string_equal(u.home, "/root");
	assert_int_equal(u.n_groups, 1);
	assert_int_equal(u.groups[0], 0);
	assert_int_equal(kiln_user_resolve("", NULL, NULL, &u, &err), 0);
	assert_int_equal(u.uid, 0);
	assert_string_equal(u.home, "/");
}

static bool has_group(const struct kiln_user *u, gid_t g)
{
	for (size_t i = 0; i < u->n_groups; i++)
		if (u->groups[i] == g)
			return true;
	return false;
}

static void test_user_by_name(void **state)
{
	(void)state;
	struct kiln_user u;
	struct kiln_err err = {0};
	assert_int_equal(kiln_user_resolve("alice", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.uid, 1000);
	assert_int_equal(u.gid, 1000);
	assert_string_equal(u.home, "/home/alice");
	/* primary + staff + video; not audio; the malformed group is skipped */
	assert_int_equal(u.n_groups, 3);
	assert_true(has_group(&u, 1000));
	assert_true(has_group(&u, 50));
	assert_true(has_group(&u, 44));
	assert_false(has_group(&u, 63));

	assert_int_equal(kiln_user_resolve("bob", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.uid, 1001);
	assert_int_equal(u.gid, 100);
	assert_true(has_group(&u, 50));
	assert_true(has_group(&u, 63));
	assert_false(has_group(&u, 44));

	assert_int_equal(kiln_user_resolve("nohome", PASSWD, GROUP, &u, &err), 0);
	assert_string_equal(u.home, "/");
}

static void test_user_numeric(void **state)
{
	(void)state;
	struct kiln_user u;
	struct kiln_err err = {0};
	/* a uid with an entry takes its gid, home and groups */
	assert_int_equal(kiln_user_resolve("1000", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.gid, 1000);
	assert_string_equal(u.home, "/home/alice");
	assert_true(has_group(&u, 50));
	/* a uid without an entry: gid 0, home / */
	assert_int_equal(kiln_user_resolve("4242", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.uid, 4242);
	assert_int_equal(u.gid, 0);
	assert_string_equal(u.home, "/");
	assert_int_equal(u.n_groups, 1);
	/* uid:gid, numbers need no entry */
	assert_int_equal(kiln_user_resolve("4242:777", NULL, NULL, &u, &err), 0);
	assert_int_equal(u.uid, 4242);
	assert_int_equal(u.gid, 777);
}

static void test_user_group(void **state)
{
	(void)state;
	struct kiln_user u;
	struct kiln_err err = {0};
	assert_int_equal(kiln_user_resolve("alice:audio", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.uid, 1000);
	assert_int_equal(u.gid, 63);
	/* explicit group: no supplementary groups (like runc) */
	assert_int_equal(u.n_groups, 1);
	assert_int_equal(u.groups[0], 63);
	assert_int_equal(kiln_user_resolve("bob:0", PASSWD, GROUP, &u, &err), 0);
	assert_int_equal(u.gid, 0);
}

static void test_user_errors(void **state)
{
	(void)state;
	struct kiln_user u;
	struct kiln_err err = {0};
	assert_int_equal(kiln_user_resolve("mallory", PASSWD, GROUP, &u, &err), -1);
	assert_non_null(strstr(err.msg, "unable to find user mallory"));
	assert_int_equal(kiln_user_resolve("alice:nogroup", PASSWD, GROUP, &u, &err), -1);
	assert_non_null(strstr(err.msg, "unable to find group nogroup"));
	assert_int_equal(kiln_user_resolve("alice:", PASSWD, GROUP, &u, &err), -1);
	assert_int_equal(kiln_user_resolve(":0", PASSWD, GROUP, &u, &err), -1);
	/* a name with no passwd file at all */
	assert_int_equal(kiln_user_resolve("alice", NULL, NULL, &u, &err), -1);
	/* out of range id is a name, and not found */
	assert_int_equal(kiln_user_resolve("99999999999", PASSWD, GROUP, &u, &err), -1);
	/* "root" in a comment does not count */
	assert_int_equal(kiln_user_resolve("# a comment line", PASSWD, GROUP, &u, &err), -1);
}

/* ---- the privilege decision ---- */

static void base_spec(struct kiln_sandbox_spec *s, enum kiln_sandbox_origin o)
{
	kiln_sandbox_spec_init(s);
	s->origin = o;
}

static void test_decide_defaults(void **state)
{
	(void)state;
	static const enum kiln_sandbox_origin origins[] = {KILN_ORIGIN_RUN, KILN_ORIGIN_BUILD,
		KILN_ORIGIN_EXEC, KILN_ORIGIN_HEALTHCHECK};
	for (size_t i = 0; i < 4; i++) {
		struct kiln_sandbox_spec s;
		struct kiln_privileges p;
		struct kiln_err err = {0};
		base_spec(&s, origins[i]);
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
		assert_true(p.caps == KILN_DEFAULT_CAPS);
		assert_true(p.seccomp);
		assert_true(p.masks);
		assert_false(p.no_new_privs);
		assert_false(p.host_net);
		assert_false(p.host_devices);
		assert_false(p.sys_rw);
	}
}

/* Every origin refuses privileged, host network, extra caps and a custom
 * seccomp unless the matching entitlement is given; healthchecks never. */
static void test_decide_entitlements(void **state)
{
	(void)state;
	static const enum kiln_sandbox_origin origins[] = {KILN_ORIGIN_RUN, KILN_ORIGIN_BUILD,
		KILN_ORIGIN_EXEC, KILN_ORIGIN_HEALTHCHECK};
	char *add[] = {"NET_ADMIN", NULL};
	for (size_t i = 0; i < 4; i++) {
		enum kiln_sandbox_origin o = origins[i];
		bool hc = o == KILN_ORIGIN_HEALTHCHECK;
		struct kiln_sandbox_spec s;
		struct kiln_privileges p;
		struct kiln_err err = {0};

		base_spec(&s, o);
		s.privileged = true;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
		assert_non_null(strstr(err.msg, "privileged"));
		s.entitlements = KILN_ENT_PRIVILEGED;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), hc ? -1 : 0);
		if (!hc) {
			assert_true((p.caps & KILN_DEFAULT_CAPS) == KILN_DEFAULT_CAPS);
			assert_true(p.caps & (1ULL << 21));   /* CAP_SYS_ADMIN */
			assert_false(p.seccomp);
			assert_false(p.masks);
		}
		/* the wrong entitlement does not help */
		s.entitlements = KILN_ENT_NET_HOST | KILN_ENT_CAP_ADD | KILN_ENT_UNCONFINED;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);

		base_spec(&s, o);
		s.net = KILN_NET_HOST;
		/* exec joins the container's own netns: host is not requested there */
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), o == KILN_ORIGIN_EXEC ? 0 : -1);
		s.entitlements = KILN_ENT_NET_HOST;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), hc ? -1 : 0);

		base_spec(&s, o);
		s.cap_add = add;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
		assert_non_null(strstr(err.msg, "capabilities"));
		s.entitlements = KILN_ENT_CAP_ADD;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), hc ? -1 : 0);
		if (!hc)
			assert_true(p.caps == (KILN_DEFAULT_CAPS | (1ULL << 12)));

		base_spec(&s, o);
		s.seccomp = KILN_SECCOMP_UNCONFINED;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
		s.entitlements = KILN_ENT_UNCONFINED;
		assert_int_equal(kiln_sandbox_decide(&s, &p, &err), hc ? -1 : 0);
		if (!hc)
			assert_false(p.seccomp);
	}
}

static void test_decide_caps(void **state)
{
	(void)state;
	struct kiln_sandbox_spec s;
	struct kiln_privileges p;
	struct kiln_err err = {0};
	char *all[] = {"ALL", NULL};
	char *chown_[] = {"chown", NULL};
	char *sysadm[] = {"CAP_SYS_ADMIN", NULL};
	char *bogus[] = {"NOT_A_CAP", NULL};

	base_spec(&s, KILN_ORIGIN_RUN);
	s.cap_drop = all;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
	assert_true(p.caps == 0);
	/* drop ALL, then add one (docker's order) */
	s.cap_add = sysadm;
	s.entitlements = KILN_ENT_CAP_ADD;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
	assert_true(p.caps == (1ULL << 21));
	/* drop one */
	base_spec(&s, KILN_ORIGIN_RUN);
	s.cap_drop = chown_;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
	assert_true(p.caps == (KILN_DEFAULT_CAPS & ~1ULL));
	/* add ALL then drop one */
	s.cap_add = all;
	s.entitlements = KILN_ENT_CAP_ADD;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
	assert_false(p.caps & 1ULL);
	assert_true(p.caps & (1ULL << 21));
	/* unknown names are errors, not ignored */
	base_spec(&s, KILN_ORIGIN_RUN);
	s.cap_drop = bogus;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
	assert_non_null(strstr(err.msg, "NOT_A_CAP"));
	/* no_new_privs only when asked */
	base_spec(&s, KILN_ORIGIN_BUILD);
	s.no_new_privs = true;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), 0);
	assert_true(p.no_new_privs);
	/* a seccomp file without a path */
	base_spec(&s, KILN_ORIGIN_RUN);
	s.seccomp = KILN_SECCOMP_FILE;
	s.entitlements = KILN_ENT_UNCONFINED;
	assert_int_equal(kiln_sandbox_decide(&s, &p, &err), -1);
}

static void test_cap_names(void **state)
{
	(void)state;
	assert_int_equal(kiln_cap_from_name("CHOWN"), 0);
	assert_int_equal(kiln_cap_from_name("cap_chown"), 0);
	assert_int_equal(kiln_cap_from_name("CAP_NET_ADMIN"), 12);
	assert_int_equal(kiln_cap_from_name("sys_admin"), 21);
	assert_int_equal(kiln_cap_from_name("AUDIT_WRITE"), 29);
	assert_int_equal(kiln_cap_from_name(""), -1);
	assert_int_equal(kiln_cap_from_name("CAP_"), -1);
	assert_int_equal(kiln_cap_from_name("bogus"), -1);
	assert_int_equal(kiln_cap_from_name(NULL), -1);
	/* Docker's 14 defaults add up to the documented mask */
	static const char *const docker[] = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
		"SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"};
	uint64_t m = 0;
	for (size_t i = 0; i < 14; i++)
		m |= 1ULL << kiln_cap_from_name(docker[i]);
	assert_true(m == KILN_DEFAULT_CAPS);
}

/* ---- cgroup paths ---- */

static const char *CG_V1 =
	"12:pids:/\n"
	"11:cpu,cpuacct:/user.slice\n"
	"4:memory:/process_api/abc\n"
	"1:name=systemd:/init.scope\n"
	"0::/\n";

static void test_cgroup_paths(void **state)
{
	(void)state;
	struct kiln_err err = {0};
	char *p = kiln_cgroup_child_path(CG_V1, "memory", "c0ffee", &err);
	assert_non_null(p);
	assert_string_equal(p, "/process_api/abc/kiln-c0ffee");
	free(p);
	p = kiln_cgroup_child_path(CG_V1, "pids", "c0ffee", &err);
	assert_string_equal(p, "/kiln-c0ffee");
	free(p);
	p = kiln_cgroup_child_path(CG_V1, "cpu", "x", &err);
	assert_string_equal(p, "/user.slice/kiln-x");
	free(p);
	p = kiln_cgroup_child_path(CG_V1, "cpuacct", "x", &err);
	assert_string_equal(p, "/user.slice/kiln-x");
	free(p);
	/* "cpu" must not match "cpuset" */
	assert_null(kiln_cgroup_child_path("3:cpuset:/a\n", "cpu", "x", &err));
	/* v2: the "0::" line */
	p = kiln_cgroup_child_path("0::/user.slice/session-1.scope/\n", "", "id1", &err);
	assert_string_equal(p, "/user.slice/session-1.scope/kiln-id1");
	free(p);
	p = kiln_cgroup_child_path(CG_V1, "", "id1", &err);
	assert_string_equal(p, "/kiln-id1");
	free(p);
	/* missing controller, hostile ids and paths */
	assert_null(kiln_cgroup_child_path(CG_V1, "blkio", "x", &err));
	assert_null(kiln_cgroup_child_path(CG_V1, "memory", "../../x", &err));
	assert_null(kiln_cgroup_child_path(CG_V1, "memory", "..", &err));
	assert_null(kiln_cgroup_child_path(CG_V1, "memory", "", &err));
	assert_null(kiln_cgroup_child_path("4:memory:/a/../..\n", "memory", "x", &err));
	assert_null(kiln_cgroup_child_path("4:memory:relative\n", "memory", "x", &err));
}

static void test_format_size(void **state)
{
	(void)state;
	char b[32];
	kiln_format_size(64 * 1024 * 1024, b, sizeof(b));
	assert_string_equal(b, "64MiB");
	kiln_format_size(1024 * 1024 * 1024, b, sizeof(b));
	assert_string_equal(b, "1GiB");
	kiln_format_size(512, b, sizeof(b));
	assert_string_equal(b, "512B");
	kiln_format_size(1536 * 1024, b, sizeof(b));
	assert_string_equal(b, "1536KiB");
}

/* ---- kiln run options ---- */

static int parse(struct kiln_run_opts *o, struct kiln_err *err, ...)
{
	char *argv[64];
	int argc = 0;
	va_list ap;
	va_start(ap, err);
	argv[argc++] = "run";
	for (char *a; (a = va_arg(ap, char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	static char *keep[64];
	memcpy(keep, argv, sizeof(argv));
	return kiln_run_parse(argc, keep, o, err);
}

static void test_run_parse(void **state)
{
	(void)state;
	struct kiln_run_opts o;
	struct kiln_err err = {0};
	/* this copy of the struct must match builder/cmd_run.c */
	assert_int_equal(kiln_run_opts_size(), sizeof(struct kiln_run_opts));
	assert_int_equal(parse(&o, &err, "-dit", "--rm", "--name=web", "-e", "A=1", "--env", "B=2", "-p", "8080:80",
			       "-v", "/h:/c:ro", "--tmpfs", "/run", "-w", "/srv", "-u", "1000:1000", "-m", "64m",
			       "--memory-swap=-1", "--cpus", "1.5", "--cpu-shares", "512", "--pids-limit", "100",
			       "--network", "bridge", "-h", "box", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL",
			       "--security-opt", "no-new-privileges", "--privileged", "--read-only", "--init",
			       "busybox", "sh", "-c", "echo -h", NULL), 0);
	assert_true(o.detach && o.interactive && o.tty && o.rm && o.privileged && o.read_only && o.init);
	assert_true(o.no_new_privs);
	assert_string_equal(o.name, "web");
	assert_int_equal(o.env.n, 2);
	assert_string_equal(o.env.v[1], "B=2");
	assert_string_equal(o.ports.v[0], "8080:80");
	assert_string_equal(o.volumes.v[0], "/h:/c:ro");
	assert_string_equal(o.tmpfs.v[0], "/run");
	assert_string_equal(o.workdir, "/srv");
	assert_string_equal(o.user, "1000:1000");
	assert_true(o.memory == 64 * 1024 * 1024);
	assert_true(o.memory_swap == -1);
	assert_true(o.nano_cpus == 1500000000LL);
	assert_true(o.cpu_shares == 512);
	assert_true(o.pids == 100);
	assert_string_equal(o.network, "bridge");
	assert_string_equal(o.hostname, "box");
	assert_string_equal(o.cap_add.v[0], "NET_ADMIN");
	assert_string_equal(o.cap_drop.v[0], "ALL");
	assert_string_equal(o.image, "busybox");
	/* flags after the image belong to the command */
	assert_int_equal(o.n_cmd, 3);
	assert_string_equal(o.cmd[2], "echo -h");
	kiln_run_opts_free(&o);

	assert_int_equal(parse(&o, &err, "--rootfs", "/r", "--", "-x", NULL), 0);
	assert_string_equal(o.rootfs, "/r");
	assert_null(o.image);
	assert_int_equal(o.n_cmd, 1);
	assert_string_equal(o.cmd[0], "-x");
	kiln_run_opts_free(&o);

	assert_int_equal(parse(&o, &err, "--entrypoint", "", "--security-opt", "seccomp=/p.json", "img", NULL), 0);
	assert_true(o.entrypoint_set);
	assert_string_equal(o.entrypoint, "");
	assert_int_equal(o.seccomp, KILN_SECCOMP_FILE);
	assert_string_equal(o.seccomp_file, "/p.json");
	assert_int_equal(o.n_cmd, 0);
	kiln_run_opts_free(&o);

	assert_int_equal(parse(&o, &err, "--uidmap", "0:100000:65536", "img", NULL), 0);
	assert_int_equal(o.userns_uid, 100000);
	assert_int_equal(o.userns_size, 65536);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--uidmap", "1:100000:65536", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--uidmap", "0:4294967295:2", "img", NULL), -1);
	kiln_run_opts_free(&o);

	assert_int_equal(parse(&o, &err, "--help", "img", NULL), 0);
	assert_true(o.help);
	kiln_run_opts_free(&o);
}

static void test_run_parse_errors(void **state)
{
	(void)state;
	struct kiln_run_opts o;
	struct kiln_err err = {0};
	assert_int_equal(parse(&o, &err, NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--bogus", "img", NULL), -1);
	assert_non_null(strstr(err.msg, "--bogus"));
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "-dx", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--name", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "-m", "lots", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--cpus", "-1", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--network", "macvlan", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--security-opt", "evil=1", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--rm=maybe", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--rootfs", "/r", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--sysctl", "kernel.core_pattern=x", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--name", "../evil", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--name", "-x", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--name", "ok_name.1-2", "img", NULL), 0);
	kiln_run_opts_free(&o);
	/* limits and paths fail closed: each a usage error naming flag and value */
	static const char *const bad[][2] = {
		{"-m", "nan"}, {"-m", "inf"}, {"-m", "99999999999999999999"}, {"-m", "1"}, {"-m", "5.9m"},
		{"--memory", " 1g"}, {"--memory-swap", "1x"}, {"--cpus", "nan"}, {"--cpus", "0"}, {"--cpus", "0.001"},
		{"--cpus", "1e9"}, {"--cpu-shares", "-1"}, {"-c", "1.5"}, {"--pids-limit", "-2"},
		{"--pids-limit", "ten"}, {"-w", "relative"}, {"--workdir", ""}, {"-v", "/tmp::/x"},
		{"-v", "/tmp:/x:rw,zz"}, {"--volume", "/tmp:x"}, {"--tmpfs", "run"}, {"--tmpfs", "/run:size=1q"},
		{"-p", "0:80"}, {"-p", "80:65536"}, {"--uidmap", "0:-1:5"}, {"--uidmap", "0: 1:5"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kiln_err_clear(&err);
		if (parse(&o, &err, bad[i][0], bad[i][1], "img", NULL) != -1 || !strstr(err.msg, bad[i][1]) ||
		    !strstr(err.msg, bad[i][0]))
			fail_msg("run %s \"%s\": accepted or unclear (%s)", bad[i][0], bad[i][1], err.msg);
		kiln_run_opts_free(&o);
	}
	assert_int_equal(parse(&o, &err, "--memory-swap", "1g", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "-m", "1g", "--memory-swap", "512m", "img", NULL), -1);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "-m", "1g", "--memory-swap", "1g", "--pids-limit", "-1", "-c", "1", "img",
			       NULL), 0);
	assert_true(o.pids == 0 && o.cpu_shares == 2 && o.memory_swap == 1LL << 30);
	kiln_run_opts_free(&o);
	assert_int_equal(parse(&o, &err, "--network", "none", "-p", "80:80", "img", NULL), -1);
	kiln_run_opts_free(&o);
}

static void test_ports(void **state)
{
	(void)state;
	struct kiln_port p;
	struct kiln_err err = {0};
	assert_int_equal(kiln_run_parse_port("8080:80", &p, &err), 0);
	assert_int_equal(p.host_port, 8080);
	assert_int_equal(p.container_port, 80);
	assert_false(p.udp);
	assert_null(p.host_ip);
	assert_int_equal(kiln_run_parse_port("127.0.0.1:53:5353/udp", &p, &err), 0);
	assert_true(p.udp);
	assert_string_equal(p.host_ip, "127.0.0.1");
	assert_int_equal(p.host_port, 53);
	assert_int_equal(p.container_port, 5353);
	free((char *)p.host_ip);
	assert_int_equal(kiln_run_parse_port("9000", &p, &err), 0);
	assert_int_equal(p.host_port, 9000);
	assert_int_equal(p.container_port, 9000);
	assert_int_equal(kiln_run_parse_port("80:0", &p, &err), -1);
	assert_int_equal(kiln_run_parse_port("70000:80", &p, &err), -1);
	assert_int_equal(kiln_run_parse_port("a:b", &p, &err), -1);
	assert_int_equal(kiln_run_parse_port("1:2:3:4", &p, &err), -1);
	assert_int_equal(kiln_run_parse_port("80/sctp", &p, &err), -1);
}

static void test_signals(void **state)
{
	(void)state;
	assert_int_equal(kiln_signal_from_name("SIGTERM"), SIGTERM);
	assert_int_equal(kiln_signal_from_name("term"), SIGTERM);
	assert_int_equal(kiln_signal_from_name("KILL"), SIGKILL);
	assert_int_equal(kiln_signal_from_name("9"), 9);
	assert_int_equal(kiln_signal_from_name("SIGUSR1"), SIGUSR1);
	assert_int_equal(kiln_signal_from_name("0"), -1);
	assert_int_equal(kiln_signal_from_name("99"), -1);
	assert_int_equal(kiln_signal_from_name("SIGNOPE"), -1);
	assert_int_equal(kiln_signal_from_name(""), -1);
}


/* ---- container state ---- */

static void test_container_state(void **state)
{
	(void)state;
	char tmpl[] = "/tmp/kiln-test-ctr-XXXXXX";
	char *root = mkdtemp(tmpl);
	assert_non_null(root);
	struct kiln_err err = {0};
	struct kiln_container_state a = {0}, b = {0}, got;
	kiln_container_new_id(a.id);
	kiln_container_new_id(b.id);
	assert_int_equal(strlen(a.id), 64);
	assert_string_not_equal(a.id, b.id);
	snprintf(a.name, sizeof(a.name), "web");
	snprintf(a.status, sizeof(a.status), "exited");
	snprintf(a.created, sizeof(a.created), "2026-01-01T00:00:00.000000000Z");
	a.exit_code = 3;
	a.oom_killed = true;
	snprintf(a.command, sizeof(a.command), "sh -c \"echo ü\"");
	snprintf(b.name, sizeof(b.name), "db");
	snprintf(b.status, sizeof(b.status), "running");
	snprintf(b.created, sizeof(b.created), "2026-01-02T00:00:00.000000000Z");
	b.pid = 999999999;      /* not a live process */
	assert_int_equal(kiln_container_save(root, &a, &err), 0);
	assert_int_equal(kiln_container_save(root, &b, &err), 0);

	assert_int_equal(kiln_container_load(root, a.id, &got, &err), 0);
	assert_string_equal(got.name, "web");
	assert_string_equal(got.command, "sh -c \"echo ü\"");
	assert_int_equal(got.exit_code, 3);
	assert_true(got.oom_killed);
	/* by name, by full id, by unique prefix */
	assert_int_equal(kiln_container_find(root, "db", &got, &err), 0);
	assert_string_equal(got.id, b.id);
	assert_int_equal(kiln_container_find(root, a.id, &got, &err), 0);
	assert_string_equal(got.name, "web");
	char prefix[13];
	snprintf(prefix, sizeof(prefix), "%.12s", b.id);
	assert_int_equal(kiln_container_find(root, prefix, &got, &err), 0);
	assert_string_equal(got.name, "db");
	assert_int_equal(kiln_container_find(root, "nope", &got, &err), -1);
	assert_non_null(strstr(err.msg, "No such container"));
	/* "running" with a dead pid is not running */
	assert_false(kiln_container_running(&b));
	/* newest first */
	struct kiln_container_state *v;
	size_t n;
	assert_int_equal(kiln_container_list(root, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "db");
	assert_string_equal(v[1].name, "web");
	free(v);
	char name[64];
	kiln_container_random_name(name, sizeof(name));
	assert_non_null(strchr(name, '_'));
	char *cmd = kiln_xasprintf("rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

/* ---- the sandbox itself, as the builder calls it (needs root) ---- */

static char *make_rootfs(void)
{
	char tmpl[] = "/tmp/kiln-test-rootfs-XXXXXX";
	char *d = mkdtemp(tmpl);
	if (!d)
		return NULL;
	char *root = kiln_xstrdup(d);
	char *cmd = kiln_xasprintf("mkdir -p %s/bin %s/proc %s/sys %s/dev %s/etc && cp /bin/busybox %s/bin/ && "
				   "ln -s busybox %s/bin/sh && ln -s busybox %s/bin/touch", root, root, root, root, root,
				   root, root, root);
	int r = system(cmd);
	free(cmd);
	if (r != 0) {
		free(root);
		return NULL;
	}
	return root;
}

/* A RUN step's mount points are created as stubs and removed afterwards,
 * unless the step put something in them (security.md item 11). */
static void test_build_stubs_removed(void **state)
{
	(void)state;
	if (geteuid() != 0 || access("/bin/busybox", X_OK) != 0)
		skip();
	char *root = make_rootfs();
	assert_non_null(root);
	char *vol = kiln_xasprintf("%s.vol", root);
	assert_int_equal(mkdir(vol, 0755), 0);
	struct kiln_mount m[2] = {
		{.type = KILN_MOUNT_BIND, .source = vol, .source_fd = -1, .target = "/stub/deep/mnt"},
		{.type = KILN_MOUNT_TMPFS, .source_fd = -1, .target = "/keep/tmp"},
	};
	char *argv[] = {"sh", "-c", "touch /keep/sibling", NULL};
	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	spec.origin = KILN_ORIGIN_BUILD;
	spec.rootfs = root;
	spec.argv = argv;
	spec.mounts = m;
	spec.n_mounts = 2;
	struct kiln_exit ex;
	struct kiln_err err = {0};
	int r = kiln_sandbox_run(&spec, &ex, &err);
	if (r < 0)
		fprintf(stderr, "sandbox: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(ex.code, 0);
	char *p = kiln_xasprintf("%s/stub", root);
	assert_int_not_equal(access(p, F_OK), 0);      /* the whole stub chain is gone */
	free(p);
	p = kiln_xasprintf("%s/keep/sibling", root);
	assert_int_equal(access(p, F_OK), 0);          /* the step's own file stays */
	free(p);
	p = kiln_xasprintf("%s/keep/tmp", root);
	assert_int_not_equal(access(p, F_OK), 0);      /* the empty stub inside it does not */
	free(p);
	p = kiln_xasprintf("rm -rf %s %s", root, vol);
	assert_int_equal(system(p), 0);
	free(p);
	free(vol);
	free(root);
}

/* resolv.conf in a network namespace of its own: the host's loopback and
 * IPv6 resolvers are left out, nothing public is added in their place; with
 * the host's network the text stays as it is */
static void test_resolv_conf(void **state)
{
	(void)state;
	const char *host = "# generated\nsearch example.test\nnameserver 127.0.0.53\n"
			   "nameserver\t127.1.2.3\nnameserver 10.1.2.3\nnameserver ::1\n"
			   "nameserver fe80::1%eth0\nnameserver 2001:db8::53\nnameserver ::ffff:127.0.0.1\n"
			   "nameserver 192.0.2.53 # comment\noptions ndots:2\nnameserver127.0.0.9\n";
	char *out = NULL;
	assert_int_equal(kiln_net_resolv_conf(host, false, &out), 2);
	assert_string_equal(out, "# generated\nsearch example.test\nnameserver 10.1.2.3\n"
				 "nameserver 192.0.2.53 # comment\noptions ndots:2\nnameserver127.0.0.9\n");
	free(out);
	assert_int_equal(kiln_net_resolv_conf(host, true, &out), 8);
	assert_string_equal(out, host);
	free(out);
	/* only loopback ones: none left, and none invented */
	assert_int_equal(kiln_net_resolv_conf("nameserver 127.0.0.53\noptions edns0 trust-ad\n", false, &out), 0);
	assert_string_equal(out, "options edns0 trust-ad\n");
	assert_null(strstr(out, "8.8."));
	free(out);
	/* no file at all */
	assert_int_equal(kiln_net_resolv_conf(NULL, false, &out), 0);
	assert_string_equal(out, "");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_root_default),
		cmocka_unit_test(test_user_by_name),
		cmocka_unit_test(test_user_numeric),
		cmocka_unit_test(test_user_group),
		cmocka_unit_test(test_user_errors),
		cmocka_unit_test(test_decide_defaults),
		cmocka_unit_test(test_decide_entitlements),
		cmocka_unit_test(test_resolv_conf),
		cmocka_unit_test(test_decide_caps),
		cmocka_unit_test(test_cap_names),
		cmocka_unit_test(test_cgroup_paths),
		cmocka_unit_test(test_format_size),
		cmocka_unit_test(test_run_parse),
		cmocka_unit_test(test_run_parse_errors),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_signals),
		cmocka_unit_test(test_container_state),
		cmocka_unit_test(test_build_stubs_removed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
