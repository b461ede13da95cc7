/* Unit tests of the device filter (runtime/devices.c): the rule and --device
 * parsers, the rule list's meaning, the BPF program generator (run through a
 * small interpreter and compared with the reference meaning, then loaded by
 * the kernel's verifier), and, as root, both kernel paths: a v1 devices
 * cgroup and a device program attached to a cgroup2 cgroup, each holding a
 * process that tries to open host devices. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>

#include "common/util.h"
#include "runtime/internal.h"
#include "runtime/sandbox.h"

static void test_rule_parse(void **state)
{
	(void)state;
	struct kiln_device_rule r;
	struct kiln_err err = {0};
	assert_int_equal(kiln_device_rule_parse("c 1:3 rwm", true, &r, &err), 0);
	assert_int_equal(r.type, 'c');
	assert_int_equal(r.major, 1);
	assert_int_equal(r.minor, 3);
	assert_int_equal(r.access, KILN_DEV_ALL);
	assert_true(r.allow);
	assert_int_equal(kiln_device_rule_parse("b *:* m", false, &r, &err), 0);
	assert_int_equal(r.type, 'b');
	assert_int_equal(r.major, -1);
	assert_int_equal(r.minor, -1);
	assert_int_equal(r.access, KILN_DEV_MKNOD);
	assert_false(r.allow);
	assert_int_equal(kiln_device_rule_parse("c 136:* wr", true, &r, &err), 0);
	assert_int_equal(r.minor, -1);
	assert_int_equal(r.access, KILN_DEV_READ | KILN_DEV_WRITE);
	assert_int_equal(kiln_device_rule_parse("a", false, &r, &err), 0);
	assert_int_equal(r.type, 'a');
	assert_int_equal(r.access, KILN_DEV_ALL);
	static const char *const bad[] = {"", "x 1:3 rwm", "c 1:3", "c 1:3 ", "c 1:3 rwx", "c 1:3 rr",
		"c 1 rwm", "c :3 rwm", "c 1: rwm", "c -1:3 rwm", "c 4096:0 rwm", "c 1:1048576 rwm", "c1:3 rwm",
		"c 1:3 rwmr", "c 1x:3 r", NULL};
	for (const char *const *b = bad; *b; b++) {
		err.msg[0] = '\0';
		assert_int_equal(kiln_device_rule_parse(*b, true, &r, &err), -1);
		assert_non_null(strstr(err.msg, "invalid device rule"));
	}
	/* format is parse's inverse */
	static const char *const good[] = {"c 1:3 rwm", "b *:* m", "c 136:* rw", "a *:* r", "b 7:0 w", NULL};
	for (const char *const *g = good; *g; g++) {
		assert_int_equal(kiln_device_rule_parse(*g, true, &r, &err), 0);
		char buf[64];
		kiln_device_rule_format(&r, buf, sizeof(buf));
		assert_string_equal(buf, *g);
	}
}

static void test_device_parse(void **state)
{
	(void)state;
	struct kiln_device d;
	struct kiln_err err = {0};
	assert_int_equal(kiln_device_parse("/dev/fuse", &d, &err), 0);
	assert_string_equal(d.host, "/dev/fuse");
	assert_string_equal(d.path, "/dev/fuse");
	assert_int_equal(d.access, KILN_DEV_ALL);
	kiln_device_free(&d);
	assert_int_equal(kiln_device_parse("/dev/sdb:/dev/xvdb", &d, &err), 0);
	assert_string_equal(d.path, "/dev/xvdb");
	assert_int_equal(d.access, KILN_DEV_ALL);
	kiln_device_free(&d);
	assert_int_equal(kiln_device_parse("/dev/sdb:r", &d, &err), 0);
	assert_string_equal(d.path, "/dev/sdb");
	assert_int_equal(d.access, KILN_DEV_READ);
	kiln_device_free(&d);
	assert_int_equal(kiln_device_parse("/dev/sdb:/dev/xvdb:rw", &d, &err), 0);
	assert_string_equal(d.path, "/dev/xvdb");
	assert_int_equal(d.access, KILN_DEV_READ | KILN_DEV_WRITE);
	kiln_device_free(&d);
	static const char *const bad[] = {"", "dev/fuse", "/dev/sdb:xvdb", "/dev/sdb:/dev/xvdb:rwx",
		"/dev/sdb:/dev/xvdb:r:x", "/dev/sdb:/", "/dev/sdb:/dev/x:", ":/dev/x", NULL};
	for (const char *const *b = bad; *b; b++) {
		err.msg[0] = '\0';
		assert_int_equal(kiln_device_parse(*b, &d, &err), -1);
		assert_non_null(strstr(err.msg, "--device"));
	}
	/* resolve: only character and block devices */
	assert_int_equal(kiln_device_parse("/dev/null", &d, &err), 0);
	assert_int_equal(kiln_device_resolve(&d, &err), 0);
	assert_int_equal(d.type, 'c');
	assert_int_equal(d.major, 1);
	assert_int_equal(d.minor, 3);
	kiln_device_free(&d);
	assert_int_equal(kiln_device_parse("/etc/hostname", &d, &err), 0);
	assert_int_equal(kiln_device_resolve(&d, &err), -1);
	assert_non_null(strstr(err.msg, "not a character or block device"));
	kiln_device_free(&d);
}

