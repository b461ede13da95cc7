/* kiln — the sandbox: namespaces, the root filesystem, the process.
 *
 * Parent                                   Child (PID 1 of a new pid namespace)
 *  decide privileges (one function)
 *  hosts files, cgroups, socketpair
 *  clone(NEWNS|NEWPID|NEWUTS|NEWIPC|NEWNET) ──► not dumpable, waits for GO
 *  join cgroup, veth into child's netns
 *  GO ───────────────────────────────────────► lo/eth0, cgroupns, hostname,
 *                                              mounts beneath the rootfs fd,
 *                                              pivot_root, user, cwd, caps,
 *                                              seccomp, close fds, execve
 *  sync socket: an error message (the failed step) or EOF at a successful exec
 *  wait, forward signals, relay the pty; OOM check; cleanup.
 */
#include "runtime/sandbox.h"
#include "runtime/internal.h"
#include "runtime/cgroup_gc.h"
#include "runtime/seccomp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

enum { MSG_GO = 1, MSG_ERR, MSG_TTY, MSG_PID, MSG_STUB };

struct msg {
	int type;
	int code;                 /* exit code for MSG_ERR */
	int value;                /* pid for MSG_PID */
	struct kiln_net_lease lease;
	struct winsize ws;
	bool has_ws;
	uint64_t dev, ino;        /* MSG_STUB: the created mount point */
	char text[KILN_ERR_MSG_MAX];
};

/* Mount points a RUN step's sandbox had to create (security.md item 11):
 * the parent removes them afterwards, only if still the same empty entry. */
struct stub {
	char *path;
	dev_t dev;
	ino_t ino;
	bool dir;
};
struct stubs {
	struct stub *v;
	size_t n;
};
static int stub_sync = -1;   /* child: where to report created stubs, or -1 */

struct ctx {
	const struct kiln_sandbox_spec *spec;
	struct kiln_privileges priv;
	const char *hostname;
	const char *state_dir;
	int sync;                 /* child's end */
	struct stat self_exe;     /* the kiln binary (CVE-2019-5736 check) */
	bool exec_mode;           /* kiln exec: no rootfs setup */
	const struct kiln_seccomp_prog *seccomp;  /* compiled on the host side, or NULL */
	int trampoline;           /* sealed memfd of the exec trampoline, or -1 */
	int rootmnt;              /* user namespace: the idmapped rootfs (from the parent), or -1 */
	int etcfd[3];             /* hosts, hostname, resolv.conf sources, opened as host root */
	int rootfs_target;        /* user namespace: the rootfs directory, opened as host root */
	int *msrc;                /* bind sources of spec->mounts: detached clones made by the parent (or -1) */
};

/* Open what lives on the host before a user namespace takes our identity
 * away (0700 state directories, private volumes). */
static int preopen_sources(struct ctx *c, struct kiln_err *err)
{
	static const char *const files[] = {"hosts", "hostname", "resolv.conf"};
	for (int i = 0; i < 3; i++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", c->state_dir, files[i]);
		c->etcfd[i] = open(p, O_PATH | O_CLOEXEC | O_NOFOLLOW);
		if (c->etcfd[i] < 0)
			return kiln_err_set(err, errno, "opening %s", p);
	}
	const struct kiln_sandbox_spec *s = c->spec;
	c->rootfs_target = -1;
	if (c->rootmnt >= 0) {
		c->rootfs_target = open(s->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (c->rootfs_target < 0)
			return kiln_err_set(err, errno, "rootfs %s", s->rootfs);
	}
	return 0;
}

/* Parent, before the container's mount namespace exists: each bind source
 * becomes a detached recursive clone (read-only if asked), made from the fd
 * the caller resolved (or from opening its path now), never re-resolved by
 * path later (security.md item 10).  A mount held by an fd from our mount
 * namespace cannot be cloned in the container's, but a detached tree can be
 * moved into it; the child inherits these fds. */
static int clone_sources(struct ctx *c, struct kiln_err *err)
{
	const struct kiln_sandbox_spec *s = c->spec;
	c->msrc = kiln_xcalloc(s->n_mounts ? s->n_mounts : 1, sizeof(int));
	for (size_t i = 0; i < s->n_mounts; i++)
		c->msrc[i] = -1;
	for (size_t i = 0; i < s->n_mounts; i++) {
		const struct kiln_mount *m = &s->mounts[i];
		if (m->type != KILN_MOUNT_BIND)
			continue;
		const char *tgt = m->target ? m->target : "";
		const char *src = m->source ? m->source : "(fd)";
		int fd = m->source_fd;
		if (fd < 0) {
			fd = open(m->source ? m->source : "", O_PATH | O_CLOEXEC);
			if (fd < 0)
				return kiln_err_set(err, errno, "bind mount %s: source %s", tgt, src);
		}
		int tree = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
		int e = errno;
		if (fd != m->source_fd)
			close(fd);
		if (tree < 0)
			return kiln_err_set(err, e, "bind mount %s: cloning the source %s", tgt, src);
		c->msrc[i] = tree;
		if (m->readonly) {
			struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY};
			if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a)) < 0)
				return kiln_err_set(err, errno, "bind mount %s: making %s read-only", tgt, src);
		}
	}
	return 0;
}

static void close_sources(struct ctx *c)
{
	if (!c->msrc)
		return;
	for (size_t i = 0; i < c->spec->n_mounts; i++)
		if (c->msrc[i] >= 0)
			close(c->msrc[i]);
	free(c->msrc);
	c->msrc = NULL;
}

void kiln_sandbox_spec_init(struct kiln_sandbox_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	spec->stdin_fd = spec->stdout_fd = spec->stderr_fd = -1;
	spec->origin = KILN_ORIGIN_RUN;
	spec->seccomp = KILN_SECCOMP_DEFAULT;
	spec->net = KILN_NET_NONE;
}

/* ---------------------------------------------------------------- child */

