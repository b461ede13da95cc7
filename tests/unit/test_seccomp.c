/* Unit tests of the seccomp profiles and kiln's BPF compiler (issue 11,
 * finding 14): the compiled programs are run here by a small classic-BPF
 * interpreter on made-up syscalls of the x86-64, x32 and i386 ABIs, so the
 * i386 path is checked even on kernels without 32-bit support. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* i386 numbers from the kernel headers (not <sys/syscall.h>: x86-64's) */
#include <asm/unistd_32.h>

#include "common/util.h"
#include "runtime/sandbox.h"
#include "runtime/seccomp.h"

#define X32 0x40000000u
#define EPERM_ (SECCOMP_RET_ERRNO | EPERM)
#define ALLOW SECCOMP_RET_ALLOW
#define KV(a, b) ((unsigned)(a) << 16 | (unsigned)(b))

enum abi { X86_64, I386, X32ABI };

/* ------------------------------------------------------------ a cBPF interpreter */

static uint32_t load(const uint8_t *data, uint32_t off)
{
	assert_true(off % 4 == 0 && off + 4 <= 64);
	uint32_t v;
	memcpy(&v, data + off, 4);
	return v;
}

static uint32_t run(const struct kiln_seccomp_prog *p, uint32_t arch, uint32_t nr, const uint64_t args[6])
{
	uint8_t data[64] = {0};   /* struct seccomp_data */
	memcpy(data, &nr, 4);
	memcpy(data + 4, &arch, 4);
	for (int i = 0; i < 6; i++)
		memcpy(data + 16 + 8 * i, &args[i], 8);
	uint32_t A = 0, X = 0, M[16] = {0};
	for (unsigned pc = 0, steps = 0; steps < 100000; steps++) {
		assert_true(pc < p->len);
		const struct sock_filter *f = &p->insn[pc];
		uint32_t k = f->k;
		switch (f->code) {
		case BPF_LD | BPF_W | BPF_ABS: A = load(data, k); pc++; break;
		case BPF_LD | BPF_IMM: A = k; pc++; break;
		case BPF_LDX | BPF_IMM: X = k; pc++; break;
		case BPF_LD | BPF_MEM: assert_true(k < 16); A = M[k]; pc++; break;
		case BPF_ST: assert_true(k < 16); M[k] = A; pc++; break;
		case BPF_ALU | BPF_AND | BPF_K: A &= k; pc++; break;
		case BPF_ALU | BPF_OR | BPF_K: A |= k; pc++; break;
		case BPF_MISC | BPF_TAX: X = A; pc++; break;
		case BPF_MISC | BPF_TXA: A = X; pc++; break;
		case BPF_JMP | BPF_JA: pc += 1 + k; break;
		case BPF_JMP | BPF_JEQ | BPF_K: pc += 1 + (A == k ? f->jt : f->jf); break;
		case BPF_JMP | BPF_JGT | BPF_K: pc += 1 + (A > k ? f->jt : f->jf); break;
		case BPF_JMP | BPF_JGE | BPF_K: pc += 1 + (A >= k ? f->jt : f->jf); break;
		case BPF_JMP | BPF_JSET | BPF_K: pc += 1 + ((A & k) ? f->jt : f->jf); break;
		case BPF_RET | BPF_K: return k;
		case BPF_RET | BPF_A: return A;
		default:
			fail_msg("unexpected BPF instruction %#x at %u", f->code, pc);
		}
	}
	fail_msg("BPF program did not return");
	return 0;
}

static uint32_t call(const struct kiln_seccomp_prog *p, enum abi abi, uint32_t nr, uint64_t a0, uint64_t a1)
{
	uint64_t args[6] = {a0, a1, 0, 0, 0, 0};
	if (abi == I386)
		return run(p, AUDIT_ARCH_I386, nr, args);
	return run(p, AUDIT_ARCH_X86_64, abi == X32ABI ? (X32 | nr) : nr, args);
}

/* x86-64 numbers by name (libseccomp's table: independent of the compiler) */
static uint32_t nr64(const char *name)
{
	int nr = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, name);
	assert_true(nr >= 0);
	return (uint32_t)nr;
}

static uint32_t sys64(const struct kiln_seccomp_prog *p, const char *name, uint64_t a0)
{
	return call(p, X86_64, nr64(name), a0, 0);
}

