/* kiln — the device filter: which device nodes a container may open.
 *
 * Docker's rule: a container may create any device node (mknod needs
 * CAP_MKNOD, which root in a container holds), but may open only the
 * pseudo-devices every program expects (null, zero, full, random, urandom,
 * tty, console, ptmx, the pts slaves, tun) plus what --device names.  A node
 * made with mknod, or shipped in an image, for a disk, the kernel log or
 * /dev/kvm is then an inert file.
 *
 * The kernel enforces it per cgroup: on v1 the devices controller (deny "a",
 * then one devices.allow write per rule); on v2 a BPF_PROG_TYPE_CGROUP_DEVICE
 * program attached to the container's cgroup.  The program is generated here
 * from the same rule list (no libbpf: a few instructions per rule) and, for
 * the default list, loaded once per process.
 */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"

/* Docker's default list (moby's oci defaults): deny everything, then allow
 * mknod of any node and rwm of the pseudo-devices. */
static const struct kiln_device_rule default_rules[] = {
	{'a', -1, -1, KILN_DEV_ALL, false},
	{'c', -1, -1, KILN_DEV_MKNOD, true},
	{'b', -1, -1, KILN_DEV_MKNOD, true},
	{'c', 1, 3, KILN_DEV_ALL, true},     /* null */
	{'c', 1, 5, KILN_DEV_ALL, true},     /* zero */
	{'c', 1, 7, KILN_DEV_ALL, true},     /* full */
	{'c', 1, 8, KILN_DEV_ALL, true},     /* random */
	{'c', 1, 9, KILN_DEV_ALL, true},     /* urandom */
	{'c', 5, 0, KILN_DEV_ALL, true},     /* tty */
	{'c', 5, 1, KILN_DEV_ALL, true},     /* console */
	{'c', 5, 2, KILN_DEV_ALL, true},     /* ptmx */
	{'c', 136, -1, KILN_DEV_ALL, true},  /* the pts slaves */
	{'c', 10, 200, KILN_DEV_ALL, true},  /* net/tun */
};

const struct kiln_device_rule *kiln_devices_default(size_t *n)
{
	*n = sizeof(default_rules) / sizeof(default_rules[0]);
	return default_rules;
}

int kiln_device_access_parse(const char *s, unsigned *out)
{
	unsigned a = 0;
	if (!s || !*s || strlen(s) > 3)
		return -1;
	for (const char *p = s; *p; p++) {
		unsigned bit = *p == 'r' ? KILN_DEV_READ : *p == 'w' ? KILN_DEV_WRITE : *p == 'm' ? KILN_DEV_MKNOD : 0;
		if (!bit || (a & bit))
			return -1;
		a |= bit;
	}
	*out = a;
	return 0;
}

/* "*" or a decimal number below 2^20 (the kernel's minor bits; majors
 * have 12). */
static int parse_num(const char *s, size_t len, uint32_t max, int32_t *out)
{
	if (len == 1 && s[0] == '*') {
		*out = -1;
		return 0;
	}
	if (!len || len > 7)
		return -1;
	uint32_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = (int32_t)v;
	return 0;
}

int kiln_device_rule_parse(const char *text, bool allow, struct kiln_device_rule *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	out->allow = allow;
	const char *t = text ? text : "";
	if (!strcmp(t, "a")) {
		out->type = 'a';
		out->major = out->minor = -1;
		out->access = KILN_DEV_ALL;
		return 0;
	}
	if ((t[0] != 'a' && t[0] != 'c' && t[0] != 'b') || t[1] != ' ')
		return kiln_err_set(err, 0, "invalid device rule \"%s\" (want TYPE MAJOR:MINOR ACCESS, e.g. "
				    "\"c 1:3 rwm\"; TYPE a, b or c)", t);
	out->type = t[0];
	const char *num = t + 2;
	const char *colon = strchr(num, ':');
	const char *space = colon ? strchr(colon, ' ') : NULL;
	if (!colon || !space ||
	    parse_num(num, (size_t)(colon - num), 0xfff, &out->major) < 0 ||
	    parse_num(colon + 1, (size_t)(space - colon - 1), 0xfffff, &out->minor) < 0 ||
	    kiln_device_access_parse(space + 1, &out->access) < 0)
		return kiln_err_set(err, 0, "invalid device rule \"%s\" (want TYPE MAJOR:MINOR ACCESS, e.g. "
				    "\"c 1:3 rwm\"; MAJOR and MINOR a number or *; ACCESS of r, w, m)", t);
	return 0;
}

