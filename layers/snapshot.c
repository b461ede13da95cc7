/* kiln — snapshots: the driver-independent part (layout, names, publishing
 * by rename, removal, usage, applying image layers).  See snapshot.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/util.h"
#include "layers/snap_internal.h"

static const char *const driver_names[] = {
	[SNAP_BTRFS] = "btrfs",
	[SNAP_OVERLAY] = "overlay",
	[SNAP_VFS] = "vfs",
};

/* ---- names ---- */

const char *snap_chain_hex(const char *chain_id)
{
	if (!chain_id || strncmp(chain_id, "sha256:", 7))
		return NULL;
	const char *h = chain_id + 7;
	size_t n = 0;
	for (; h[n]; n++)
		if (!((h[n] >= '0' && h[n] <= '9') || (h[n] >= 'a' && h[n] <= 'f')))
			return NULL;
	return n == 64 ? h : NULL;
}

static bool key_valid(const char *key, bool internal)
{
	if (!key || !*key || strlen(key) > 128)
		return false;
	for (size_t i = 0; key[i]; i++) {
		char ch = key[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9');
		if (i == 0 && !alnum && !(internal && ch == '.'))
			return false;
		if (!alnum && ch != '_' && ch != '.' && ch != '-')
			return false;
	}
	return strcmp(key, ".") && strcmp(key, "..");
}

char *snap_committed_path(struct kiln_snapshotter *sn, const char *chain_id, const char *sub)
{
	const char *hex = snap_chain_hex(chain_id);
	if (sub)
		return kiln_xasprintf("%s/snaps/%s/%s", sn->dir, hex ? hex : "-", sub);
	return kiln_xasprintf("%s/snaps/%s", sn->dir, hex ? hex : "-");
}

char *snap_read_text(int dirfd, const char *path, struct kiln_err *err)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		kiln_err_set(err, errno, "opening %s", path);
		return NULL;
	}
	char *data = NULL;
	size_t len = 0;
	int rc = kiln_read_fd(fd, 1 << 20, &data, &len, err);
	int e = errno;
	close(fd);
	if (rc) {
		errno = e;
		return NULL;
	}
	while (len && (data[len - 1] == '\n' || data[len - 1] == ' '))
		len--;
	char *s = kiln_xstrndup(data, len);   /* an empty read is not terminated */
	free(data);
	return s;
}

int snap_write_text(int dirfd, const char *path, const char *text, struct kiln_err *err)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kiln_err_set(err, errno, "creating %s", path);
	if (kiln_write_all(fd, text, strlen(text)) || kiln_write_all(fd, "\n", 1)) {
		int e = errno;
		close(fd);
		return kiln_err_set(err, e, "writing %s", path);
	}
	if (close(fd))
		return kiln_err_set(err, errno, "writing %s", path);
	return 0;
}

