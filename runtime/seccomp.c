/* kiln — seccomp: Docker JSON profiles, and kiln's own BPF compiler.
 *
 * libseccomp serves only as the syscall name tables.  Generating a filter
 * through it costs ~15 ms for Docker's ~370-name allow-list on three ABIs,
 * more than a whole container start; the compiler below builds the same
 * decisions in well under a millisecond:
 *
 *   ld arch; x86-64 -> ld nr; nr < 0x40000000 ? x86-64 tree : x32 tree
 *            i386   -> ld nr; i386 tree
 *            other  -> kill the process
 *
 * A tree is a binary search over the syscall numbers, in ranges: consecutive
 * numbers with one plain action share a leaf, so a lookup is ~10 compares.
 * A syscall with argument rules gets its rules inline at its leaf: each rule
 * a chain of 64-bit compares (32-bit on i386, whose arguments the kernel
 * truncates), the first rule that matches decides, else the default.
 *
 * Rule semantics follow Docker's (through runc and libseccomp): a rule whose
 * action is the default one is dropped; an unconditional rule for a syscall
 * wins over its argument rules; conditions on one argument index given twice
 * make one rule per condition; unknown syscall names are skipped; on i386 a
 * rule without arguments for a socketcall/ipc multiplexed call also matches
 * that call through socketcall(2)/ipc(2). */
#include "runtime/seccomp.h"
#include "runtime/internal.h"

#include <errno.h>
#include <jansson.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/util.h"

#define X32_BIT 0x40000000u
#define RET_BADARCH SECCOMP_RET_KILL_PROCESS
#define MAX_INSNS 4096   /* BPF_MAXINSNS */

/* ------------------------------------------------------------ syscall numbers */

/* Allowed by Docker's default profile but newer than the libseccomp of
 * Debian 12: numbers from the kernel's tables (one number on every ABI since
 * 5.1, x32 adds its bit; -1: not on that ABI). */
static const struct {
	const char *name;
	int x86_64, x86;
} newer[] = {
	{"uretprobe", 335, -1},
	{"statmount", 457, 457},
	{"listmount", 458, 458},
	{"lsm_get_self_attr", 459, 459},
	{"lsm_set_self_attr", 460, 460},
	{"lsm_list_modules", 461, 461},
	{"mseal", 462, 462},
	{"setxattrat", 463, 463},
	{"getxattrat", 464, 464},
	{"listxattrat", 465, 465},
	{"removexattrat", 466, 466},
};

/* i386: the socket and SysV IPC calls libseccomp names as socketcall(2) /
 * ipc(2) multiplexed calls, with their direct syscalls (Linux 4.3 / 5.1). */
static const struct {
	const char *name;
	int nr;
} x86_direct[] = {
	{"socket", 359}, {"socketpair", 360}, {"bind", 361}, {"connect", 362}, {"listen", 363},
	{"accept4", 364}, {"getsockopt", 365}, {"setsockopt", 366}, {"getsockname", 367},
	{"getpeername", 368}, {"sendto", 369}, {"sendmsg", 370}, {"recvfrom", 371}, {"recvmsg", 372},
	{"shutdown", 373}, {"recvmmsg", 337}, {"sendmmsg", 345}, {"semget", 393}, {"semctl", 394},
	{"shmget", 395}, {"shmctl", 396}, {"shmat", 397}, {"shmdt", 398}, {"msgget", 399},
	{"msgsnd", 400}, {"msgrcv", 401}, {"msgctl", 402},
};
#define X86_SOCKETCALL 102
#define X86_IPC 117

enum sc_abi { ABI_X86_64, ABI_X86, ABI_X32, ABI_N };
static const unsigned abi_bit[ABI_N] = {KILN_SC_ARCH_X86_64, KILN_SC_ARCH_X86, KILN_SC_ARCH_X32};
static const uint32_t abi_scmp[ABI_N] = {SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32};

/* name -> syscall number on abi (x32: with its bit), or -1; *mux: the
 * socketcall/ipc call number on i386 (0: none), *mux_nr its syscall. */
static int resolve(enum sc_abi abi, const char *name, int *mux, int *mux_nr)
{
	*mux = 0;
	*mux_nr = -1;
	int nr = seccomp_syscall_resolve_name_arch(abi_scmp[abi], name);
	if (nr >= 0)
		return nr;
	if (abi == ABI_X86 && nr <= -100 && nr > -300) {
		/* libseccomp's pseudo numbers: -1xx socketcall, -2xx ipc */
		*mux = nr > -200 ? -nr - 100 : -nr - 200;
		*mux_nr = nr > -200 ? X86_SOCKETCALL : X86_IPC;
		for (size_t i = 0; i < sizeof(x86_direct) / sizeof(x86_direct[0]); i++)
			if (!strcmp(x86_direct[i].name, name))
				return x86_direct[i].nr;
		return -1;
	}
	if (nr != __NR_SCMP_ERROR)
		return -1;      /* known, not on this ABI */
	for (size_t i = 0; i < sizeof(newer) / sizeof(newer[0]); i++)
		if (!strcmp(newer[i].name, name)) {
			if (abi == ABI_X86)
				return newer[i].x86;
			if (abi == ABI_X32)
				return newer[i].x86 < 0 ? -1 : (int)(X32_BIT | (unsigned)newer[i].x86);
			return newer[i].x86_64;
		}
	return -1;
}