static void send_msg(int fd, const struct msg *m, int pass_fd)
{
	struct iovec iov = {(void *)m, sizeof(*m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	if (pass_fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	while (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

/* Receive one message; returns its size, 0 on EOF, -1 on error. */
static ssize_t recv_msg(int fd, struct msg *m, int *got_fd)
{
	struct iovec iov = {m, sizeof(*m)};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf)};
	ssize_t n;
	while ((n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (got_fd)
		*got_fd = -1;
	if (n > 0 && got_fd) {
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				memcpy(got_fd, CMSG_DATA(c), sizeof(int));
	}
	return n;
}

static __attribute__((noreturn)) void child_fail(int sync, int code, const struct kiln_err *err)
{
	struct msg *m = calloc(1, sizeof(*m));
	if (m) {
		m->type = MSG_ERR;
		m->code = code;
		snprintf(m->text, sizeof(m->text), "%s", err->msg[0] ? err->msg : "container setup failed");
		send_msg(sync, m, -1);
	}
	_exit(code);
}

static int sys_openat2(int dirfd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = resolve};
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Lexically clean an absolute container path: no "", ".", ".." components
 * (".." clamps at /).  Returns "/a/b" (caller frees). */
static char *clean_path(const char *p)
{
	struct kiln_strv parts = {0};
	char *dup = kiln_xstrdup(p);
	char *save = NULL;
	for (char *t = strtok_r(dup, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (!strcmp(t, "."))
			continue;
		if (!strcmp(t, "..")) {
			if (parts.n) {
				free(parts.v[--parts.n]);
				parts.v[parts.n] = NULL;
			}
			continue;
		}
		kiln_strv_push(&parts, t);
	}
	struct kiln_buf b = {0};
	for (size_t i = 0; i < parts.n; i++) {
		kiln_buf_putc(&b, '/');
		kiln_buf_puts(&b, parts.v[i]);
	}
	if (!b.len)
		kiln_buf_putc(&b, '/');
	kiln_strv_free(&parts);
	free(dup);
	return kiln_buf_steal(&b);
}

/* Open path (clean, absolute) beneath rootfd, creating missing components
 * (directories; the last one a file when !dir).  Symlinks resolve inside the
 * root; magic links are refused.  Returns an O_PATH fd. */
static int open_create_in_root(int rootfd, const char *path, bool dir, bool create)
{
	const uint64_t res = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
	int fd = sys_openat2(rootfd, path, O_PATH, res);
	if (fd >= 0 || errno != ENOENT || !create)
		return fd;
	if (!strcmp(path, "/"))
		return sys_openat2(rootfd, "/", O_PATH, res);
	char *parent = kiln_xstrdup(path);
	char *slash = strrchr(parent, '/');
	const char *base = path + (slash - parent) + 1;
	if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	int pfd = open_create_in_root(rootfd, parent, true, true);
	free(parent);
	if (pfd < 0)
		return -1;
	/* the parent must be a directory we can create in: reopen it for real */
	int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(pfd);
	if (dfd < 0)
		return -1;
	int r;
	if (dir) {
		r = mkdirat(dfd, base, 0755);
	} else {
		r = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (r >= 0)
			close(r), r = 0;
	}
	int e = errno;
	if (r == 0 && stub_sync >= 0) {
		struct stat st;
		struct msg *m = calloc(1, sizeof(*m));
		if (m && fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			m->type = MSG_STUB;
			m->value = dir;
			m->dev = st.st_dev;
			m->ino = st.st_ino;
			snprintf(m->text, sizeof(m->text), "%s", path);
			send_msg(stub_sync, m, -1);
		}
		free(m);
	}
	close(dfd);
	if (r < 0 && e != EEXIST) {
		errno = e;
		return -1;
	}
	return sys_openat2(rootfd, path, O_PATH, res);
}

/* Parent: remove the stubs (deepest first), each only when the entry at its
 * path, resolved inside the rootfs again, is still the one created and empty. */
static void remove_stubs(const char *rootfs, struct stubs *st)
{
	int rootfd = st->n ? open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
	for (size_t i = st->n; i-- > 0;) {
		struct stub *x = &st->v[i];
		if (rootfd >= 0) {
			char *parent = kiln_xstrdup(x->path);
			char *slash = strrchr(parent, '/');
			const char *base = x->path + (slash - parent) + 1;
			if (slash == parent)
				parent[1] = '\0';
			else
				*slash = '\0';
			int pfd = sys_openat2(rootfd, parent, O_RDONLY | O_DIRECTORY,
					      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
			struct stat cur;
			if (pfd >= 0 && fstatat(pfd, base, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_dev == x->dev &&
			    cur.st_ino == x->ino) {
				if (x->dir && S_ISDIR(cur.st_mode))
					unlinkat(pfd, base, AT_REMOVEDIR);   /* fails unless empty */
				else if (!x->dir && S_ISREG(cur.st_mode) && cur.st_size == 0)
					unlinkat(pfd, base, 0);
			}
			if (pfd >= 0)
				close(pfd);
			free(parent);
		}
		free(x->path);
	}
	free(st->v);
	st->v = NULL;
	st->n = 0;
	if (rootfd >= 0)
		close(rootfd);
}

/* overlay's lowerdir: fsconfig takes at most 256 bytes per value, so a long
 * "dir1:dir2:..." chain is given one layer at a time with "lowerdir+"
 * (Linux 6.5+); older kernels get the joined value.  A ':' inside a layer
 * path comes escaped with a backslash. */
static int overlay_set_lowers(int fs, const char *value)
{
	char *one = kiln_xmalloc(strlen(value) + 1);
	const char *p = value;
	int r;
	for (bool first = true;; first = false) {
		size_t n = 0;
		while (*p && *p != ':') {
			if (*p == '\\' && p[1])
				p++;
			one[n++] = *p++;
		}
		one[n] = '\0';
		r = fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", one, 0);
		if (r < 0) {
			/* no "lowerdir+" before 6.5: the joined value, when it fits */
			if (first && errno == EINVAL)
				r = fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", value, 0);
			break;
		}
		if (!*p)
			break;
		p++;
	}
	free(one);
	return r;
}

static int fs_mount_at(int target, const char *fstype, const char *source, const char *opts,
		       unsigned attrs, struct kiln_err *err, const char *what)
{
	int fs = fsopen(fstype, FSOPEN_CLOEXEC);
	if (fs < 0)
		return kiln_err_set(err, errno, "mounting %s: fsopen %s", what, fstype);
	if (source && fsconfig(fs, FSCONFIG_SET_STRING, "source", source, 0) < 0) {
		int e = errno;
		close(fs);
		return kiln_err_set(err, e, "mounting %s: source", what);
	}
	if (opts && opts[0]) {
		char *dup = kiln_xstrdup(opts), *save = NULL;
		for (char *o = strtok_r(dup, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
			char *eq = strchr(o, '=');
			int r;
			if (eq) {
				*eq = '\0';
				r = !strcmp(o, "lowerdir") ? overlay_set_lowers(fs, eq + 1)
							   : fsconfig(fs, FSCONFIG_SET_STRING, o, eq + 1, 0);
			} else {
				r = fsconfig(fs, FSCONFIG_SET_FLAG, o, NULL, 0);
			}
			if (r < 0) {
				int e = errno;
				kiln_err_set(err, e, "mounting %s: option \"%s\"", what, o);
				free(dup);
				close(fs);
				return -1;
			}
		}
		free(dup);
	}
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		int e = errno;
		close(fs);
		return kiln_err_set(err, e, "mounting %s: creating the %s superblock", what, fstype);
	}
	int mfd = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
	int e = errno;
	close(fs);
	if (mfd < 0)
		return kiln_err_set(err, e, "mounting %s: fsmount", what);
	if (move_mount(mfd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
		e = errno;
		close(mfd);
		return kiln_err_set(err, e, "mounting %s: move_mount", what);
	}
	return mfd;
}

/* Bind the object at srcfd onto target (both fds). */
static int bind_fd(int srcfd, int target, bool recursive, bool readonly, struct kiln_err *err,
		   const char *what)
{
	int tree = open_tree(srcfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH |
					(recursive ? AT_RECURSIVE : 0));
	if (tree < 0)
		return kiln_err_set(err, errno, "bind mount %s: open_tree", what);
	if (readonly) {
		struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY};
		if (mount_setattr(tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &a, sizeof(a)) < 0) {
			int e = errno;
			close(tree);
			return kiln_err_set(err, e, "bind mount %s: read-only", what);
		}
	}
	if (move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
		int e = errno;
		close(tree);
		return kiln_err_set(err, e, "bind mount %s: move_mount", what);
	}
	close(tree);
	return 0;
}

/* Parse docker-style tmpfs options into fs options and mount attributes. */
static char *tmpfs_opts(const char *in, unsigned *attrs)
{
	*attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
	struct kiln_buf b = {0};
	bool has_size = false;
	if (in && in[0]) {
		char *dup = kiln_xstrdup(in), *save = NULL;
		for (char *o = strtok_r(dup, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
			if (!strcmp(o, "ro")) *attrs |= MOUNT_ATTR_RDONLY;
			else if (!strcmp(o, "rw")) *attrs &= ~MOUNT_ATTR_RDONLY;
			else if (!strcmp(o, "exec")) *attrs &= ~MOUNT_ATTR_NOEXEC;
			else if (!strcmp(o, "noexec")) *attrs |= MOUNT_ATTR_NOEXEC;
			else if (!strcmp(o, "suid")) *attrs &= ~MOUNT_ATTR_NOSUID;
			else if (!strcmp(o, "nosuid")) *attrs |= MOUNT_ATTR_NOSUID;
			else if (!strcmp(o, "dev")) *attrs &= ~MOUNT_ATTR_NODEV;
			else if (!strcmp(o, "nodev")) *attrs |= MOUNT_ATTR_NODEV;
			else {
				if (!strncmp(o, "size=", 5))
					has_size = true;
				if (b.len)
					kiln_buf_putc(&b, ',');
				kiln_buf_puts(&b, o);
			}
		}
		free(dup);
	}
	if (!has_size)
		kiln_buf_puts(&b, b.len ? ",size=65536k" : "size=65536k");
	return kiln_buf_steal(&b);
}

/* Open an existing directory entry beneath rootfd without following a
 * symlink in the last component; ENOENT -> create it. */
static int open_sys_dir(int rootfd, const char *name, struct kiln_err *err)
{
	int fd = openat(rootfd, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (mkdirat(rootfd, name, 0755) < 0 && errno != EEXIST)
			return kiln_err_set(err, errno, "rootfs: creating /%s", name);
		fd = openat(rootfd, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd < 0) {
		if (errno == ENOTDIR || errno == ELOOP)
			return kiln_err_set(err, 0, "rootfs: /%s must be a directory (the image has a symlink "
					    "or a file there)", name);
		return kiln_err_set(err, errno, "rootfs: opening /%s", name);
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		close(fd);
		return kiln_err_set(err, 0, "rootfs: /%s must be a directory (the image has a symlink or a "
				    "file there)", name);
	}
	return fd;
}

static const char *const masked_proc[] = {"acpi", "asound", "kcore", "keys", "latency_stats",
	"timer_list", "timer_stats", "sched_debug", "scsi", "interrupts", NULL};
static const char *const readonly_proc[] = {"bus", "fs", "irq", "sys", "sysrq-trigger", NULL};
static const char *const masked_sys[] = {"firmware", "devices/virtual/powercap", NULL};

/* Mask entries below dirfd: files with the verified /dev/null, dirs with an
 * empty read-only tmpfs. */
static int mask_paths(int dirfd, const char *const *names, int nullfd, const char *prefix,
		      struct kiln_err *err)
{
	for (const char *const *n = names; *n; n++) {
		int fd = sys_openat2(dirfd, *n, O_PATH | O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
								   RESOLVE_NO_MAGICLINKS);
		if (fd < 0) {
			if (errno == ENOENT || errno == ELOOP || errno == EXDEV)
				continue;
			return kiln_err_set(err, errno, "masking %s/%s", prefix, *n);
		}
		struct stat st;
		int r = 0;
		char what[128];
		snprintf(what, sizeof(what), "mask %s/%s", prefix, *n);
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
			r = fs_mount_at(fd, "tmpfs", "tmpfs", "size=0,mode=0555",
					MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
					err, what);
			if (r >= 0)
				close(r), r = 0;
		} else {
			r = bind_fd(nullfd, fd, false, false, err, what);
		}
		close(fd);
		if (r < 0)
			return -1;
	}
	return 0;
}

static int readonly_paths(int dirfd, const char *const *names, const char *prefix, struct kiln_err *err)
{
	for (const char *const *n = names; *n; n++) {
		int fd = sys_openat2(dirfd, *n, O_PATH | O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
								   RESOLVE_NO_MAGICLINKS);
		if (fd < 0) {
			if (errno == ENOENT || errno == ELOOP || errno == EXDEV)
				continue;
			return kiln_err_set(err, errno, "read-only %s/%s", prefix, *n);
		}
		char what[128];
		snprintf(what, sizeof(what), "read-only %s/%s", prefix, *n);
		int r = bind_fd(fd, fd, true, true, err, what);
		close(fd);
		if (r < 0)
			return -1;
	}
	return 0;
}

struct devnode {
	const char *name;
	unsigned maj, min;
};
static const struct devnode devnodes[] = {
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

static int setup_dev(struct ctx *c, int rootfd, struct kiln_err *err)
{
	int devdir = open_sys_dir(rootfd, "dev", err);
	if (devdir < 0)
		return -1;
	if (c->priv.host_devices) {
		/* the host's device nodes, but a pts instance and a shm of its own */
		int host = open("/dev", O_PATH | O_DIRECTORY | O_CLOEXEC);
		int r = host < 0 ? kiln_err_set(err, errno, "opening host /dev")
				 : bind_fd(host, devdir, true, false, err, "/dev (privileged)");
		if (host >= 0)
			close(host);
		close(devdir);
		if (r < 0)
			return -1;
		int d = openat(rootfd, "dev", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int pts = d < 0 ? -1 : openat(d, "pts", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int shm = d < 0 ? -1 : openat(d, "shm", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int m = pts < 0 ? -1 : fs_mount_at(pts, "devpts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
						   MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, err, "/dev/pts");
		int m2 = shm < 0 ? -1 : fs_mount_at(shm, "tmpfs", "shm", "mode=1777,size=65536k",
						    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, err, "/dev/shm");
		if (m2 >= 0)
			close(m2);
		/* /dev/ptmx of the host points at the host's devpts: use ours */
		if (m >= 0) {
			int ptmx = openat(d, "ptmx", O_PATH | O_NOFOLLOW | O_CLOEXEC);
			int ours = openat(m, "ptmx", O_PATH | O_NOFOLLOW | O_CLOEXEC);
			if (ptmx >= 0 && ours >= 0)
				bind_fd(ours, ptmx, false, false, err, "/dev/ptmx");
			if (ptmx >= 0)
				close(ptmx);
			if (ours >= 0)
				close(ours);
			close(m);
		}
		if (d >= 0)
			close(d);
		if (pts >= 0)
			close(pts);
		if (shm >= 0)
			close(shm);
		return (m < 0 || m2 < 0) ? -1 : 0;
	}
	int dev = fs_mount_at(devdir, "tmpfs", "tmpfs", "mode=755,size=65536k",
			      MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME, err, "/dev");
	close(devdir);
	if (dev < 0)
		return -1;
	int ret = -1;
	for (size_t i = 0; i < sizeof(devnodes) / sizeof(devnodes[0]); i++) {
		const struct devnode *d = &devnodes[i];
		if (mknodat(dev, d->name, S_IFCHR | 0666, makedev(d->maj, d->min)) == 0) {
			fchmodat(dev, d->name, 0666, 0);
			continue;
		}
		if (errno != EPERM) {
			kiln_err_set(err, errno, "/dev: creating %s", d->name);
			goto out;
		}
		/* no mknod (a user namespace): bind the host's node, verified to be
		 * the right character device, onto an empty file */
		char hp[32];
		snprintf(hp, sizeof(hp), "/dev/%s", d->name);
		int hfd = open(hp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat hst;
		if (hfd < 0 || fstat(hfd, &hst) < 0 || !S_ISCHR(hst.st_mode) ||
		    hst.st_rdev != makedev(d->maj, d->min)) {
			if (hfd >= 0)
				close(hfd);
			kiln_err_set(err, 0, "/dev: host %s is not the character device %u:%u", hp, d->maj, d->min);
			goto out;
		}
		int t = openat(dev, d->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
		if (t >= 0) {
			close(t);
			t = openat(dev, d->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		}
		int r = t < 0 ? kiln_err_set(err, errno, "/dev: creating %s", d->name)
			      : bind_fd(hfd, t, false, false, err, hp);
		if (t >= 0)
			close(t);
		close(hfd);
		if (r < 0)
			goto out;
	}
	static const char *const links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
		{"/proc/kcore", "core"}};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlinkat(links[i][0], dev, links[i][1]) < 0) {
			kiln_err_set(err, errno, "/dev: symlink %s", links[i][1]);
			goto out;
		}
	static const char *const dirs[] = {"pts", "shm", "mqueue"};
	for (size_t i = 0; i < 3; i++)
		if (mkdirat(dev, dirs[i], 0755) < 0) {
			kiln_err_set(err, errno, "/dev: mkdir %s", dirs[i]);
			goto out;
		}
	int fd = openat(dev, "pts", O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
	int m = fd < 0 ? -1 : fs_mount_at(fd, "devpts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
					  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, err, "/dev/pts");
	if (fd >= 0)
		close(fd);
	if (m < 0)
		goto out;
	close(m);
	fd = openat(dev, "shm", O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
	m = fd < 0 ? -1 : fs_mount_at(fd, "tmpfs", "shm", "mode=1777,size=65536k",
				      MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, err, "/dev/shm");
	if (fd >= 0)
		close(fd);
	if (m < 0)
		goto out;
	close(m);
	fd = openat(dev, "mqueue", O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
	m = fd < 0 ? -1 : fs_mount_at(fd, "mqueue", "mqueue", NULL,
				      MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, err, "/dev/mqueue");
	if (fd >= 0)
		close(fd);
	if (m < 0)
		goto out;
	close(m);
	ret = 0;
out:
	close(dev);
	return ret;
}

/* --device: the host's node at its path in the container, made with mknod
 * (the host node's mode and owner), or, where mknod is not allowed (a user
 * namespace), the host's node bound onto an empty file after checking it is
 * still the device that was resolved.  Privileged containers have the
 * host's /dev as it is. */
static int setup_devices(struct ctx *c, int rootfd, struct kiln_err *err)
{
	const struct kiln_sandbox_spec *s = c->spec;
	if (c->priv.host_devices)
		return 0;
	for (size_t i = 0; i < s->n_devices; i++) {
		const struct kiln_device *d = &s->devices[i];
		KILN_AUTOFREE char *target = clean_path(d->path);
		if (!strcmp(target, "/"))
			return kiln_err_set(err, 0, "--device %s: the container path must not be /", d->host);
		KILN_AUTOFREE char *parent = kiln_xstrdup(target);
		char *slash = strrchr(parent, '/');
		const char *base = target + (slash - parent) + 1;
		if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		int pfd = open_create_in_root(rootfd, parent, true, true);
		int dfd = pfd < 0 ? -1 : openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd >= 0)
			close(pfd);
		if (dfd < 0)
			return kiln_err_set(err, errno, "--device %s: the directory %s in the container", d->host, parent);
		mode_t type = d->type == 'b' ? S_IFBLK : S_IFCHR;
		dev_t rdev = makedev(d->major, d->minor);
		int r = 0;
		if (mknodat(dfd, base, type | (d->mode & 0777), rdev) == 0) {
			if (fchownat(dfd, base, d->uid, d->gid, AT_SYMLINK_NOFOLLOW) < 0)
				r = kiln_err_set(err, errno, "--device %s: owner of %s", d->host, target);
		} else if (errno == EEXIST) {
			struct stat st;
			if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || (st.st_mode & S_IFMT) != type ||
			    st.st_rdev != rdev)
				r = kiln_err_set(err, 0, "--device %s: %s exists in the container and is not that device",
						 d->host, target);
		} else if (errno == EPERM) {
			int hfd = open(d->host, O_PATH | O_CLOEXEC);
			struct stat hst;
			int t = -1;
			if (hfd < 0 || fstat(hfd, &hst) < 0 || (hst.st_mode & S_IFMT) != type || hst.st_rdev != rdev) {
				r = kiln_err_set(err, 0, "--device %s: the host node changed", d->host);
			} else {
				t = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
				if (t >= 0) {
					close(t);
					t = openat(dfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
				}
				r = t < 0 ? kiln_err_set(err, errno, "--device %s: creating %s", d->host, target)
					  : bind_fd(hfd, t, false, false, err, target);
			}
			if (t >= 0)
				close(t);
			if (hfd >= 0)
				close(hfd);
		} else {
			r = kiln_err_set(err, errno, "--device %s: creating %s", d->host, target);
		}
		close(dfd);
		if (r < 0)
			return -1;
	}
	return 0;
}

static int setup_user_mounts(struct ctx *c, int rootfd, struct kiln_err *err)
{
	const struct kiln_sandbox_spec *s = c->spec;
	for (size_t i = 0; i < s->n_mounts; i++) {
		const struct kiln_mount *m = &s->mounts[i];
		if (!m->target || m->target[0] != '/')
			return kiln_err_set(err, 0, "mount target \"%s\" must be an absolute path",
					    m->target ? m->target : "");
		KILN_AUTOFREE char *target = clean_path(m->target);
		if (!strcmp(target, "/"))
			return kiln_err_set(err, 0, "mount target must not be /");
		if (m->type == KILN_MOUNT_TMPFS) {
			int tfd = open_create_in_root(rootfd, target, true, true);
			if (tfd < 0)
				return kiln_err_set(err, errno, "tmpfs %s: target", target);
			unsigned attrs;
			KILN_AUTOFREE char *opts = tmpfs_opts(m->options, &attrs);
			if (m->readonly)
				attrs |= MOUNT_ATTR_RDONLY;
			char what[300];
			snprintf(what, sizeof(what), "tmpfs %s", target);
			int r = fs_mount_at(tfd, "tmpfs", "tmpfs", opts, attrs, err, what);
			close(tfd);
			if (r < 0)
				return -1;
			close(r);
			continue;
		}
		int src = c->msrc ? c->msrc[i] : -1;
		if (src < 0)
			return kiln_err_set(err, EBADF, "bind mount %s: source %s", target,
					    m->source ? m->source : "(fd)");
		c->msrc[i] = -1;   /* closed below */
		struct stat sst, tst;
		if (fstat(src, &sst) < 0) {
			close(src);
			return kiln_err_set(err, errno, "bind mount %s: stat source", target);
		}
		int tfd = open_create_in_root(rootfd, target, S_ISDIR(sst.st_mode), true);
		if (tfd < 0) {
			int e = errno;
			close(src);
			return kiln_err_set(err, e, "bind mount %s: target", target);
		}
		if (fstat(tfd, &tst) < 0 || S_ISDIR(tst.st_mode) != S_ISDIR(sst.st_mode)) {
			close(src);
			close(tfd);
			return kiln_err_set(err, 0, "bind mount %s: source and target differ in type "
					    "(directory vs file)", target);
		}
		/* src is the detached clone made in the parent (read-only already) */
		int r = 0;
		if (move_mount(src, "", tfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
			r = kiln_err_set(err, errno, "bind mount %s: move_mount", target);
		close(tfd);
		if (r == 0) {
			/* the mount must be visible at the target inside the rootfs */
			int chk = open_create_in_root(rootfd, target, false, false);
			struct stat cst;
			if (chk < 0 || fstat(chk, &cst) < 0 || cst.st_dev != sst.st_dev || cst.st_ino != sst.st_ino)
				r = kiln_err_set(err, 0, "bind mount %s: race detected (target changed)", target);
			if (chk >= 0)
				close(chk);
		}
		close(src);
		if (r < 0)
			return -1;
	}
	return 0;
}

static int setup_etc_files(struct ctx *c, int rootfd, struct kiln_err *err)
{
	static const char *const files[] = {"hosts", "hostname", "resolv.conf"};
	bool create = c->spec->origin != KILN_ORIGIN_BUILD;
	for (size_t i = 0; i < 3; i++) {
		char dst[64];
		snprintf(dst, sizeof(dst), "/etc/%s", files[i]);
		int sfd = c->etcfd[i];
		c->etcfd[i] = -1;
		if (sfd < 0)
			return kiln_err_set(err, EBADF, "opening the source of %s", dst);
		int tfd = open_create_in_root(rootfd, dst, false, create);
		if (tfd < 0) {
			close(sfd);
			if (!create && errno == ENOENT)
				continue;
			return kiln_err_set(err, errno, "preparing %s", dst);
		}
		struct stat st;
		int r = 0;
		if (fstat(tfd, &st) == 0 && S_ISREG(st.st_mode))
			r = bind_fd(sfd, tfd, false, false, err, dst);
		close(tfd);
		close(sfd);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* Mount namespace: everything beneath the rootfs fd, then pivot_root. */
static int setup_rootfs(struct ctx *c, struct kiln_err *err)
{
	const struct kiln_sandbox_spec *s = c->spec;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return kiln_err_set(err, errno, "making / private");
	if (s->overlay_lower) {
		int t = open(s->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (t < 0)
			return kiln_err_set(err, errno, "rootfs %s", s->rootfs);
		KILN_AUTOFREE char *opts = s->overlay_upper
			? kiln_xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", s->overlay_lower,
					 s->overlay_upper, s->overlay_work ? s->overlay_work : "")
			: kiln_xasprintf("lowerdir=%s", s->overlay_lower);
		int m = fs_mount_at(t, "overlay", "overlay", opts, 0, err, "the overlay rootfs");
		close(t);
		if (m < 0)
			return -1;
		close(m);
	}
	int rootfd;
	if (c->rootmnt >= 0) {
		if (move_mount(c->rootmnt, "", c->rootfs_target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
			return kiln_err_set(err, errno, "mounting the idmapped rootfs %s", s->rootfs);
		rootfd = openat(c->rootmnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} else {
		if (mount(s->rootfs, s->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
			return kiln_err_set(err, errno, "bind mounting the rootfs %s", s->rootfs);
		rootfd = open(s->rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (rootfd < 0)
		return kiln_err_set(err, errno, "opening the rootfs %s", s->rootfs);
	int ret = -1, nullfd = -1, procm = -1, sysm = -1;

	/* the masking source: the host's /dev/null, verified as char device 1:3 */
	nullfd = open("/dev/null", O_PATH | O_CLOEXEC);
	struct stat st;
	if (nullfd < 0 || fstat(nullfd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) {
		kiln_err_set(err, 0, "host /dev/null is not the null device");
		goto out;
	}

	/* /proc: a real directory in the image, a fresh procfs verified by magic */
	int pd = open_sys_dir(rootfd, "proc", err);
	if (pd < 0)
		goto out;
	procm = fs_mount_at(pd, "proc", "proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
			    err, "/proc");
	close(pd);
	if (procm < 0)
		goto out;
	struct statfs sfs;
	int chk = openat(rootfd, "proc", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (chk < 0 || fstatfs(chk, &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC ||
	    fstatfs(procm, &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC) {
		if (chk >= 0)
			close(chk);
		kiln_err_set(err, 0, "/proc: not a procfs after mounting (race detected)");
		goto out;
	}
	close(chk);

	/* /sys read-only (rw only when privileged) */
	int sd = open_sys_dir(rootfd, "sys", err);
	if (sd < 0)
		goto out;
	unsigned sattr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
			 (c->priv.sys_rw ? 0 : MOUNT_ATTR_RDONLY);
	struct kiln_err sysfs_err = {0};
	sysm = fs_mount_at(sd, "sysfs", "sysfs", NULL, sattr, &sysfs_err, "/sys");
	if (sysm < 0) {
		/* e.g. host network: fall back to the host's /sys, read-only */
		int host = open("/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
		int r = host < 0 ? -1 : bind_fd(host, sd, true, !c->priv.sys_rw, err, "/sys");
		if (host >= 0)
			close(host);
		if (r < 0) {
			close(sd);
			goto out;
		}
		sysm = openat(rootfd, "sys", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	close(sd);

	if (setup_dev(c, rootfd, err) < 0 || setup_devices(c, rootfd, err) < 0)
		goto out;

	if (c->priv.masks) {
		if (mask_paths(procm, masked_proc, nullfd, "/proc", err) < 0 ||
		    readonly_paths(procm, readonly_proc, "/proc", err) < 0)
			goto out;
		if (sysm >= 0 && mask_paths(sysm, masked_sys, nullfd, "/sys", err) < 0)
			goto out;
	}

	if (s->origin == KILN_ORIGIN_BUILD)
		stub_sync = c->sync;
	int um = setup_user_mounts(c, rootfd, err);
	stub_sync = -1;
	if (um < 0)
		goto out;
	if (setup_etc_files(c, rootfd, err) < 0)
		goto out;

	if (s->readonly_rootfs) {
		struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY};
		if (mount_setattr(rootfd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0) {
			kiln_err_set(err, errno, "making the rootfs read-only");
			goto out;
		}
	}

	if (fchdir(rootfd) < 0) {
		kiln_err_set(err, errno, "entering the rootfs");
		goto out;
	}
	if (syscall(SYS_pivot_root, ".", ".") < 0) {
		kiln_err_set(err, errno, "pivot_root into %s", s->rootfs);
		goto out;
	}
	if (umount2(".", MNT_DETACH) < 0) {
		kiln_err_set(err, errno, "detaching the old root");
		goto out;
	}
	if (chdir("/") < 0) {
		kiln_err_set(err, errno, "chdir /");
		goto out;
	}
	ret = 0;
out:
	if (nullfd >= 0)
		close(nullfd);
	if (procm >= 0)
		close(procm);
	if (sysm >= 0)
		close(sysm);
	close(rootfd);
	return ret;
}

/* Read a small regular file of the container (after pivot) safely. */
static char *read_container_file(const char *path)
{
	int fd = sys_openat2(AT_FDCWD, path, O_RDONLY | O_NONBLOCK | O_NOCTTY,
			     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
	if (fd < 0)
		return NULL;
	struct stat st;
	char *text = NULL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		kiln_read_fd(fd, 4 << 20, &text, NULL, NULL);
	close(fd);
	return text;
}

static const char *env_get(char *const *env, const char *key)
{
	size_t kl = strlen(key);
	for (; env && *env; env++)
		if (!strncmp(*env, key, kl) && (*env)[kl] == '=')
			return *env + kl + 1;
	return NULL;
}

/* CVE-2019-5736: the user's program is never exec'd by a process whose
 * /proc/self/exe is the kiln binary.  The last step execs a 168-byte static
 * x86-64 ELF from a sealed memfd, which does execve(argv[1], &argv[2], envp)
 * and exits 127 (ENOENT) or 126 on failure.  A "#!/proc/self/exe" in the
 * image then names the sealed trampoline, and no container process can ever
 * hold a writable handle on the host's kiln binary. */
#if defined(__x86_64__)
static const unsigned char trampoline_elf[] = {
	/* ELF header */
	0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	2, 0, 0x3e, 0, 1, 0, 0, 0,
	0x78, 0, 0x40, 0, 0, 0, 0, 0,           /* e_entry 0x400078 */
	0x40, 0, 0, 0, 0, 0, 0, 0,              /* e_phoff */
	0, 0, 0, 0, 0, 0, 0, 0,                 /* e_shoff */
	0, 0, 0, 0, 0x40, 0, 0x38, 0, 1, 0, 0, 0, 0, 0, 0, 0,
	/* program header: PT_LOAD R+X of the whole file at 0x400000 */
	1, 0, 0, 0, 5, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0x40, 0, 0, 0, 0, 0,
	0, 0, 0x40, 0, 0, 0, 0, 0,
	0xa8, 0, 0, 0, 0, 0, 0, 0,
	0xa8, 0, 0, 0, 0, 0, 0, 0,
	0, 0x10, 0, 0, 0, 0, 0, 0,
	/* code */
	0x48, 0x8b, 0x7c, 0x24, 0x10,           /* mov  rdi, [rsp+16]      argv[1] */
	0x48, 0x8d, 0x74, 0x24, 0x18,           /* lea  rsi, [rsp+24]      &argv[2] */
	0x48, 0x8b, 0x04, 0x24,                 /* mov  rax, [rsp]         argc */
	0x48, 0x8d, 0x54, 0xc4, 0x10,           /* lea  rdx, [rsp+rax*8+16] envp */
	0xb8, 0x3b, 0, 0, 0,                    /* mov  eax, 59 (execve) */
	0x0f, 0x05,                             /* syscall */
	0xbf, 0x7f, 0, 0, 0,                    /* mov  edi, 127 */
	0x83, 0xf8, 0xfe,                       /* cmp  eax, -ENOENT */
	0x74, 0x05,                             /* je   +5 */
	0xbf, 0x7e, 0, 0, 0,                    /* mov  edi, 126 */
	0xb8, 0xe7, 0, 0, 0,                    /* mov  eax, 231 (exit_group) */
	0x0f, 0x05,                             /* syscall */
};
#endif

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* A sealed, executable memfd holding the trampoline; -1 when not possible
 * (other architectures, memfd_noexec): then the program is exec'd directly
 * and only the #! check below protects the binary. */
static int trampoline_create(void)
{
#if defined(__x86_64__)
	int fd = memfd_create("kiln-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("kiln-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (kiln_write_all(fd, trampoline_elf, sizeof(trampoline_elf)) < 0 || fchmod(fd, 0555) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		close(fd);
		return -1;
	}
	return fd;
#else
	return -1;
#endif
}

/* Refuse to run the kiln binary itself inside the container, directly or as
 * a #! interpreter (CVE-2019-5736: #!/proc/self/exe). */
static int check_not_self(const struct ctx *c, const char *path, int depth, struct kiln_err *err)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;   /* execve reports it */
	if (st.st_dev == c->self_exe.st_dev && st.st_ino == c->self_exe.st_ino) {
		err->exit_code = 126;
		return kiln_err_set(err, 0, "exec %s: refusing to execute the kiln runtime binary inside a "
				    "container", path);
	}
	if (depth >= 5 || !S_ISREG(st.st_mode))
		return 0;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[256];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 3 || buf[0] != '#' || buf[1] != '!')
		return 0;
	buf[n] = '\0';
	char *p = buf + 2;
	while (*p == ' ' || *p == '\t')
		p++;
	char *e = p;
	while (*e && *e != ' ' && *e != '\t' && *e != '\n')
		e++;
	*e = '\0';
	if (!*p)
		return 0;
	return check_not_self(c, p, depth + 1, err);
}

/* Find argv0 in PATH (inside the container). Returns a path or NULL (errno). */
static char *lookup_exec(const char *argv0, const char *path)
{
	if (strchr(argv0, '/'))
		return kiln_xstrdup(argv0);
	int saw_eacces = 0;
	const char *p = path ? path : KILN_DEFAULT_PATH;
	while (*p) {
		const char *colon = strchr(p, ':');
		size_t l = colon ? (size_t)(colon - p) : strlen(p);
		char *cand = l ? kiln_xasprintf("%.*s/%s", (int)l, p, argv0) : kiln_xasprintf("./%s", argv0);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(cand, X_OK) == 0)
				return cand;
			saw_eacces = 1;
		}
		free(cand);
		if (!colon)
			break;
		p = colon + 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
	return NULL;
}

static void reset_signals(void)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
}

/* The small init (PID 1 with --init): forwards signals, reaps zombies, exits
 * with the main process's status. */
static __attribute__((noreturn)) void init_loop(pid_t child)
{
	sigset_t all;
	sigfillset(&all);
	prctl(PR_SET_NAME, "kiln-init");
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&all, &si);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(child, sig);
			continue;
		}
		int status;
		pid_t p;
		while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
			if (p != child)
				continue;
			if (WIFEXITED(status))
				_exit(WEXITSTATUS(status));
			_exit(128 + WTERMSIG(status));
		}
	}
}

/* The process part shared by run and exec: runs in the container's mount
 * namespace (after pivot or setns); never returns. */
static __attribute__((noreturn)) void child_process(struct ctx *c, const struct msg *go)
{
	const struct kiln_sandbox_spec *s = c->spec;
	struct kiln_err err = {0};
	int sync = c->sync;

	/* user and groups from the image's own files */
	KILN_AUTOFREE char *passwd = read_container_file("/etc/passwd");
	KILN_AUTOFREE char *group = read_container_file("/etc/group");
	struct kiln_user u;
	if (kiln_user_resolve(s->user, passwd, group, &u, &err) < 0) {
		kiln_err_wrap(&err, "user");
		child_fail(sync, 125, &err);
	}

	/* working directory, resolved inside the rootfs; magic links refused */
	KILN_AUTOFREE char *cwd = clean_path(s->cwd && s->cwd[0] ? s->cwd : "/");
	int cfd = open_create_in_root(AT_FDCWD, cwd, true, !c->exec_mode);
	if (cfd < 0 || fchdir(cfd) < 0) {
		kiln_err_set(&err, errno, "working directory %s", cwd);
		child_fail(sync, 125, &err);
	}
	close(cfd);

	/* environment */
	struct kiln_strv env = {0};
	for (char *const *e = s->env; e && *e; e++)
		if (strchr(*e, '='))
			kiln_strv_push(&env, *e);
	if (!env_get(env.v, "PATH"))
		kiln_strv_push(&env, "PATH=" KILN_DEFAULT_PATH);
	if (!env_get(env.v, "HOSTNAME") && c->hostname)
		kiln_strv_push_owned(&env, kiln_xasprintf("HOSTNAME=%s", c->hostname));
	if (s->tty && !env_get(env.v, "TERM"))
		kiln_strv_push(&env, "TERM=xterm");
	if (!env_get(env.v, "HOME"))
		kiln_strv_push_owned(&env, kiln_xasprintf("HOME=%s", u.home));

	if (!s->argv || !s->argv[0] || !s->argv[0][0]) {
		kiln_err_set(&err, 0, "no command specified");
		child_fail(sync, 125, &err);
	}
	char *path = lookup_exec(s->argv[0], env_get(env.v, "PATH"));
	if (!path) {
		if (errno == EACCES) {
			kiln_err_set(&err, 0, "exec: \"%s\": permission denied", s->argv[0]);
			child_fail(sync, 126, &err);
		}
		kiln_err_set(&err, 0, "exec: \"%s\": executable file not found in $PATH", s->argv[0]);
		child_fail(sync, 127, &err);
	}
	if (check_not_self(c, path, 0, &err) < 0)
		child_fail(sync, 126, &err);

	/* terminal: a pty from the container's own devpts instance */
	int slave = -1;
	if (s->tty) {
		int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		int unlock = 0;
		if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 ||
		    (slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY)) < 0) {
			kiln_err_set(&err, errno, "allocating a pty");
			child_fail(sync, 125, &err);
		}
		if (go->has_ws)
			ioctl(slave, TIOCSWINSZ, &go->ws);
		struct msg m = {.type = MSG_TTY};
		send_msg(sync, &m, master);
		close(master);
	}

	/* stdio */
	int fds[3] = {s->stdin_fd, s->stdout_fd, s->stderr_fd};
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0 && dup2(fds[i], i) < 0) {
			kiln_err_set(&err, errno, "stdio");
			child_fail(sync, 125, &err);
		}

	if (s->init) {
		sigset_t all, old;
		sigfillset(&all);
		sigprocmask(SIG_BLOCK, &all, &old);
		pid_t pid = fork();
		if (pid < 0) {
			kiln_err_set(&err, errno, "init: fork");
			child_fail(sync, 125, &err);
		}
		if (pid > 0) {
			close(sync);
			if (slave >= 0)
				close(slave);
			close_range(3, ~0U, 0);
			/* init needs no privilege at all */
			kiln_caps_bound(0, &err);
			kiln_caps_set(0, &err);
			init_loop(pid);
		}
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	/* a session of its own: the user's terminal signals reach kiln, which
	 * forwards them once (docker's containers are never in the shell's
	 * process group either) */
	setsid();
	if (slave >= 0) {
		if (ioctl(slave, TIOCSCTTY, 0) < 0) {
			kiln_err_set(&err, errno, "setting the controlling terminal");
			child_fail(sync, 125, &err);
		}
		for (int i = 0; i < 3; i++)
			dup2(slave, i);
		if (slave > 2)
			close(slave);
	}

	/* credentials.  Like runc: without no_new_privs the filter is loaded
	 * while still root with CAP_SYS_ADMIN, before the ids change; with
	 * no_new_privs it is loaded last. */
	if (c->priv.no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		kiln_err_set(&err, errno, "no_new_privs");
		child_fail(sync, 125, &err);
	}
	if (c->priv.seccomp && !c->priv.no_new_privs && kiln_seccomp_install(c->seccomp, &err) < 0)
		child_fail(sync, 125, &err);
	if (kiln_caps_bound(c->priv.caps, &err) < 0)
		child_fail(sync, 125, &err);
	if (setgroups(u.n_groups, u.groups) < 0) {
		kiln_err_set(&err, errno, "setgroups");
		child_fail(sync, 125, &err);
	}
	if (setresgid(u.gid, u.gid, u.gid) < 0) {
		kiln_err_set(&err, errno, "setgid %u", (unsigned)u.gid);
		child_fail(sync, 125, &err);
	}
	prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
	if (setresuid(u.uid, u.uid, u.uid) < 0) {
		kiln_err_set(&err, errno, "setuid %u", (unsigned)u.uid);
		child_fail(sync, 125, &err);
	}
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	if (kiln_caps_set(c->priv.caps, &err) < 0)
		child_fail(sync, 125, &err);
	if (c->priv.seccomp && c->priv.no_new_privs && kiln_seccomp_install(c->seccomp, &err) < 0)
		child_fail(sync, 125, &err);

	/* test hook (security.md item 2): hold the finished-but-not-exec'd
	 * process for a while so that tests can attack it */
	const char *pause_ms = getenv("KILN_TEST_SETUP_PAUSE_MS");
	if (pause_ms) {
		long ms = strtol(pause_ms, NULL, 10);
		if (ms > 0 && ms <= 10000) {
			struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
	umask(022);
	close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	if (c->trampoline >= 0) {
		size_t n = 0;
		while (s->argv[n])
			n++;
		char **targv = kiln_xcalloc(n + 3, sizeof(char *));
		targv[0] = "kiln-exec";
		targv[1] = path;
		for (size_t i = 0; i < n; i++)
			targv[2 + i] = s->argv[i];
		syscall(SYS_execveat, c->trampoline, "", targv, env.v, AT_EMPTY_PATH);
		/* a profile that forbids execveat: fall through to execve */
		free(targv);
	}
	execve(path, s->argv, env.v);
	int e = errno;
	if (e == ENOENT) {
		kiln_err_set(&err, 0, "exec: \"%s\": no such file or directory", path);
		child_fail(sync, 127, &err);
	}
	kiln_err_set(&err, e, "exec: \"%s\"", path);
	child_fail(sync, 126, &err);
}

static int child_main(void *arg)
{
	struct ctx *c = arg;
	const struct kiln_sandbox_spec *s = c->spec;
	struct kiln_err err = {0};
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	reset_signals();
	umask(0);

	struct msg *go = kiln_xcalloc(1, sizeof(*go));
	int gofd = -1;
	ssize_t n = recv_msg(c->sync, go, &gofd);
	if (n <= 0 || go->type != MSG_GO)
		_exit(125);   /* the parent gave up; it reports why */
	c->rootmnt = gofd;
	if (preopen_sources(c, &err) < 0)
		child_fail(c->sync, 125, &err);
	if (s->userns_size) {
		/* the maps are written: become the namespace's root */
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
			kiln_err_set(&err, errno, "user namespace: becoming root");
			child_fail(c->sync, 125, &err);
		}
	}

	if (!c->priv.host_net) {
		if (go->lease.active ? kiln_net_configure_eth0(&go->lease, &err) < 0
				     : kiln_net_loopback_up(&err) < 0)
			child_fail(c->sync, 125, &err);
	}
	if (unshare(CLONE_NEWCGROUP) < 0) {
		kiln_err_set(&err, errno, "cgroup namespace");
		child_fail(c->sync, 125, &err);
	}
	if (sethostname(c->hostname, strlen(c->hostname)) < 0) {
		kiln_err_set(&err, errno, "sethostname");
		child_fail(c->sync, 125, &err);
	}
	if (!s->rootfs || !s->rootfs[0]) {
		kiln_err_set(&err, 0, "no rootfs given");
		child_fail(c->sync, 125, &err);
	}
	if (setup_rootfs(c, &err) < 0) {
		kiln_err_wrap(&err, "rootfs");
		child_fail(c->sync, 125, &err);
	}
	child_process(c, go);
}

/* ---------------------------------------------------------------- parent */

/* User namespace: write the id maps of the container's process. */
static int write_id_maps(pid_t pid, const struct kiln_sandbox_spec *spec, struct kiln_err *err)
{
	static const char *const files[] = {"uid_map", "gid_map"};
	for (int i = 0; i < 2; i++) {
		char path[64], line[96];
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
		snprintf(line, sizeof(line), "0 %u %u\n", i ? (unsigned)spec->userns_gid : (unsigned)spec->userns_uid,
			 spec->userns_size);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line)) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return kiln_err_set(err, e, "user namespace: writing %s", path);
		}
		close(fd);
	}
	return 0;
}

/* User namespace: the rootfs as a detached mount idmapped to the container's
 * namespace (made here: it needs privilege over the filesystem). */
static int idmapped_rootfs(pid_t pid, const char *rootfs, struct kiln_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	int ufd = open(path, O_RDONLY | O_CLOEXEC);
	if (ufd < 0)
		return kiln_err_set(err, errno, "user namespace: opening %s", path);
	int tree = open_tree(AT_FDCWD, rootfs, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (tree < 0) {
		int e = errno;
		close(ufd);
		return kiln_err_set(err, e, "user namespace: cloning the rootfs %s", rootfs);
	}
	struct mount_attr a = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ufd};
	int r = mount_setattr(tree, "", AT_EMPTY_PATH, &a, sizeof(a));
	int e = errno;
	close(ufd);
	if (r < 0) {
		close(tree);
		return kiln_err_set(err, e, "user namespace: idmapping the rootfs %s (does its filesystem "
				    "support idmapped mounts?)", rootfs);
	}
	return tree;
}

static void random_hex(char *out, size_t nbytes)
{
	unsigned char b[32];
	if (nbytes > 32)
		nbytes = 32;
	if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
		uint64_t t = kiln_now_ns() ^ (uint64_t)getpid();
		for (size_t i = 0; i < nbytes; i++)
			b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)i;
	}
	for (size_t i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static int write_small(const char *dir, const char *name, const char *text, struct kiln_err *err)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return kiln_err_set(err, errno, "writing %s", path);
	int r = kiln_write_all(fd, text, strlen(text));
	close(fd);
	if (r < 0)
		return kiln_err_set(err, errno, "writing %s", path);
	return 0;
}

/* hosts, hostname, resolv.conf for the container, like Docker writes them. */
static int write_etc_files(const char *dir, const char *hostname, const struct kiln_net_lease *lease,
			   bool host_net, struct kiln_err *err)
{
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
			  "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
			  "ff02::2\tip6-allrouters\n");
	if (lease && lease->active)
		kiln_buf_printf(&b, "%u.%u.%u.%u\t%s\n", lease->addr >> 24, (lease->addr >> 16) & 255,
				(lease->addr >> 8) & 255, lease->addr & 255, hostname);
	else
		kiln_buf_printf(&b, "127.0.1.1\t%s\n", hostname);
	int r = write_small(dir, "hosts", b.data, err);
	kiln_buf_free(&b);
	if (r < 0)
		return -1;
	char hn[300];
	snprintf(hn, sizeof(hn), "%s\n", hostname);
	if (write_small(dir, "hostname", hn, err) < 0)
		return -1;
	/* resolv.conf: the host's, without the resolvers the container cannot
	 * reach; never a public one in their place */
	KILN_AUTOFREE char *host = NULL, *rc = NULL;
	if (kiln_read_file("/etc/resolv.conf", 1 << 16, &host, NULL, NULL) < 0)
		host = NULL;
	kiln_net_resolv_conf(host, host_net, &rc);
	return write_small(dir, "resolv.conf", rc, err);
}

static struct termios saved_tio;
static bool tio_saved;

static void restore_tty(void)
{
	if (tio_saved) {
		tcsetattr(0, TCSADRAIN, &saved_tio);
		tio_saved = false;
	}
}

/* Wait for the container, forwarding signals and relaying the pty. */
static int supervise(pid_t pid, int sync, int sfd, const struct kiln_sandbox_spec *spec,
		     int *status, struct msg *errmsg, bool *failed, bool *execd, struct stubs *stubs,
		     int *forwarded)
{
	/* a pidfd, not SIGCHLD: other threads (parallel build steps) have
	 * children of their own, and a process-wide signal reaches one reader */
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return -1;
	int master = -1;
	bool stdin_open = spec->tty && spec->interactive;
	bool sync_open = true;
	uint64_t start = kiln_now_ns();
	bool exited = false;
	while (!exited) {
		struct pollfd p[5];
		int np = 0;
		int i_sync = -1, i_sig, i_master = -1, i_in = -1, i_pid;
		p[np] = (struct pollfd){pidfd, POLLIN, 0};
		i_pid = np++;
		if (sync_open) {
			p[np] = (struct pollfd){sync, POLLIN, 0};
			i_sync = np++;
		}
		p[np] = (struct pollfd){sfd, POLLIN, 0};
		i_sig = np++;
		if (master >= 0) {
			p[np] = (struct pollfd){master, POLLIN, 0};
			i_master = np++;
			if (stdin_open) {
				p[np] = (struct pollfd){0, POLLIN, 0};
				i_in = np++;
			}
		}
		int timeout = -1;
		if (!*execd && !*failed) {
			uint64_t el = (kiln_now_ns() - start) / 1000000;
			if (el > 60000) {
				kill(pid, SIGKILL);
				snprintf(errmsg->text, sizeof(errmsg->text), "container setup timed out");
				errmsg->code = 125;
				*failed = true;
			} else {
				timeout = (int)(60000 - el);
			}
		}
		int r = poll(p, (nfds_t)np, timeout);
		if (r < 0 && errno != EINTR) {
			close(pidfd);
			return -1;
		}
		if (r <= 0)
			continue;
		if (p[i_pid].revents) {
			int st;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				*status = st;
				exited = true;
			}
		}
		if (i_sync >= 0 && p[i_sync].revents) {
			struct msg *m = kiln_xcalloc(1, sizeof(*m));
			int fd = -1;
			ssize_t n = recv_msg(sync, m, &fd);
			if (n <= 0) {
				sync_open = false;
				if (!*failed) {
					*execd = true;
					if (spec->on_running)
						spec->on_running(pid, spec->on_running_arg);
				}
			} else if (m->type == MSG_ERR) {
				*errmsg = *m;
				*failed = true;
			} else if (m->type == MSG_STUB && stubs) {
				stubs->v = kiln_xrealloc(stubs->v, (stubs->n + 1) * sizeof(*stubs->v));
				stubs->v[stubs->n++] = (struct stub){kiln_xstrdup(m->text), (dev_t)m->dev,
								     (ino_t)m->ino, m->value != 0};
			} else if (m->type == MSG_TTY && fd >= 0) {
				if (spec->on_tty) {
					spec->on_tty(fd, spec->on_tty_arg);
				} else {
					master = fd;
					fd = -1;
					if (stdin_open && isatty(0) && tcgetattr(0, &saved_tio) == 0) {
						struct termios raw = saved_tio;
						cfmakeraw(&raw);
						tio_saved = tcsetattr(0, TCSANOW, &raw) == 0;
					}
				}
			}
			if (fd >= 0)
				close(fd);
			free(m);
		}
		if (i_in >= 0 && p[i_in].revents) {
			char buf[4096];
			ssize_t n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				stdin_open = false;
				/* end of input: send EOF (^D) to the terminal */
				char eot = 4;
				(void)!write(master, &eot, 1);
			} else {
				kiln_write_all(master, buf, (size_t)n);
			}
		}
		if (i_master >= 0 && p[i_master].revents) {
			char buf[8192];
			ssize_t n = read(master, buf, sizeof(buf));
			if (n <= 0) {
				close(master);
				master = -1;
			} else {
				kiln_write_all(1, buf, (size_t)n);
			}
		}
		if (p[i_sig].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGWINCH) {
					struct winsize ws;
					if (master >= 0 && ioctl(0, TIOCGWINSZ, &ws) == 0)
						ioctl(master, TIOCSWINSZ, &ws);
				} else {
					kill(pid, (int)si.ssi_signo);
					if (forwarded)
						*forwarded = (int)si.ssi_signo;
				}
			}
		}
	}
	/* drain what the container wrote last */
	if (master >= 0) {
		int fl = fcntl(master, F_GETFL);
		fcntl(master, F_SETFL, fl | O_NONBLOCK);
		char buf[8192];
		ssize_t n;
		while ((n = read(master, buf, sizeof(buf))) > 0)
			kiln_write_all(1, buf, (size_t)n);
		close(master);
	}
	if (sync_open) {
		/* an error message may still be queued */
		struct msg *m = kiln_xcalloc(1, sizeof(*m));
		int fl = fcntl(sync, F_GETFL);
		fcntl(sync, F_SETFL, fl | O_NONBLOCK);
		int fd = -1;
		if (recv_msg(sync, m, &fd) > 0 && m->type == MSG_ERR) {
			*errmsg = *m;
			*failed = true;
		}
		if (fd >= 0)
			close(fd);
		free(m);
	}
	restore_tty();
	close(pidfd);
	return 0;
}

static void fill_exit(int status, struct kiln_exit *ex)
{
	if (WIFEXITED(status)) {
		ex->code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		ex->signal = WTERMSIG(status);
		ex->code = 128 + ex->signal;
	}
}

/* /run/kiln/sb-<pid>-*: private state directories of kiln processes that
 * died before removing theirs (SIGKILL).  The files are only bind-mount
 * sources: removing them never affects a running container. */
static void clean_stale_state_dirs(void)
{
	DIR *d = opendir("/run/kiln");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int pid = 0;
		if (strncmp(e->d_name, "sb-", 3) || sscanf(e->d_name + 3, "%d-", &pid) != 1 || pid <= 0)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		kiln_rm_rf_at(dirfd(d), e->d_name, NULL);
	}
	closedir(d);
}

/* More threads than this one?  (/proc/self/task has 2 + threads links.) */
static bool multithreaded(void)
{
	struct stat st;
	if (getenv("KILN_SANDBOX_FORK"))   /* tests: take the fork path */
		return true;
	return stat("/proc/self/task", &st) == 0 && st.st_nlink > 3;
}

static const int fwd_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
				  SIGCONT, SIGALRM};

int kiln_sandbox_run(const struct kiln_sandbox_spec *spec, struct kiln_exit *ex, struct kiln_err *err)
{
	memset(ex, 0, sizeof(*ex));
	struct ctx c = {.spec = spec, .sync = -1, .trampoline = -1, .rootmnt = -1, .rootfs_target = -1};
	if (kiln_sandbox_decide(spec, &c.priv, err) < 0) {
		err->exit_code = 125;
		return -1;
	}
	if (c.priv.seccomp && kiln_seccomp_prepare(spec, c.priv.caps, &c.seccomp, err) < 0) {
		err->exit_code = 125;
		return -1;
	}
	char idbuf[65];
	const char *id = spec->id;
	if (!id || !id[0]) {
		random_hex(idbuf, 32);
		id = idbuf;
	}
	char hostbuf[64];
	snprintf(hostbuf, sizeof(hostbuf), "%.12s", id);
	c.hostname = spec->hostname && spec->hostname[0] ? spec->hostname : hostbuf;
	if (stat("/proc/self/exe", &c.self_exe) < 0)
		memset(&c.self_exe, 0, sizeof(c.self_exe));
	c.trampoline = trampoline_create();

	int ret = -1, sp[2] = {-1, -1}, sfd = -1;
	char tmpdir[64] = "";
	struct kiln_cgroup cg = {0};
	int cg_owner = -1;
	struct kiln_net_lease lease = {0};
	pid_t pid = -1, proxy = -1;
	int rootmnt = -1;
	sigset_t mask, oldmask;
	bool masked = false;

	if (spec->state_dir) {
		c.state_dir = spec->state_dir;
	} else {
		if (kiln_mkdir_p("/run/kiln", 0700, err) < 0)
			goto out;
		clean_stale_state_dirs();
		snprintf(tmpdir, sizeof(tmpdir), "/run/kiln/sb-%d-XXXXXX", (int)getpid());
		if (!mkdtemp(tmpdir)) {
			kiln_err_set(err, errno, "creating %s", tmpdir);
			tmpdir[0] = '\0';
			goto out;
		}
		c.state_dir = tmpdir;
	}
	/* A cgroup of its own for every container: it carries the device
	 * filter (Docker's default list plus --device), and the limits.  On v1
	 * without limits only the devices hierarchy: each hierarchy costs a
	 * task move at the start. */
	{
		size_t nr = 0;
		const struct kiln_device_rule *rules = NULL;
		struct kiln_device_rule *own = NULL;
		if (!c.priv.host_devices) {
			if (spec->n_devices)
				rules = own = kiln_devices_rules(spec->devices, spec->n_devices, &nr);
			else
				rules = kiln_devices_default(&nr);
		}
		/* claimed first: a sweep by another kiln never takes it away */
		int r = (cg_owner = kiln_cgroup_gc_claim(id, err)) < 0 ? -1
			: kiln_cgroup_create(&cg, id, &spec->limits, rules, nr, err);
		free(own);
		if (r < 0)
			goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		kiln_err_set(err, errno, "socketpair");
		goto out;
	}
	sigemptyset(&mask);
	for (size_t i = 0; i < sizeof(fwd_signals) / sizeof(fwd_signals[0]); i++)
		sigaddset(&mask, fwd_signals[i]);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	masked = true;
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		kiln_err_set(err, errno, "signalfd");
		goto out;
	}

	unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC;
	if (!c.priv.host_net)
		flags |= CLONE_NEWNET;
	if (spec->userns_size) {
		if (spec->overlay_lower) {
			kiln_err_set(err, 0, "a user namespace (--uidmap) needs a directory rootfs, not an overlay");
			goto out;
		}
		flags |= CLONE_NEWUSER;
	}
	if (clone_sources(&c, err) < 0)
		goto out;
	c.sync = sp[1];
	if (!multithreaded()) {
		/* the lean path: one raw clone into all namespaces */
		pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
		if (pid < 0) {
			kiln_err_set(err, errno, "creating the container's namespaces (clone)");
			goto out;
		}
		if (pid == 0) {
			close(sp[0]);
			close(sfd);
			child_main(&c);
			_exit(125);
		}
	} else {
		/* other threads may hold libc locks: glibc's fork keeps the child
		 * consistent; the (single-threaded) intermediate then unshares and
		 * clones PID 1 as our child (CLONE_PARENT) */
		pid_t mid = fork();
		if (mid < 0) {
			kiln_err_set(err, errno, "fork");
			goto out;
		}
		if (mid == 0) {
			struct kiln_err e2 = {0};
			close(sp[0]);
			close(sfd);
			if (unshare((int)flags) < 0) {
				kiln_err_set(&e2, errno, "creating the container's namespaces (unshare)");
				child_fail(sp[1], 125, &e2);
			}
			pid_t p = (pid_t)syscall(SYS_clone, CLONE_PARENT, NULL, NULL, NULL, 0);
			if (p == 0) {
				child_main(&c);
				_exit(125);
			}
			if (p < 0) {
				kiln_err_set(&e2, errno, "creating the container's first process (clone)");
				child_fail(sp[1], 125, &e2);
			}
			struct msg m = {.type = MSG_PID, .value = p};
			send_msg(sp[1], &m, -1);
			_exit(0);
		}
		int mst;
		waitpid(mid, &mst, 0);
		struct msg *m = kiln_xcalloc(1, sizeof(*m));
		ssize_t n = recv_msg(sp[0], m, NULL);
		if (n <= 0 || m->type != MSG_PID) {
			kiln_err_set(err, 0, "%s", n > 0 && m->type == MSG_ERR ? m->text
					 : "creating the container's namespaces failed");
			free(m);
			goto out;
		}
		pid = m->value;
		free(m);
	}
	close(sp[1]);
	sp[1] = -1;

	struct msg *go = kiln_xcalloc(1, sizeof(*go));
	go->type = MSG_GO;
	if (spec->userns_size) {
		if (write_id_maps(pid, spec, err) < 0)
			goto kill_child;
		rootmnt = idmapped_rootfs(pid, spec->rootfs, err);
		if (rootmnt < 0)
			goto kill_child;
	}
	if (kiln_cgroup_add(&cg, pid, err) < 0)
		goto kill_child;
	if (spec->net == KILN_NET_BRIDGE) {
		if (kiln_net_bridge_attach(NULL, id, pid, &lease, err) < 0)
			goto kill_child;
		go->lease = lease;
	}
	if (write_etc_files(c.state_dir, c.hostname, &lease, c.priv.host_net, err) < 0)
		goto kill_child;
	if (spec->n_ports > 0) {
		if (!lease.active) {
			kiln_err_set(err, 0, "publishing ports needs the bridge network");
			goto kill_child;
		}
		proxy = kiln_net_proxy_start(spec->ports, spec->n_ports, lease.addr, err);
		if (proxy < 0)
			goto kill_child;
	}
	if (spec->tty && isatty(0) && ioctl(0, TIOCGWINSZ, &go->ws) == 0)
		go->has_ws = true;
	if (spec->on_start && spec->on_start(pid, spec->on_start_arg) != 0) {
		kiln_err_set(err, 0, "container start aborted");
		goto kill_child;
	}
	send_msg(sp[0], go, rootmnt);
	free(go);
	go = NULL;
	if (rootmnt >= 0) {
		close(rootmnt);
		rootmnt = -1;
	}

	int status = 0;
	bool failed = false, execd = false;
	struct msg *em = kiln_xcalloc(1, sizeof(*em));
	struct stubs stubs = {0};
	int forwarded = 0;
	int sr = supervise(pid, sp[0], sfd, spec, &status, em, &failed, &execd, &stubs, &forwarded);
	if (sr < 0) {
		kiln_err_set(err, errno, "waiting for the container");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	remove_stubs(spec->rootfs, &stubs);
	if (sr < 0) {
		free(em);
		goto out;
	}
	if (failed) {
		kiln_err_set(err, 0, "%s", em->text);
		err->exit_code = em->code ? em->code : 125;
		free(em);
		goto out;
	}
	free(em);
	fill_exit(status, ex);
	ex->forwarded_signal = forwarded;
	if (kiln_cgroup_oom_killed(&cg, ex->signal == SIGKILL || ex->code == 137)) {
		ex->oom_killed = true;
		ex->memory_limit = spec->limits.memory;
		char sz[32];
		kiln_format_size(spec->limits.memory, sz, sizeof(sz));
		snprintf(ex->message, sizeof(ex->message), "killed: out of memory (limit %s)", sz);
		if (ex->code == 0)
			ex->code = 137;
	}
	ret = 0;
	goto out;

kill_child:
	free(go);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	err->exit_code = 125;
out:
	if (ret < 0 && !err->exit_code)
		err->exit_code = 125;
	if (proxy > 0) {
		kill(proxy, SIGKILL);
		waitpid(proxy, NULL, 0);
	}
	kiln_net_release(&lease);
	kiln_cgroup_destroy(&cg);
	kiln_cgroup_gc_release(id, cg_owner);
	if (sp[0] >= 0)
		close(sp[0]);
	if (sp[1] >= 0)
		close(sp[1]);
	if (sfd >= 0)
		close(sfd);
	if (masked) {
		/* reap anything left, drop pending forwarded signals */
		struct timespec zero = {0, 0};
		while (sigtimedwait(&mask, NULL, &zero) > 0)
			;
		sigprocmask(SIG_SETMASK, &oldmask, NULL);
	}
	if (tmpdir[0])
		kiln_rm_rf(tmpdir, NULL);
	if (c.trampoline >= 0)
		close(c.trampoline);
	if (rootmnt >= 0)
		close(rootmnt);
	close_sources(&c);
	return ret;
}

/* ---------------------------------------------------------------- exec */

int kiln_sandbox_exec(pid_t target, const struct kiln_sandbox_spec *spec, struct kiln_exit *ex,
		      struct kiln_err *err)
{
	memset(ex, 0, sizeof(*ex));
	struct ctx c = {.spec = spec, .sync = -1, .exec_mode = true, .trampoline = -1, .rootmnt = -1,
			.rootfs_target = -1};
	if (kiln_sandbox_decide(spec, &c.priv, err) < 0) {
		err->exit_code = 125;
		return -1;
	}
	if (c.priv.seccomp && kiln_seccomp_prepare(spec, c.priv.caps, &c.seccomp, err) < 0) {
		err->exit_code = 125;
		return -1;
	}
	if (stat("/proc/self/exe", &c.self_exe) < 0)
		memset(&c.self_exe, 0, sizeof(c.self_exe));
	c.trampoline = trampoline_create();
	static const char *const nss[] = {"cgroup", "ipc", "uts", "net", "pid", "mnt"};
	int nsfd[6];
	for (int i = 0; i < 6; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/proc/%d/ns/%s", (int)target, nss[i]);
		nsfd[i] = open(p, O_RDONLY | O_CLOEXEC);
		if (nsfd[i] < 0) {
			int e = errno;
			for (int j = 0; j < i; j++)
				close(nsfd[j]);
			err->exit_code = 125;
			return kiln_err_set(err, e, "opening %s", p);
		}
	}
	char hn[256] = "";
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		for (int j = 0; j < 6; j++)
			close(nsfd[j]);
		err->exit_code = 125;
		return kiln_err_set(err, errno, "socketpair");
	}
	sigset_t mask, oldmask;
	sigemptyset(&mask);
	for (size_t i = 0; i < sizeof(fwd_signals) / sizeof(fwd_signals[0]); i++)
		sigaddset(&mask, fwd_signals[i]);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	int ret = -1;
	pid_t mid = fork();
	if (mid == 0) {
		/* intermediate: join the namespaces, then clone the real child as
		 * OUR PARENT's child (CLONE_PARENT) so it can be waited for */
		struct kiln_err e2 = {0};
		close(sp[0]);
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		if (kiln_cgroup_join_like(target, getpid(), spec->id && spec->id[0] ? spec->id : NULL, &e2) < 0)
			child_fail(sp[1], 125, &e2);
		struct stat mine, theirs;
		char up[64];
		snprintf(up, sizeof(up), "/proc/%d/ns/user", (int)target);
		if (stat("/proc/self/ns/user", &mine) == 0 && stat(up, &theirs) == 0 && mine.st_ino != theirs.st_ino) {
			int ufd = open(up, O_RDONLY | O_CLOEXEC);
			if (ufd < 0 || setns(ufd, CLONE_NEWUSER) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
				kiln_err_set(&e2, errno, "joining the container's user namespace");
				child_fail(sp[1], 125, &e2);
			}
			close(ufd);
		}
		for (int i = 0; i < 6; i++)
			if (setns(nsfd[i], 0) < 0) {
				kiln_err_set(&e2, errno, "joining the container's %s namespace", nss[i]);
				child_fail(sp[1], 125, &e2);
			}
		if (gethostname(hn, sizeof(hn) - 1) == 0)
			c.hostname = hn;
		pid_t p = (pid_t)syscall(SYS_clone, CLONE_PARENT, NULL, NULL, NULL, 0);
		if (p < 0) {
			kiln_err_set(&e2, errno, "clone into the container");
			child_fail(sp[1], 125, &e2);
		}
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
			reset_signals();
			c.sync = sp[1];
			struct msg go = {0};
			child_process(&c, &go);
		}
		struct msg m = {.type = MSG_PID, .value = p};
		send_msg(sp[1], &m, -1);
		_exit(0);
	}
	close(sp[1]);
	for (int j = 0; j < 6; j++)
		close(nsfd[j]);
	if (mid < 0) {
		kiln_err_set(err, errno, "fork");
		goto out;
	}
	struct msg *m = kiln_xcalloc(1, sizeof(*m));
	ssize_t n = recv_msg(sp[0], m, NULL);
	int st;
	waitpid(mid, &st, 0);
	if (n <= 0 || m->type != MSG_PID) {
		kiln_err_set(err, 0, "%s", n > 0 && m->type == MSG_ERR ? m->text : "exec: joining the container failed");
		err->exit_code = m->code ? m->code : 125;
		free(m);
		goto out;
	}
	pid_t pid = m->value;
	free(m);
	int status = 0;
	bool failed = false, execd = false;
	struct msg *em = kiln_xcalloc(1, sizeof(*em));
	if (supervise(pid, sp[0], sfd, spec, &status, em, &failed, &execd, NULL, NULL) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		kiln_err_set(err, errno, "waiting for the exec'd process");
		free(em);
		goto out;
	}
	if (failed) {
		kiln_err_set(err, 0, "%s", em->text);
		err->exit_code = em->code ? em->code : 125;
		free(em);
		goto out;
	}
	free(em);
	fill_exit(status, ex);
	ret = 0;
out:
	if (ret < 0 && !err->exit_code)
		err->exit_code = 125;
	close(sp[0]);
	if (sfd >= 0)
		close(sfd);
	struct timespec zero = {0, 0};
	while (sigtimedwait(&mask, NULL, &zero) > 0)
		;
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	if (c.trampoline >= 0)
		close(c.trampoline);
	return ret;
}
