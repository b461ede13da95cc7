/* kiln — the sandbox: one entry point that starts every container process
 * (Dockerfile RUN steps, `kiln run`, `kiln exec`, healthchecks).
 *
 * The caller fills a struct kiln_sandbox_spec and calls kiln_sandbox_run();
 * it returns when the container's main process has exited (or, for detached
 * supervisors, the same call is made from the supervisor process).
 *
 * Privileges (capabilities, seccomp, masked paths, host network, privileged
 * mode) are decided by ONE function, kiln_sandbox_decide(), which
 * kiln_sandbox_run() and kiln_sandbox_exec() always call; a request that the
 * origin is not entitled to is refused there (security.md item 12).
 */
#ifndef KILN_RUNTIME_SANDBOX_H
#define KILN_RUNTIME_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* Who asks for a sandbox.  Decides which entitlements are implied. */
enum kiln_sandbox_origin {
	KILN_ORIGIN_RUN = 0,       /* `kiln run`: the user's own flags are the entitlement */
	KILN_ORIGIN_BUILD,         /* Dockerfile RUN: needs --allow entitlements for extras */
	KILN_ORIGIN_EXEC,          /* `kiln exec` */
	KILN_ORIGIN_HEALTHCHECK,   /* never privileged, never extra caps */
};

/* Entitlements granted explicitly by the user (bit set). */
#define KILN_ENT_PRIVILEGED   (1u << 0)  /* --privileged / RUN --security=insecure with --allow security.insecure */
#define KILN_ENT_NET_HOST     (1u << 1)  /* --network host / RUN --network=host with --allow network.host */
#define KILN_ENT_CAP_ADD      (1u << 2)  /* --cap-add given on the command line */
#define KILN_ENT_UNCONFINED   (1u << 3)  /* --security-opt seccomp=unconfined / =FILE */

enum kiln_net_mode {
	KILN_NET_NONE = 0,   /* own netns with loopback up (default for RUN steps) */
	KILN_NET_HOST,       /* the host's netns */
	KILN_NET_BRIDGE,     /* own netns + veth on the kiln0 bridge (default for `kiln run`) */
};

enum kiln_mount_type {
	KILN_MOUNT_BIND = 0,
	KILN_MOUNT_TMPFS,
};

struct kiln_mount {
	enum kiln_mount_type type;
	const char *source;   /* host path (BIND), ignored when source_fd >= 0 */
	int source_fd;        /* an O_PATH/O_DIRECTORY fd of the bind source, or -1 */
	const char *target;   /* absolute path inside the container, resolved beneath the rootfs */
	bool readonly;
	const char *options;  /* tmpfs data ("size=64m,mode=1777"), or NULL */
};

struct kiln_port {
	uint16_t host_port;
	uint16_t container_port;
	bool udp;             /* false = tcp */
	const char *host_ip;  /* NULL = 0.0.0.0 */
};

enum kiln_seccomp_mode {
	KILN_SECCOMP_DEFAULT = 0,   /* kiln's built-in profile (Docker's default intent) */
	KILN_SECCOMP_UNCONFINED,
	KILN_SECCOMP_FILE,          /* a Docker/OCI-style JSON profile at seccomp_file */
};

/* Resource limits; 0 = unlimited / not set. */
struct kiln_limits {
	int64_t memory;        /* bytes (-m) */
	int64_t memory_swap;   /* bytes, memory+swap (--memory-swap); -1 = unlimited swap */
	int64_t nano_cpus;     /* --cpus * 1e9 */
	int64_t cpu_shares;    /* --cpu-shares (v1 shares; converted to weight on v2) */
	int64_t pids;          /* --pids-limit; -1 = unlimited */
	bool pids_default;     /* pids is a default, not the user's: skipped (not an error) where a
	                          cgroup v2 parent cannot delegate the pids controller */
};

/* ---- the device filter (runtime/devices.c) ---- */

/* Access bits of a device rule (the kernel's BPF_DEVCG_ACC_* values). */
#define KILN_DEV_MKNOD 1u
#define KILN_DEV_READ  2u
#define KILN_DEV_WRITE 4u
#define KILN_DEV_ALL   7u