/* ------------------------------------------------------------ conditions */

static unsigned running_kernel(void)
{
	static unsigned v;
	if (v)
		return v;
	struct utsname u;
	unsigned a = 0, b = 0;
	if (uname(&u) == 0 && sscanf(u.release, "%u.%u", &a, &b) == 2)
		v = a << 16 | (b & 0xffff);
	else
		v = 1;
	return v;
}

static bool native_listed(const char *const *arches)
{
	for (; arches && *arches; arches++)
#if defined(__x86_64__)
		if (!strcmp(*arches, "amd64"))
#else
		if (0)
#endif
			return true;
	return false;
}

static bool group_applies(const struct kiln_sc_group *g, uint64_t caps, unsigned kernel)
{
	const struct kiln_sc_filter *in = &g->inc, *ex = &g->exc;
	if (ex->arches && native_listed(ex->arches))
		return false;
	if (ex->caps & caps)
		return false;
	if (ex->min_kernel && kernel >= ex->min_kernel)
		return false;
	if (in->arches && !native_listed(in->arches))
		return false;
	if (in->unknown_cap || (in->caps & caps) != in->caps)
		return false;
	if (in->min_kernel && kernel < in->min_kernel)
		return false;
	return true;
}

/* ------------------------------------------------------------ rules per ABI */

struct rule {
	uint32_t nr;
	uint32_t action;
	unsigned seq;
	unsigned n_args;
	const struct kiln_sc_arg *args;   /* the group's (stable while compiling), or &one */
	struct kiln_sc_arg one;           /* a condition made here (socketcall/ipc call) */
};

static const struct kiln_sc_arg *rule_args(const struct rule *r)
{
	return r->args ? r->args : &r->one;
}

struct ruleset {
	struct rule *v;
	size_t n, cap;
};

/* args: kept by pointer; own: one condition copied into the rule */
static void rules_add(struct ruleset *rs, uint32_t nr, uint32_t action, const struct kiln_sc_arg *args,
		      unsigned n_args, const struct kiln_sc_arg *own)
{
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 512;
		rs->v = kiln_xrealloc(rs->v, rs->cap * sizeof(*rs->v));
	}
	struct rule *r = &rs->v[rs->n];
	r->nr = nr;
	r->action = action;
	r->seq = (unsigned)rs->n++;
	r->n_args = own ? 1 : n_args;
	r->args = own ? NULL : args;
	if (own)
		r->one = *own;
}

static int rule_cmp(const void *a, const void *b)
{
	const struct rule *x = a, *y = b;
	if (x->nr != y->nr)
		return x->nr < y->nr ? -1 : 1;
	if ((x->n_args == 0) != (y->n_args == 0))
		return x->n_args == 0 ? -1 : 1;   /* unconditional first */
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every rule of prof that applies, for abi. */
static void collect(const struct kiln_sc_profile *prof, enum sc_abi abi, uint64_t caps, unsigned kernel,
		    struct ruleset *rs)
{
	for (size_t gi = 0; gi < prof->n_groups; gi++) {
		const struct kiln_sc_group *g = &prof->groups[gi];
		if (g->action == prof->default_action || !group_applies(g, caps, kernel))
			continue;
		/* one index given twice: one rule per condition (runc) */
		bool split = false;
		for (unsigned i = 0; i < g->n_args; i++)
			for (unsigned j = i + 1; j < g->n_args; j++)
				if (g->args[i].index == g->args[j].index)
					split = true;
		for (const char *const *n = g->names; n && *n; n++) {
			int mux, mux_nr;
			int nr = resolve(abi, *n, &mux, &mux_nr);
			if (nr >= 0) {
				if (split)
					for (unsigned i = 0; i < g->n_args; i++)
						rules_add(rs, (uint32_t)nr, g->action, &g->args[i], 1, NULL);
				else
					rules_add(rs, (uint32_t)nr, g->action, g->args, g->n_args, NULL);
			}
			if (mux && g->n_args == 0) {
				struct kiln_sc_arg call = {0, KILN_SC_EQ, (uint64_t)mux, 0, true};
				rules_add(rs, (uint32_t)mux_nr, g->action, NULL, 0, &call);
			}
		}
	}
}

/* ------------------------------------------------------------ BPF assembly */

struct bpf {
	struct sock_filter *v;
	size_t n, cap;
	bool too_far;        /* a conditional jump over more than 255 instructions */
};

static size_t emit(struct bpf *b, uint16_t code, uint32_t k)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 1024;
		b->v = kiln_xrealloc(b->v, b->cap * sizeof(*b->v));
	}
	b->v[b->n] = (struct sock_filter){code, 0, 0, k};
	return b->n++;
}