#define DOCKER_CAPS KILN_DEFAULT_CAPS
#define CAPBIT(c) (1ULL << (c))

static void compile_default(uint64_t caps, unsigned kernel, struct kiln_seccomp_prog *p)
{
	struct kiln_err err = {0};
	assert_int_equal(kiln_seccomp_compile(kiln_seccomp_default_profile(), caps, kernel, p, &err), 0);
	assert_true(p->len > 0 && p->len <= 4096);
}

/* ------------------------------------------------------------ the default profile */

static void test_default_x86_64(void **state)
{
	(void)state;
	struct kiln_seccomp_prog p;
	compile_default(DOCKER_CAPS, KV(6, 1), &p);
	/* everyday calls */
	static const char *const ok[] = {"read", "write", "openat", "close", "mmap", "execve", "execveat",
		"getpid", "exit_group", "rt_sigaction", "wait4", "fork", "vfork", "prctl", "capset", "setresuid",
		"setgroups", "close_range", "ioctl", "arch_prctl", "chroot", "ptrace", "statx", NULL};
	for (const char *const *n = ok; *n; n++)
		if (sys64(&p, *n, 0) != ALLOW)
			fail_msg("%s not allowed", *n);
	/* not on Docker's list, or only with a capability the container lacks */
	static const char *const no[] = {"keyctl", "add_key", "request_key", "bpf", "unshare", "setns", "mount",
		"umount2", "pivot_root", "kexec_load", "kexec_file_load", "init_module", "reboot", "settimeofday",
		"open_by_handle_at", "perf_event_open", "syslog", "userfaultfd", "io_uring_setup", "fsopen",
		"move_mount", "open_tree", "kcmp", "iopl", "acct", "swapon", "mbind", "vhangup", "lookup_dcookie",
		"quotactl", "sethostname", NULL};
	for (const char *const *n = no; *n; n++) {
		uint32_t r = sys64(&p, *n, 0);
		if (r != EPERM_)
			fail_msg("%s: %#x, want EPERM", *n, r);
	}
	/* numbers unknown to the profile */
	assert_int_equal(call(&p, X86_64, 461, 0, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, 999, 0, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, 0x3fffffff, 0, 0), EPERM_);
	/* socket: every family but AF_ALG and AF_VSOCK, on the int the kernel sees */
	uint32_t so = nr64("socket");
	for (uint64_t fam = 0; fam < 64; fam++)
		assert_int_equal(call(&p, X86_64, so, fam, 0), fam == 38 || fam == 40 ? EPERM_ : ALLOW);
	assert_int_equal(call(&p, X86_64, so, 0x100000028ULL, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, so, 0xffffffff00000026ULL, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, so, 0x100000002ULL, 0), ALLOW);
	/* personality */
	uint32_t pe = nr64("personality");
	static const uint64_t good[] = {0, 8, 0x20000, 0x20008, 0xffffffff};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(call(&p, X86_64, pe, good[i], 0), ALLOW);
	static const uint64_t bad[] = {0x0040000 /* ADDR_NO_RANDOMIZE */, 0x0400000 /* READ_IMPLIES_EXEC */,
				       1, 0x20009, 0xfffffffe, 0x100040000ULL};
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(call(&p, X86_64, pe, bad[i], 0), EPERM_);
	/* clone: no namespace flags; clone3: ENOSYS */
	uint32_t cl = nr64("clone");
	assert_int_equal(call(&p, X86_64, cl, 17 /* SIGCHLD */, 0), ALLOW);
	assert_int_equal(call(&p, X86_64, cl, 0x003d0f00 /* pthread flags */, 0), ALLOW);
	static const uint64_t ns[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
				      CLONE_NEWNET, CLONE_NEWCGROUP};
	for (size_t i = 0; i < 7; i++)
		assert_int_equal(call(&p, X86_64, cl, ns[i] | 17, 0), EPERM_);
	assert_int_equal(sys64(&p, "clone3", 0), SECCOMP_RET_ERRNO | ENOSYS);
	/* an architecture the filter does not know: killed */
	uint64_t z[6] = {0};
	assert_int_equal(run(&p, AUDIT_ARCH_AARCH64, 0, z), SECCOMP_RET_KILL_PROCESS);
	kiln_seccomp_prog_free(&p);
}

