/* kiln — cgroups v1, v2 and hybrid.  A container's cgroups are created
 * beneath the cgroup of the process running kiln (per controller, as read
 * from /proc/self/cgroup) and removed afterwards. */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include "common/util.h"

int kiln_cgroup_layout(enum kiln_cgroup_layout *out, struct kiln_err *err)
{
	struct statfs s;
	if (statfs("/sys/fs/cgroup", &s) < 0)
		return kiln_err_set(err, errno, "statfs /sys/fs/cgroup");
	if (s.f_type == CGROUP2_SUPER_MAGIC) {
		*out = KILN_CG_V2;
		return 0;
	}
	if (s.f_type != TMPFS_MAGIC)
		return kiln_err_set(err, 0, "/sys/fs/cgroup is neither cgroup2 nor a tmpfs of v1 hierarchies");
	if (statfs("/sys/fs/cgroup/unified", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC)
		*out = KILN_CG_HYBRID;
	else
		*out = KILN_CG_V1;
	return 0;
}

static bool ctrl_in_list(const char *list, size_t len, const char *ctrl)
{
	size_t cl = strlen(ctrl);
	const char *p = list, *end = list + len;
	while (p < end) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		size_t l = c ? (size_t)(c - p) : (size_t)(end - p);
		if (l == cl && !memcmp(p, ctrl, cl))
			return true;
		if (!c)
			break;
		p = c + 1;
	}
	return false;
}

/* The path of the cgroup that /proc/<pid>/cgroup text lists for controller. */
static char *own_path(const char *text, const char *controller)
{
	const char *p = text;
	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		const char *c1 = memchr(p, ':', len);
		const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - p)) : NULL;
		if (c2) {
			size_t cl = (size_t)(c2 - c1 - 1);
			bool match = controller[0] ? ctrl_in_list(c1 + 1, cl, controller)
						   : (cl == 0 && !strncmp(p, "0:", 2));
			if (match)
				return kiln_xstrndup(c2 + 1, len - (size_t)(c2 + 1 - p));
		}
		p = eol ? eol + 1 : NULL;
	}
	return NULL;
}

char *kiln_cgroup_child_path(const char *proc_self_cgroup, const char *controller,
			     const char *id, struct kiln_err *err)
{
	if (!id || !id[0] || strchr(id, '/') || !strcmp(id, ".") || !strcmp(id, "..")) {
		kiln_err_set(err, 0, "invalid cgroup name \"%s\"", id ? id : "");
		return NULL;
	}
	char *own = own_path(proc_self_cgroup, controller);
	if (!own || own[0] != '/') {
		kiln_err_set(err, 0, "no cgroup for controller \"%s\" in /proc/self/cgroup", controller);
		free(own);
		return NULL;
	}
	if (strstr(own, "/..") || strstr(own, "(deleted)")) {
		kiln_err_set(err, 0, "odd cgroup path \"%s\"", own);
		free(own);
		return NULL;
	}
	size_t l = strlen(own);
	while (l > 1 && own[l - 1] == '/')
		own[--l] = '\0';
	char *r = kiln_xasprintf("%s/kiln-%s", l == 1 ? "" : own, id);
	free(own);
	return r;
}

void kiln_format_size(int64_t bytes, char *buf, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	int64_t v = bytes;
	while (u < 4 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u == 0 && bytes >= 1024) {
		snprintf(buf, len, "%.1fKiB", (double)bytes / 1024.0);
		return;
	}
	snprintf(buf, len, "%" PRId64 "%s", v, units[u]);
}

/* Mount point and mount root of the hierarchy holding controller
 * ("" = the cgroup2 hierarchy). */