static size_t emit_jmp(struct bpf *b, uint16_t op, uint32_t k)
{
	return emit(b, BPF_JMP | op | BPF_K, k);
}

/* Forward jump targets, patched once the label's place is known. */
#define MAX_PATCH 64
struct label {
	struct { size_t at; bool jt; } p[MAX_PATCH];
	unsigned n;
};

static void label_use(struct bpf *b, struct label *l, size_t at, bool jt)
{
	if (l->n >= MAX_PATCH) {
		b->too_far = true;
		return;
	}
	l->p[l->n].at = at;
	l->p[l->n].jt = jt;
	l->n++;
}

static void label_here(struct bpf *b, struct label *l)
{
	for (unsigned i = 0; i < l->n; i++) {
		size_t off = b->n - l->p[i].at - 1;
		if (off > 255)
			b->too_far = true;
		if (l->p[i].jt)
			b->v[l->p[i].at].jt = (uint8_t)off;
		else
			b->v[l->p[i].at].jf = (uint8_t)off;
	}
	l->n = 0;
}

/* Point the ja at `at` here (ja has 32 bits of offset). */
static void ja_here(struct bpf *b, size_t at)
{
	b->v[at].k = (uint32_t)(b->n - at - 1);
}

#define ARG_LO(i) ((uint32_t)(16 + 8 * (i)))
#define ARG_HI(i) ((uint32_t)(20 + 8 * (i)))

/* i386 (and int arguments, lo32): the kernel truncates arguments to 32 bits,
 * so the high word is 0 to it and a condition on it is decided here: -1
 * never holds, 1 always, 0 test the low word. */
static int cond_const(const struct kiln_sc_arg *a, bool wide)
{
	uint32_t vhi = (uint32_t)(a->value >> 32), dhi = (uint32_t)(a->value2 >> 32);
	if (wide)
		return 0;
	switch (a->op) {
	case KILN_SC_EQ: case KILN_SC_GT: case KILN_SC_GE:
		return vhi ? -1 : 0;
	case KILN_SC_NE: case KILN_SC_LT: case KILN_SC_LE:
		return vhi ? 1 : 0;
	case KILN_SC_MASKED_EQ:
		return dhi ? -1 : 0;
	}
	return 0;
}

/* One condition: fall through when it holds, jump to fail when not.  64-bit
 * values compare unsigned, high word first. */
static void emit_cond(struct bpf *b, const struct kiln_sc_arg *a, bool wide, struct label *fail)
{
	uint32_t vlo = (uint32_t)a->value, vhi = (uint32_t)(a->value >> 32);
	uint32_t dlo = (uint32_t)a->value2, dhi = (uint32_t)(a->value2 >> 32);
	struct label pass = {0};
	if (wide) {
		emit(b, BPF_LD | BPF_W | BPF_ABS, ARG_HI(a->index));
		switch (a->op) {
		case KILN_SC_EQ:
			label_use(b, fail, emit_jmp(b, BPF_JEQ, vhi), false);
			break;
		case KILN_SC_NE:
			label_use(b, &pass, emit_jmp(b, BPF_JEQ, vhi), false);
			break;
		case KILN_SC_GT: case KILN_SC_GE:
			label_use(b, &pass, emit_jmp(b, BPF_JGT, vhi), true);
			label_use(b, fail, emit_jmp(b, BPF_JEQ, vhi), false);
			break;
		case KILN_SC_LT: case KILN_SC_LE:
			label_use(b, fail, emit_jmp(b, BPF_JGT, vhi), true);
			label_use(b, &pass, emit_jmp(b, BPF_JEQ, vhi), false);
			break;
		case KILN_SC_MASKED_EQ:
			emit(b, BPF_ALU | BPF_AND | BPF_K, vhi);
			label_use(b, fail, emit_jmp(b, BPF_JEQ, dhi), false);
			break;
		}
	}
	emit(b, BPF_LD | BPF_W | BPF_ABS, ARG_LO(a->index));
	switch (a->op) {
	case KILN_SC_EQ:
		label_use(b, fail, emit_jmp(b, BPF_JEQ, vlo), false);
		break;
	case KILN_SC_NE:
		label_use(b, fail, emit_jmp(b, BPF_JEQ, vlo), true);
		break;
	case KILN_SC_GT:
		label_use(b, fail, emit_jmp(b, BPF_JGT, vlo), false);
		break;
	case KILN_SC_GE:
		label_use(b, fail, emit_jmp(b, BPF_JGE, vlo), false);
		break;
	case KILN_SC_LT:
		label_use(b, fail, emit_jmp(b, BPF_JGE, vlo), true);
		break;
	case KILN_SC_LE:
		label_use(b, fail, emit_jmp(b, BPF_JGT, vlo), true);
		break;
	case KILN_SC_MASKED_EQ:
		emit(b, BPF_ALU | BPF_AND | BPF_K, vlo);
		label_use(b, fail, emit_jmp(b, BPF_JEQ, dlo), false);
		break;
	}
	label_here(b, &pass);
}