static void test_default_meaning(void **state)
{
	(void)state;
	size_t n;
	const struct kiln_device_rule *r = kiln_devices_default(&n);
	const unsigned rw = KILN_DEV_READ | KILN_DEV_WRITE;
	/* the allow-list */
	static const unsigned ok[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 1}, {5, 2},
					 {136, 0}, {136, 4711}, {10, 200}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_true(kiln_devices_allowed(r, n, 'c', ok[i][0], ok[i][1], rw));
		assert_false(kiln_devices_allowed(r, n, 'b', ok[i][0], ok[i][1], KILN_DEV_READ));
	}
	/* kmsg, mem, kvm, fuse, loop-control, btrfs-control, a loop and a disk */
	static const unsigned no[][2] = {{1, 11}, {1, 1}, {10, 232}, {10, 229}, {10, 237}, {10, 234}, {4, 1}};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		assert_false(kiln_devices_allowed(r, n, 'c', no[i][0], no[i][1], KILN_DEV_READ));
		assert_false(kiln_devices_allowed(r, n, 'c', no[i][0], no[i][1], KILN_DEV_WRITE));
		assert_true(kiln_devices_allowed(r, n, 'c', no[i][0], no[i][1], KILN_DEV_MKNOD));
	}
	assert_false(kiln_devices_allowed(r, n, 'b', 7, 0, KILN_DEV_READ));
	assert_false(kiln_devices_allowed(r, n, 'b', 8, 0, rw));
	assert_true(kiln_devices_allowed(r, n, 'b', 7, 0, KILN_DEV_MKNOD));
	/* --device adds exactly its own node with its own access */
	struct kiln_device d = {.type = 'b', .major = 7, .minor = 0, .access = KILN_DEV_READ};
	size_t n2;
	struct kiln_device_rule *r2 = kiln_devices_rules(&d, 1, &n2);
	assert_int_equal(n2, n + 1);
	assert_true(kiln_devices_allowed(r2, n2, 'b', 7, 0, KILN_DEV_READ));
	assert_false(kiln_devices_allowed(r2, n2, 'b', 7, 0, rw));
	assert_false(kiln_devices_allowed(r2, n2, 'b', 7, 1, KILN_DEV_READ));
	assert_false(kiln_devices_allowed(r2, n2, 'c', 7, 0, KILN_DEV_READ));
	free(r2);
}

/* ---- an interpreter for the instructions the generator emits ---- */

enum { RUN_ALLOW = 1, RUN_DENY = 0, RUN_BAD = -1 };

static int bpf_run(const struct bpf_insn *p, size_t len, uint32_t ctx[3])
{
	uint64_t r[11] = {0};
	for (size_t pc = 0, steps = 0; pc < len && steps < 10000; pc++, steps++) {
		const struct bpf_insn *i = &p[pc];
		uint8_t d = i->dst_reg, s = i->src_reg;
		if (d > 10 || s > 10)
			return RUN_BAD;
		switch (i->code) {
		case BPF_LDX | BPF_W | BPF_MEM:
			if (s != 1 || i->off < 0 || i->off > 8 || i->off % 4)
				return RUN_BAD;
			r[d] = ctx[i->off / 4];
			break;
		case BPF_ALU | BPF_MOV | BPF_X: r[d] = (uint32_t)r[s]; break;
		case BPF_ALU | BPF_MOV | BPF_K: r[d] = (uint32_t)i->imm; break;
		case BPF_ALU | BPF_AND | BPF_K: r[d] = (uint32_t)r[d] & (uint32_t)i->imm; break;
		case BPF_ALU | BPF_RSH | BPF_K: r[d] = (uint32_t)r[d] >> i->imm; break;
		case BPF_JMP32 | BPF_JNE | BPF_K:
			if ((uint32_t)r[d] != (uint32_t)i->imm) {
				if (i->off < 0)
					return RUN_BAD;
				pc += (size_t)i->off;
			}
			break;
		case BPF_JMP | BPF_EXIT:
			return r[0] ? RUN_ALLOW : RUN_DENY;
		default:
			return RUN_BAD;
		}
	}
	return RUN_BAD;
}

