/* kiln — cgroup owners and the sweep of cgroups whose owner died (see
 * runtime/cgroup_gc.h). */
#include "runtime/cgroup_gc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > 64)
		return false;
	for (const char *c = id; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return false;
	return true;
}

static int lock_fd(int fd)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	return fcntl(fd, F_SETLK, &fl);
}

static int claim_in(const char *lockdir, const char *id, struct kiln_err *err)
{
	if (!valid_id(id))
		return kiln_err_set(err, 0, "invalid cgroup owner id \"%s\"", id);
	if (kiln_mkdir_p(lockdir, 0700, err) < 0)
		return -1;
	KILN_AUTOCLOSE int dfd = open(lockdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_set(err, errno, "opening %s", lockdir);
	/* locked before it has a name: a sweep never sees it unlocked */
	int fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0) {
		char self[64];
		snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
		if (lock_fd(fd) < 0 || linkat(AT_FDCWD, self, dfd, id, AT_SYMLINK_FOLLOW) < 0) {
			close(fd);
			fd = -1;
		}
	}
	if (fd < 0) {
		/* no O_TMPFILE here: create, then lock (a sweep in between only
		 * finds no cgroup yet) */
		fd = openat(dfd, id, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return kiln_err_set(err, errno, "creating %s/%s", lockdir, id);
		if (lock_fd(fd) < 0) {
			int e = errno;
			unlinkat(dfd, id, 0);
			close(fd);
			return kiln_err_set(err, e, "locking %s/%s", lockdir, id);
		}
	}
	return fd;
}

int kiln_cgroup_gc_claim(const char *id, struct kiln_err *err)
{
	return claim_in(KILN_CGROUP_GC_DIR, id, err);
}

void kiln_cgroup_gc_release(const char *id, int fd)
{
	if (fd < 0)
		return;
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", KILN_CGROUP_GC_DIR, id);
	unlink(path);
	close(fd);
}

/* ---------------------------------------------------------------- sweep */

enum owner { OWNER_UNKNOWN, OWNER_ALIVE, OWNER_DEAD };

struct owner_entry {
	char id[65];
	enum owner state;
	int fd;              /* the dead owner's lock, held by us while we sweep */
	bool left;           /* a cgroup of it could not be removed */
};

struct sweep {
	const char *lockdir;
	struct owner_entry *v;
	size_t n;
	int removed;
};

static struct owner_entry *owner_of(struct sweep *s, const char *id)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].id, id))
			return &s->v[i];
	s->v = kiln_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
	struct owner_entry *e = &s->v[s->n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->fd = -1;
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", s->lockdir, id);
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		e->state = errno == ENOENT ? OWNER_UNKNOWN : OWNER_ALIVE;   /* unsure: keep */
	} else if (lock_fd(fd) < 0) {
		e->state = OWNER_ALIVE;
		close(fd);
	} else {
		e->state = OWNER_DEAD;
		e->fd = fd;
	}
	return e;
}

/* Send SIGKILL to every process of the cgroup dir (v2: cgroup.kill). */
static void kill_procs(int dfd)
{
	int k = openat(dfd, "cgroup.kill", O_WRONLY | O_CLOEXEC);
	if (k >= 0) {
		bool ok = write(k, "1", 1) == 1;
		close(k);
		if (ok)
			return;
	}
	int fd = openat(dfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char *text = NULL;
	if (kiln_read_fd(fd, 1 << 20, &text, NULL, NULL) == 0) {
		for (char *p = text; *p;) {
			char *end;
			long pid = strtol(p, &end, 10);
			if (end == p)
				break;
			if (pid > 0)
				kill((pid_t)pid, SIGKILL);
			p = end;
			while (*p == '\n')
				p++;
		}
	}
	free(text);
	close(fd);
}

/* Remove parentfd/name and the cgroups beneath it, deepest first.  kill:
 * their processes are killed and waited for (a bounded while); otherwise a
 * cgroup with processes stays.  Returns 0 when it is gone. */
static int remove_tree(int parentfd, const char *name, bool kill_them)
{
	int dfd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return errno == ENOENT ? 0 : -1;
	int ok = 0;
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d && dup_fd >= 0)
		close(dup_fd);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)))
			if (e->d_type == DT_DIR && strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
			    remove_tree(dfd, e->d_name, kill_them) < 0)
				ok = -1;
		closedir(d);
	}
	if (ok == 0) {
		ok = -1;
		for (int tries = 0; tries < (kill_them ? 200 : 1); tries++) {
			if (unlinkat(parentfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
				ok = 0;
				break;
			}
			if (errno != EBUSY)
				break;
			kill_procs(dfd);
			struct timespec ts = {0, tries < 20 ? 1000000 : 5000000};
			nanosleep(&ts, NULL);
		}
	}
	close(dfd);
	return ok;
}

