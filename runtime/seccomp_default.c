/* kiln — the default seccomp profile.
 *
 * It follows the semantics of Docker's default profile as shipped with Docker
 * Engine 29.7 (moby/profiles/seccomp v0.2.3): the default action is EPERM; a
 * list of syscalls is allowed; capabilities the container holds allow more
 * (CAP_SYS_ADMIN: mount, unshare, setns, namespaces through clone, ...;
 * CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYS_NICE,
 * CAP_SYSLOG, CAP_BPF, CAP_PERFMON, CAP_SYS_PACCT, CAP_SYS_RAWIO,
 * CAP_SYS_CHROOT, CAP_SYS_TTY_CONFIG, CAP_DAC_READ_SEARCH); arguments are
 * checked for clone (no namespace flags without CAP_SYS_ADMIN), clone3 answers
 * ENOSYS (libcs fall back to clone, whose flags can be checked), personality
 * (only 0x0, 0x8, 0x20000, 0x20008 and the 0xffffffff query) and socket (every
 * family but AF_ALG and AF_VSOCK).  The same rules apply, by name, to the
 * x86-64, x32 and i386 ABIs.
 *
 * socket's family and personality's persona are ints to the kernel, so kiln
 * compares their low 32 bits only: compared as 64-bit values (as libseccomp
 * does with Docker's rules), socket(0x100000028, ...) passes the "family >
 * AF_VSOCK" rule and the kernel, which keeps the low half, opens AF_VSOCK.
 *
 * One difference, on purpose: Docker allows the i386 socketcall(2)
 * multiplexer whole, so socket(AF_VSOCK) stays reachable through it (its
 * arguments are in memory, out of a filter's reach).  kiln allows socketcall
 * for every call but SYS_SOCKET: a 32-bit program creates sockets with the
 * socket syscall (i386 has it since Linux 4.3), which is checked like on
 * x86-64.  A 32-bit glibc that still creates sockets through socketcall gets
 * EPERM. */
#include "runtime/seccomp.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>

#define CAP(c) (1ULL << (c))
#define ALLOW SECCOMP_RET_ALLOW
#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ARCHES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define KV(a, b) ((unsigned)(a) << 16 | (unsigned)(b))

#define AF_ALG_ 38
#define AF_VSOCK_ 40
#define SYS_SOCKET_ 1      /* socketcall(2) call number of socket(2) */
#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
		  CLONE_NEWCGROUP)

static const char *const base[] = {
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
	"capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
	"dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
	"exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
	"fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
	"fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
	"geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
	"getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
	"getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
	"inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
	"lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
	"map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat",
	"mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
	"mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
	"mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
	"msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat",
	"_newselect", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe",
	"pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
	"pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
	"recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
	"removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe", "rmdir",
	"rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
	"rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
	"semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
	"sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
	"setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
	"set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
	"setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketpair", "splice",
	"stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
	"sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
	"timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
	"times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
	"uretprobe", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
	"waitid", "waitpid", "write", "writev",
	NULL,
};