static void test_default_x32_i386(void **state)
{
	(void)state;
	struct kiln_seccomp_prog p;
	compile_default(DOCKER_CAPS, KV(6, 1), &p);
	/* x32: the same allow-list */
	assert_int_equal(call(&p, X32ABI, nr64("getpid"), 0, 0), ALLOW);
	assert_int_equal(call(&p, X32ABI, nr64("keyctl"), 0, 0), EPERM_);
	assert_int_equal(call(&p, X32ABI, nr64("unshare"), 0, 0), EPERM_);
	assert_int_equal(call(&p, X32ABI, 999, 0, 0), EPERM_);
	assert_int_equal(call(&p, X32ABI, nr64("socket"), 40, 0), EPERM_);
	assert_int_equal(call(&p, X32ABI, nr64("socket"), 2, 0), ALLOW);
	assert_int_equal(call(&p, X32ABI, 514 /* x32 ioctl */, 0, 0), ALLOW);
	/* i386 */
	assert_int_equal(call(&p, I386, __NR_getpid, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_read, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_mmap2, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_set_thread_area, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_keyctl, 0, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_add_key, 0, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_unshare, CLONE_NEWUSER, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_mount, 0, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_kexec_load, 0, 0), EPERM_);
	assert_int_equal(call(&p, I386, 999, 0, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_socket, 40, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_socket, 38, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_socket, 2, 0), ALLOW);
	/* the high word of an i386 argument is not the kernel's: ignored */
	assert_int_equal(call(&p, I386, __NR_socket, 0x100000028ULL, 0), EPERM_);
	/* socketcall: everything but SYS_SOCKET (1) */
	assert_int_equal(call(&p, I386, __NR_socketcall, 1, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_socketcall, 3 /* connect */, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_socketcall, 2 /* bind */, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_ipc, 2, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_personality, 0x0040000, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_personality, 8, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_clone, CLONE_NEWNS, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_clone, 17, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_clone3, 0, 0), SECCOMP_RET_ERRNO | ENOSYS);
	assert_int_equal(call(&p, I386, __NR_modify_ldt, 0, 0), ALLOW);
	kiln_seccomp_prog_free(&p);
}

/* Docker's capability-conditional rules */
static void test_default_caps(void **state)
{
	(void)state;
	static const struct {
		int cap;
		const char *names[6];
	} t[] = {
		{CAP_SYS_ADMIN, {"mount", "umount2", "unshare", "setns", "sethostname", "fsopen"}},
		{CAP_SYS_PTRACE, {"kcmp", "pidfd_getfd", "process_madvise", NULL}},
		{CAP_SYS_MODULE, {"init_module", "finit_module", "delete_module", NULL}},
		{CAP_SYS_BOOT, {"reboot", NULL}},
		{CAP_SYS_TIME, {"settimeofday", "clock_settime", NULL}},
		{CAP_SYS_NICE, {"mbind", "set_mempolicy", "get_mempolicy", NULL}},
		{CAP_SYSLOG, {"syslog", NULL}},
		{CAP_BPF, {"bpf", NULL}},
		{CAP_PERFMON, {"perf_event_open", NULL}},
		{CAP_SYS_PACCT, {"acct", NULL}},
		{CAP_SYS_RAWIO, {"iopl", "ioperm", NULL}},
		{CAP_SYS_TTY_CONFIG, {"vhangup", NULL}},
		{CAP_DAC_READ_SEARCH, {"open_by_handle_at", NULL}},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct kiln_seccomp_prog with, without;
		compile_default(DOCKER_CAPS | CAPBIT(t[i].cap), KV(6, 1), &with);
		compile_default(DOCKER_CAPS & ~CAPBIT(t[i].cap), KV(6, 1), &without);
		for (int j = 0; j < 6 && t[i].names[j]; j++) {
			if (sys64(&with, t[i].names[j], 0) != ALLOW || sys64(&without, t[i].names[j], 0) != EPERM_)
				fail_msg("cap %d: %s", t[i].cap, t[i].names[j]);
		}
		kiln_seccomp_prog_free(&with);
		kiln_seccomp_prog_free(&without);
	}
	/* CAP_SYS_ADMIN: namespaces through clone, clone3 itself */
	struct kiln_seccomp_prog p;
	compile_default(DOCKER_CAPS | CAPBIT(CAP_SYS_ADMIN), KV(6, 1), &p);
	assert_int_equal(call(&p, X86_64, nr64("clone"), CLONE_NEWNS | CLONE_NEWUSER, 0), ALLOW);
	assert_int_equal(sys64(&p, "clone3", 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_unshare, CLONE_NEWNS, 0), ALLOW);
	kiln_seccomp_prog_free(&p);
	/* no CAP_SYS_CHROOT: no chroot; old kernels: no ptrace without the cap */
	compile_default(DOCKER_CAPS & ~CAPBIT(CAP_SYS_CHROOT), KV(4, 4), &p);
	assert_int_equal(sys64(&p, "chroot", 0), EPERM_);
	assert_int_equal(sys64(&p, "ptrace", 0), EPERM_);
	kiln_seccomp_prog_free(&p);
}