static struct bpf_insn *gen(const struct kiln_device_rule *rules, size_t n, size_t *len)
{
	*len = kiln_devices_bpf(rules, n, NULL, 0);
	struct bpf_insn *p = calloc(*len, sizeof(*p));
	assert_non_null(p);
	assert_int_equal(kiln_devices_bpf(rules, n, p, *len), *len);
	return p;
}

/* Every combination of type, a few majors/minors and every access set. */
static void compare_all(const struct kiln_device_rule *rules, size_t n)
{
	size_t len;
	struct bpf_insn *p = gen(rules, n, &len);
	static const uint32_t majors[] = {0, 1, 4, 5, 7, 10, 136, 4095};
	static const uint32_t minors[] = {0, 1, 3, 5, 9, 11, 200, 232, 1048575};
	for (int t = 0; t < 2; t++)
		for (size_t a = 0; a < sizeof(majors) / sizeof(majors[0]); a++)
			for (size_t b = 0; b < sizeof(minors) / sizeof(minors[0]); b++)
				for (unsigned acc = 1; acc <= KILN_DEV_ALL; acc++) {
					uint32_t ctx[3] = {(acc << 16) | (t ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR),
							   majors[a], minors[b]};
					bool want = kiln_devices_allowed(rules, n, t ? 'b' : 'c', majors[a], minors[b], acc);
					int got = bpf_run(p, len, ctx);
					if (got != (want ? RUN_ALLOW : RUN_DENY))
						fail_msg("program says %d, rules say %d for %c %u:%u access %u", got, want,
							 t ? 'b' : 'c', majors[a], minors[b], acc);
				}
	free(p);
}

static void random_rule(struct kiln_device_rule *r, unsigned *seed)
{
	static const int32_t majors[] = {-1, 1, 5, 7, 10, 136};
	static const int32_t minors[] = {-1, 0, 3, 5, 11, 200};
	int t = rand_r(seed) % 5;
	r->type = t == 0 ? 'a' : t < 3 ? 'c' : 'b';
	r->major = majors[rand_r(seed) % 6];
	r->minor = minors[rand_r(seed) % 6];
	r->access = (unsigned)(rand_r(seed) % 7) + 1;
	r->allow = rand_r(seed) % 3 != 0;
}

static void test_bpf_matches_rules(void **state)
{
	(void)state;
	size_t n;
	const struct kiln_device_rule *def = kiln_devices_default(&n);
	compare_all(def, n);
	/* the default list ends in an allow, begins with deny-all: the program
	 * must not test the deny-all (it is the fall-through) */
	compare_all(def, 1);
	compare_all(def, 0);
	/* an allow-all rule at the end makes the program one verdict */
	struct kiln_device_rule all = {'a', -1, -1, KILN_DEV_ALL, true};
	size_t len;
	struct bpf_insn *p = gen(&all, 1, &len);
	assert_int_equal(len, 8);   /* prologue (6) + verdict */
	free(p);
	unsigned seed = 11;
	for (int k = 0; k < 300; k++) {
		struct kiln_device_rule rules[12];
		size_t m = (size_t)(rand_r(&seed) % 12) + 1;
		for (size_t i = 0; i < m; i++)
			random_rule(&rules[i], &seed);
		compare_all(rules, m);
	}
}

static int prog_load(const struct bpf_insn *p, size_t len)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	a.insns = (uint64_t)(uintptr_t)p;
	a.insn_cnt = (uint32_t)len;
	a.license = (uint64_t)(uintptr_t)"GPL";
	return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
}

/* The kernel's verifier accepts what the generator makes. */
static void test_bpf_verifier(void **state)
{
	(void)state;
	size_t n, len;
	const struct kiln_device_rule *def = kiln_devices_default(&n);
	struct bpf_insn *p = gen(def, n, &len);
	int fd = prog_load(p, len);
	free(p);
	if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
		skip();
		return;
	}
	assert_true(fd >= 0);
	close(fd);
	unsigned seed = 5;
	for (int k = 0; k < 50; k++) {
		struct kiln_device_rule rules[12];
		size_t m = (size_t)(rand_r(&seed) % 12) + 1;
		for (size_t i = 0; i < m; i++)
			random_rule(&rules[i], &seed);
		p = gen(rules, m, &len);
		fd = prog_load(p, len);
		if (fd < 0)
			fail_msg("verifier refused a program of %zu rules: %s", m, strerror(errno));
		close(fd);
		free(p);
	}
}

/* ---- the kernel paths, as root ---- */

/* A child in the cgroup dir tries to open host devices; returns a bit mask:
 * 1 /dev/null opened, 2 /dev/kmsg opened for writing, 4 /dev/loop-control
 * opened, 8 /dev/kmsg failed with EPERM. */