void kiln_device_rule_format(const struct kiln_device_rule *r, char *buf, size_t len)
{
	char maj[16] = "*", min[16] = "*", acc[4];
	if (r->major >= 0)
		snprintf(maj, sizeof(maj), "%d", (int)r->major);
	if (r->minor >= 0)
		snprintf(min, sizeof(min), "%d", (int)r->minor);
	size_t n = 0;
	if (r->access & KILN_DEV_READ)
		acc[n++] = 'r';
	if (r->access & KILN_DEV_WRITE)
		acc[n++] = 'w';
	if (r->access & KILN_DEV_MKNOD)
		acc[n++] = 'm';
	acc[n] = '\0';
	snprintf(buf, len, "%c %s:%s %s", r->type, maj, min, acc);
}

static bool rule_matches(const struct kiln_device_rule *r, char type, uint32_t major, uint32_t minor,
			 unsigned access)
{
	return (r->type == 'a' || r->type == type) && (r->major < 0 || (uint32_t)r->major == major) &&
	       (r->minor < 0 || (uint32_t)r->minor == minor) && (access & ~r->access & KILN_DEV_ALL) == 0;
}

bool kiln_devices_allowed(const struct kiln_device_rule *rules, size_t n, char type, uint32_t major,
			  uint32_t minor, unsigned access)
{
	for (size_t i = n; i-- > 0;)
		if (rule_matches(&rules[i], type, major, minor, access))
			return rules[i].allow;
	return false;
}

/* ---------------------------------------------------------------- BPF */

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	struct bpf_insn i;
	memset(&i, 0, sizeof(i));
	i.code = code;
	i.dst_reg = dst & 0xf;
	i.src_reg = src & 0xf;
	i.off = off;
	i.imm = imm;
	return i;
}

#define LDX_W(dst, src, off)   insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)
#define MOV32_X(dst, src)      insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
#define MOV32_K(dst, k)        insn(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, k)
#define AND32_K(dst, k)        insn(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, k)
#define RSH32_K(dst, k)        insn(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, k)
#define JNE32_K(dst, k, off)   insn(BPF_JMP32 | BPF_JNE | BPF_K, dst, 0, off, k)
#define EXIT()                 insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* Registers after the prologue: r2 device type (BPF_DEVCG_DEV_*), r3 access
 * (BPF_DEVCG_ACC_*, the same bits as KILN_DEV_*), r4 major, r5 minor. */
