/* kiln — overlay snapshot driver.  A committed snapshot is one directory of
 * changes (snaps/<hex>/fs) reachable through a short link l/<name>; its
 * `lower` file lists the links of its ancestors.  A writable child is an
 * upper (fs) + work directory mounted over that chain with index=off,
 * redirect_dir=off and metacopy=off, so the upper directory is a plain diff:
 * char 0/0 devices are deletions and trusted.overlay.opaque=y directories
 * hide everything below.  Mounts use fsopen/fsconfig with one "lowerdir+"
 * per layer (no page-size limit on the chain), else mount(2). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snap_internal.h"

/* ---- mounts ---- */

bool snap_is_mountpoint(const char *path)
{
	struct statx stx;
	if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) == 0 &&
	    (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
		return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
	struct stat a, b;
	char *up = kiln_xasprintf("%s/..", path);
	bool r = stat(path, &a) == 0 && stat(up, &b) == 0 && a.st_dev != b.st_dev;
	free(up);
	return r;
}

int snap_umount_if_mounted(const char *path, struct kiln_err *err)
{
	for (int i = 0; i < 32 && snap_is_mountpoint(path); i++) {
		if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)) {
			if (errno == EINVAL || errno == ENOENT)
				return 0;
			return kiln_err_set(err, errno, "unmounting %s", path);
		}
	}
	return 0;
}

static void append_escaped(struct kiln_buf *b, const char *path)
{
	for (const char *p = path; *p; p++) {
		if (*p == ':' || *p == '\\')
			kiln_buf_putc(b, '\\');
		kiln_buf_putc(b, *p);
	}
}

static char *classic_options(const struct kiln_snap_mount_spec *spec, bool extra)
{
	struct kiln_buf b = { 0 };
	kiln_buf_puts(&b, "lowerdir=");
	for (size_t i = 0; spec->lowerdirs && spec->lowerdirs[i]; i++) {
		if (i)
			kiln_buf_putc(&b, ':');
		append_escaped(&b, spec->lowerdirs[i]);
	}
	if (spec->upperdir && spec->workdir) {
		kiln_buf_puts(&b, ",upperdir=");
		append_escaped(&b, spec->upperdir);
		kiln_buf_puts(&b, ",workdir=");
		append_escaped(&b, spec->workdir);
	}
	if (extra)
		kiln_buf_puts(&b, ",index=off,redirect_dir=off,metacopy=off");
	return kiln_buf_steal(&b);
}

static int mount_classic(const struct kiln_snap_mount_spec *spec, const char *target,
			 struct kiln_err *err)
{
	unsigned long fl = spec->upperdir ? 0 : MS_RDONLY;
	char *opts = spec->options ? kiln_xstrdup(spec->options) : classic_options(spec, true);
	int rc = mount("overlay", target, "overlay", fl, opts);
	if (rc && errno == EINVAL && !spec->options) {
		free(opts);
		opts = classic_options(spec, false);
		rc = mount("overlay", target, "overlay", fl, opts);
	}
	if (rc) {
		int e = errno;
		size_t len = strlen(opts);
		rc = kiln_err_set(err, e, "mounting overlay on %s (options %zu bytes)", target, len);
	}
	free(opts);
	return rc;
}

/* The kernel's own explanation of a failed fsconfig, if it left one. */
static void fs_log(int fsfd, char *buf, size_t size)
{
	buf[0] = 0;
	ssize_t n = read(fsfd, buf, size - 1);
	if (n > 0) {
		buf[n] = 0;
		char *nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
	}
}