static int find_mount(const char *mountinfo, const char *controller, char **mnt, char **root)
{
	const char *p = mountinfo;
	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		char *line = kiln_xstrndup(p, len);
		char *f[12] = {0};
		int n = 0;
		char *save = NULL;
		for (char *t = strtok_r(line, " ", &save); t && n < 12; t = strtok_r(NULL, " ", &save))
			f[n++] = t;
		/* find the separator */
		int sep = -1;
		for (int i = 6; i < n; i++)
			if (!strcmp(f[i], "-")) {
				sep = i;
				break;
			}
		if (sep > 0 && sep + 3 < n + 1 && f[sep + 1]) {
			const char *fstype = f[sep + 1];
			const char *opts = sep + 3 < n ? f[sep + 3] : "";
			bool ok = controller[0] ? (!strcmp(fstype, "cgroup") &&
						   ctrl_in_list(opts, strlen(opts), controller))
						: !strcmp(fstype, "cgroup2");
			if (ok) {
				*mnt = kiln_xstrdup(f[4]);
				*root = kiln_xstrdup(f[3]);
				free(line);
				return 0;
			}
		}
		free(line);
		p = eol ? eol + 1 : NULL;
	}
	return -1;
}

static int write_str(const char *dir, const char *file, const char *val, struct kiln_err *err)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kiln_err_set(err, errno, "cgroup: opening %s", path);
	ssize_t w = write(fd, val, strlen(val));
	int e = errno;
	close(fd);
	if (w < 0)
		return kiln_err_set(err, e, "cgroup: writing \"%s\" to %s", val, path);
	return 0;
}

static int write_i64(const char *dir, const char *file, int64_t v, struct kiln_err *err)
{
	char b[32];
	snprintf(b, sizeof(b), "%" PRId64, v);
	return write_str(dir, file, b, err);
}

static bool file_exists(const char *dir, const char *file)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return access(path, F_OK) == 0;
}

/* Directory for controller under its mount: mnt + (own - mount root). */
static char *dir_for(const char *mountinfo, const char *cgtext, const char *controller,
		     const char *id, struct kiln_err *err)
{
	char *mnt = NULL, *root = NULL;
	if (find_mount(mountinfo, controller, &mnt, &root) < 0) {
		kiln_err_set(err, 0, "cgroup: no mounted hierarchy for \"%s\"", controller[0] ? controller : "cgroup2");
		return NULL;
	}
	char *child = kiln_cgroup_child_path(cgtext, controller, id, err);
	char *r = NULL;
	if (child) {
		size_t rl = strlen(root);
		const char *rel = child;
		if (strcmp(root, "/") != 0) {
			if (strncmp(child, root, rl) != 0 || child[rl] != '/')
				kiln_err_set(err, 0, "cgroup: own cgroup %s is outside the mount root %s", child, root);
			else
				rel = child + rl;
		}
		if (rel != child || !strcmp(root, "/"))
			r = kiln_xasprintf("%s%s", mnt, rel);
	}
	free(child);
	free(mnt);
	free(root);
	return r;
}

static int add_dir(struct kiln_cgroup *cg, const char *mountinfo, const char *cgtext,
		   const char *ctrl, const char *id, struct kiln_err *err)
{
	char *d = dir_for(mountinfo, cgtext, ctrl, id, err);
	if (!d)
		return -1;
	if (mkdir(d, 0755) < 0 && errno != EEXIST) {
		kiln_err_set(err, errno, "cgroup: creating %s", d);
		free(d);
		return -1;
	}
	cg->dirs[cg->n] = d;
	cg->ctrl[cg->n] = kiln_xstrdup(ctrl);
	cg->n++;
	return 0;
}

static const char *dir_of(const struct kiln_cgroup *cg, const char *ctrl)
{
	for (int i = 0; i < cg->n; i++)
		if (!strcmp(cg->ctrl[i], ctrl))
			return cg->dirs[i];
	return NULL;
}

/* Which hierarchy carries the device filter: v1's devices controller when
 * it is mounted (v1 and hybrid), else the cgroup2 one.  Tests force the
 * cgroup2 path on a hybrid machine with KILN_TEST_DEVICES_BPF=1. */