static int probe_in(const char *dir)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char path[4096], b[32];
		snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		snprintf(b, sizeof(b), "%d", (int)getpid());
		if (fd < 0 || write(fd, b, strlen(b)) < 0)
			_exit(100);
		close(fd);
		int bits = 0;
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd >= 0)
			bits |= 1, close(fd);
		fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);   /* opened, never written */
		if (fd >= 0)
			bits |= 2, close(fd);
		else if (errno == EPERM)
			bits |= 8;
		fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		if (fd >= 0)
			bits |= 4, close(fd);
		_exit(bits);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static char *own_dir(const char *mnt, const char *ctrl_prefix)
{
	char *text = NULL;
	if (kiln_read_file("/proc/self/cgroup", 0, &text, NULL, NULL) < 0)
		return NULL;
	char *r = NULL;
	for (char *p = text; p && *p;) {
		char *eol = strchr(p, '\n');
		if (eol)
			*eol = '\0';
		char *c1 = strchr(p, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 && !strncmp(c1 + 1, ctrl_prefix, strlen(ctrl_prefix)) && c1 + 1 + strlen(ctrl_prefix) == c2) {
			r = kiln_xasprintf("%s%s/kiln-unit-devices-%d", mnt, strcmp(c2 + 1, "/") ? c2 + 1 : "",
					   (int)getpid());
			break;
		}
		p = eol ? eol + 1 : NULL;
	}
	free(text);
	return r;
}

static void test_kernel_v1(void **state)
{
	(void)state;
	struct stat st;
	if (geteuid() != 0 || stat("/sys/fs/cgroup/devices/devices.allow", &st) < 0 ||
	    stat("/dev/kmsg", &st) < 0 || stat("/dev/loop-control", &st) < 0) {
		skip();
		return;
	}
	char *dir = own_dir("/sys/fs/cgroup/devices", "devices");
	assert_non_null(dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	/* control: without the rules the child opens everything */
	int before = probe_in(dir);
	size_t n;
	const struct kiln_device_rule *def = kiln_devices_default(&n);
	struct kiln_err err = {0};
	int r = kiln_devices_apply_v1(dir, def, n, &err);
	int after = r == 0 ? probe_in(dir) : -1;
	rmdir(dir);
	free(dir);
	assert_int_equal(r, 0);
	assert_int_equal(before, 1 | 2 | 4);
	assert_int_equal(after, 1 | 8);
}

static void test_kernel_v2(void **state)
{
	(void)state;
	struct statfs sfs;
	struct stat st;
	const char *mnt = "/sys/fs/cgroup/unified";
	if (statfs(mnt, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
		mnt = "/sys/fs/cgroup";
	if (geteuid() != 0 || statfs(mnt, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC ||
	    stat("/dev/kmsg", &st) < 0 || stat("/dev/loop-control", &st) < 0) {
		skip();
		return;
	}
	char *dir = own_dir(mnt, "");
	assert_non_null(dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	int before = probe_in(dir);
	size_t n;
	const struct kiln_device_rule *def = kiln_devices_default(&n);
	struct kiln_err err = {0};
	int r = kiln_devices_attach_bpf(dir, def, n, &err);
	int after = r == 0 ? probe_in(dir) : -1;
	/* a second cgroup: the default program is loaded once, attached again */
	char *dir2 = kiln_xasprintf("%s-2", dir);
	assert_int_equal(mkdir(dir2, 0755), 0);
	int r2 = kiln_devices_attach_bpf(dir2, def, n, &err);
	int after2 = r2 == 0 ? probe_in(dir2) : -1;
	/* --device /dev/loop-control: exactly that one more */
	char *dir3 = kiln_xasprintf("%s-3", dir);
	assert_int_equal(mkdir(dir3, 0755), 0);
	struct kiln_device d;
	assert_int_equal(kiln_device_parse("/dev/loop-control", &d, &err), 0);
	assert_int_equal(kiln_device_resolve(&d, &err), 0);
	size_t n3;
	struct kiln_device_rule *rules3 = kiln_devices_rules(&d, 1, &n3);
	int r3 = kiln_devices_attach_bpf(dir3, rules3, n3, &err);
	int after3 = r3 == 0 ? probe_in(dir3) : -1;
	free(rules3);
	kiln_device_free(&d);
	rmdir(dir);
	rmdir(dir2);
	rmdir(dir3);
	free(dir);
	free(dir2);
	free(dir3);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r2, 0);
	assert_int_equal(r3, 0);
	assert_int_equal(before, 1 | 2 | 4);
	assert_int_equal(after, 1 | 8);
	assert_int_equal(after2, 1 | 8);
	assert_int_equal(after3, 1 | 4 | 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rule_parse),
		cmocka_unit_test(test_device_parse),
		cmocka_unit_test(test_default_meaning),
		cmocka_unit_test(test_bpf_matches_rules),
		cmocka_unit_test(test_bpf_verifier),
		cmocka_unit_test(test_kernel_v1),
		cmocka_unit_test(test_kernel_v2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