/* Syscall numbers [start, the next interval's start) and what they get. */
struct interval {
	uint32_t start;
	const struct rule *rules;   /* NULL: the default action */
	size_t n_rules;
	bool plain;                 /* rules[0] without arguments decides */
};

static void emit_leaf(struct bpf *b, const struct interval *iv, uint32_t def, bool wide)
{
	if (!iv->rules || iv->plain) {
		emit(b, BPF_RET | BPF_K, iv->rules ? iv->rules[0].action : def);
		return;
	}
	for (size_t i = 0; i < iv->n_rules; i++) {
		const struct rule *r = &iv->rules[i];
		const struct kiln_sc_arg *args = rule_args(r);
		bool never = false;
		for (unsigned a = 0; a < r->n_args; a++)
			never |= cond_const(&args[a], wide && !args[a].lo32) < 0;
		if (never)
			continue;
		struct label fail = {0};
		for (unsigned a = 0; a < r->n_args; a++)
			if (cond_const(&args[a], wide && !args[a].lo32) == 0)
				emit_cond(b, &args[a], wide && !args[a].lo32, &fail);
		emit(b, BPF_RET | BPF_K, r->action);
		label_here(b, &fail);
	}
	emit(b, BPF_RET | BPF_K, def);
}

static void emit_tree(struct bpf *b, const struct interval *iv, size_t n, uint32_t def, bool wide)
{
	if (n == 1) {
		emit_leaf(b, iv, def, wide);
		return;
	}
	size_t mid = n / 2;
	emit_jmp(b, BPF_JGE, iv[mid].start);           /* jt: the ja below; jf: the left half */
	b->v[b->n - 1].jf = 1;
	size_t right = emit(b, BPF_JMP | BPF_JA, 0);
	emit_tree(b, iv, mid, def, wide);
	ja_here(b, right);
	emit_tree(b, iv + mid, n - mid, def, wide);
}

/* The tree for one ABI, whose syscall numbers start at lo (nr in A). */
static int emit_abi(struct bpf *b, struct ruleset *rs, uint32_t lo, uint32_t def, bool wide, const char *abi,
		    struct kiln_err *err)
{
	qsort(rs->v, rs->n, sizeof(*rs->v), rule_cmp);
	struct interval *iv = kiln_xcalloc(2 * rs->n + 2, sizeof(*iv));
	size_t n = 0;
	uint64_t cur = lo;     /* the first number not covered yet */
	for (size_t i = 0; i < rs->n;) {
		size_t j = i;
		while (j < rs->n && rs->v[j].nr == rs->v[i].nr)
			j++;
		const struct rule *r = &rs->v[i];
		bool plain = r->n_args == 0;
		if (plain)   /* an unconditional rule wins; two must agree */
			for (size_t k = i + 1; k < j && rs->v[k].n_args == 0; k++)
				if (rs->v[k].action != r->action) {
					free(iv);
					return kiln_err_set(err, 0, "%s syscall %u has two rules without arguments and "
							    "different actions", abi, r->nr);
				}
		size_t cnt = j - i;
		i = j;
		if (r->nr < cur)
			continue;   /* below this ABI's numbers */
		if (r->nr > cur)
			iv[n++] = (struct interval){.start = (uint32_t)cur};
		else if (n && plain && iv[n - 1].plain && iv[n - 1].rules[0].action == r->action) {
			cur = (uint64_t)r->nr + 1;   /* extends the run before it */
			continue;
		}
		iv[n++] = (struct interval){.start = r->nr, .rules = r, .n_rules = plain ? 1 : cnt,
					    .plain = plain};
		cur = (uint64_t)r->nr + 1;
	}
	if (!n || cur <= UINT32_MAX)
		iv[n++] = (struct interval){.start = (uint32_t)cur};
	emit_tree(b, iv, n, def, wide);
	free(iv);
	return 0;
}

