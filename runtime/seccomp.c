/* kiln — seccomp through libseccomp.
 *
 * The default profile implements the intent of Docker's default profile as a
 * default-allow filter with an errno deny list: syscalls that Docker only
 * allows with a capability are denied with EPERM unless the container holds
 * that capability (mount/umount/unshare/setns/pivot_root need SYS_ADMIN,
 * module loading SYS_MODULE, reboot SYS_BOOT, clock setting SYS_TIME, ...),
 * plus the ones Docker never allows (kexec, keyctl/add_key/request_key,
 * userfaultfd, open_by_handle_at without DAC_READ_SEARCH, the new mount API,
 * namespaces through clone flags, bpf and perf_event_open without their caps,
 * io_uring).  clone3 answers ENOSYS (as Docker does) so libcs fall back to
 * clone, whose flags can be checked.  32-bit x86 syscalls get the same rules.
 *
 * A FILE profile is a Docker/OCI JSON document: defaultAction, architectures,
 * syscalls[{names, action, errnoRet, args[{index, value, valueTwo, op}]}].
 */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <errno.h>
#include <jansson.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <linux/capability.h>

#include "common/util.h"

struct deny {
	const char *name;
	int cap;            /* allowed when this cap is held; -1 = never */
	int cap2;           /* or this one; -1 = none */
};

static const struct deny deny_list[] = {
	{"acct", CAP_SYS_PACCT, -1},
	{"add_key", -1, -1},
	{"bpf", CAP_SYS_ADMIN, 39 /* CAP_BPF */},
	{"clock_adjtime", CAP_SYS_TIME, -1},
	{"clock_settime", CAP_SYS_TIME, -1},
	{"create_module", CAP_SYS_MODULE, -1},
	{"delete_module", CAP_SYS_MODULE, -1},
	{"finit_module", CAP_SYS_MODULE, -1},
	{"init_module", CAP_SYS_MODULE, -1},
	{"get_kernel_syms", -1, -1},
	{"move_pages", CAP_SYS_NICE, -1},
	{"ioperm", CAP_SYS_RAWIO, -1},
	{"iopl", CAP_SYS_RAWIO, -1},
	{"kcmp", CAP_SYS_PTRACE, -1},
	{"process_vm_readv", CAP_SYS_PTRACE, -1},
	{"process_vm_writev", CAP_SYS_PTRACE, -1},
	{"kexec_file_load", CAP_SYS_BOOT, -1},
	{"kexec_load", CAP_SYS_BOOT, -1},
	{"reboot", CAP_SYS_BOOT, -1},
	{"keyctl", -1, -1},
	{"request_key", -1, -1},
	{"lookup_dcookie", CAP_SYS_ADMIN, -1},
	{"mount", CAP_SYS_ADMIN, -1},
	{"umount", CAP_SYS_ADMIN, -1},
	{"umount2", CAP_SYS_ADMIN, -1},
	{"pivot_root", CAP_SYS_ADMIN, -1},
	{"setns", CAP_SYS_ADMIN, -1},
	{"unshare", CAP_SYS_ADMIN, -1},
	{"fsopen", CAP_SYS_ADMIN, -1},
	{"fsconfig", CAP_SYS_ADMIN, -1},
	{"fsmount", CAP_SYS_ADMIN, -1},
	{"fspick", CAP_SYS_ADMIN, -1},
	{"move_mount", CAP_SYS_ADMIN, -1},
	{"open_tree", CAP_SYS_ADMIN, -1},
	{"mount_setattr", CAP_SYS_ADMIN, -1},
	{"quotactl", CAP_SYS_ADMIN, -1},
	{"quotactl_fd", CAP_SYS_ADMIN, -1},
	{"swapon", CAP_SYS_ADMIN, -1},
	{"swapoff", CAP_SYS_ADMIN, -1},
	{"sethostname", CAP_SYS_ADMIN, -1},
	{"setdomainname", CAP_SYS_ADMIN, -1},
	{"nfsservctl", -1, -1},
	{"name_to_handle_at", CAP_SYS_ADMIN, -1},
	{"open_by_handle_at", CAP_DAC_READ_SEARCH, -1},
	{"perf_event_open", CAP_SYS_ADMIN, 38 /* CAP_PERFMON */},
	{"query_module", -1, -1},
	{"settimeofday", CAP_SYS_TIME, -1},
	{"stime", CAP_SYS_TIME, -1},
	{"adjtimex", CAP_SYS_TIME, -1},
	{"syslog", CAP_SYSLOG, -1},
	{"_sysctl", -1, -1},
	{"sysfs", -1, -1},
	{"uselib", -1, -1},
	{"userfaultfd", -1, -1},
	{"ustat", -1, -1},
	{"vm86", -1, -1},
	{"vm86old", -1, -1},
	{"io_uring_setup", -1, -1},
	{"io_uring_enter", -1, -1},
	{"io_uring_register", -1, -1},
	{"fanotify_init", CAP_SYS_ADMIN, -1},
	{"lsm_set_self_attr", -1, -1},
};