/* One rule, as cgroup v1's devices.allow/deny write it ("c 1:3 rwm"). */
struct kiln_device_rule {
	char type;             /* 'a' any, 'c' character, 'b' block */
	int32_t major, minor;  /* -1 = any ("*") */
	unsigned access;       /* KILN_DEV_* */
	bool allow;
};

/* A host device given to a container (`kiln run --device`). */
struct kiln_device {
	char *host;            /* host path, as given */
	char *path;            /* absolute path inside the container */
	unsigned access;       /* KILN_DEV_*, from ":rwm" (default all) */
	/* from kiln_device_resolve (a stat of the host node) */
	char type;             /* 'c' or 'b' */
	uint32_t major, minor;
	mode_t mode;
	uid_t uid;
	gid_t gid;
};

/* Docker's default rules: deny everything, then mknod of any node and rwm
 * of null zero full random urandom tty console ptmx, the pts slaves and net/tun. */
const struct kiln_device_rule *kiln_devices_default(size_t *n);
/* The default rules followed by an allow rule per device (caller frees). */
struct kiln_device_rule *kiln_devices_rules(const struct kiln_device *devs, size_t n_devs, size_t *n);
/* "c 1:3 rwm", "b *:* m", "a" (all) -> *out, allow as given. */
int kiln_device_rule_parse(const char *text, bool allow, struct kiln_device_rule *out, struct kiln_err *err);
void kiln_device_rule_format(const struct kiln_device_rule *r, char *buf, size_t len);
/* "rwm" (any of, each once) -> KILN_DEV_* bits; -1 when invalid. */
int kiln_device_access_parse(const char *s, unsigned *out);
/* The reference meaning of a rule list: the last rule that matches (type,
 * major, minor, every requested access bit) decides; no match denies. */
bool kiln_devices_allowed(const struct kiln_device_rule *rules, size_t n, char type, uint32_t major,
			  uint32_t minor, unsigned access);
/* The cgroup v2 device program (BPF_PROG_TYPE_CGROUP_DEVICE) for rules with
 * the meaning above: writes at most cap instructions to out (may be NULL)
 * and returns how many the program has. */
struct bpf_insn;
size_t kiln_devices_bpf(const struct kiln_device_rule *rules, size_t n, struct bpf_insn *out, size_t cap);
/* --device HOST[:CONTAINER][:ACCESS] (docker's syntax). */
int kiln_device_parse(const char *spec, struct kiln_device *out, struct kiln_err *err);
/* stat the host node: a character or block device, else an error. */
int kiln_device_resolve(struct kiln_device *d, struct kiln_err *err);
void kiln_device_free(struct kiln_device *d);

struct kiln_sandbox_spec {
	enum kiln_sandbox_origin origin;
	unsigned entitlements;       /* KILN_ENT_* granted explicitly */

	const char *id;              /* container id (hex), names the cgroup; NULL = generated */
	const char *state_dir;       /* directory where kiln writes hosts/hostname/resolv.conf for
	                                this container (e.g. containers/<id>/); NULL = a private temp dir */

	/* Root filesystem: a directory already prepared by the caller.  When
	 * overlay_lower is set, kiln mounts overlay(lower, upper, work) at rootfs
	 * inside the container's mount namespace first. */
	const char *rootfs;
	const char *overlay_lower;   /* "dir1:dir2:..." or NULL */
	const char *overlay_upper;
	const char *overlay_work;
	bool readonly_rootfs;        /* --read-only */

	/* Process. */
	char *const *argv;           /* argv[0] looked up in PATH of env (inside the rootfs) */
	char *const *env;            /* "K=V"; PATH, HOSTNAME, HOME added when missing */
	const char *cwd;             /* NULL = "/"; created when missing, resolved in the rootfs */
	const char *user;            /* "uid[:gid]" or "name[:group]" from the image's /etc/passwd,group; NULL = root */
	const char *hostname;        /* NULL = the first 12 characters of the id */