int kiln_seccomp_compile(const struct kiln_sc_profile *prof, uint64_t caps, unsigned kernel,
			 struct kiln_seccomp_prog *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
#if !defined(__x86_64__)
	(void)prof; (void)caps; (void)kernel;
	return kiln_err_set(err, 0, "seccomp: kiln compiles filters for x86-64 only");
#else
	if (!kernel)
		kernel = running_kernel();
	unsigned arches = prof->arches | KILN_SC_ARCH_X86_64;   /* the native one is always in */
	struct ruleset rs[ABI_N] = {{0}};
	for (int a = 0; a < ABI_N; a++)
		if (arches & abi_bit[a])
			collect(prof, (enum sc_abi)a, caps, kernel, &rs[a]);
	struct bpf b = {0};
	size_t to_x86 = 0, to_x32 = 0;   /* their ja */
	int ret = -1;
	uint32_t def = prof->default_action;

	emit(&b, BPF_LD | BPF_W | BPF_ABS, 4);                      /* arch */
	if (arches & KILN_SC_ARCH_X86) {
		emit_jmp(&b, BPF_JEQ, AUDIT_ARCH_I386);
		b.v[b.n - 1].jf = 1;
		to_x86 = emit(&b, BPF_JMP | BPF_JA, 0);
	}
	emit_jmp(&b, BPF_JEQ, AUDIT_ARCH_X86_64);
	b.v[b.n - 1].jt = 1;
	emit(&b, BPF_RET | BPF_K, RET_BADARCH);
	/* x86-64 and x32 share the audit arch: x32 numbers have bit 30 set */
	emit(&b, BPF_LD | BPF_W | BPF_ABS, 0);                      /* nr */
	emit_jmp(&b, BPF_JGE, X32_BIT);
	b.v[b.n - 1].jf = 1;
	if (arches & KILN_SC_ARCH_X32)
		to_x32 = emit(&b, BPF_JMP | BPF_JA, 0);
	else
		emit(&b, BPF_RET | BPF_K, RET_BADARCH);
	if (emit_abi(&b, &rs[ABI_X86_64], 0, def, true, "x86-64", err) < 0)
		goto out;
	if (arches & KILN_SC_ARCH_X32) {
		ja_here(&b, to_x32);
		if (emit_abi(&b, &rs[ABI_X32], X32_BIT, def, true, "x32", err) < 0)
			goto out;
	}
	if (arches & KILN_SC_ARCH_X86) {
		ja_here(&b, to_x86);
		emit(&b, BPF_LD | BPF_W | BPF_ABS, 0);
		if (emit_abi(&b, &rs[ABI_X86], 0, def, false, "i386", err) < 0)
			goto out;
	}
	if (b.too_far || b.n > MAX_INSNS) {
		kiln_err_set(err, 0, "the seccomp profile makes a filter of %zu instructions, more than the "
			     "kernel's %d", b.n, MAX_INSNS);
		goto out;
	}
	out->insn = b.v;
	out->len = (unsigned short)b.n;
	out->flags = prof->flags;
	b.v = NULL;
	ret = 0;
out:
	free(b.v);
	for (int a = 0; a < ABI_N; a++)
		free(rs[a].v);
	return ret;
#endif
}

void kiln_seccomp_prog_free(struct kiln_seccomp_prog *p)
{
	free(p->insn);
	memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------ Docker JSON */

struct jprofile {
	struct kiln_sc_profile p;
	struct kiln_sc_group *groups;
	char **strings;        /* every string and array the groups point to */
	size_t n_strings, cap_strings;
};

static void *jp_keep(struct jprofile *jp, void *ptr)
{
	if (jp->n_strings == jp->cap_strings) {
		jp->cap_strings = jp->cap_strings ? 2 * jp->cap_strings : 64;
		jp->strings = kiln_xrealloc(jp->strings, jp->cap_strings * sizeof(*jp->strings));
	}
	jp->strings[jp->n_strings++] = ptr;
	return ptr;
}

static int parse_action(const char *s, json_t *errno_ret, uint32_t *out, const char *name, const char *where,
			struct kiln_err *err)
{
	json_int_t e = EPERM;
	if (errno_ret && !json_is_null(errno_ret)) {
		if (!json_is_integer(errno_ret) || json_integer_value(errno_ret) < 0 ||
		    json_integer_value(errno_ret) > 4095)
			return kiln_err_set(err, 0, "seccomp profile %s: %s: errnoRet must be a number from 0 to 4095",
					    name, where);
		e = json_integer_value(errno_ret);
	}
	if (!s)
		return kiln_err_set(err, 0, "seccomp profile %s: %s: no action", name, where);
	if (!strcmp(s, "SCMP_ACT_ALLOW"))
		*out = SECCOMP_RET_ALLOW;
	else if (!strcmp(s, "SCMP_ACT_ERRNO"))
		*out = SECCOMP_RET_ERRNO | (uint32_t)e;
	else if (!strcmp(s, "SCMP_ACT_KILL") || !strcmp(s, "SCMP_ACT_KILL_THREAD"))
		*out = SECCOMP_RET_KILL_THREAD;
	else if (!strcmp(s, "SCMP_ACT_KILL_PROCESS"))
		*out = SECCOMP_RET_KILL_PROCESS;
	else if (!strcmp(s, "SCMP_ACT_TRAP"))
		*out = SECCOMP_RET_TRAP;
	else if (!strcmp(s, "SCMP_ACT_LOG"))
		*out = SECCOMP_RET_LOG;
	else if (!strcmp(s, "SCMP_ACT_TRACE"))
		*out = SECCOMP_RET_TRACE | (uint32_t)e;
	else if (!strcmp(s, "SCMP_ACT_NOTIFY"))
		return kiln_err_set(err, 0, "seccomp profile %s: %s: SCMP_ACT_NOTIFY is not supported", name, where);
	else
		return kiln_err_set(err, 0, "seccomp profile %s: %s: unknown action \"%s\"", name, where, s);
	return 0;
}

static const struct {
	const char *name;
	enum kiln_sc_op op;
} ops[] = {
	{"SCMP_CMP_NE", KILN_SC_NE}, {"SCMP_CMP_LT", KILN_SC_LT}, {"SCMP_CMP_LE", KILN_SC_LE},
	{"SCMP_CMP_EQ", KILN_SC_EQ}, {"SCMP_CMP_GE", KILN_SC_GE}, {"SCMP_CMP_GT", KILN_SC_GT},
	{"SCMP_CMP_MASKED_EQ", KILN_SC_MASKED_EQ},
};

/* "SCMP_ARCH_X86_64" -> its bit; 0 for an architecture of another machine
 * (never matches here); -1 unknown. */
static int parse_arch(const char *s)
{
	static const char *const foreign[] = {"ARM", "AARCH64", "LOONGARCH64", "M68K", "MIPS", "MIPS64",
		"MIPS64N32", "MIPSEL", "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X",
		"PARISC", "PARISC64", "RISCV64", "SH", "SHEB"};
	if (!s || strncmp(s, "SCMP_ARCH_", 10))
		return -1;
	s += 10;
	if (!strcmp(s, "X86_64"))
		return KILN_SC_ARCH_X86_64;
	if (!strcmp(s, "X86"))
		return KILN_SC_ARCH_X86;
	if (!strcmp(s, "X32"))
		return KILN_SC_ARCH_X32;
	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++)
		if (!strcmp(s, foreign[i]))
			return 0;
	return -1;
}