static const struct kiln_sc_group groups[] = {
	{.names = base, .action = ALLOW},
	{.names = NAMES("process_vm_readv", "process_vm_writev", "ptrace"), .action = ALLOW,
	 .inc = {.min_kernel = KV(4, 8)}},
	/* socket: every family but AF_ALG (38) and AF_VSOCK (40) */
	{.names = NAMES("socket"), .action = ALLOW, .args = {{0, KILN_SC_LT, AF_ALG_, 0, true}}, .n_args = 1},
	{.names = NAMES("socket"), .action = ALLOW, .args = {{0, KILN_SC_EQ, AF_ALG_ + 1, 0, true}}, .n_args = 1},
	{.names = NAMES("socket"), .action = ALLOW, .args = {{0, KILN_SC_GT, AF_VSOCK_, 0, true}}, .n_args = 1},
	/* i386: socketcall for everything but socket() (see the top of the file) */
	{.names = NAMES("socketcall"), .action = ALLOW, .args = {{0, KILN_SC_NE, SYS_SOCKET_, 0, true}}, .n_args = 1},
	/* personality: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query */
	{.names = NAMES("personality"), .action = ALLOW, .args = {{0, KILN_SC_EQ, 0x0, 0, true}}, .n_args = 1},
	{.names = NAMES("personality"), .action = ALLOW, .args = {{0, KILN_SC_EQ, 0x8, 0, true}}, .n_args = 1},
	{.names = NAMES("personality"), .action = ALLOW, .args = {{0, KILN_SC_EQ, 0x20000, 0, true}}, .n_args = 1},
	{.names = NAMES("personality"), .action = ALLOW, .args = {{0, KILN_SC_EQ, 0x20008, 0, true}}, .n_args = 1},
	{.names = NAMES("personality"), .action = ALLOW, .args = {{0, KILN_SC_EQ, 0xffffffff, 0, true}}, .n_args = 1},
	/* per architecture */
	{.names = NAMES("sync_file_range2", "swapcontext"), .action = ALLOW, .inc = {.arches = ARCHES("ppc64le")}},
	{.names = NAMES("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
			"set_tls"),
	 .action = ALLOW, .inc = {.arches = ARCHES("arm", "arm64")}},
	{.names = NAMES("arch_prctl"), .action = ALLOW, .inc = {.arches = ARCHES("amd64", "x32")}},
	{.names = NAMES("modify_ldt"), .action = ALLOW, .inc = {.arches = ARCHES("amd64", "x32", "x86")}},
	{.names = NAMES("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"), .action = ALLOW,
	 .inc = {.arches = ARCHES("s390", "s390x")}},
	{.names = NAMES("riscv_flush_icache"), .action = ALLOW, .inc = {.arches = ARCHES("riscv64")}},
	/* per capability */
	{.names = NAMES("open_by_handle_at"), .action = ALLOW, .inc = {.caps = CAP(CAP_DAC_READ_SEARCH)}},
	{.names = NAMES("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
			"lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
			"mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
			"setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare"),
	 .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_ADMIN)}},
	/* clone without namespace flags (s390 passes the flags second) */
	{.names = NAMES("clone"), .action = ALLOW, .args = {{0, KILN_SC_MASKED_EQ, NS_FLAGS, 0}}, .n_args = 1,
	 .exc = {.caps = CAP(CAP_SYS_ADMIN), .arches = ARCHES("s390", "s390x")}},
	{.names = NAMES("clone"), .action = ALLOW, .args = {{1, KILN_SC_MASKED_EQ, NS_FLAGS, 0}}, .n_args = 1,
	 .inc = {.arches = ARCHES("s390", "s390x")}, .exc = {.caps = CAP(CAP_SYS_ADMIN)}},
	{.names = NAMES("clone3"), .action = SECCOMP_RET_ERRNO | ENOSYS, .exc = {.caps = CAP(CAP_SYS_ADMIN)}},
	{.names = NAMES("reboot"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_BOOT)}},
	{.names = NAMES("chroot"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_CHROOT)}},
	{.names = NAMES("delete_module", "init_module", "finit_module"), .action = ALLOW,
	 .inc = {.caps = CAP(CAP_SYS_MODULE)}},
	{.names = NAMES("acct"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_PACCT)}},
	{.names = NAMES("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
	 .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_PTRACE)}},
	{.names = NAMES("iopl", "ioperm"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_RAWIO)}},
	{.names = NAMES("settimeofday", "stime", "clock_settime", "clock_settime64"), .action = ALLOW,
	 .inc = {.caps = CAP(CAP_SYS_TIME)}},
	{.names = NAMES("vhangup"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYS_TTY_CONFIG)}},
	{.names = NAMES("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), .action = ALLOW,
	 .inc = {.caps = CAP(CAP_SYS_NICE)}},
	{.names = NAMES("syslog"), .action = ALLOW, .inc = {.caps = CAP(CAP_SYSLOG)}},
	{.names = NAMES("bpf"), .action = ALLOW, .inc = {.caps = CAP(CAP_BPF)}},
	{.names = NAMES("perf_event_open"), .action = ALLOW, .inc = {.caps = CAP(CAP_PERFMON)}},
};

static const struct kiln_sc_profile profile = {
	.default_action = SECCOMP_RET_ERRNO | EPERM,
	.arches = KILN_SC_ARCH_X86_64 | KILN_SC_ARCH_X86 | KILN_SC_ARCH_X32,
	.groups = groups,
	.n_groups = sizeof(groups) / sizeof(groups[0]),
};

const struct kiln_sc_profile *kiln_seccomp_default_profile(void)
{
	return &profile;
}