size_t kiln_devices_bpf(const struct kiln_device_rule *rules, size_t n, struct bpf_insn *out, size_t cap)
{
	size_t len = 0;
#define EMIT(x) do { if (len < cap) out[len] = (x); len++; } while (0)
	EMIT(LDX_W(2, 1, 0));                 /* access_type = access << 16 | type */
	EMIT(MOV32_X(3, 2));
	EMIT(RSH32_K(3, 16));
	EMIT(AND32_K(2, 0xffff));
	EMIT(LDX_W(4, 1, 4));                 /* major */
	EMIT(LDX_W(5, 1, 8));                 /* minor */
	/* the last matching rule decides: test them from the end */
	for (size_t k = n; k-- > 0;) {
		const struct kiln_device_rule *r = &rules[k];
		bool t = r->type != 'a', a = (r->access & KILN_DEV_ALL) != KILN_DEV_ALL;
		bool ma = r->major >= 0, mi = r->minor >= 0;
		/* the block: its tests (each jumps past the block), the verdict */
		int blen = t + 3 * a + ma + mi + 2, at = 0;
		if (t) {
			EMIT(JNE32_K(2, r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK,
				     (int16_t)(blen - at - 1)));
			at++;
		}
		if (a) {
			/* any requested bit outside the rule's access: no match */
			EMIT(MOV32_X(1, 3));
			EMIT(AND32_K(1, (int32_t)(~r->access & KILN_DEV_ALL)));
			at += 2;
			EMIT(JNE32_K(1, 0, (int16_t)(blen - at - 1)));
			at++;
		}
		if (ma) {
			EMIT(JNE32_K(4, r->major, (int16_t)(blen - at - 1)));
			at++;
		}
		if (mi) {
			EMIT(JNE32_K(5, r->minor, (int16_t)(blen - at - 1)));
			at++;
		}
		EMIT(MOV32_K(0, r->allow ? 1 : 0));
		EMIT(EXIT());
		/* a rule that matches everything ends the program: what comes
		 * before it can never decide (and the verifier refuses dead code) */
		if (!t && !a && !ma && !mi)
			return len;
	}
	EMIT(MOV32_K(0, 0));
	EMIT(EXIT());
#undef EMIT
	return len;
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static int prog_load(const struct kiln_device_rule *rules, size_t n, struct kiln_err *err)
{
	size_t len = kiln_devices_bpf(rules, n, NULL, 0);
	struct bpf_insn *prog = kiln_xcalloc(len, sizeof(*prog));
	kiln_devices_bpf(rules, n, prog, len);
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	a.insns = (uint64_t)(uintptr_t)prog;
	a.insn_cnt = (uint32_t)len;
	a.license = (uint64_t)(uintptr_t)"GPL";
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) {
		int e = errno;
		/* again with the verifier's log, for the message */
		char *log = kiln_xcalloc(1, 8192);
		a.log_level = 1;
		a.log_size = 8192;
		a.log_buf = (uint64_t)(uintptr_t)log;
		int fd2 = (int)sys_bpf(BPF_PROG_LOAD, &a);
		if (fd2 >= 0)
			close(fd2);
		char *nl = strrchr(log, '\n');
		while (nl && nl > log && nl[1] == '\0') {
			*nl = '\0';
			nl = strrchr(log, '\n');
		}
		kiln_err_set(err, e, "device filter: loading the cgroup v2 device program (%zu instructions)%s%s",
			     len, log[0] ? ": " : "", log[0] ? (nl ? nl + 1 : log) : "");
		free(log);
		free(prog);
		return -1;
	}
	free(prog);
	return fd;
}

static bool is_default(const struct kiln_device_rule *rules, size_t n)
{
	return rules == default_rules && n == sizeof(default_rules) / sizeof(default_rules[0]);
}

/* The default program, loaded once per process (builds start many steps,
 * possibly from several threads). */
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static int default_prog = -1;

int kiln_devices_attach_bpf(const char *dir, const struct kiln_device_rule *rules, size_t n,
			    struct kiln_err *err)
{
	int prog;
	if (is_default(rules, n)) {
		pthread_mutex_lock(&default_lock);
		if (default_prog < 0)
			default_prog = prog_load(rules, n, err);
		prog = default_prog;
		pthread_mutex_unlock(&default_lock);
	} else {
		prog = prog_load(rules, n, err);
	}
	if (prog < 0)
		return -1;
	int cg = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;
	if (cg < 0) {
		r = kiln_err_set(err, errno, "device filter: opening the cgroup %s", dir);
	} else {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.target_fd = (uint32_t)cg;
		a.attach_bpf_fd = (uint32_t)prog;
		a.attach_type = BPF_CGROUP_DEVICE;
		/* the programs of the cgroups above (systemd's) keep running too:
		 * every one of them must allow an access */
		a.attach_flags = BPF_F_ALLOW_MULTI;
		if (sys_bpf(BPF_PROG_ATTACH, &a) < 0)
			r = kiln_err_set(err, errno, "device filter: attaching the device program to the cgroup %s",
					 dir);
		close(cg);
	}
	if (prog != default_prog)
		close(prog);
	return r;
}

int kiln_devices_apply_v1(const char *dir, const struct kiln_device_rule *rules, size_t n,
			  struct kiln_err *err)
{
	char path[4096];
	int fds[2] = {-1, -1};   /* devices.deny, devices.allow */
	static const char *const names[2] = {"devices.deny", "devices.allow"};
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		int w = rules[i].allow ? 1 : 0;
		snprintf(path, sizeof(path), "%s/%s", dir, names[w]);
		if (fds[w] < 0 && (fds[w] = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
			r = kiln_err_set(err, errno, "device filter: opening %s", path);
			break;
		}
		char rule[64];
		if (rules[i].type == 'a' && rules[i].major < 0 && rules[i].minor < 0 &&
		    rules[i].access == KILN_DEV_ALL)
			snprintf(rule, sizeof(rule), "a");
		else
			kiln_device_rule_format(&rules[i], rule, sizeof(rule));
		if (write(fds[w], rule, strlen(rule)) < 0)
			r = kiln_err_set(err, errno, "device filter: writing \"%s\" to %s", rule, path);
	}
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return r;
}