static int mount_new_api(const struct kiln_snap_mount_spec *spec, const char *target,
			 bool *unsupported, struct kiln_err *err)
{
	*unsupported = false;
	int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0) {
		if (errno == ENOSYS || errno == EPERM) {
			*unsupported = true;
			return -1;
		}
		return kiln_err_set(err, errno, "fsopen(overlay)");
	}
	char log[512];
	int rc = 0;
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", "kiln", 0))
		rc = kiln_err_set(err, errno, "overlay: setting source");
	for (size_t i = 0; !rc && spec->lowerdirs && spec->lowerdirs[i]; i++) {
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", spec->lowerdirs[i], 0)) {
			if (i == 0 && errno == EINVAL) {   /* kernel < 6.8 */
				*unsupported = true;
				close(fsfd);
				return -1;
			}
			int e = errno;
			fs_log(fsfd, log, sizeof(log));
			rc = kiln_err_set(err, e, "overlay: lower %s%s%s", spec->lowerdirs[i],
					  *log ? ": " : "", log);
		}
	}
	if (!rc && spec->upperdir && spec->workdir) {
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", spec->upperdir, 0) ||
		    fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", spec->workdir, 0)) {
			int e = errno;
			fs_log(fsfd, log, sizeof(log));
			rc = kiln_err_set(err, e, "overlay: upper %s%s%s", spec->upperdir,
					  *log ? ": " : "", log);
		}
	}
	if (!rc) {
		/* best effort: the upper directory must stay a plain diff */
		(void)fsconfig(fsfd, FSCONFIG_SET_STRING, "index", "off", 0);
		(void)fsconfig(fsfd, FSCONFIG_SET_STRING, "redirect_dir", "off", 0);
		(void)fsconfig(fsfd, FSCONFIG_SET_STRING, "metacopy", "off", 0);
		fs_log(fsfd, log, sizeof(log));   /* drop warnings */
		if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0)) {
			int e = errno;
			fs_log(fsfd, log, sizeof(log));
			rc = kiln_err_set(err, e, "creating overlay for %s%s%s", target,
					  *log ? ": " : "", log);
		}
	}
	if (!rc) {
		int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, spec->upperdir ? 0 : MOUNT_ATTR_RDONLY);
		if (mfd < 0) {
			rc = kiln_err_set(err, errno, "fsmount overlay for %s", target);
		} else {
			if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH))
				rc = kiln_err_set(err, errno, "attaching overlay at %s", target);
			close(mfd);
		}
	}
	close(fsfd);
	return rc;
}

int kiln_snap_mount_spec_apply(const struct kiln_snap_mount_spec *spec, const char *target,
			       struct kiln_err *err)
{
	if (!spec->overlay) {
		if (mount(spec->source, target, NULL, MS_BIND | MS_REC, NULL))
			return kiln_err_set(err, errno, "bind-mounting %s on %s", spec->source, target);
		return 0;
	}
	if (!spec->lowerdirs || !spec->lowerdirs[0])
		return kiln_err_set(err, EINVAL, "overlay mount on %s without lower directories", target);
	bool unsupported = false;
	if (mount_new_api(spec, target, &unsupported, err) == 0)
		return 0;
	if (!unsupported)
		return -1;
	return mount_classic(spec, target, err);
}

/* ---- chains ---- */

int snap_overlay_lowers(struct kiln_snapshotter *sn, const char *chain_id,
			struct kiln_strv *out, struct kiln_err *err)
{
	const char *hex = snap_chain_hex(chain_id);
	if (!hex)
		return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", chain_id ? chain_id : "");
	char *rel = kiln_xasprintf("snaps/%s/link", hex);
	char *link = snap_read_text(sn->dirfd, rel, err);
	free(rel);
	if (!link)
		return kiln_err_wrap(err, "snapshot %s", chain_id);
	kiln_strv_push_owned(out, kiln_xasprintf("%s/l/%s", sn->dir, link));
	free(link);
	rel = kiln_xasprintf("snaps/%s/lower", hex);
	struct kiln_err e2;
	char *lower = snap_read_text(sn->dirfd, rel, &e2);
	free(rel);
	if (!lower) {
		if (errno == ENOENT)
			return 0;
		if (err)
			*err = e2;
		return kiln_err_wrap(err, "snapshot %s", chain_id);
	}
	char *save = NULL;
	for (char *t = strtok_r(lower, ":", &save); t; t = strtok_r(NULL, ":", &save))
		kiln_strv_push_owned(out, kiln_xasprintf("%s/l/%s", sn->dir, t));
	free(lower);
	return 0;
}

