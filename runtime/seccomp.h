/* kiln — seccomp profiles and the BPF filters kiln compiles from them.
 *
 * A profile is a list of syscall groups in the shape of Docker's profiles:
 * names, an action, argument conditions, and includes/excludes conditions on
 * the container's capabilities, the host architecture and the kernel
 * version.  The default profile is kiln's own table (seccomp_default.c); a
 * `--security-opt seccomp=FILE` profile is Docker's JSON format, read into the
 * same structures.  Both are compiled here into one classic-BPF program for
 * the x86-64, x32 and i386 ABIs (a syscall of an ABI the profile does not
 * name kills the process), cached in-process per (profile, capabilities). */
#ifndef KILN_RUNTIME_SECCOMP_H
#define KILN_RUNTIME_SECCOMP_H

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "runtime/sandbox.h"

/* Seccomp architectures kiln compiles for (bit set). */
#define KILN_SC_ARCH_X86_64 (1u << 0)
#define KILN_SC_ARCH_X86    (1u << 1)   /* i386 ABI (int 0x80, 32-bit processes) */
#define KILN_SC_ARCH_X32    (1u << 2)   /* x32 ABI (x86-64 syscalls with bit 30 set) */

enum kiln_sc_op {
	KILN_SC_NE = 1, KILN_SC_LT, KILN_SC_LE, KILN_SC_EQ, KILN_SC_GE, KILN_SC_GT,
	KILN_SC_MASKED_EQ,   /* (arg & value) == value2 */
};

struct kiln_sc_arg {
	unsigned index;       /* 0..5 */
	enum kiln_sc_op op;
	uint64_t value, value2;
	bool lo32;            /* the kernel reads an int: compare the low 32 bits only */
};

/* Includes / excludes of a group.  Includes: every listed capability held,
 * the native architecture listed, the kernel at least min_kernel.  Excludes:
 * any listed capability held, or the native architecture listed, or the
 * kernel at least min_kernel. */
struct kiln_sc_filter {
	uint64_t caps;
	bool unknown_cap;     /* a capability kiln does not know (never held) */
	const char *const *arches;   /* Docker's names: "amd64", "x86", "x32", ... */
	unsigned min_kernel;  /* major << 16 | minor; 0 = none */
};

struct kiln_sc_group {
	const char *const *names;    /* NULL-terminated */
	uint32_t action;             /* SECCOMP_RET_* with its data */
	struct kiln_sc_arg args[6];
	unsigned n_args;
	struct kiln_sc_filter inc, exc;
};

struct kiln_sc_profile {
	uint32_t default_action;
	unsigned arches;             /* KILN_SC_ARCH_* */
	unsigned flags;              /* SECCOMP_FILTER_FLAG_* */
	const struct kiln_sc_group *groups;
	size_t n_groups;
};

/* seccomp_default.c: kiln's default profile (Docker's default semantics). */
const struct kiln_sc_profile *kiln_seccomp_default_profile(void);

/* Parse a Docker JSON profile (name: for messages).  *unconfined is set when
 * the profile has neither a defaultAction nor syscalls (Docker: no filter).
 * Free with kiln_seccomp_profile_free. */
int kiln_seccomp_profile_parse(const char *text, const char *name, struct kiln_sc_profile **out,
			       bool *unconfined, struct kiln_err *err);
void kiln_seccomp_profile_free(struct kiln_sc_profile *p);

struct kiln_seccomp_prog {
	struct sock_filter *insn;
	unsigned short len;
	unsigned flags;              /* for seccomp(SECCOMP_SET_MODE_FILTER) */
};

/* Compile prof for a container holding caps (kernel: major << 16 | minor of
 * the running kernel, 0 = ask uname).  Free with kiln_seccomp_prog_free. */
int kiln_seccomp_compile(const struct kiln_sc_profile *prof, uint64_t caps, unsigned kernel,
			 struct kiln_seccomp_prog *out, struct kiln_err *err);
void kiln_seccomp_prog_free(struct kiln_seccomp_prog *p);

/* Parent side, before the sandbox starts: the filter spec asks for (the
 * default profile, or spec->seccomp_file read and parsed now), compiled for
 * caps; *out stays NULL when a FILE profile is empty (Docker: unconfined).
 * The program is cached in this process and must not be freed. */
int kiln_seccomp_prepare(const struct kiln_sandbox_spec *spec, uint64_t caps,
			 const struct kiln_seccomp_prog **out, struct kiln_err *err);
/* Child side: install it (needs CAP_SYS_ADMIN or no_new_privs). */
int kiln_seccomp_install(const struct kiln_seccomp_prog *prog, struct kiln_err *err);

#endif