static int device_hierarchy(const char *mountinfo, enum kiln_cgroup_layout layout, const char **ctrl)
{
	char *mnt = NULL, *root = NULL;
	bool v1 = layout != KILN_CG_V2 && find_mount(mountinfo, "devices", &mnt, &root) == 0;
	free(mnt);
	free(root);
	const char *force = getenv("KILN_TEST_DEVICES_BPF");
	if (v1 && !(force && !strcmp(force, "1"))) {
		*ctrl = "devices";
		return 0;
	}
	mnt = root = NULL;
	bool v2 = find_mount(mountinfo, "", &mnt, &root) == 0;
	free(mnt);
	free(root);
	if (v2) {
		*ctrl = "";
		return 0;
	}
	return -1;
}

/* v2: the limits.  The parent must delegate the controllers (it cannot
 * while it has processes of its own); a default pids limit (builds) is then
 * left out instead of failing. */
static int v2_limits(const char *d, const struct kiln_limits *lim, struct kiln_err *err)
{
	char *parent = kiln_xstrdup(d);
	char *slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	bool pids = lim->pids > 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		char want[64] = "";
		if (lim->memory > 0 || lim->memory_swap > 0)
			strcat(want, "+memory ");
		if (pids)
			strcat(want, "+pids ");
		if (lim->nano_cpus > 0 || lim->cpu_shares > 0)
			strcat(want, "+cpu ");
		struct kiln_err werr = {0};
		if (!want[0] || write_str(parent, "cgroup.subtree_control", want, &werr) == 0)
			break;
		if (attempt == 0 && pids && lim->pids_default) {
			pids = false;
			continue;
		}
		kiln_err_set(err, werr.errnum, "cgroup v2: cannot enable %sfor the children of %s%s", want, parent,
			     werr.errnum == EBUSY ? " (it has processes of its own; run kiln in a delegated "
						    "cgroup, e.g. systemd-run --scope -p Delegate=yes)" : "");
		free(parent);
		return -1;
	}
	free(parent);
	if (lim->memory > 0 && write_i64(d, "memory.max", lim->memory, err) < 0)
		return -1;
	if (lim->memory > 0 && lim->memory_swap != 0 && file_exists(d, "memory.swap.max")) {
		int r = lim->memory_swap < 0 ? write_str(d, "memory.swap.max", "max", err)
		      : write_i64(d, "memory.swap.max", lim->memory_swap > lim->memory ?
				  lim->memory_swap - lim->memory : 0, err);
		if (r < 0)
			return -1;
	}
	if (pids && write_i64(d, "pids.max", lim->pids, err) < 0)
		return -1;
	if (lim->nano_cpus > 0) {
		char b[64];
		snprintf(b, sizeof(b), "%" PRId64 " 100000", lim->nano_cpus / 10000);
		if (write_str(d, "cpu.max", b, err) < 0)
			return -1;
	}
	if (lim->cpu_shares > 0) {
		/* shares 2..262144 -> weight 1..10000 (the OCI conversion) */
		int64_t s = lim->cpu_shares < 2 ? 2 : lim->cpu_shares > 262144 ? 262144 : lim->cpu_shares;
		if (write_i64(d, "cpu.weight", 1 + ((s - 2) * 9999) / 262142, err) < 0)
			return -1;
	}
	return 0;
}