int kiln_snap_chain_id(const char *parent_chain_id, const char *diff_id,
		       char out[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (!snap_chain_hex(diff_id))
		return kiln_err_set(err, EINVAL, "invalid diff_id \"%s\"", diff_id ? diff_id : "");
	if (!parent_chain_id) {
		snprintf(out, KILN_DIGEST_MAX, "%s", diff_id);
		return 0;
	}
	if (!snap_chain_hex(parent_chain_id))
		return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", parent_chain_id);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *in = kiln_xasprintf("%s %s", parent_chain_id, diff_id);
	int ok = EVP_Digest(in, strlen(in), md, &mdlen, EVP_sha256(), NULL);
	free(in);
	if (!ok || mdlen != 32)
		return kiln_err_set(err, 0, "computing a chain id: sha256 failed");
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* ---- removal through tmp/ ---- */

static bool is_dir_at(int dirfd, const char *path)
{
	struct stat st;
	return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* Destroy a snapshot directory (committed or active layout) at abs path. */
static int destroy_dir(struct kiln_snapshotter *sn, const char *path, struct kiln_err *err)
{
	char *p;
	if (sn->drv == SNAP_OVERLAY) {
		p = kiln_xasprintf("%s/merged", path);
		int rc = snap_umount_if_mounted(p, err);
		free(p);
		if (rc)
			return -1;
		p = kiln_xasprintf("%s/lower", path);
		rc = snap_umount_if_mounted(p, err);
		free(p);
		if (rc)
			return -1;
	}
	if (sn->drv == SNAP_BTRFS) {
		p = kiln_xasprintf("%s/fs", path);
		int rc = snap_btrfs_delete(p, err);
		free(p);
		if (rc)
			return -1;
	}
	return kiln_rm_rf(path, err);
}

/* Move dirfd-relative rel ("snaps/<hex>", "active/<key>") into tmp/ (one
 * atomic rename: a crash leaves either the snapshot or a tmp/ leftover that
 * the next kiln_snap_open removes).  *tmp_rel receives the new name. */
static int move_to_tmp(struct kiln_snapshotter *sn, const char *rel, char **tmp_rel,
		       struct kiln_err *err)
{
	char *tmp = kiln_xasprintf("tmp/%d-%u-%llu", (int)getpid(), sn->counter++,
				   (unsigned long long)(kiln_now_ns() % 1000000000ULL));
	if (renameat(sn->dirfd, rel, sn->dirfd, tmp)) {
		int e = errno;
		free(tmp);
		return kiln_err_set(err, e, "removing snapshot %s", rel);
	}
	*tmp_rel = tmp;
	return 0;
}

static int destroy_tmp(struct kiln_snapshotter *sn, char *tmp_rel, struct kiln_err *err)
{
	char *abs = kiln_xasprintf("%s/%s", sn->dir, tmp_rel);
	int rc = destroy_dir(sn, abs, err);
	free(abs);
	free(tmp_rel);
	return rc;
}

/* Move rel out of sight, then destroy it.  ENOENT when rel does not exist. */
static int remove_via_tmp(struct kiln_snapshotter *sn, const char *rel, struct kiln_err *err)
{
	char *tmp;
	if (move_to_tmp(sn, rel, &tmp, err))
		return -1;
	return destroy_tmp(sn, tmp, err);
}

int snap_remove_committed(struct kiln_snapshotter *sn, const char *hex, struct kiln_err *err)
{
	char *rel = kiln_xasprintf("snaps/%s", hex);
	char *tmp;
	int rc = move_to_tmp(sn, rel, &tmp, err);
	free(rel);
	if (rc)
		return -1;
	/* the overlay short link goes after the rename: a crash in between
	 * leaves a dangling link (reused if the chain is committed again), never
	 * a snapshot without its link */
	if (sn->drv == SNAP_OVERLAY)
		snap_overlay_forget_link(sn, hex, tmp);
	return destroy_tmp(sn, tmp, err);
}

static bool pid_dead(const char *name)
{
	char *end;
	long pid = strtol(name, &end, 10);
	if (end == name || *end != '-' || pid <= 0)
		return false;
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* Temporary keys: ".apply-PID-N" (ours) and NAME-PID-N with a lowercase
 * NAME (callers' build steps and views).  Returns the PID part or NULL. */
static const char *temp_key_pid(const char *key)
{
	const char *p = key;
	if (kiln_str_has_prefix(p, ".apply-"))
		p += 7;
	else {
		while (*p >= 'a' && *p <= 'z')
			p++;
		if (p == key || *p != '-')
			return NULL;
		p++;
	}
	const char *pid = p;
	while (*p >= '0' && *p <= '9')
		p++;
	if (p == pid || *p != '-')
		return NULL;
	const char *n = ++p;
	while (*p >= '0' && *p <= '9')
		p++;
	return p != n && !*p ? pid : NULL;
}

/* Leftovers of processes that died: tmp/<pid>-…, active/.apply-<pid>-…,
 * tmp/probe-<pid>-… */
static void clean_leftovers(struct kiln_snapshotter *sn)
{
	struct kiln_err e;
	const char *dirs[] = { "tmp", "active" };
	for (int d = 0; d < 2; d++) {
		int fd = openat(sn->dirfd, dirs[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct kiln_strv names = { 0 };
		int rc = snap_list_dir(fd, &names, &e);
		close(fd);
		if (rc)
			continue;
		for (size_t i = 0; i < names.n; i++) {
			const char *n = names.v[i];
			const char *pidpart = NULL;
			if (d == 0)
				pidpart = kiln_str_has_prefix(n, "probe-") ? n + 6 : n;
			else
				pidpart = temp_key_pid(n);
			if (!pidpart || !pid_dead(pidpart))
				continue;
			char *rel = kiln_xasprintf("%s/%s", dirs[d], n);
			if (d == 0) {
				char *abs = kiln_xasprintf("%s/%s", sn->dir, rel);
				(void)destroy_dir(sn, abs, &e);
				free(abs);
			} else {
				(void)remove_via_tmp(sn, rel, &e);
			}
			free(rel);
		}
		kiln_strv_free(&names);
	}
}

/* ---- open / close ---- */

static int parse_driver(const char *name, enum snap_driver *out)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, driver_names[i])) {
			*out = (enum snap_driver)i;
			return 0;
		}
	return -1;
}

static int setup_dirs(struct kiln_snapshotter *sn, const char *base, struct kiln_err *err)
{
	free(sn->dir);
	sn->dir = kiln_xasprintf("%s/%s", base, driver_names[sn->drv]);
	if (sn->dirfd >= 0)
		close(sn->dirfd);
	sn->dirfd = -1;
	if (mkdir(sn->dir, 0700) && errno != EEXIST)
		return kiln_err_set(err, errno, "creating %s", sn->dir);
	sn->dirfd = open(sn->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sn->dirfd < 0)
		return kiln_err_set(err, errno, "opening %s", sn->dir);
	const char *subs[] = { "snaps", "active", "tmp", "l" };
	int nsubs = sn->drv == SNAP_OVERLAY ? 4 : 3;
	for (int i = 0; i < nsubs; i++)
		if (mkdirat(sn->dirfd, subs[i], 0700) && errno != EEXIST)
			return kiln_err_set(err, errno, "creating %s/%s", sn->dir, subs[i]);
	return 0;
}

int kiln_snap_open(const char *snapshots_dir, const char *driver,
		   struct kiln_snapshotter **out, struct kiln_err *err)
{
	*out = NULL;
	if (kiln_mkdir_p(snapshots_dir, 0700, err))
		return kiln_err_wrap(err, "snapshots");
	char base[PATH_MAX];
	if (!realpath(snapshots_dir, base))
		return kiln_err_set(err, errno, "resolving %s", snapshots_dir);

	struct kiln_snapshotter *sn = kiln_xcalloc(1, sizeof(*sn));
	sn->dirfd = -1;
	bool is_btrfs = snap_btrfs_is_btrfs(base);
	if (driver && *driver) {
		if (parse_driver(driver, &sn->drv)) {
			free(sn);
			return kiln_err_set(err, EINVAL,
					    "unknown storage driver \"%s\" (btrfs, overlay or vfs)", driver);
		}
		if (sn->drv == SNAP_BTRFS && !is_btrfs) {
			free(sn);
			return kiln_err_set(err, EINVAL,
					    "storage driver btrfs: %s is not on a btrfs filesystem", base);
		}
	} else if (is_btrfs) {
		sn->drv = SNAP_BTRFS;
	} else {
		char *ov = kiln_xasprintf("%s/overlay", base);
		char *vf = kiln_xasprintf("%s/vfs", base);
		struct stat st;
		bool have_ov = stat(ov, &st) == 0, have_vfs = stat(vf, &st) == 0;
		free(ov);
		free(vf);
		if (have_ov) {
			sn->drv = SNAP_OVERLAY;
		} else if (have_vfs) {
			sn->drv = SNAP_VFS;
		} else {
			sn->drv = SNAP_OVERLAY;
			if (setup_dirs(sn, base, err))
				goto fail;
			if (!snap_overlay_probe(sn)) {
				close(sn->dirfd);
				sn->dirfd = -1;
				(void)kiln_rm_rf(sn->dir, err);
				kiln_err_clear(err);
				sn->drv = SNAP_VFS;
			}
		}
	}
	if (setup_dirs(sn, base, err))
		goto fail;
	clean_leftovers(sn);
	*out = sn;
	return 0;
fail:
	kiln_snap_close(sn);
	return -1;
}

void kiln_snap_close(struct kiln_snapshotter *sn)
{
	if (!sn)
		return;
	if (sn->dirfd >= 0)
		close(sn->dirfd);
	free(sn->dir);
	free(sn);
}

const char *kiln_snap_driver_name(const struct kiln_snapshotter *sn)
{
	return driver_names[sn->drv];
}

bool kiln_snap_exists(struct kiln_snapshotter *sn, const char *chain_id)
{
	const char *hex = snap_chain_hex(chain_id);
	if (!hex)
		return false;
	char *rel = kiln_xasprintf("snaps/%s", hex);
	bool r = is_dir_at(sn->dirfd, rel);
	free(rel);
	return r;
}

/* ---- handles ---- */

static struct kiln_snap *snap_new(struct kiln_snapshotter *sn, const char *key, const char *parent)
{
	struct kiln_snap *s = kiln_xcalloc(1, sizeof(*s));
	s->sn = sn;
	s->key = kiln_xstrdup(key);
	s->parent = parent ? kiln_xstrdup(parent) : NULL;
	s->dir = kiln_xasprintf("%s/active/%s", sn->dir, key);
	s->fs = kiln_xasprintf("%s/fs", s->dir);
	if (sn->drv == SNAP_OVERLAY && parent)
		s->merged = kiln_xasprintf("%s/merged", s->dir);
	return s;
}

static void snap_free(struct kiln_snap *s)
{
	if (!s)
		return;
	free(s->key);
	free(s->parent);
	free(s->dir);
	free(s->fs);
	free(s->merged);
	free(s->view_path);
	free(s);
}

static int prepare(struct kiln_snapshotter *sn, const char *parent, const char *key,
		   unsigned flags, bool internal, struct kiln_snap **out, struct kiln_err *err)
{
	*out = NULL;
	if (!key_valid(key, internal))
		return kiln_err_set(err, EINVAL, "invalid snapshot key \"%s\"", key ? key : "");
	if (parent) {
		if (!snap_chain_hex(parent))
			return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", parent);
		if (!kiln_snap_exists(sn, parent))
			return kiln_err_set(err, ENOENT, "parent snapshot %s", parent);
	}
	char *rel = kiln_xasprintf("active/%s", key);
	if (mkdirat(sn->dirfd, rel, 0700)) {
		int e = errno;
		free(rel);
		if (e == EEXIST)
			return kiln_err_set(err, e, "snapshot key %s is in use", key);
		return kiln_err_set(err, e, "creating snapshot %s", key);
	}
	struct kiln_snap *s = snap_new(sn, key, parent);
	char *pfs = parent ? snap_committed_path(sn, parent, "fs") : NULL;
	int rc = 0;
	if (parent) {
		char *pf = kiln_xasprintf("%s/parent", rel);
		rc = snap_write_text(sn->dirfd, pf, parent, err);
		free(pf);
	}
	if (!rc) {
		switch (sn->drv) {
		case SNAP_BTRFS:
			rc = snap_btrfs_create(pfs, s->fs, err);
			break;
		case SNAP_VFS:
			if (pfs) {
				/* the files' ctimes after the copy, for the diff */
				char *ct = internal ? NULL : kiln_xasprintf("%s/ctimes", s->dir);
				rc = snap_vfs_snapshot(pfs, s->fs, ct, err);
				free(ct);
			}
			else if (mkdir(s->fs, 0755) || chmod(s->fs, 0755))
				rc = kiln_err_set(err, errno, "creating %s", s->fs);
			break;
		case SNAP_OVERLAY:
			if (mkdir(s->fs, 0755) || chmod(s->fs, 0755)) {
				rc = kiln_err_set(err, errno, "creating %s", s->fs);
				break;
			}
			if (!parent)
				break;
			char *work = kiln_xasprintf("%s/work", s->dir);
			if (mkdir(work, 0700) || mkdir(s->merged, 0755))
				rc = kiln_err_set(err, errno, "creating %s", work);
			free(work);
			if (!rc && !(flags & KILN_SNAP_NOMOUNT))
				rc = snap_overlay_mount(s, err);
			break;
		}
	}
	free(pfs);
	if (rc) {
		struct kiln_err e2;
		if (s->mounted)
			(void)snap_umount_if_mounted(s->merged, &e2);
		(void)remove_via_tmp(sn, rel, &e2);
		free(rel);
		snap_free(s);
		return kiln_err_wrap(err, "preparing snapshot %s", key);
	}
	free(rel);
	*out = s;
	return 0;
}

int kiln_snap_prepare(struct kiln_snapshotter *sn, const char *parent_chain_id,
		      const char *key, unsigned flags, struct kiln_snap **out,
		      struct kiln_err *err)
{
	return prepare(sn, parent_chain_id, key, flags, false, out, err);
}

int kiln_snap_get(struct kiln_snapshotter *sn, const char *key, unsigned flags,
		  struct kiln_snap **out, struct kiln_err *err)
{
	*out = NULL;
	if (!key_valid(key, true))
		return kiln_err_set(err, EINVAL, "invalid snapshot key \"%s\"", key ? key : "");
	char *rel = kiln_xasprintf("active/%s", key);
	char *fsrel = kiln_xasprintf("%s/fs", rel);
	bool ok = is_dir_at(sn->dirfd, fsrel);
	free(fsrel);
	if (!ok) {
		free(rel);
		return kiln_err_set(err, ENOENT, "snapshot %s", key);
	}
	char *pf = kiln_xasprintf("%s/parent", rel);
	struct kiln_err e2;
	char *parent = snap_read_text(sn->dirfd, pf, &e2);
	free(pf);
	free(rel);
	if (!parent && errno != ENOENT) {
		if (err)
			*err = e2;
		return -1;
	}
	if (parent && !snap_chain_hex(parent)) {
		free(parent);
		return kiln_err_set(err, EINVAL, "snapshot %s: corrupt parent file", key);
	}
	struct kiln_snap *s = snap_new(sn, key, parent);
	free(parent);
	if (s->merged && !(flags & KILN_SNAP_NOMOUNT) && !snap_is_mountpoint(s->merged)) {
		if (snap_overlay_mount(s, err)) {
			snap_free(s);
			return -1;
		}
	}
	*out = s;
	return 0;
}

int kiln_snap_view(struct kiln_snapshotter *sn, const char *chain_id, const char *key,
		   struct kiln_snap **out, struct kiln_err *err)
{
	*out = NULL;
	if (!snap_chain_hex(chain_id))
		return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", chain_id ? chain_id : "");
	if (!key_valid(key, false))
		return kiln_err_set(err, EINVAL, "invalid snapshot key \"%s\"", key ? key : "");
	if (!kiln_snap_exists(sn, chain_id))
		return kiln_err_set(err, ENOENT, "snapshot %s", chain_id);
	struct kiln_snap *s = snap_new(sn, key, chain_id);
	s->view = true;
	if (sn->drv != SNAP_OVERLAY) {
		s->view_path = snap_committed_path(sn, chain_id, "fs");
		*out = s;
		return 0;
	}
	struct kiln_strv lowers = { 0 };
	if (snap_overlay_lowers(sn, chain_id, &lowers, err)) {
		snap_free(s);
		return -1;
	}
	if (lowers.n == 1) {
		kiln_strv_free(&lowers);
		s->view_path = snap_committed_path(sn, chain_id, "fs");
		*out = s;
		return 0;
	}
	char *rel = kiln_xasprintf("active/%s", key);
	if (mkdirat(sn->dirfd, rel, 0700)) {
		int e = errno;
		free(rel);
		kiln_strv_free(&lowers);
		snap_free(s);
		if (e == EEXIST)
			return kiln_err_set(err, e, "snapshot key %s is in use", key);
		return kiln_err_set(err, e, "creating view %s", key);
	}
	char *vf = kiln_xasprintf("%s/view", rel);
	int rc = snap_write_text(sn->dirfd, vf, chain_id, err);
	free(vf);
	if (!rc && mkdir(s->merged, 0755))
		rc = kiln_err_set(err, errno, "creating %s", s->merged);
	if (!rc) {
		struct kiln_snap_mount_spec spec = { .overlay = true, .source = (char *)"overlay" };
		spec.lowerdirs = lowers.v;
		rc = kiln_snap_mount_spec_apply(&spec, s->merged, err);
	}
	kiln_strv_free(&lowers);
	if (rc) {
		struct kiln_err e2;
		(void)remove_via_tmp(sn, rel, &e2);
		free(rel);
		snap_free(s);
		return kiln_err_wrap(err, "view of %s", chain_id);
	}
	free(rel);
	s->mounted = true;
	*out = s;
	return 0;
}

const char *kiln_snap_rootfs(const struct kiln_snap *snap)
{
	if (snap->view_path)
		return snap->view_path;
	if (snap->merged)
		return snap->mounted || snap_is_mountpoint(snap->merged) ? snap->merged : NULL;
	return snap->fs;
}

const char *kiln_snap_key(const struct kiln_snap *snap)
{
	return snap->key;
}

const char *kiln_snap_parent(const struct kiln_snap *snap)
{
	return snap->parent;
}

int kiln_snap_mount(struct kiln_snap *snap, struct kiln_err *err)
{
	if (!snap->merged || snap->view || snap->committed)
		return 0;
	if (snap->mounted || snap_is_mountpoint(snap->merged))
		return 0;
	return snap_overlay_mount(snap, err);
}

int kiln_snap_unmount(struct kiln_snap *snap, struct kiln_err *err)
{
	if (!snap->merged || snap->view)
		return 0;
	snap->mounted = false;
	return snap_umount_if_mounted(snap->merged, err);
}

/* ---- diff, layers ---- */

int kiln_snap_diff(struct kiln_snap *snap, struct kiln_changes *out, struct kiln_err *err)
{
	if (snap->view || snap->committed)
		return kiln_err_set(err, EINVAL, "snapshot %s: diff needs a writable snapshot", snap->key);
	struct kiln_snapshotter *sn = snap->sn;
	if (!snap->parent)
		return snap_diff_all_added(snap->fs, out, err);
	int rc = 0;
	char *pfs = snap_committed_path(sn, snap->parent, "fs");
	switch (sn->drv) {
	case SNAP_BTRFS: {
		struct snap_u64set changed = { 0 };
		struct snap_strset dirty = { 0 };
		struct kiln_err e2;
		bool prune = snap_btrfs_changes(snap->fs, &changed, &dirty, &e2) == 0;
		struct snap_proof proof = { .inode_ctime = true, .extents = true };
		rc = snap_diff_trees(snap->fs, pfs, prune ? &changed : NULL, prune ? &dirty : NULL,
				     &proof, out, err);
		snap_u64set_free(&changed);
		snap_strset_free(&dirty);
		break;
	}
	case SNAP_VFS: {
		/* without the record (made by an older kiln) files with equal
		 * metadata are read and compared */
		char *ct = kiln_xasprintf("%s/ctimes", snap->dir);
		struct kiln_err e2;
		struct snap_ctimes *rec = snap_ctimes_load(ct, &e2);
		free(ct);
		struct stat a, b;
		struct snap_proof proof = {
			.ctimes = rec,
			.extents = stat(snap->fs, &a) == 0 && stat(pfs, &b) == 0 && a.st_dev == b.st_dev,
		};
		rc = snap_diff_trees(snap->fs, pfs, NULL, NULL, &proof, out, err);
		snap_ctimes_free(rec);
		break;
	}
	case SNAP_OVERLAY:
		rc = snap_overlay_diff(snap, out, err);
		break;
	}
	free(pfs);
	if (rc)
		kiln_err_wrap(err, "diff of snapshot %s", snap->key);
	return rc;
}

int kiln_snap_write_layer(struct kiln_snap *snap, const struct kiln_layer_write_opts *opts,
			  int out_fd, struct kiln_layer_info *info, size_t *n_changes,
			  struct kiln_err *err)
{
	struct kiln_changes ch = { 0 };
	if (kiln_snap_diff(snap, &ch, err)) {
		kiln_changes_free(&ch);
		return -1;
	}
	bool temp_mount = false;
	const char *root = kiln_snap_rootfs(snap);
	if (!root) {
		if (snap_overlay_mount(snap, err)) {
			kiln_changes_free(&ch);
			return -1;
		}
		temp_mount = true;
		root = snap->merged;
	}
	int rc = 0;
	int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		rc = kiln_err_set(err, errno, "opening %s", root);
	else {
		rc = kiln_layer_write(rootfd, &ch, opts, out_fd, info, err);
		close(rootfd);
	}
	if (n_changes)
		*n_changes = ch.n;
	kiln_changes_free(&ch);
	if (temp_mount) {
		struct kiln_err e2;
		snap->mounted = false;
		if (snap_umount_if_mounted(snap->merged, rc ? &e2 : err))
			rc = -1;
	}
	return rc;
}

/* ---- commit, release, remove ---- */

int kiln_snap_commit(struct kiln_snap *snap, const char *chain_id, struct kiln_err *err)
{
	struct kiln_snapshotter *sn = snap->sn;
	if (snap->view || snap->committed)
		return kiln_err_set(err, EINVAL, "snapshot %s cannot be committed", snap->key);
	const char *hex = snap_chain_hex(chain_id);
	if (!hex)
		return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", chain_id ? chain_id : "");
	char *rel = kiln_xasprintf("active/%s", snap->key);
	char *dst = kiln_xasprintf("snaps/%s", hex);
	int rc = 0;
	if (kiln_snap_exists(sn, chain_id))
		goto already;
	if (sn->drv == SNAP_OVERLAY) {
		if (snap->merged) {
			snap->mounted = false;
			if (snap_umount_if_mounted(snap->merged, err)) {
				rc = -1;
				goto out;
			}
		}
		if (snap_overlay_prepare_commit(snap, chain_id, err)) {
			rc = -1;
			goto out;
		}
		char *work = kiln_xasprintf("%s/work", snap->dir);
		rc = kiln_rm_rf(work, err);
		free(work);
		if (!rc && snap->merged && rmdir(snap->merged) && errno != ENOENT)
			rc = kiln_err_set(err, errno, "removing %s", snap->merged);
		if (rc)
			goto out;
	} else if (sn->drv == SNAP_BTRFS) {
		if (snap_btrfs_set_readonly(snap->fs, true, err)) {
			rc = -1;
			goto out;
		}
	} else {
		char *ct = kiln_xasprintf("%s/ctimes", rel);   /* only the diff needs it */
		(void)unlinkat(sn->dirfd, ct, 0);
		free(ct);
	}
	if (renameat2(sn->dirfd, rel, sn->dirfd, dst, RENAME_NOREPLACE) == 0) {
		snap->committed = true;
		goto out;
	}
	if (errno != EEXIST && errno != ENOTEMPTY) {
		rc = kiln_err_set(err, errno, "publishing snapshot %s", chain_id);
		goto out;
	}
already:
	/* committed meanwhile by someone else: ours is not needed */
	if (remove_via_tmp(sn, rel, err)) {
		rc = -1;
		goto out;
	}
	snap->committed = true;
out:
	free(rel);
	free(dst);
	if (rc)
		kiln_err_wrap(err, "committing snapshot %s as %s", snap->key, chain_id);
	return rc;
}

void kiln_snap_release(struct kiln_snap *snap)
{
	if (!snap)
		return;
	struct kiln_err e;
	if (snap->view && snap->merged && snap->mounted) {
		char *rel = kiln_xasprintf("active/%s", snap->key);
		(void)remove_via_tmp(snap->sn, rel, &e);
		free(rel);
	} else if (snap->mounted && !snap->committed) {
		(void)snap_umount_if_mounted(snap->merged, &e);
	}
	snap_free(snap);
}

int kiln_snap_discard(struct kiln_snap *snap, struct kiln_err *err)
{
	if (!snap)
		return 0;
	int rc = 0;
	if (!snap->committed && !snap->view) {
		char *rel = kiln_xasprintf("active/%s", snap->key);
		if (snap->merged) {
			snap->mounted = false;
			rc = snap_umount_if_mounted(snap->merged, err);
		}
		if (!rc)
			rc = remove_via_tmp(snap->sn, rel, err);
		free(rel);
		snap->committed = true;   /* nothing left for release to unmount */
	}
	kiln_snap_release(snap);
	return rc;
}

/* Is chain_id the parent of any committed or active snapshot? */
static bool has_children(struct kiln_snapshotter *sn, const char *chain_id)
{
	const char *dirs[] = { "snaps", "active" };
	bool found = false;
	for (int d = 0; d < 2 && !found; d++) {
		int fd = openat(sn->dirfd, dirs[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct kiln_strv names = { 0 };
		struct kiln_err e;
		if (snap_list_dir(fd, &names, &e) == 0) {
			for (size_t i = 0; i < names.n && !found; i++) {
				char *pf = kiln_xasprintf("%s/parent", names.v[i]);
				char *p = snap_read_text(fd, pf, &e);
				if (p && !strcmp(p, chain_id))
					found = true;
				free(p);
				free(pf);
				if (!found && d == 1) {   /* overlay views mount the chain too */
					pf = kiln_xasprintf("%s/view", names.v[i]);
					p = snap_read_text(fd, pf, &e);
					if (p && !strcmp(p, chain_id))
						found = true;
					free(p);
					free(pf);
				}
			}
		}
		kiln_strv_free(&names);
		close(fd);
	}
	return found;
}

int kiln_snap_remove(struct kiln_snapshotter *sn, const char *name, struct kiln_err *err)
{
	if (name && strchr(name, ':')) {
		const char *hex = snap_chain_hex(name);
		if (!hex)
			return kiln_err_set(err, EINVAL, "invalid chain id \"%s\"", name);
		if (!kiln_snap_exists(sn, name))
			return kiln_err_set(err, ENOENT, "snapshot %s", name);
		if (has_children(sn, name))
			return kiln_err_set(err, EBUSY, "removing snapshot %s: other snapshots are based on it", name);
		return snap_remove_committed(sn, hex, err);
	}
	if (!key_valid(name, true))
		return kiln_err_set(err, EINVAL, "invalid snapshot key \"%s\"", name ? name : "");
	char *rel = kiln_xasprintf("active/%s", name);
	if (!is_dir_at(sn->dirfd, rel)) {
		free(rel);
		return kiln_err_set(err, ENOENT, "snapshot %s", name);
	}
	int rc = 0;
	if (sn->drv == SNAP_OVERLAY) {
		char *m = kiln_xasprintf("%s/%s/merged", sn->dir, rel);
		rc = snap_umount_if_mounted(m, err);
		free(m);
	}
	if (!rc)
		rc = remove_via_tmp(sn, rel, err);
	free(rel);
	return rc;
}

/* ---- usage, listing ---- */

struct usage_ctx {
	struct snap_u64set seen;
	int64_t bytes, inodes;
};

static int usage_walk(struct usage_ctx *u, int dirfd, struct kiln_err *err)
{
	struct kiln_strv names = { 0 };
	if (snap_list_dir(dirfd, &names, err))
		return -1;
	int rc = 0;
	for (size_t i = 0; i < names.n && !rc; i++) {
		struct stat st;
		if (fstatat(dirfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW)) {
			rc = kiln_err_set(err, errno, "stat %s", names.v[i]);
			break;
		}
		if (st.st_nlink > 1 && !S_ISDIR(st.st_mode)) {
			if (snap_u64set_has(&u->seen, (uint64_t)st.st_ino))
				continue;
			snap_u64set_add(&u->seen, (uint64_t)st.st_ino);
		}
		u->inodes++;
		u->bytes += (int64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				rc = kiln_err_set(err, errno, "opening %s", names.v[i]);
				break;
			}
			rc = usage_walk(u, fd, err);
			close(fd);
		}
	}
	kiln_strv_free(&names);
	return rc;
}

int kiln_snap_usage(struct kiln_snapshotter *sn, const char *name, int64_t *bytes,
		    int64_t *inodes, struct kiln_err *err)
{
	char *path;
	if (name && strchr(name, ':')) {
		if (!kiln_snap_exists(sn, name))
			return kiln_err_set(err, ENOENT, "snapshot %s", name ? name : "");
		path = snap_committed_path(sn, name, "fs");
	} else {
		if (!key_valid(name, true))
			return kiln_err_set(err, EINVAL, "invalid snapshot key \"%s\"", name ? name : "");
		path = kiln_xasprintf("%s/active/%s/fs", sn->dir, name);
	}
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		free(path);
		return kiln_err_set(err, e, "snapshot %s", name);
	}
	struct usage_ctx u = { 0 };
	struct stat st;
	if (fstat(fd, &st) == 0) {
		u.inodes = 1;
		u.bytes = (int64_t)st.st_blocks * 512;
	}
	int rc = usage_walk(&u, fd, err);
	close(fd);
	snap_u64set_free(&u.seen);
	if (rc) {
		kiln_err_wrap(err, "disk usage of %s", path);
		free(path);
		return -1;
	}
	free(path);
	if (bytes)
		*bytes = u.bytes;
	if (inodes)
		*inodes = u.inodes;
	return 0;
}

int kiln_snap_list(struct kiln_snapshotter *sn, bool committed,
		   int (*fn)(const char *name, void *arg), void *arg, struct kiln_err *err)
{
	int fd = openat(sn->dirfd, committed ? "snaps" : "active", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s/%s", sn->dir, committed ? "snaps" : "active");
	struct kiln_strv names = { 0 };
	int rc = snap_list_dir(fd, &names, err);
	close(fd);
	for (size_t i = 0; i < names.n && !rc; i++) {
		if (names.v[i][0] == '.')
			continue;
		if (committed) {
			char *id = kiln_xasprintf("sha256:%s", names.v[i]);
			if (snap_chain_hex(id))
				rc = fn(id, arg);
			free(id);
		} else {
			rc = fn(names.v[i], arg);
		}
	}
	kiln_strv_free(&names);
	return rc;
}

/* ---- image layers ---- */

int kiln_snap_apply_layer(struct kiln_snapshotter *sn, const char *parent_chain_id,
			  int layer_fd, const char *diff_id, char chain_id_out[KILN_DIGEST_MAX],
			  struct kiln_err *err)
{
	char chain[KILN_DIGEST_MAX];
	if (kiln_snap_chain_id(parent_chain_id, diff_id, chain, err))
		return -1;
	if (chain_id_out)
		snprintf(chain_id_out, KILN_DIGEST_MAX, "%s", chain);
	if (kiln_snap_exists(sn, chain))
		return 0;
	char key[64];
	snprintf(key, sizeof(key), ".apply-%d-%u", (int)getpid(), sn->counter++);
	struct kiln_snap *snap;
	if (prepare(sn, parent_chain_id, key, 0, true, &snap, err))
		return kiln_err_wrap(err, "applying layer %s", diff_id);
	int rc = 0;
	const char *root = kiln_snap_rootfs(snap);
	int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		rc = kiln_err_set(err, errno, "opening %s", root);
	char got[KILN_DIGEST_MAX] = "";
	if (!rc) {
		bool root_user = geteuid() == 0;
		struct kiln_layer_apply_opts o = {
			.whiteouts = true,
			.allow_devices = root_user,
			.keep_owner = root_user,
		};
		rc = kiln_layer_apply(rootfd, layer_fd, &o, got, err);
		close(rootfd);
	}
	if (!rc && strcmp(got, diff_id))
		rc = kiln_err_set(err, 0, "layer content is %s, expected %s", got, diff_id);
	if (!rc)
		rc = kiln_snap_commit(snap, chain, err);
	if (rc) {
		struct kiln_err e2;
		(void)kiln_snap_discard(snap, &e2);
		return kiln_err_wrap(err, "applying layer %s", diff_id);
	}
	kiln_snap_release(snap);
	return 0;
}