/* i386's direct socket / IPC syscalls agree with the kernel headers. */
static void test_i386_direct_numbers(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		int nr;
	} t[] = {
		{"socket", __NR_socket}, {"socketpair", __NR_socketpair}, {"bind", __NR_bind},
		{"connect", __NR_connect}, {"listen", __NR_listen}, {"accept4", __NR_accept4},
		{"getsockopt", __NR_getsockopt}, {"setsockopt", __NR_setsockopt},
		{"getsockname", __NR_getsockname}, {"getpeername", __NR_getpeername}, {"sendto", __NR_sendto},
		{"sendmsg", __NR_sendmsg}, {"recvfrom", __NR_recvfrom}, {"recvmsg", __NR_recvmsg},
		{"shutdown", __NR_shutdown}, {"recvmmsg", __NR_recvmmsg}, {"sendmmsg", __NR_sendmmsg},
		{"semget", __NR_semget}, {"semctl", __NR_semctl}, {"shmget", __NR_shmget}, {"shmctl", __NR_shmctl},
		{"shmat", __NR_shmat}, {"shmdt", __NR_shmdt}, {"msgget", __NR_msgget}, {"msgsnd", __NR_msgsnd},
		{"msgrcv", __NR_msgrcv}, {"msgctl", __NR_msgctl},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char json[512];
		snprintf(json, sizeof(json), "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":"
			 "[\"SCMP_ARCH_X86_64\",\"SCMP_ARCH_X86\"],\"syscalls\":[{\"names\":[\"%s\"],"
			 "\"action\":\"SCMP_ACT_ALLOW\"}]}", t[i].name);
		struct kiln_sc_profile *prof;
		bool unconf;
		struct kiln_err err = {0};
		assert_int_equal(kiln_seccomp_profile_parse(json, "t.json", &prof, &unconf, &err), 0);
		struct kiln_seccomp_prog p;
		assert_int_equal(kiln_seccomp_compile(prof, 0, KV(6, 1), &p, &err), 0);
		if (call(&p, I386, (uint32_t)t[i].nr, 0, 0) != ALLOW)
			fail_msg("i386 %s (%d) not allowed", t[i].name, t[i].nr);
		assert_int_equal(call(&p, I386, __NR_getpid, 0, 0), EPERM_);
		kiln_seccomp_prog_free(&p);
		kiln_seccomp_profile_free(prof);
	}
}

/* ------------------------------------------------------------ JSON profiles */

static struct kiln_seccomp_prog json_prog(const char *json, uint64_t caps)
{
	struct kiln_sc_profile *prof = NULL;
	bool unconf = false;
	struct kiln_err err = {0};
	if (kiln_seccomp_profile_parse(json, "p.json", &prof, &unconf, &err) < 0)
		fail_msg("parse: %s", err.msg);
	assert_false(unconf);
	struct kiln_seccomp_prog p;
	if (kiln_seccomp_compile(prof, caps, KV(6, 1), &p, &err) < 0)
		fail_msg("compile: %s", err.msg);
	kiln_seccomp_profile_free(prof);
	return p;
}