static int v1_limits(struct kiln_cgroup *cg, const char *mountinfo, const char *cgtext, const char *id,
		     const struct kiln_limits *lim, struct kiln_err *err)
{
	if (lim->memory > 0 || lim->memory_swap > 0) {
		if (add_dir(cg, mountinfo, cgtext, "memory", id, err) < 0)
			return -1;
		const char *m = dir_of(cg, "memory");
		if (lim->memory > 0) {
			if (write_i64(m, "memory.limit_in_bytes", lim->memory, err) < 0)
				return -1;
			if (file_exists(m, "memory.memsw.limit_in_bytes")) {
				int64_t sw = lim->memory_swap > 0 ? lim->memory_swap
					   : lim->memory_swap < 0 ? -1 : 2 * lim->memory;
				if (write_i64(m, "memory.memsw.limit_in_bytes", sw, err) < 0)
					return -1;
			}
		}
	}
	if (lim->pids > 0 && (add_dir(cg, mountinfo, cgtext, "pids", id, err) < 0 ||
			      write_i64(dir_of(cg, "pids"), "pids.max", lim->pids, err) < 0))
		return -1;
	if (lim->nano_cpus > 0 || lim->cpu_shares > 0) {
		if (add_dir(cg, mountinfo, cgtext, "cpu", id, err) < 0)
			return -1;
		const char *c = dir_of(cg, "cpu");
		if (lim->nano_cpus > 0 && (write_i64(c, "cpu.cfs_period_us", 100000, err) < 0 ||
					   write_i64(c, "cpu.cfs_quota_us", lim->nano_cpus / 10000, err) < 0))
			return -1;
		if (lim->cpu_shares > 0 && write_i64(c, "cpu.shares", lim->cpu_shares, err) < 0)
			return -1;
	}
	return 0;
}

int kiln_cgroup_create(struct kiln_cgroup *cg, const char *id, const struct kiln_limits *lim,
		       const struct kiln_device_rule *rules, size_t n_rules, struct kiln_err *err)
{
	memset(cg, 0, sizeof(*cg));
	if (kiln_cgroup_layout(&cg->layout, err) < 0)
		return -1;
	KILN_AUTOFREE char *mountinfo = NULL, *cgtext = NULL;
	if (kiln_read_file("/proc/self/mountinfo", 0, &mountinfo, NULL, err) < 0 ||
	    kiln_read_file("/proc/self/cgroup", 0, &cgtext, NULL, err) < 0)
		return -1;
	cg->memory_limit = lim->memory;
	const char *dctrl = NULL;
	if (device_hierarchy(mountinfo, cg->layout, &dctrl) < 0) {
		if (rules)
			return kiln_err_set(err, 0, "device filter: neither a cgroup v1 devices hierarchy nor a "
					    "cgroup2 mount is available; refusing to start a container that could "
					    "open every host device");
		dctrl = NULL;
	}
	/* the cgroup of the device filter first: the others follow it */
	if (dctrl && add_dir(cg, mountinfo, cgtext, dctrl, id, err) < 0)
		goto fail;
	if (dctrl && rules) {
		const char *d = cg->dirs[0];
		int r = dctrl[0] ? kiln_devices_apply_v1(d, rules, n_rules, err)
				 : kiln_devices_attach_bpf(d, rules, n_rules, err);
		if (r < 0)
			goto fail;
	}
	if (cg->layout == KILN_CG_V2) {
		if ((cg->n == 0 && add_dir(cg, mountinfo, cgtext, "", id, err) < 0) ||
		    v2_limits(cg->dirs[0], lim, err) < 0)
			goto fail;
		return 0;
	}
	if (v1_limits(cg, mountinfo, cgtext, id, lim, err) < 0)
		goto fail;
	return 0;
fail:
	kiln_cgroup_destroy(cg);
	return -1;
}

int kiln_cgroup_add(const struct kiln_cgroup *cg, pid_t pid, struct kiln_err *err)
{
	for (int i = 0; i < cg->n; i++)
		if (write_i64(cg->dirs[i], "cgroup.procs", pid, err) < 0)
			return -1;
	return 0;
}