/* "major.minor" (Docker: exactly two numbers, not 0.0). */
static int parse_kernel(const char *s, unsigned *out)
{
	unsigned a, b;
	int n = 0;
	if (!s || sscanf(s, "%3u.%3u%n", &a, &b, &n) != 2 || s[n] || (a == 0 && b == 0) || a > 255 || b > 255)
		return -1;
	*out = a << 16 | b;
	return 0;
}

static const char *const *jp_strings(struct jprofile *jp, json_t *arr, const char *name, const char *where,
				     const char *what, struct kiln_err *err)
{
	if (!arr || json_is_null(arr))
		return NULL;
	if (!json_is_array(arr)) {
		kiln_err_set(err, 0, "seccomp profile %s: %s: %s must be an array of strings", name, where, what);
		return (const char *const *)-1;
	}
	char **v = jp_keep(jp, kiln_xcalloc(json_array_size(arr) + 1, sizeof(char *)));
	size_t i;
	json_t *s;
	json_array_foreach(arr, i, s) {
		if (!json_is_string(s)) {
			kiln_err_set(err, 0, "seccomp profile %s: %s: %s must be an array of strings", name, where, what);
			return (const char *const *)-1;
		}
		v[i] = jp_keep(jp, kiln_xstrdup(json_string_value(s)));
	}
	return (const char *const *)v;
}