/* ---------------------------------------------------------------- --device */

int kiln_device_parse(const char *spec, struct kiln_device *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	out->access = KILN_DEV_ALL;
	char *dup = kiln_xstrdup(spec ? spec : "");
	char *parts[4] = {0};
	int n = 0;
	for (char *p = dup; n < 4;) {
		parts[n++] = p;
		char *c = strchr(p, ':');
		if (!c)
			break;
		*c = '\0';
		p = c + 1;
	}
	const char *host = parts[0], *ctr = NULL, *acc = NULL;
	int r = 0;
	if (n == 4 || !host[0]) {
		r = -1;
	} else if (n == 2) {
		/* HOST:CONTAINER or HOST:ACCESS (docker's rule: a valid mode is a mode) */
		unsigned tmp;
		if (kiln_device_access_parse(parts[1], &tmp) == 0)
			acc = parts[1];
		else
			ctr = parts[1];
	} else if (n == 3) {
		ctr = parts[1];
		acc = parts[2];
	}
	if (r == 0 && acc && kiln_device_access_parse(acc, &out->access) < 0)
		r = kiln_err_set(err, 0, "invalid --device \"%s\": access \"%s\" must be made of r, w and m", spec, acc);
	else if (r == 0 && host[0] != '/')
		r = kiln_err_set(err, 0, "invalid --device \"%s\": the host path must be absolute", spec);
	else if (r == 0 && ctr && ctr[0] != '/')
		r = kiln_err_set(err, 0, "invalid --device \"%s\": the container path must be absolute", spec);
	else if (r < 0)
		kiln_err_set(err, 0, "invalid --device \"%s\" (want HOST[:CONTAINER][:ACCESS], e.g. "
			     "/dev/fuse or /dev/sdb:/dev/xvdb:r)", spec ? spec : "");
	if (r == 0) {
		out->host = kiln_xstrdup(host);
		out->path = kiln_xstrdup(ctr ? ctr : host);
		size_t l = strlen(out->path);
		while (l > 1 && out->path[l - 1] == '/')
			out->path[--l] = '\0';
		if (!strcmp(out->path, "/"))
			r = kiln_err_set(err, 0, "invalid --device \"%s\": the container path must not be /", spec);
	}
	free(dup);
	if (r < 0)
		kiln_device_free(out);
	return r;
}

int kiln_device_resolve(struct kiln_device *d, struct kiln_err *err)
{
	struct stat st;
	if (stat(d->host, &st) < 0)
		return kiln_err_set(err, errno, "--device %s", d->host);
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
		return kiln_err_set(err, 0, "--device %s: not a character or block device", d->host);
	d->type = S_ISCHR(st.st_mode) ? 'c' : 'b';
	d->major = major(st.st_rdev);
	d->minor = minor(st.st_rdev);
	d->mode = st.st_mode & 07777;
	d->uid = st.st_uid;
	d->gid = st.st_gid;
	return 0;
}

void kiln_device_free(struct kiln_device *d)
{
	free(d->host);
	free(d->path);
	d->host = d->path = NULL;
}

struct kiln_device_rule *kiln_devices_rules(const struct kiln_device *devs, size_t n_devs, size_t *n)
{
	size_t nd;
	const struct kiln_device_rule *def = kiln_devices_default(&nd);
	struct kiln_device_rule *v = kiln_xcalloc(nd + n_devs, sizeof(*v));
	memcpy(v, def, nd * sizeof(*v));
	for (size_t i = 0; i < n_devs; i++)
		v[nd + i] = (struct kiln_device_rule){devs[i].type, (int32_t)devs[i].major, (int32_t)devs[i].minor,
						      devs[i].access, true};
	*n = nd + n_devs;
	return v;
}