static int64_t read_key(const char *dir, const char *file, const char *key)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	char *text = NULL;
	if (kiln_read_file(path, 65536, &text, NULL, NULL) < 0)
		return -1;
	int64_t v = -1;
	size_t kl = strlen(key);
	for (char *p = text; p && *p;) {
		if (!strncmp(p, key, kl) && p[kl] == ' ') {
			v = strtoll(p + kl + 1, NULL, 10);
			break;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	free(text);
	return v;
}

bool kiln_cgroup_oom_killed(const struct kiln_cgroup *cg, bool sigkilled)
{
	const char *d = cg->layout == KILN_CG_V2 ? dir_of(cg, "") : dir_of(cg, "memory");
	if (!d)
		return false;
	if (cg->layout == KILN_CG_V2)
		return read_key(d, "memory.events", "oom_kill") > 0;
	int64_t n = read_key(d, "memory.oom_control", "oom_kill");
	if (n >= 0)
		return n > 0;
	/* kernels before 4.13 have no oom_kill counter: the limit was hit and
	 * the process died of SIGKILL */
	if (!sigkilled)
		return false;
	char path[4096];
	snprintf(path, sizeof(path), "%s/memory.failcnt", d);
	char *text = NULL;
	bool hit = kiln_read_file(path, 64, &text, NULL, NULL) == 0 && strtoll(text, NULL, 10) > 0;
	free(text);
	return hit;
}

static void kill_all(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	char *text = NULL;
	if (kiln_read_file(path, 0, &text, NULL, NULL) < 0)
		return;
	for (char *p = text; p && *p;) {
		long pid = strtol(p, &p, 10);
		if (pid > 0)
			kill((pid_t)pid, SIGKILL);
		while (*p == '\n')
			p++;
		if (!pid)
			break;
	}
	free(text);
}

void kiln_cgroup_destroy(struct kiln_cgroup *cg)
{
	for (int i = 0; i < cg->n; i++) {
		for (int tries = 0; tries < 400; tries++) {
			if (rmdir(cg->dirs[i]) == 0 || errno == ENOENT)
				break;
			if (errno != EBUSY)
				break;
			kill_all(cg->dirs[i]);
			struct timespec ts = {0, tries < 20 ? 1000000 : 5000000};
			nanosleep(&ts, NULL);
		}
		free(cg->dirs[i]);
		free(cg->ctrl[i]);
	}
	cg->n = 0;
}

/* Is the last component of path "kiln-<id>" (any kiln-* when id is NULL)? */
static bool kiln_leaf(const char *path, const char *id)
{
	const char *slash = strrchr(path, '/');
	const char *leaf = slash ? slash + 1 : path;
	if (strncmp(leaf, "kiln-", 5))
		return false;
	return id ? !strcmp(leaf + 5, id) : leaf[5] != '\0';
}

int kiln_cgroup_join_like(pid_t target, pid_t pid, const char *id, struct kiln_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)target);
	KILN_AUTOFREE char *text = NULL, *mountinfo = NULL;
	if (kiln_read_file(path, 0, &text, NULL, err) < 0 ||
	    kiln_read_file("/proc/self/mountinfo", 0, &mountinfo, NULL, err) < 0)
		return -1;
	bool filter = false;
	for (char *p = text; p && *p;) {
		char *eol = strchr(p, '\n');
		if (eol)
			*eol = '\0';
		char *c1 = strchr(p, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 && kiln_leaf(c2 + 1, id)) {
			*c2 = '\0';
			char *ctrls = c1 + 1;
			bool devices = !ctrls[0] || ctrl_in_list(ctrls, strlen(ctrls), "devices");
			char *first = ctrls;
			char *comma = strchr(ctrls, ',');
			if (comma)
				*comma = '\0';
			char *mnt = NULL, *root = NULL;
			if (find_mount(mountinfo, first, &mnt, &root) == 0) {
				const char *rel = c2 + 1;
				size_t rl = strlen(root);
				if (strcmp(root, "/") && !strncmp(rel, root, rl))
					rel += rl;
				char *dir = kiln_xasprintf("%s%s", mnt, rel);
				int r = write_i64(dir, "cgroup.procs", pid, err);
				free(dir);
				free(mnt);
				free(root);
				if (r < 0)
					return -1;
				filter = filter || devices;
			}
		}
		p = eol ? eol + 1 : NULL;
	}
	if (!filter)
		return kiln_err_set(err, 0, "the container (pid %d) is in no devices cgroup of its own (started by "
				    "an older kiln?): refusing to run a process there without its device filter",
				    (int)target);
	return 0;
}