	/* Mounted after /proc, /sys, /dev, in order.  Missing targets are
	 * created beneath the rootfs (symlinks resolve inside it); for RUN steps
	 * (KILN_ORIGIN_BUILD) the created stubs are removed afterwards when they
	 * are still the same empty entries (security.md item 11). */
	const struct kiln_mount *mounts;
	size_t n_mounts;

	enum kiln_net_mode net;
	const struct kiln_port *ports;  /* published ports (BRIDGE only) */
	size_t n_ports;

	struct kiln_limits limits;

	char *const *cap_add;        /* NULL-terminated names ("NET_ADMIN", "CAP_SYS_TIME", "ALL") or NULL */
	char *const *cap_drop;
	bool privileged;             /* all caps, no seccomp, no masked/readonly paths, host devices
	                                (and no device filter) */
	/* Host devices made in the container (resolved) and allowed in its
	 * device filter; every other device node, made with mknod or shipped
	 * in the image, cannot be opened (Docker's default list aside). */
	const struct kiln_device *devices;
	size_t n_devices;
	bool no_new_privs;           /* only when asked (--security-opt no-new-privileges) */
	enum kiln_seccomp_mode seccomp;
	const char *seccomp_file;

	bool init;                   /* --init: a small init as PID 1 that forks the program */
	bool tty;                    /* allocate a pty: the container's 0-2 are its slave side */
	bool interactive;            /* keep stdin open (-i) */
	int stdin_fd, stdout_fd, stderr_fd;  /* fds handed to the container; -1 = inherit ours (0,1,2) */

	/* A user namespace of its own (podman's --uidmap 0:HOST:SIZE; the door
	 * to rootless): ids 0..userns_size-1 inside are userns_uid.. (and
	 * userns_gid..) outside, and the rootfs is an idmapped mount so that
	 * files owned by 0 in the image belong to the container's root.
	 * userns_size 0 = no user namespace (the default, like docker). */
	uid_t userns_uid;
	gid_t userns_gid;
	uint32_t userns_size;

	/* Optional: called in the parent once the container process exists
	 * (cgroup joined, network ready), before it runs the user's program.
	 * A non-zero return aborts the start. */
	int (*on_start)(pid_t pid, void *arg);
	void *on_start_arg;
	/* Optional: called in the parent once the program was exec'd
	 * successfully (setup is over). */
	void (*on_running)(pid_t pid, void *arg);
	void *on_running_arg;
	/* Optional: when the spec has tty, the parent's master fd is given here
	 * instead of kiln relaying it to stdin/stdout (used by the supervisor). */
	int (*on_tty)(int master_fd, void *arg);
	void *on_tty_arg;
};

/* Initialise defaults: fds -1, origin RUN, seccomp default, net none. */
void kiln_sandbox_spec_init(struct kiln_sandbox_spec *spec);

struct kiln_exit {
	int code;            /* what `kiln run` exits with: status, 128+signal, 125/126/127 */
	int signal;          /* the signal that killed the main process, or 0 */
	bool oom_killed;     /* the cgroup's OOM killer fired */
	int64_t memory_limit;/* the limit in bytes when oom_killed */
	char message[256];   /* "killed: out of memory (limit 64MiB)" etc., or "" */
	int forwarded_signal;/* the last signal kiln received and passed on to the
	                        container (SIGINT, SIGTERM, ...; not SIGWINCH), or 0 */
};

/* Run the sandbox to completion.  Returns 0 when the program ran (its exit
 * status is in *exit, whatever it is) and -1 when the sandbox could not be set
 * up (err names the failed step; err->exit_code is 125, or 126/127 when the
 * program was not executable/not found).  Never hangs on a setup failure
 * (setup has a 60 s limit).
 *
 * Namespaces: mount, pid, uts, ipc, cgroup, net (unless host), user (when
 * userns_size).  A cgroup of its own (beneath kiln's, per controller; on
 * cgroup v1 always the devices hierarchy, the limits' ones when set) that
 * carries the device filter; no container runs without one (unless
 * privileged).  The program is exec'd through a sealed memfd
 * trampoline, never from the kiln binary.  Safe to call from several threads
 * at once (each call waits for its own child through a pidfd); SIGINT,
 * SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH, SIGCONT and SIGALRM are
 * blocked in the calling thread while it runs and forwarded to the
 * container.  Env KILN_TEST_SETUP_PAUSE_MS (tests only) holds the finished
 * process before its exec. */