static bool has(uint64_t caps, int c)
{
	return c >= 0 && (caps & (1ULL << c));
}

static int add_arches(scmp_filter_ctx ctx)
{
#if defined(__x86_64__)
	int r = seccomp_arch_add(ctx, SCMP_ARCH_X86);
	if (r < 0 && r != -EEXIST)
		return r;
	r = seccomp_arch_add(ctx, SCMP_ARCH_X32);
	if (r < 0 && r != -EEXIST)
		return r;
#else
	(void)ctx;
#endif
	return 0;
}

static int default_profile(scmp_filter_ctx ctx, uint64_t caps)
{
	for (size_t i = 0; i < sizeof(deny_list) / sizeof(deny_list[0]); i++) {
		const struct deny *d = &deny_list[i];
		if (has(caps, d->cap) || has(caps, d->cap2))
			continue;
		int nr = seccomp_syscall_resolve_name(d->name);
		if (nr == __NR_SCMP_ERROR)
			continue;
		int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
		if (r < 0 && r != -EOPNOTSUPP && r != -EDOM)
			return r;
	}
	if (!has(caps, CAP_SYS_ADMIN)) {
		/* clone with any namespace flag -> EPERM; clone3 -> ENOSYS */
		static const unsigned long nsflags[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC,
			CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, 0x00000080 /* CLONE_NEWTIME */};
		for (size_t i = 0; i < sizeof(nsflags) / sizeof(nsflags[0]); i++) {
			int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
						 SCMP_A0(SCMP_CMP_MASKED_EQ, nsflags[i], nsflags[i]));
			if (r < 0)
				return r;
		}
		int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
		if (r < 0 && r != -EDOM)
			return r;
	}
	/* personality: only the harmless personas (Docker allows 0, 8, 0x20000, 0x20008, 0xffffffff) */
	return 0;
}

static int parse_action(const char *s, json_t *errno_ret, uint32_t *out)
{
	int e = json_is_integer(errno_ret) ? (int)json_integer_value(errno_ret) : EPERM;
	if (!strcmp(s, "SCMP_ACT_ALLOW")) *out = SCMP_ACT_ALLOW;
	else if (!strcmp(s, "SCMP_ACT_ERRNO")) *out = SCMP_ACT_ERRNO((uint32_t)e);
	else if (!strcmp(s, "SCMP_ACT_KILL") || !strcmp(s, "SCMP_ACT_KILL_THREAD")) *out = SCMP_ACT_KILL;
	else if (!strcmp(s, "SCMP_ACT_KILL_PROCESS")) *out = SCMP_ACT_KILL_PROCESS;
	else if (!strcmp(s, "SCMP_ACT_TRAP")) *out = SCMP_ACT_TRAP;
	else if (!strcmp(s, "SCMP_ACT_LOG")) *out = SCMP_ACT_LOG;
	else if (!strcmp(s, "SCMP_ACT_TRACE")) *out = SCMP_ACT_TRACE((uint32_t)e);
	else return -1;
	return 0;
}