int snap_overlay_prepare_commit(struct kiln_snap *snap, const char *chain_id, struct kiln_err *err)
{
	struct kiln_snapshotter *sn = snap->sn;
	const char *hex = snap_chain_hex(chain_id);
	char *target = kiln_xasprintf("../snaps/%s/fs", hex);
	char name[65] = "";
	int rc = -1;
	for (size_t len = 12; len <= 64; len += 4) {
		snprintf(name, sizeof(name), "%.*s", (int)len, hex);
		char *l = kiln_xasprintf("l/%s", name);
		int r = symlinkat(target, sn->dirfd, l);
		if (r && errno == EEXIST) {
			char cur[PATH_MAX];
			ssize_t n = readlinkat(sn->dirfd, l, cur, sizeof(cur) - 1);
			if (n >= 0) {
				cur[n] = 0;
				if (!strcmp(cur, target))
					r = 0;
			}
			if (r) {
				free(l);
				continue;               /* a prefix of another chain id */
			}
		}
		free(l);
		if (r) {
			kiln_err_set(err, errno, "creating link l/%s", name);
			goto out;
		}
		rc = 0;
		break;
	}
	if (rc) {
		kiln_err_set(err, EEXIST, "no free link name for %s", chain_id);
		goto out;
	}
	char *f = kiln_xasprintf("active/%s/link", snap->key);
	rc = snap_write_text(sn->dirfd, f, name, err);
	free(f);
	if (rc || !snap->parent)
		goto out;
	const char *phex = snap_chain_hex(snap->parent);
	f = kiln_xasprintf("snaps/%s/link", phex);
	char *plink = snap_read_text(sn->dirfd, f, err);
	free(f);
	if (!plink) {
		rc = -1;
		goto out;
	}
	f = kiln_xasprintf("snaps/%s/lower", phex);
	struct kiln_err e2;
	char *plower = snap_read_text(sn->dirfd, f, &e2);
	free(f);
	char *lower = plower && *plower ? kiln_xasprintf("%s:%s", plink, plower) : kiln_xstrdup(plink);
	f = kiln_xasprintf("active/%s/lower", snap->key);
	rc = snap_write_text(sn->dirfd, f, lower, err);
	free(f);
	free(lower);
	free(plower);
	free(plink);
out:
	free(target);
	return rc;
}

void snap_overlay_forget_link(struct kiln_snapshotter *sn, const char *hex, const char *moved_rel)
{
	char *f = kiln_xasprintf("%s/link", moved_rel);
	struct kiln_err e;
	char *name = snap_read_text(sn->dirfd, f, &e);
	free(f);
	if (!name)
		return;
	char *l = kiln_xasprintf("l/%s", name);
	char *target = kiln_xasprintf("../snaps/%s/fs", hex);
	char *again = kiln_xasprintf("snaps/%s", hex);
	char cur[PATH_MAX];
	ssize_t n = readlinkat(sn->dirfd, l, cur, sizeof(cur) - 1);
	struct stat st;
	if (n >= 0) {
		cur[n] = 0;
		/* not when the same chain was committed again meanwhile (it reuses the link) */
		if (!strcmp(cur, target) && fstatat(sn->dirfd, again, &st, AT_SYMLINK_NOFOLLOW) < 0)
			(void)unlinkat(sn->dirfd, l, 0);
	}
	free(again);
	free(target);
	free(l);
	free(name);
}

/* ---- handles ---- */

int kiln_snap_mount_spec(const struct kiln_snap *snap, struct kiln_snap_mount_spec *out,
			 struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	if (snap->view_path) {
		out->source = kiln_xstrdup(snap->view_path);
		return 0;
	}
	if (!snap->merged) {
		out->source = kiln_xstrdup(snap->fs);
		return 0;
	}
	struct kiln_strv lowers = { 0 };
	if (snap_overlay_lowers(snap->sn, snap->parent, &lowers, err)) {
		kiln_strv_free(&lowers);
		return -1;
	}
	out->overlay = true;
	out->source = kiln_xstrdup("overlay");
	out->lowerdirs = lowers.v ? lowers.v : kiln_xcalloc(1, sizeof(char *));
	if (!snap->view) {
		out->upperdir = kiln_xstrdup(snap->fs);
		out->workdir = kiln_xasprintf("%s/work", snap->dir);
	}
	out->options = classic_options(out, true);
	return 0;
}

void kiln_snap_mount_spec_free(struct kiln_snap_mount_spec *spec)
{
	if (!spec)
		return;
	free(spec->source);
	kiln_strv_free_raw(spec->lowerdirs);
	free(spec->upperdir);
	free(spec->workdir);
	free(spec->options);
	memset(spec, 0, sizeof(*spec));
}