static void sweep_dir(struct sweep *s, const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		close(dfd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "kiln-", 5) || !valid_id(e->d_name + 5))
			continue;
		struct stat st;
		if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		struct owner_entry *o = owner_of(s, e->d_name + 5);
		if (o->state == OWNER_ALIVE)
			continue;
		if (o->state == OWNER_UNKNOWN && time(NULL) - st.st_ctime < KILN_CGROUP_GC_GRACE)
			continue;   /* maybe being set up by a kiln that has no owner lock */
		if (remove_tree(dfd, e->d_name, o->state == OWNER_DEAD) == 0)
			s->removed++;
		else
			o->left = true;
	}
	closedir(d);
	close(dfd);
}

/* Field n (0-based, space separated) of a mountinfo line, into buf. */
static bool field(const char *line, size_t len, int n, char *buf, size_t blen)
{
	const char *p = line, *end = line + len;
	for (int i = 0; i < n; i++) {
		p = memchr(p, ' ', (size_t)(end - p));
		if (!p)
			return false;
		p++;
	}
	const char *q = memchr(p, ' ', (size_t)(end - p));
	size_t l = q ? (size_t)(q - p) : (size_t)(end - p);
	if (l + 1 > blen)
		return false;
	memcpy(buf, p, l);
	buf[l] = '\0';
	return true;
}

static bool in_list(const char *list, const char *item)
{
	size_t il = strlen(item);
	for (const char *p = list; p && *p;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == il && !strncmp(p, item, il))
			return true;
		p = c ? c + 1 : NULL;
	}
	return false;
}

/* The directory of own cgroup path in the hierarchy of controller ("" =
 * cgroup2), from mountinfo; caller frees. */
static char *hierarchy_dir(const char *mountinfo, const char *controller, const char *own)
{
	for (const char *p = mountinfo; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		const char *sep = NULL;
		for (const char *q = p; q + 3 <= p + len; q++)
			if (!memcmp(q, " - ", 3)) {
				sep = q + 3;
				break;
			}
		char root[4096], mnt[4096], fstype[64], opts[1024];
		if (sep && field(p, len, 3, root, sizeof(root)) && field(p, len, 4, mnt, sizeof(mnt)) &&
		    field(sep, len - (size_t)(sep - p), 0, fstype, sizeof(fstype)) &&
		    field(sep, len - (size_t)(sep - p), 2, opts, sizeof(opts))) {
			bool match = controller[0] ? !strcmp(fstype, "cgroup") && in_list(opts, controller)
						   : !strcmp(fstype, "cgroup2");
			size_t rl = strlen(root);
			if (match && !strcmp(root, "/"))
				return kiln_xasprintf("%s%s", mnt, strcmp(own, "/") ? own : "");
			if (match && !strncmp(own, root, rl) && (own[rl] == '/' || own[rl] == '\0'))
				return kiln_xasprintf("%s%s", mnt, own + rl);
		}
		p = eol ? eol + 1 : NULL;
	}
	return NULL;
}

int kiln_cgroup_gc_sweep_in(const char *proc_cgroup, const char *mountinfo, const char *lockdir)
{
	struct sweep s = {.lockdir = lockdir};
	KILN_AUTOFREE char *text = kiln_xstrdup(proc_cgroup);
	for (char *line = text; line && *line;) {
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 && c2[1] == '/' && !strstr(c2 + 1, "/..")) {
			*c2 = '\0';
			char *ctrls = c1 + 1;
			char *comma = strchr(ctrls, ',');
			if (comma)
				*comma = '\0';   /* one controller names the hierarchy */
			char *dir = hierarchy_dir(mountinfo, ctrls, c2 + 1);
			if (dir)
				sweep_dir(&s, dir);
			free(dir);
		}
		line = eol ? eol + 1 : NULL;
	}
	for (size_t i = 0; i < s.n; i++) {
		if (s.v[i].state != OWNER_DEAD)
			continue;
		if (!s.v[i].left) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", lockdir, s.v[i].id);
			unlink(path);
		}
		close(s.v[i].fd);
	}
	/* dead owners whose cgroups are not beneath ours: their lock files go
	 * (a sweep from their cgroup then treats them as unowned) */
	DIR *d = opendir(lockdir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!valid_id(e->d_name))
				continue;
			bool seen = false;
			for (size_t i = 0; i < s.n && !seen; i++)
				seen = !strcmp(s.v[i].id, e->d_name);
			if (seen)
				continue;
			int fd = openat(dirfd(d), e->d_name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
			if (fd < 0)
				continue;
			if (lock_fd(fd) == 0)
				unlinkat(dirfd(d), e->d_name, 0);
			close(fd);
		}
		closedir(d);
	}
	free(s.v);
	return s.removed;
}

int kiln_cgroup_gc_sweep(void)
{
	KILN_AUTOFREE char *cg = NULL, *mi = NULL;
	if (kiln_read_file("/proc/self/cgroup", 0, &cg, NULL, NULL) < 0 ||
	    kiln_read_file("/proc/self/mountinfo", 0, &mi, NULL, NULL) < 0)
		return 0;
	return kiln_cgroup_gc_sweep_in(cg, mi, KILN_CGROUP_GC_DIR);
}