static int parse_filter(struct jprofile *jp, json_t *o, bool include, struct kiln_sc_filter *f, const char *name,
			const char *where, struct kiln_err *err)
{
	if (!o || json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return kiln_err_set(err, 0, "seccomp profile %s: %s: %s must be an object", name, where,
				    include ? "includes" : "excludes");
	const char *const *caps = jp_strings(jp, json_object_get(o, "caps"), name, where, "caps", err);
	if (caps == (const char *const *)-1)
		return -1;
	for (; caps && *caps; caps++) {
		int c = kiln_cap_from_name(*caps);
		if (c < 0)
			f->unknown_cap = true;   /* never held */
		else
			f->caps |= 1ULL << c;
	}
	f->arches = jp_strings(jp, json_object_get(o, "arches"), name, where, "arches", err);
	if (f->arches == (const char *const *)-1)
		return -1;
	json_t *mk = json_object_get(o, "minKernel");
	if (mk && !json_is_null(mk) && !(json_is_string(mk) && !json_string_length(mk)) &&
	    parse_kernel(json_string_value(mk), &f->min_kernel) < 0)
		return kiln_err_set(err, 0, "seccomp profile %s: %s: minKernel must be \"<kernel>.<major>\"", name,
				    where);
	return 0;
}

static int parse_group(struct jprofile *jp, json_t *sc, size_t idx, struct kiln_sc_group *g, const char *name,
		       struct kiln_err *err)
{
	char where[48];
	snprintf(where, sizeof(where), "syscalls[%zu]", idx);
	if (!json_is_object(sc))
		return kiln_err_set(err, 0, "seccomp profile %s: %s is not an object", name, where);
	json_t *one = json_object_get(sc, "name"), *names = json_object_get(sc, "names");
	if (one && json_string_length(one) && names && json_array_size(names))
		return kiln_err_set(err, 0, "seccomp profile %s: %s: both 'name' and 'names' are given", name, where);
	if (one && json_is_string(one) && json_string_length(one)) {
		char **v = jp_keep(jp, kiln_xcalloc(2, sizeof(char *)));
		v[0] = jp_keep(jp, kiln_xstrdup(json_string_value(one)));
		g->names = (const char *const *)v;
	} else {
		g->names = jp_strings(jp, names, name, where, "names", err);
		if (g->names == (const char *const *)-1)
			return -1;
	}
	if (parse_action(json_string_value(json_object_get(sc, "action")), json_object_get(sc, "errnoRet"),
			 &g->action, name, where, err) < 0)
		return -1;
	json_t *args = json_object_get(sc, "args");
	if (args && !json_is_null(args) && !json_is_array(args))
		return kiln_err_set(err, 0, "seccomp profile %s: %s: args must be an array", name, where);
	if (json_array_size(args) > 6)
		return kiln_err_set(err, 0, "seccomp profile %s: %s: more than 6 args", name, where);
	size_t i;
	json_t *a;
	json_array_foreach(args, i, a) {
		struct kiln_sc_arg *ga = &g->args[i];
		json_t *ix = json_object_get(a, "index");
		if (!json_is_integer(ix) || json_integer_value(ix) < 0 || json_integer_value(ix) > 5)
			return kiln_err_set(err, 0, "seccomp profile %s: %s.args[%zu]: index must be 0 to 5", name,
					    where, i);
		ga->index = (unsigned)json_integer_value(ix);
		const char *op = json_string_value(json_object_get(a, "op"));
		ga->op = 0;
		for (size_t k = 0; op && k < sizeof(ops) / sizeof(ops[0]); k++)
			if (!strcmp(op, ops[k].name))
				ga->op = ops[k].op;
		if (!ga->op)
			return kiln_err_set(err, 0, "seccomp profile %s: %s.args[%zu]: unknown op \"%s\"", name, where,
					    i, op ? op : "");
		json_t *v = json_object_get(a, "value"), *v2 = json_object_get(a, "valueTwo");
		if ((v && !json_is_integer(v) && !json_is_null(v)) || (v2 && !json_is_integer(v2) && !json_is_null(v2)))
			return kiln_err_set(err, 0, "seccomp profile %s: %s.args[%zu]: value and valueTwo must be "
					    "integers", name, where, i);
		ga->value = (uint64_t)json_integer_value(v);
		ga->value2 = (uint64_t)json_integer_value(v2);
	}
	g->n_args = (unsigned)json_array_size(args);
	if (parse_filter(jp, json_object_get(sc, "includes"), true, &g->inc, name, where, err) < 0 ||
	    parse_filter(jp, json_object_get(sc, "excludes"), false, &g->exc, name, where, err) < 0)
		return -1;
	return 0;
}

int kiln_seccomp_profile_parse(const char *text, const char *name, struct kiln_sc_profile **out,
			       bool *unconfined, struct kiln_err *err)
{
	*out = NULL;
	*unconfined = false;
	json_error_t je;
	json_t *root = json_loads(text, 0, &je);
	if (!root)
		return kiln_err_set(err, 0, "seccomp profile %s:%d: %s", name, je.line, je.text);
	struct jprofile *jp = kiln_xcalloc(1, sizeof(*jp));
	int ret = -1;
	if (!json_is_object(root)) {
		kiln_err_set(err, 0, "seccomp profile %s: not a JSON object", name);
		goto out;
	}
	json_t *syscalls = json_object_get(root, "syscalls");
	const char *defact = json_string_value(json_object_get(root, "defaultAction"));
	if ((!defact || !defact[0]) && json_array_size(syscalls) == 0) {
		*unconfined = true;
		ret = 0;
		goto out;
	}
	if (parse_action(defact && defact[0] ? defact : NULL, json_object_get(root, "defaultErrnoRet"),
			 &jp->p.default_action, name, "defaultAction", err) < 0)
		goto out;
	json_t *arches = json_object_get(root, "architectures"), *amap = json_object_get(root, "archMap");
	if (json_array_size(arches) && json_array_size(amap)) {
		kiln_err_set(err, 0, "seccomp profile %s: both 'architectures' and 'archMap' are given", name);
		goto out;
	}
	jp->p.arches = KILN_SC_ARCH_X86_64;
	size_t i;
	json_t *a;
	json_array_foreach(arches, i, a) {
		int bit = parse_arch(json_string_value(a));
		if (bit < 0) {
			kiln_err_set(err, 0, "seccomp profile %s: architectures[%zu]: unknown architecture", name, i);
			goto out;
		}
		jp->p.arches |= (unsigned)bit;
	}
	json_array_foreach(amap, i, a) {
		int bit = parse_arch(json_string_value(json_object_get(a, "architecture")));
		if (bit < 0) {
			kiln_err_set(err, 0, "seccomp profile %s: archMap[%zu]: unknown architecture", name, i);
			goto out;
		}
		if (bit != KILN_SC_ARCH_X86_64)
			continue;     /* the entry of another machine */
		size_t k;
		json_t *sub;
		json_array_foreach(json_object_get(a, "subArchitectures"), k, sub) {
			int sb = parse_arch(json_string_value(sub));
			if (sb < 0) {
				kiln_err_set(err, 0, "seccomp profile %s: archMap[%zu]: unknown sub-architecture", name, i);
				goto out;
			}
			jp->p.arches |= (unsigned)sb;
		}
	}
	json_array_foreach(json_object_get(root, "flags"), i, a) {
		const char *f = json_string_value(a);
		if (f && !strcmp(f, "SECCOMP_FILTER_FLAG_LOG"))
			jp->p.flags |= SECCOMP_FILTER_FLAG_LOG;
		else if (f && !strcmp(f, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"))
			jp->p.flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
		else {
			kiln_err_set(err, 0, "seccomp profile %s: flags[%zu]: unsupported flag \"%s\"", name, i,
				     f ? f : "");
			goto out;
		}
	}
	if (syscalls && !json_is_null(syscalls) && !json_is_array(syscalls)) {
		kiln_err_set(err, 0, "seccomp profile %s: syscalls must be an array", name);
		goto out;
	}
	jp->groups = kiln_xcalloc(json_array_size(syscalls) + 1, sizeof(*jp->groups));
	json_array_foreach(syscalls, i, a)
		if (parse_group(jp, a, i, &jp->groups[i], name, err) < 0)
			goto out;
	jp->p.groups = jp->groups;
	jp->p.n_groups = json_array_size(syscalls);
	*out = &jp->p;
	jp = NULL;
	ret = 0;
out:
	if (jp)
		kiln_seccomp_profile_free(&jp->p);
	json_decref(root);
	return ret;
}

void kiln_seccomp_profile_free(struct kiln_sc_profile *p)
{
	if (!p)
		return;
	struct jprofile *jp = (struct jprofile *)p;   /* p is its first member */
	for (size_t i = 0; i < jp->n_strings; i++)
		free(jp->strings[i]);
	free(jp->strings);
	free(jp->groups);
	free(jp);
}

/* ------------------------------------------------------------ cache, install */

struct cached {
	struct cached *next;
	char *text;            /* NULL: the default profile */
	uint64_t caps;
	bool unconfined;
	struct kiln_seccomp_prog prog;
};
static struct cached *cache;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

int kiln_seccomp_prepare(const struct kiln_sandbox_spec *spec, uint64_t caps,
			 const struct kiln_seccomp_prog **out, struct kiln_err *err)
{
	*out = NULL;
	KILN_AUTOFREE char *text = NULL;
	const char *name = spec->seccomp_file ? spec->seccomp_file : "";
	if (spec->seccomp == KILN_SECCOMP_FILE && kiln_read_file(name, 1 << 20, &text, NULL, err) < 0)
		return kiln_err_wrap(err, "seccomp profile");
	pthread_mutex_lock(&cache_lock);
	struct cached *c;
	for (c = cache; c; c = c->next)
		if (c->caps == caps && (c->text ? text && !strcmp(c->text, text) : !text))
			break;
	int ret = 0;
	if (!c) {
		struct kiln_sc_profile *jprof = NULL;
		bool unconfined = false;
		const struct kiln_sc_profile *prof = kiln_seccomp_default_profile();
		if (text) {
			ret = kiln_seccomp_profile_parse(text, name, &jprof, &unconfined, err);
			prof = jprof;
		}
		struct kiln_seccomp_prog prog = {0};
		if (ret == 0 && !unconfined) {
			ret = kiln_seccomp_compile(prof, caps, 0, &prog, err);
			if (ret < 0 && text)
				kiln_err_wrap(err, "seccomp profile %s", name);
		}
		kiln_seccomp_profile_free(jprof);
		if (ret == 0) {
			c = kiln_xcalloc(1, sizeof(*c));
			c->text = text ? kiln_xstrdup(text) : NULL;
			c->caps = caps;
			c->unconfined = unconfined;
			c->prog = prog;
			c->next = cache;
			cache = c;
		}
	}
	if (c && !c->unconfined)
		*out = &c->prog;
	pthread_mutex_unlock(&cache_lock);
	return ret;
}

int kiln_seccomp_install(const struct kiln_seccomp_prog *prog, struct kiln_err *err)
{
	if (!prog)
		return 0;
	struct sock_fprog fp = {.len = prog->len, .filter = prog->insn};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, prog->flags, &fp) < 0)
		return kiln_err_set(err, errno, "loading the seccomp filter");
	return 0;
}