int kiln_sandbox_run(const struct kiln_sandbox_spec *spec, struct kiln_exit *exit,
		     struct kiln_err *err);

/* Run spec->argv inside the running container whose init process is pid
 * (setns into its namespaces and cgroup); spec supplies argv, env, cwd, user,
 * tty, caps etc.; rootfs/mounts/net/limits are ignored. */
int kiln_sandbox_exec(pid_t pid, const struct kiln_sandbox_spec *spec, struct kiln_exit *exit,
		      struct kiln_err *err);

/* ---- the privilege decision (security.md item 12) ---- */

struct kiln_privileges {
	uint64_t caps;          /* bounding = permitted = effective set (bits CAP_*) */
	bool seccomp;           /* load a filter */
	bool masks;             /* masked and read-only /proc, /sys paths */
	bool no_new_privs;
	bool host_net;
	bool host_devices;      /* privileged: bind the host's /dev */
	bool sys_rw;            /* /sys writable (privileged) */
};

/* Docker's 14 default capabilities (0x00000000a80425fb). */
#define KILN_DEFAULT_CAPS 0x00000000a80425fbULL

/* Decide what the sandbox may do.  Refuses (-1) when spec asks for privileged
 * mode, host network, added capabilities or an unconfined seccomp without the
 * matching entitlement for its origin. */
int kiln_sandbox_decide(const struct kiln_sandbox_spec *spec, struct kiln_privileges *out,
			struct kiln_err *err);

/* Capability name ("CHOWN", "CAP_CHOWN", case-insensitive) → number; -1 if unknown. */
int kiln_cap_from_name(const char *name);

/* ---- network ---- */

/* The /etc/resolv.conf a container gets, made from the host's text: with the
 * host's network (host_net) the text as it is; in a network namespace of its
 * own every line but the nameservers on loopback (127.0.0.0/8, ::1: the
 * host's loopback is not there) and on IPv6 (the kiln0 bridge carries IPv4
 * only).  There is no fallback to a public resolver: when none is left the
 * file names none.  Returns the number of nameservers kept; *out is the text
 * (caller frees). */
int kiln_net_resolv_conf(const char *host_text, bool host_net, char **out);

/* ---- users (parsed from the image's own files; no NSS) ---- */

struct kiln_user {
	uid_t uid;
	gid_t gid;
	gid_t groups[64];       /* supplementary groups from /etc/group membership */
	size_t n_groups;
	char home[256];         /* from passwd, "/" when unknown */
};

/* Resolve "user[:group]" against the texts of /etc/passwd and /etc/group
 * (either may be NULL = file missing).  Numeric ids need no entry; a name
 * that is not found fails.  spec NULL or "" = root. */
int kiln_user_resolve(const char *spec, const char *passwd, const char *group,
		      struct kiln_user *out, struct kiln_err *err);

/* ---- cgroups ---- */

enum kiln_cgroup_layout { KILN_CG_V1 = 1, KILN_CG_V2, KILN_CG_HYBRID };

/* Detect the layout of /sys/fs/cgroup (statfs). */
int kiln_cgroup_layout(enum kiln_cgroup_layout *out, struct kiln_err *err);

/* The path of a new cgroup for container id beneath the cgroup that
 * /proc/self/cgroup text names for controller (v1 controller name, or "" for
 * the v2 unified hierarchy): "<own>/kiln-<id>".  Caller frees. */
char *kiln_cgroup_child_path(const char *proc_self_cgroup, const char *controller,
			     const char *id, struct kiln_err *err);

/* Human-readable size: 67108864 → "64MiB". */
void kiln_format_size(int64_t bytes, char *buf, size_t len);

#endif