int snap_overlay_mount(struct kiln_snap *snap, struct kiln_err *err)
{
	struct kiln_snap_mount_spec spec;
	if (kiln_snap_mount_spec(snap, &spec, err))
		return -1;
	int rc = kiln_snap_mount_spec_apply(&spec, snap->merged, err);
	kiln_snap_mount_spec_free(&spec);
	if (rc == 0)
		snap->mounted = true;
	return rc;
}

bool snap_overlay_probe(struct kiln_snapshotter *sn)
{
	char *base = kiln_xasprintf("%s/tmp/probe-%d-%u", sn->dir, (int)getpid(), sn->counter++);
	char *low = kiln_xasprintf("%s/lower", base);
	char *up = kiln_xasprintf("%s/upper", base);
	char *work = kiln_xasprintf("%s/work", base);
	char *m = kiln_xasprintf("%s/merged", base);
	bool ok = false;
	struct kiln_err e;
	if (mkdir(base, 0700) == 0 && mkdir(low, 0755) == 0 && mkdir(up, 0755) == 0 &&
	    mkdir(work, 0700) == 0 && mkdir(m, 0755) == 0) {
		char *lowers[] = { low, NULL };
		struct kiln_snap_mount_spec spec = {
			.overlay = true, .source = (char *)"overlay", .lowerdirs = lowers,
			.upperdir = up, .workdir = work,
		};
		if (kiln_snap_mount_spec_apply(&spec, m, &e) == 0) {
			ok = true;
			(void)snap_umount_if_mounted(m, &e);
		}
	}
	(void)kiln_rm_rf(base, &e);
	free(base);
	free(low);
	free(up);
	free(work);
	free(m);
	return ok;
}

/* ---- diff: walk the upper directory only ---- */

struct octx {
	struct kiln_changes *out;
	struct kiln_err *err;
	/* copied-up and changed files whose lower inode had other links */
	struct snap_u64set broken_inos;
	struct kiln_strv broken_paths;   /* "ino\tpath" */
};

static bool is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static bool is_opaque(int dirfd)
{
	char v[8];
	ssize_t n = fgetxattr(dirfd, "trusted.overlay.opaque", v, sizeof(v));
	return n == 1 && v[0] == 'y';
}

static int add_children_skip_wh(int dirfd, const char *rel, struct octx *c)
{
	struct kiln_strv names = { 0 };
	if (snap_list_dir(dirfd, &names, c->err))
		return kiln_err_wrap(c->err, "%s", rel);
	int rc = 0;
	for (size_t i = 0; i < names.n && !rc; i++) {
		char *p = snap_join(rel, names.v[i]);
		rc = snap_add_subtree(dirfd, names.v[i], p, true, c->out, c->err);
		free(p);
	}
	kiln_strv_free(&names);
	return rc;
}