static void test_json_allow_list(void **state)
{
	(void)state;
	struct kiln_seccomp_prog p = json_prog(
		"{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 38,\n"
		" \"architectures\": [\"SCMP_ARCH_X86_64\", \"SCMP_ARCH_X86\", \"SCMP_ARCH_X32\", \"SCMP_ARCH_AARCH64\"],\n"
		" \"syscalls\": [\n"
		"  {\"names\": [\"read\", \"write\", \"no_such_syscall\"], \"action\": \"SCMP_ACT_ALLOW\"},\n"
		"  {\"name\": \"getpid\", \"action\": \"SCMP_ACT_ALLOW\", \"comment\": \"old style\"},\n"
		"  {\"names\": [\"mkdir\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 13},\n"
		"  {\"names\": [\"kill\"], \"action\": \"SCMP_ACT_KILL_PROCESS\"},\n"
		"  {\"names\": [\"tkill\"], \"action\": \"SCMP_ACT_TRAP\"},\n"
		"  {\"names\": [\"tgkill\"], \"action\": \"SCMP_ACT_LOG\"},\n"
		"  {\"names\": [\"uname\"], \"action\": \"SCMP_ACT_ERRNO\"}\n"
		" ]}", 0);
	assert_int_equal(sys64(&p, "read", 0), ALLOW);
	assert_int_equal(sys64(&p, "getpid", 0), ALLOW);
	assert_int_equal(sys64(&p, "openat", 0), SECCOMP_RET_ERRNO | 38);
	assert_int_equal(sys64(&p, "mkdir", 0), SECCOMP_RET_ERRNO | 13);
	assert_int_equal(sys64(&p, "kill", 0), SECCOMP_RET_KILL_PROCESS);
	assert_int_equal(sys64(&p, "tkill", 0), SECCOMP_RET_TRAP);
	assert_int_equal(sys64(&p, "tgkill", 0), SECCOMP_RET_LOG);
	assert_int_equal(sys64(&p, "uname", 0), SECCOMP_RET_ERRNO | EPERM);
	assert_int_equal(call(&p, I386, __NR_read, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_open, 0, 0), SECCOMP_RET_ERRNO | 38);
	assert_int_equal(call(&p, X32ABI, nr64("write"), 0, 0), ALLOW);
	kiln_seccomp_prog_free(&p);

	/* no architectures: x86-64 only, the other ABIs are killed (no bypass) */
	p = json_prog("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"mkdir\"],"
		      "\"action\":\"SCMP_ACT_ERRNO\"}]}", 0);
	assert_int_equal(sys64(&p, "mkdir", 0), EPERM_);
	assert_int_equal(sys64(&p, "read", 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_read, 0, 0), SECCOMP_RET_KILL_PROCESS);
	assert_int_equal(call(&p, X32ABI, nr64("read"), 0, 0), SECCOMP_RET_KILL_PROCESS);
	kiln_seccomp_prog_free(&p);

	/* archMap: the x86-64 entry and its sub-architectures */
	p = json_prog("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"archMap\":[{\"architecture\":\"SCMP_ARCH_AARCH64\","
		      "\"subArchitectures\":[\"SCMP_ARCH_ARM\"]},{\"architecture\":\"SCMP_ARCH_X86_64\","
		      "\"subArchitectures\":[\"SCMP_ARCH_X86\"]}],\"syscalls\":[{\"names\":[\"read\"],"
		      "\"action\":\"SCMP_ACT_ALLOW\"}]}", 0);
	assert_int_equal(call(&p, I386, __NR_read, 0, 0), ALLOW);
	assert_int_equal(call(&p, X32ABI, nr64("read"), 0, 0), SECCOMP_RET_KILL_PROCESS);
	kiln_seccomp_prog_free(&p);
}