static int parse_op(const char *s, enum scmp_compare *op)
{
	static const struct { const char *n; enum scmp_compare op; } t[] = {
		{"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT}, {"SCMP_CMP_LE", SCMP_CMP_LE},
		{"SCMP_CMP_EQ", SCMP_CMP_EQ}, {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
		{"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(s, t[i].n)) {
			*op = t[i].op;
			return 0;
		}
	return -1;
}

static int file_profile(const char *path, const char *text, scmp_filter_ctx *out, struct kiln_err *err)
{
	json_error_t je;
	json_t *root = text ? json_loads(text, 0, &je) : json_load_file(path, 0, &je);
	if (!root)
		return kiln_err_set(err, 0, "seccomp profile %s: %s (line %d)", path, je.text, je.line);
	int ret = -1;
	scmp_filter_ctx ctx = NULL;
	const char *defact = json_string_value(json_object_get(root, "defaultAction"));
	uint32_t act;
	if (!defact || parse_action(defact, json_object_get(root, "defaultErrnoRet"), &act) < 0) {
		kiln_err_set(err, 0, "seccomp profile %s: missing or unknown defaultAction", path);
		goto out;
	}
	ctx = seccomp_init(act);
	if (!ctx) {
		kiln_err_set(err, 0, "seccomp_init failed");
		goto out;
	}
	json_t *arches = json_object_get(root, "architectures");
	size_t i;
	json_t *a;
	json_array_foreach(arches, i, a) {
		const char *n = json_string_value(a);
		if (!n || strncmp(n, "SCMP_ARCH_", 10))
			continue;
		char lower[32];
		size_t k = 0;
		for (const char *p = n + 10; *p && k + 1 < sizeof(lower); p++)
			lower[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		lower[k] = '\0';
		uint32_t arch = seccomp_arch_resolve_name(lower);
		if (arch && arch != seccomp_arch_native()) {
			int r = seccomp_arch_add(ctx, arch);
			if (r < 0 && r != -EEXIST)
				continue;
		}
	}
	json_t *sc;
	json_array_foreach(json_object_get(root, "syscalls"), i, sc) {
		const char *as = json_string_value(json_object_get(sc, "action"));
		uint32_t sact;
		if (!as || parse_action(as, json_object_get(sc, "errnoRet"), &sact) < 0) {
			kiln_err_set(err, 0, "seccomp profile %s: unknown action in syscalls[%zu]", path, i);
			goto out;
		}
		if (sact == act)
			continue;
		struct scmp_arg_cmp cmps[6];
		unsigned ncmp = 0;
		size_t j;
		json_t *arg;
		json_array_foreach(json_object_get(sc, "args"), j, arg) {
			if (ncmp >= 6)
				break;
			enum scmp_compare op;
			const char *ops = json_string_value(json_object_get(arg, "op"));
			if (!ops || parse_op(ops, &op) < 0) {
				kiln_err_set(err, 0, "seccomp profile %s: unknown op in syscalls[%zu]", path, i);
				goto out;
			}
			cmps[ncmp].arg = (unsigned)json_integer_value(json_object_get(arg, "index"));
			cmps[ncmp].op = op;
			cmps[ncmp].datum_a = (scmp_datum_t)json_integer_value(json_object_get(arg, "value"));
			cmps[ncmp].datum_b = (scmp_datum_t)json_integer_value(json_object_get(arg, "valueTwo"));
			ncmp++;
		}
		json_t *names = json_object_get(sc, "names");
		size_t k;
		json_t *nm;
		json_array_foreach(names, k, nm) {
			const char *n = json_string_value(nm);
			int nr = n ? seccomp_syscall_resolve_name(n) : __NR_SCMP_ERROR;
			if (nr == __NR_SCMP_ERROR)
				continue;
			seccomp_rule_add_array(ctx, sact, nr, ncmp, cmps);
		}
	}
	*out = ctx;
	ctx = NULL;
	ret = 0;
out:
	if (ctx)
		seccomp_release(ctx);
	json_decref(root);
	return ret;
}

int kiln_seccomp_load(const struct kiln_sandbox_spec *spec, uint64_t caps, const char *profile_text,
		      struct kiln_err *err)
{
	scmp_filter_ctx ctx = NULL;
	if (spec->seccomp == KILN_SECCOMP_FILE) {
		if (file_profile(spec->seccomp_file, profile_text, &ctx, err) < 0)
			return -1;
	} else {
		ctx = seccomp_init(SCMP_ACT_ALLOW);
		if (!ctx)
			return kiln_err_set(err, 0, "seccomp_init failed");
		int r = add_arches(ctx);
		if (r == 0)
			r = default_profile(ctx, caps);
		if (r < 0) {
			seccomp_release(ctx);
			return kiln_err_set(err, -r, "building the default seccomp profile");
		}
	}
	/* no_new_privs is the caller's business (only when asked) */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	int r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0)
		return kiln_err_set(err, -r, "loading the seccomp filter");
	return 0;
}