static int ovl_dir(struct octx *c, int ufd, int pfd, const char *rel, bool opaque_inherited)
{
	bool opaque = opaque_inherited || is_opaque(ufd);
	struct kiln_strv un = { 0 }, pn = { 0 };
	int rc = snap_list_dir(ufd, &un, c->err);
	if (rc)
		return kiln_err_wrap(c->err, "%s", *rel ? rel : "/");
	if (opaque && pfd >= 0) {
		/* everything below that the upper directory does not have is gone */
		if (snap_list_dir(pfd, &pn, c->err)) {
			kiln_strv_free(&un);
			return kiln_err_wrap(c->err, "%s in the parent", *rel ? rel : "/");
		}
		size_t i = 0;
		for (size_t j = 0; j < pn.n; j++) {
			while (i < un.n && strcmp(un.v[i], pn.v[j]) < 0)
				i++;
			bool present = false;
			if (i < un.n && !strcmp(un.v[i], pn.v[j])) {
				struct stat st;
				present = fstatat(ufd, un.v[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
					  !is_whiteout(&st);
			}
			if (!present) {
				char *p = snap_join(rel, pn.v[j]);
				kiln_changes_add(c->out, p, KILN_CHANGE_DELETE);
				free(p);
			}
		}
	}
	for (size_t i = 0; i < un.n && !rc; i++) {
		const char *name = un.v[i];
		char *path = snap_join(rel, name);
		struct stat us, ps;
		if (fstatat(ufd, name, &us, AT_SYMLINK_NOFOLLOW)) {
			rc = kiln_err_set(c->err, errno, "stat %s", path);
			free(path);
			break;
		}
		bool in_parent = pfd >= 0 && fstatat(pfd, name, &ps, AT_SYMLINK_NOFOLLOW) == 0;
		if (is_whiteout(&us)) {
			if (!opaque && in_parent)
				kiln_changes_add(c->out, path, KILN_CHANGE_DELETE);
		} else if (!in_parent) {
			rc = snap_add_subtree(ufd, name, path, true, c->out, c->err);
		} else {
			/* a regular file here was copied up (opened for writing):
			 * equal metadata proves nothing, compare the content */
			bool same;
			rc = snap_entry_same(ufd, name, &us, pfd, name, &ps, NULL, &same, c->err);
			if (rc)
				kiln_err_wrap(c->err, "%s", path);
			if (!rc && !same)
				kiln_changes_add(c->out, path, KILN_CHANGE_MODIFY);
			if (!rc && !same && S_ISREG(us.st_mode) && S_ISREG(ps.st_mode) &&
			    ps.st_nlink > 1) {
				snap_u64set_add(&c->broken_inos, (uint64_t)ps.st_ino);
				kiln_strv_push_owned(&c->broken_paths,
						     kiln_xasprintf("%llu\t%s", (unsigned long long)ps.st_ino, path));
			}
			if (!rc && S_ISDIR(us.st_mode)) {
				int usub = openat(ufd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (usub < 0) {
					rc = kiln_err_set(c->err, errno, "opening %s", path);
				} else if (!S_ISDIR(ps.st_mode)) {
					rc = add_children_skip_wh(usub, path, c);
				} else {
					int psub = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
					if (psub < 0)
						rc = kiln_err_set(c->err, errno, "opening %s in the parent", path);
					else {
						rc = ovl_dir(c, usub, psub, path, opaque);
						close(psub);
					}
				}
				if (usub >= 0)
					close(usub);
			}
		}
		free(path);
	}
	kiln_strv_free(&un);
	kiln_strv_free(&pn);
	return rc;
}

/* Find the paths of the parent tree whose regular files have an inode of
 * the set (the other names of a hard-linked file). */
static int find_aliases(int dirfd, const char *rel, const struct snap_u64set *inos,
			struct kiln_strv *out, struct kiln_err *err)
{
	struct kiln_strv names = { 0 };
	if (snap_list_dir(dirfd, &names, err))
		return -1;
	int rc = 0;
	for (size_t i = 0; i < names.n && !rc; i++) {
		struct stat st;
		if (fstatat(dirfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW))
			continue;
		char *p = snap_join(rel, names.v[i]);
		if (S_ISREG(st.st_mode) && st.st_nlink > 1 && snap_u64set_has(inos, (uint64_t)st.st_ino)) {
			kiln_strv_push_owned(out, kiln_xasprintf("%llu\t%s", (unsigned long long)st.st_ino, p));
		} else if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0) {
				rc = find_aliases(fd, p, inos, out, err);
				close(fd);
			}
		}
		free(p);
	}
	kiln_strv_free(&names);
	return rc;
}

/* Overlay breaks hard links on copy-up: after `echo x >> a` the other names
 * of a's inode still show the old file, where btrfs and vfs (one inode) show
 * the new one.  Make the tree what a plain filesystem would hold: each other
 * name that still refers to the lower inode becomes a hard link to the
 * copied-up file, and a MODIFY.
 * Known limits: with index=off overlay keeps no origin for such copy-ups, so a
 * file that was deleted and written anew under one name of a hard-linked
 * lower file (`rm a; echo new > a`, while b stays) looks the same and b is
 * re-linked too, where btrfs/vfs keep b's old content.  A copy-up that
 * changes nothing (opened for writing, chmod to the same mode) is no change,
 * so the layer keeps a and b one file while this snapshot has two files with
 * the same content. */
static int relink_aliases(struct kiln_snap *snap, struct octx *c, int pfd)
{
	struct kiln_strv aliases = { 0 };
	if (find_aliases(pfd, "", &c->broken_inos, &aliases, c->err))
		return -1;
	bool temp = false;
	int rc = 0;
	const char *merged = kiln_snap_rootfs(snap);
	if (!merged) {
		if (snap_overlay_mount(snap, c->err)) {
			kiln_strv_free(&aliases);
			return -1;
		}
		temp = true;
		merged = snap->merged;
	}
	int mfd = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		rc = kiln_err_set(c->err, errno, "opening %s", merged);
	for (size_t i = 0; !rc && i < aliases.n; i++) {
		char *apath = strchr(aliases.v[i], '\t') + 1;
		unsigned long long ino = strtoull(aliases.v[i], NULL, 10);
		const char *src = NULL;
		bool is_changed = false;
		for (size_t j = 0; j < c->broken_paths.n; j++) {
			char *bp = strchr(c->broken_paths.v[j], '\t') + 1;
			if (strtoull(c->broken_paths.v[j], NULL, 10) != ino)
				continue;
			if (!strcmp(bp, apath))
				is_changed = true;
			else if (!src)
				src = bp;
		}
		if (is_changed || !src)
			continue;
		/* still the lower file (not copied up, replaced or deleted since)? */
		struct stat ms;
		if (fstatat(mfd, apath, &ms, AT_SYMLINK_NOFOLLOW) || (unsigned long long)ms.st_ino != ino ||
		    !S_ISREG(ms.st_mode))
			continue;
		char *up = kiln_xasprintf("%s/%s", snap->fs, apath);
		struct stat us;
		bool in_upper = lstat(up, &us) == 0;
		free(up);
		if (in_upper)
			continue;
		if (unlinkat(mfd, apath, 0) || linkat(mfd, src, mfd, apath, 0)) {
			rc = kiln_err_set(c->err, errno, "re-linking %s to %s", apath, src);
			break;
		}
		kiln_changes_add(c->out, apath, KILN_CHANGE_MODIFY);
	}
	if (mfd >= 0)
		close(mfd);
	if (temp) {
		struct kiln_err e2;
		snap->mounted = false;
		if (snap_umount_if_mounted(snap->merged, rc ? &e2 : c->err))
			rc = -1;
	}
	kiln_strv_free(&aliases);
	return rc;
}

int snap_overlay_diff(struct kiln_snap *snap, struct kiln_changes *out, struct kiln_err *err)
{
	struct kiln_strv lowers = { 0 };
	if (snap_overlay_lowers(snap->sn, snap->parent, &lowers, err))
		return -1;
	char *lowmnt = NULL;
	const char *pview = lowers.v[0];
	int rc = 0;
	if (lowers.n > 1) {
		/* the parent as one tree: a read-only overlay of the chain */
		lowmnt = kiln_xasprintf("%s/lower", snap->dir);
		(void)snap_umount_if_mounted(lowmnt, err);
		if (mkdir(lowmnt, 0700) && errno != EEXIST) {
			rc = kiln_err_set(err, errno, "creating %s", lowmnt);
		} else {
			struct kiln_snap_mount_spec spec = {
				.overlay = true, .source = (char *)"overlay", .lowerdirs = lowers.v,
			};
			rc = kiln_snap_mount_spec_apply(&spec, lowmnt, err);
		}
		pview = lowmnt;
	}
	int ufd = -1, pfd = -1;
	if (!rc) {
		ufd = open(snap->fs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ufd < 0)
			rc = kiln_err_set(err, errno, "opening %s", snap->fs);
	}
	if (!rc) {
		pfd = open(pview, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd < 0)
			rc = kiln_err_set(err, errno, "opening %s", pview);
	}
	if (!rc) {
		struct octx c = { .out = out, .err = err };
		rc = ovl_dir(&c, ufd, pfd, "", false);
		if (!rc && c.broken_paths.n)
			rc = relink_aliases(snap, &c, pfd);
		snap_u64set_free(&c.broken_inos);
		kiln_strv_free(&c.broken_paths);
	}
	if (ufd >= 0)
		close(ufd);
	if (pfd >= 0)
		close(pfd);
	if (lowmnt) {
		struct kiln_err e2;
		if (snap_umount_if_mounted(lowmnt, rc ? &e2 : err))
			rc = -1;
		(void)rmdir(lowmnt);
		free(lowmnt);
	}
	kiln_strv_free(&lowers);
	return rc;
}