/* every comparison, on 64-bit values whose halves differ */
static void test_json_args(void **state)
{
	(void)state;
	struct kiln_seccomp_prog p = json_prog(
		"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_X86\"],\"syscalls\":[\n"
		" {\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967298,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"write\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":1,\"value\":4294967298,\"op\":\"SCMP_CMP_NE\"}]},\n"
		" {\"names\":[\"close\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967298,\"op\":\"SCMP_CMP_LT\"}]},\n"
		" {\"names\":[\"fstat\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967298,\"op\":\"SCMP_CMP_LE\"}]},\n"
		" {\"names\":[\"lseek\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967298,\"op\":\"SCMP_CMP_GE\"}]},\n"
		" {\"names\":[\"mmap\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967298,\"op\":\"SCMP_CMP_GT\"}]},\n"
		" {\"names\":[\"brk\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":4294967311,\"valueTwo\":4294967298,\"op\":\"SCMP_CMP_MASKED_EQ\"}]},\n"
		" {\"names\":[\"dup\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},{\"index\":0,\"value\":3,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"dup2\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},{\"index\":1,\"value\":3,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"dup3\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":-1,\"op\":\"SCMP_CMP_EQ\"}]}\n"
		"]}", 0);
	const uint64_t V = 0x100000002ULL;
	/* a value table around V: below, equal, above, in both halves */
	static const uint64_t probe[] = {0, 2, 3, 0xffffffff, 0x100000001ULL, 0x100000002ULL, 0x100000003ULL,
					 0x200000000ULL, 0x200000002ULL, 0xffffffffffffffffULL};
	for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
		uint64_t x = probe[i];
		assert_int_equal(sys64(&p, "read", x), x == V ? ALLOW : EPERM_);
		assert_int_equal(call(&p, X86_64, nr64("write"), 0, x), x != V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "close", x), x < V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "fstat", x), x <= V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "lseek", x), x >= V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "mmap", x), x > V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "brk", x), (x & 0x10000000fULL) == V ? ALLOW : EPERM_);
		assert_int_equal(sys64(&p, "dup3", x), x == UINT64_MAX ? ALLOW : EPERM_);
	}
	/* one index twice: either condition (runc's rule); two indexes: both */
	assert_int_equal(sys64(&p, "dup", 1), ALLOW);
	assert_int_equal(sys64(&p, "dup", 3), ALLOW);
	assert_int_equal(sys64(&p, "dup", 2), EPERM_);
	assert_int_equal(call(&p, X86_64, nr64("dup2"), 1, 3), ALLOW);
	assert_int_equal(call(&p, X86_64, nr64("dup2"), 1, 2), EPERM_);
	assert_int_equal(call(&p, X86_64, nr64("dup2"), 3, 3), EPERM_);
	/* i386: 32-bit arguments; a value above 32 bits never equals one */
	assert_int_equal(call(&p, I386, __NR_read, 2, 0), EPERM_);
	assert_int_equal(call(&p, I386, __NR_close, 7, 0), ALLOW);     /* 7 < V */
	assert_int_equal(call(&p, I386, __NR_mmap, 7, 0), EPERM_);     /* not > V */
	kiln_seccomp_prog_free(&p);
}

static void test_json_conditions(void **state)
{
	(void)state;
	const char *json =
		"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[\n"
		" {\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"},\n"
		" {\"names\":[\"mount\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"caps\":[\"CAP_SYS_ADMIN\"]}},\n"
		" {\"names\":[\"reboot\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"caps\":[\"CAP_SYS_BOOT\",\"CAP_SYS_ADMIN\"]}},\n"
		" {\"names\":[\"umount2\"],\"action\":\"SCMP_ACT_ALLOW\",\"excludes\":{\"caps\":[\"CAP_SYS_ADMIN\"]}},\n"
		" {\"names\":[\"arch_prctl\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"arches\":[\"amd64\"]}},\n"
		" {\"names\":[\"cacheflush\",\"write\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"arches\":[\"arm64\"]}},\n"
		" {\"names\":[\"close\"],\"action\":\"SCMP_ACT_ALLOW\",\"excludes\":{\"arches\":[\"amd64\"]}},\n"
		" {\"names\":[\"ptrace\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"minKernel\":\"4.8\"}},\n"
		" {\"names\":[\"kcmp\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"minKernel\":\"99.1\"}},\n"
		" {\"names\":[\"getpid\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"caps\":[\"CAP_NO_SUCH\"]}}\n"
		"]}";
	struct kiln_seccomp_prog p = json_prog(json, 0);
	assert_int_equal(sys64(&p, "read", 0), ALLOW);
	assert_int_equal(sys64(&p, "mount", 0), EPERM_);
	assert_int_equal(sys64(&p, "reboot", 0), EPERM_);
	assert_int_equal(sys64(&p, "umount2", 0), ALLOW);
	assert_int_equal(sys64(&p, "arch_prctl", 0), ALLOW);
	assert_int_equal(sys64(&p, "write", 0), EPERM_);
	assert_int_equal(sys64(&p, "close", 0), EPERM_);
	assert_int_equal(sys64(&p, "ptrace", 0), ALLOW);
	assert_int_equal(sys64(&p, "kcmp", 0), EPERM_);
	assert_int_equal(sys64(&p, "getpid", 0), EPERM_);
	kiln_seccomp_prog_free(&p);
	p = json_prog(json, CAPBIT(CAP_SYS_ADMIN));
	assert_int_equal(sys64(&p, "mount", 0), ALLOW);
	assert_int_equal(sys64(&p, "reboot", 0), EPERM_);     /* both caps needed */
	assert_int_equal(sys64(&p, "umount2", 0), EPERM_);
	kiln_seccomp_prog_free(&p);
	p = json_prog(json, CAPBIT(CAP_SYS_ADMIN) | CAPBIT(CAP_SYS_BOOT));
	assert_int_equal(sys64(&p, "reboot", 0), ALLOW);
	kiln_seccomp_prog_free(&p);
}

/* Docker's semantics for overlapping rules */
static void test_json_precedence(void **state)
{
	(void)state;
	/* default-allow with a conditional deny (the old deny-list style) */
	struct kiln_seccomp_prog p = json_prog(
		"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[\n"
		" {\"names\":[\"socket\"],\"action\":\"SCMP_ACT_ALLOW\"},\n"
		" {\"names\":[\"socket\"],\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":40,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"bind\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":5},\n"
		" {\"names\":[\"bind\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":5,\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"listen\"],\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]},\n"
		" {\"names\":[\"listen\"],\"action\":\"SCMP_ACT_KILL_PROCESS\",\"args\":[{\"index\":0,\"value\":0,\"op\":\"SCMP_CMP_GE\"}]}\n"
		"]}", 0);
	/* a rule with the default action is dropped, the deny stays */
	assert_int_equal(call(&p, X86_64, nr64("socket"), 40, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, nr64("socket"), 2, 0), ALLOW);
	/* an unconditional rule wins over the syscall's argument rules */
	assert_int_equal(call(&p, X86_64, nr64("bind"), 7, 0), SECCOMP_RET_ERRNO | 5);
	/* argument rules: the first that matches, in the profile's order */
	assert_int_equal(call(&p, X86_64, nr64("listen"), 1, 0), EPERM_);
	assert_int_equal(call(&p, X86_64, nr64("listen"), 2, 0), SECCOMP_RET_KILL_PROCESS);
	kiln_seccomp_prog_free(&p);

	/* i386: a rule without arguments also covers socketcall/ipc's call */
	p = json_prog("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_X86\"],\"syscalls\":["
		      "{\"names\":[\"bind\",\"accept\",\"semget\"],\"action\":\"SCMP_ACT_ALLOW\"},"
		      "{\"names\":[\"socket\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":2,\"op\":\"SCMP_CMP_EQ\"}]}]}", 0);
	assert_int_equal(call(&p, I386, __NR_bind, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_socketcall, 2, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_socketcall, 5, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_socketcall, 1, 0), EPERM_);   /* socket had arguments */
	assert_int_equal(call(&p, I386, __NR_socket, 2, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_semget, 0, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_ipc, 2, 0), ALLOW);
	assert_int_equal(call(&p, I386, __NR_ipc, 1, 0), EPERM_);
	kiln_seccomp_prog_free(&p);
}

static void expect_error(const char *json, const char *words)
{
	struct kiln_sc_profile *prof = NULL;
	bool unconf = false;
	struct kiln_err err = {0};
	int r = kiln_seccomp_profile_parse(json, "bad.json", &prof, &unconf, &err);
	if (r == 0) {
		struct kiln_seccomp_prog p;
		r = kiln_seccomp_compile(prof, 0, KV(6, 1), &p, &err);
		kiln_seccomp_profile_free(prof);
		if (r == 0)
			kiln_seccomp_prog_free(&p);
	}
	if (r == 0)
		fail_msg("accepted: %s", json);
	if (!strstr(err.msg, words))
		fail_msg("error \"%s\" lacks \"%s\"", err.msg, words);
}

static void test_json_errors(void **state)
{
	(void)state;
	expect_error("{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [\n}", "bad.json:3");
	expect_error("{\"defaultAction\":\"SCMP_ACT_NOPE\"}", "unknown action \"SCMP_ACT_NOPE\"");
	expect_error("{\"syscalls\":[{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"}]}", "no action");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":\"X\"}]}",
		     "syscalls[0]: unknown action");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
		     "\"action\":\"SCMP_ACT_NOTIFY\"}]}", "not supported");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{},{\"names\":[\"read\"],\"action\":"
		     "\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_XX\"}]}]}",
		     "syscalls[0]: no action");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":"
		     "\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_XX\"}]}]}",
		     "syscalls[0].args[0]: unknown op");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":"
		     "\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":6,\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]}]}", "index");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"name\":\"read\",\"names\":[\"write\"],"
		     "\"action\":\"SCMP_ACT_ALLOW\"}]}", "both 'name' and 'names'");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_X86\"],\"archMap\":"
		     "[{\"architecture\":\"SCMP_ARCH_X86_64\"}],\"syscalls\":[]}", "both 'architectures' and 'archMap'");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_Z80\"]}",
		     "architectures[0]: unknown architecture");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":"
		     "\"SCMP_ACT_ALLOW\",\"includes\":{\"minKernel\":\"4\"}}]}", "minKernel");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":70000}", "errnoRet");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":"
		     "\"SCMP_ACT_ALLOW\"},{\"names\":[\"read\"],\"action\":\"SCMP_ACT_KILL\"}]}",
		     "different actions");
	expect_error("[1, 2]", "not a JSON object");
	expect_error("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"flags\":[\"SECCOMP_FILTER_FLAG_NEW_LISTENER\"]}",
		     "unsupported flag");

	/* neither a defaultAction nor syscalls: no filter (Docker) */
	struct kiln_sc_profile *prof = NULL;
	bool unconf = false;
	struct kiln_err err = {0};
	assert_int_equal(kiln_seccomp_profile_parse("{}", "e.json", &prof, &unconf, &err), 0);
	assert_true(unconf);
	assert_null(prof);
}

/* The program is compiled once per (profile, capabilities) in a process. */
static void test_prepare_cache(void **state)
{
	(void)state;
	struct kiln_sandbox_spec s;
	kiln_sandbox_spec_init(&s);
	struct kiln_err err = {0};
	const struct kiln_seccomp_prog *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS, &a, &err), 0);
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS, &b, &err), 0);
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS | CAPBIT(CAP_SYS_ADMIN), &c, &err), 0);
	assert_non_null(a);
	assert_ptr_equal(a, b);
	assert_ptr_not_equal(a, c);
	assert_int_equal(sys64(a, "mount", 0), EPERM_);
	assert_int_equal(sys64(c, "mount", 0), ALLOW);

	char path[] = "/tmp/kiln-seccomp-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *prof = "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
			   "\"action\":\"SCMP_ACT_ALLOW\"}]}";
	assert_int_equal(write(fd, prof, strlen(prof)), (ssize_t)strlen(prof));
	close(fd);
	s.seccomp = KILN_SECCOMP_FILE;
	s.seccomp_file = path;
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS, &b, &err), 0);
	assert_ptr_not_equal(a, b);
	assert_int_equal(sys64(b, "read", 0), ALLOW);
	assert_int_equal(sys64(b, "write", 0), EPERM_);
	/* a broken file: the error names it */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "{\"defaultAction\":1", 18), 18);
	close(fd);
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS, &b, &err), -1);
	assert_non_null(strstr(err.msg, path));
	/* an empty profile: no filter */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "{}", 2), 2);
	close(fd);
	b = a;
	assert_int_equal(kiln_seccomp_prepare(&s, DOCKER_CAPS, &b, &err), 0);
	assert_null(b);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_x86_64),
		cmocka_unit_test(test_default_x32_i386),
		cmocka_unit_test(test_default_caps),
		cmocka_unit_test(test_i386_direct_numbers),
		cmocka_unit_test(test_json_allow_list),
		cmocka_unit_test(test_json_args),
		cmocka_unit_test(test_json_conditions),
		cmocka_unit_test(test_json_precedence),
		cmocka_unit_test(test_json_errors),
		cmocka_unit_test(test_prepare_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
