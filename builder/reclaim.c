/* kiln — disk space: usage (system df) and the collectors (see reclaim.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cache.h"
#include "builder/cli.h"
#include "builder/reclaim.h"
#include "layers/image.h"
#include "layers/snapshot.h"
#include "runtime/container.h"

static const char *const drivers[] = {"btrfs", "overlay", "vfs"};

static bool strv_has(const struct kiln_strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->v[i], s))
			return true;
	return false;
}

/* ---- what is kept ---- */

/* Every cache record under root (cache/records/<hex>.json), in no order. */
static int each_record(const char *root, int (*fn)(struct kiln_cache_record *rec, void *arg), void *arg,
		       struct kiln_err *err)
{
	char *dir = kiln_xasprintf("%s/cache/records", root);
	DIR *d = opendir(dir);
	free(dir);
	if (!d)
		return errno == ENOENT ? 0 : kiln_err_set(err, errno, "opening the build cache records");
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l != 64 + 5 || strcmp(de->d_name + 64, ".json"))
			continue;
		char key[KILN_DIGEST_MAX];
		snprintf(key, sizeof(key), "sha256:%.64s", de->d_name);
		struct kiln_cache_record rec;
		struct kiln_err e = {0};
		if (kiln_cache_get(root, key, &rec, &e) == 1) {
			rc = fn(&rec, arg);
			kiln_cache_record_free(&rec);
		}
	}
	closedir(d);
	return rc;
}

static int push_record_chain(struct kiln_cache_record *rec, void *arg)
{
	if (rec->chain_id[0])
		kiln_strv_push(arg, rec->chain_id);
	return 0;
}

/* Chain ids of every layer of every image in index.json (an unreadable image
 * keeps nothing: fsck reports it, and its snapshots can be unpacked again). */
static void image_chains(struct kiln_store *s, struct kiln_strv *out)
{
	struct kiln_tag *tags = NULL;
	size_t n = 0;
	struct kiln_err e = {0};
	if (kiln_store_tag_list(s, &tags, &n, &e) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct kiln_image *img = NULL;
		if (kiln_image_load_desc(s, &tags[i].desc, &img, &e) < 0)
			continue;
		char **ids = kiln_image_chain_ids(img);
		for (size_t k = 0; ids && ids[k]; k++)
			kiln_strv_push(out, ids[k]);
		kiln_strv_free_raw(ids);
		kiln_image_free(img);
	}
	kiln_store_tags_free(tags, n);
}

/* The snapshotter of one driver when its directory exists (NULL otherwise). */
static struct kiln_snapshotter *open_driver(const char *root, const char *drv)
{
	char *dir = kiln_xasprintf("%s/snapshots/%s", root, drv);
	struct stat st;
	bool present = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
	free(dir);
	if (!present)
		return NULL;
	char *sd = kiln_xasprintf("%s/snapshots", root);
	struct kiln_snapshotter *sn = NULL;
	struct kiln_err e = {0};
	if (kiln_snap_open(sd, drv, &sn, &e) < 0)
		sn = NULL;   /* e.g. a btrfs directory copied to another filesystem */
	free(sd);
	return sn;
}

int kiln_reclaim_gc(struct kiln_store *s, bool wait, struct kiln_reclaim_stats *st, struct kiln_err *err)
{
	memset(st, 0, sizeof(*st));
	int r = kiln_store_lock_exclusive(s, wait, err);
	if (r != 0)
		return r;
	const char *root = kiln_store_root_path(s);
	struct kiln_strv keep = {0};
	image_chains(s, &keep);
	int rc = each_record(root, push_record_chain, &keep, err);
	for (size_t d = 0; rc == 0 && d < sizeof(drivers) / sizeof(drivers[0]); d++) {
		struct kiln_snapshotter *sn = open_driver(root, drivers[d]);
		if (!sn)
			continue;
		struct kiln_snap_gc_stats gs;
		rc = kiln_snap_gc(sn, &keep, &gs, err);
		st->snapshots += gs.removed;
		st->snapshot_bytes += gs.bytes;
		kiln_snap_close(sn);
	}
	kiln_strv_free(&keep);
	if (rc == 0) {
		struct kiln_gc_stats gs;
		rc = kiln_store_gc(s, NULL, NULL, &gs, err);
		st->blobs = gs.blobs_removed;
		st->blob_bytes = gs.bytes_removed;
	}
	kiln_store_unlock_exclusive(s);
	return rc;
}

int64_t kiln_reclaim_bytes(const struct kiln_reclaim_stats *st)
{
	return st->snapshot_bytes + st->blob_bytes;
}

/* ---- images and containers ---- */

static void section(bool *printed, const char *title)
{
	if (*printed)
		return;
	printf("%s\n", title);
	*printed = true;
}

int kiln_reclaim_images(struct kiln_store *s, bool all, bool *printed, struct kiln_err *err)
{
	struct kiln_strv in_use = {0};
	kiln_image_ids_in_use(s, &in_use);
	struct kiln_image_entry *v = NULL;
	size_t n = 0;
	int rc = kiln_image_list(s, &v, &n, err);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (strv_has(&in_use, v[i].id) || (!all && v[i].refs.n))
			continue;
		for (size_t k = 0; k < v[i].refs.n; k++) {
			if (kiln_store_tag_remove(s, v[i].refs.v[k], false, err) < 0 && err->errnum != ENOENT) {
				rc = -1;
				break;
			}
			section(printed, "Deleted Images:");
			char *fam = kiln_ref_familiarize(v[i].refs.v[k]);
			printf("untagged: %s\n", fam);
			free(fam);
		}
		if (rc == 0 && kiln_store_index_remove_digest(s, v[i].manifest.digest, err) < 0)
			rc = -1;
		if (rc == 0) {
			section(printed, "Deleted Images:");
			printf("deleted: %s\n", v[i].id);
		}
	}
	kiln_image_list_free(v, n);
	kiln_strv_free(&in_use);
	return rc;
}

int kiln_reclaim_containers(const char *root, bool *printed, int64_t *bytes, struct kiln_err *err)
{
	*bytes = 0;
	struct kiln_container_state *v = NULL;
	size_t n = 0;
	if (kiln_container_list(root, &v, &n, err) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (strcmp(v[i].status, "exited") || kiln_container_running(&v[i]))
			continue;
		char key[80];
		snprintf(key, sizeof(key), "ctr-%.64s", v[i].id);
		for (size_t d = 0; d < sizeof(drivers) / sizeof(drivers[0]); d++) {
			struct kiln_snapshotter *sn = open_driver(root, drivers[d]);
			if (!sn)
				continue;
			int64_t b = 0;
			struct kiln_err e = {0};
			if (kiln_snap_usage(sn, key, &b, NULL, &e) == 0)
				*bytes += b;
			if (kiln_snap_remove(sn, key, &e) < 0 && e.errnum != ENOENT) {
				*err = e;
				rc = -1;
			}
			kiln_snap_close(sn);
		}
		if (rc)
			break;
		char *dir = kiln_container_dir(root, v[i].id);
		*bytes += kiln_reclaim_du(dir);
		rc = kiln_rm_rf(dir, err);
		free(dir);
		if (rc == 0) {
			section(printed, "Deleted Containers:");
			printf("%s\n", v[i].id);
		}
	}
	free(v);
	return rc;
}

int kiln_reclaim_cache(const char *root, bool all, size_t *removed, int64_t *bytes, struct kiln_err *err)
{
	*removed = 0;
	*bytes = 0;
	if (kiln_cache_prune(root, all, removed, NULL, err) < 0)
		return -1;
	if (!all)
		return 0;
	static const char *const dirs[] = {"cache/mounts", "cache/context"};
	for (size_t i = 0; i < 2; i++) {
		char *p = kiln_xasprintf("%s/%s", root, dirs[i]);
		*bytes += kiln_reclaim_du(p);
		int rc = kiln_rm_rf(p, err);
		free(p);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* ---- sizes ---- */

struct ino_set {
	struct {
		dev_t dev;
		ino_t ino;
	} *v;
	size_t n, cap;
};

static bool ino_seen(struct ino_set *s, dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].dev == dev && s->v[i].ino == ino)
			return true;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = kiln_xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n].dev = dev;
	s->v[s->n].ino = ino;
	s->n++;
	return false;
}

static int64_t du_at(int dirfd, struct ino_set *seen, int depth)
{
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return 0;
	}
	int64_t total = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && ino_seen(seen, st.st_dev, st.st_ino))
			continue;
		total += (int64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode) && depth < 256) {
			int fd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				total += du_at(fd, seen, depth + 1);
		}
	}
	closedir(d);
	return total;
}

int64_t kiln_reclaim_du(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct stat st;
	int64_t total = fstat(fd, &st) == 0 ? (int64_t)st.st_blocks * 512 : 0;
	struct ino_set seen = {0};
	total += du_at(fd, &seen, 0);
	free(seen.v);
	return total;
}

/* Objects that take space: "b:<digest>" (a blob), "s:<chain id>" (a
 * committed snapshot), with their sizes measured once. */
struct sizes {
	struct kiln_store *s;
	struct kiln_snapshotter *sn;
	struct kiln_strv names;
	int64_t *bytes;
};

static int64_t size_of(struct sizes *z, const char *name)
{
	for (size_t i = 0; i < z->names.n; i++)
		if (!strcmp(z->names.v[i], name))
			return z->bytes[i];
	int64_t b = 0;
	if (name[0] == 'b') {
		char *p = kiln_store_blob_path(z->s, name + 2);
		struct stat st;
		if (p && stat(p, &st) == 0)
			b = (int64_t)st.st_blocks * 512;
		free(p);
	} else if (z->sn) {
		struct kiln_err e = {0};
		if (kiln_snap_usage(z->sn, name + 2, &b, NULL, &e) < 0)
			b = 0;
	}
	kiln_strv_push(&z->names, name);
	z->bytes = kiln_xrealloc(z->bytes, z->names.n * sizeof(*z->bytes));
	z->bytes[z->names.n - 1] = b;
	return b;
}

/* A set of object names. */
static void add_obj(struct kiln_strv *set, const char *kind, const char *id)
{
	char *n = kiln_xasprintf("%s:%s", kind, id);
	if (!strv_has(set, n))
		kiln_strv_push_owned(set, n);
	else
		free(n);
}

static void add_snaps(struct sizes *z, struct kiln_strv *set, const struct kiln_strv *chains)
{
	if (!z->sn || !chains->n)
		return;
	struct kiln_strv all = {0};
	struct kiln_err e = {0};
	if (kiln_snap_closure(z->sn, chains, &all, &e) == 0)
		for (size_t i = 0; i < all.n; i++)
			add_obj(set, "s", all.v[i]);
	kiln_strv_free(&all);
}

static int64_t set_bytes(struct sizes *z, const struct kiln_strv *set, const struct kiln_strv *minus)
{
	int64_t t = 0;
	for (size_t i = 0; i < set->n; i++)
		if (!minus || !strv_has(minus, set->v[i]))
			t += size_of(z, set->v[i]);
	return t;
}

/* The objects one image needs: manifest, config, layer blobs, snapshots. */
static void image_objects(struct sizes *z, const struct kiln_desc *md, struct kiln_strv *set)
{
	struct kiln_image *img = NULL;
	struct kiln_err e = {0};
	add_obj(set, "b", md->digest);
	if (kiln_image_load_desc(z->s, md, &img, &e) < 0)
		return;
	if (strcmp(img->manifest.digest, md->digest))
		add_obj(set, "b", img->manifest.digest);
	add_obj(set, "b", img->id);
	for (size_t i = 0; i < img->n_layers; i++)
		add_obj(set, "b", img->layers[i].digest);
	char **ids = kiln_image_chain_ids(img);
	struct kiln_strv chains = {0};
	for (size_t i = 0; ids && ids[i]; i++)
		kiln_strv_push(&chains, ids[i]);
	kiln_strv_free_raw(ids);
	add_snaps(z, set, &chains);
	kiln_strv_free(&chains);
	kiln_image_free(img);
}

/* One cache record: its key, time and the objects it keeps. */
struct rec_objs {
	char key[KILN_DIGEST_MAX];
	char chain[KILN_DIGEST_MAX];
	int64_t created;
	struct kiln_strv objs;
};

struct cache_walk {
	struct sizes *z;
	struct rec_objs *v;
	size_t n;
};

static int cache_cb(struct kiln_cache_record *rec, void *arg)
{
	struct cache_walk *w = arg;
	w->v = kiln_xrealloc(w->v, (w->n + 1) * sizeof(*w->v));
	struct rec_objs *r = &w->v[w->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "%s", rec->key);
	snprintf(r->chain, sizeof(r->chain), "%s", rec->chain_id);
	r->created = rec->created;
	for (size_t i = 0; i < rec->n_layers; i++)
		add_obj(&r->objs, "b", rec->layers[i].digest);
	if (rec->chain_id[0]) {
		struct kiln_strv ch = {0};
		kiln_strv_push(&ch, rec->chain_id);
		add_snaps(w->z, &r->objs, &ch);
		kiln_strv_free(&ch);
	}
	return 0;
}

static void set_union(struct kiln_strv *into, const struct kiln_strv *from)
{
	for (size_t i = 0; i < from->n; i++)
		if (!strv_has(into, from->v[i]))
			kiln_strv_push(into, from->v[i]);
}

/* The familiar repository and tag of a full reference ("<none>" for none). */
static void split_ref(const char *ref, char **repo, char **tag)
{
	struct kiln_ref r;
	struct kiln_err e = {0};
	if (ref && kiln_ref_parse(ref, &r, &e) == 0) {
		*repo = kiln_ref_familiar_repo(&r);
		*tag = kiln_xstrdup(r.tag ? r.tag : "<none>");
		kiln_ref_free(&r);
		return;
	}
	*repo = kiln_xstrdup("<none>");
	*tag = kiln_xstrdup("<none>");
}

int kiln_reclaim_usage(const char *root, struct kiln_usage *df, struct kiln_err *err)
{
	memset(df, 0, sizeof(*df));
	static const char *const types[] = {"Images", "Containers", "Local Volumes", "Build Cache"};
	for (size_t i = 0; i < 4; i++)
		df->rows[i].type = types[i];
	struct sizes z = {0};
	char *index = kiln_xasprintf("%s/index.json", root);
	bool fresh = access(index, F_OK) < 0 && errno == ENOENT;
	free(index);
	if (fresh)
		return 0;   /* no store yet: nothing used */
	if (kiln_store_open(root, KILN_STORE_RDONLY, &z.s, err) < 0)
		return -1;
	char *sd = kiln_xasprintf("%s/snapshots", root);
	struct stat st;
	if (stat(sd, &st) == 0 && kiln_snap_open(sd, kiln_global.storage_driver, &z.sn, err) < 0) {
		free(sd);
		kiln_store_close(z.s);
		return kiln_err_wrap(err, "opening snapshots");
	}
	free(sd);

	/* containers: their writable snapshots, and the chains they stand on */
	struct kiln_container_state *cv = NULL;
	size_t cn = 0;
	struct kiln_strv ctr_objs = {0}, ctr_chains = {0};
	if (kiln_container_list(root, &cv, &cn, err) < 0)
		cn = 0;
	df->containers = kiln_xcalloc(cn + 1, sizeof(*df->containers));
	for (size_t i = 0; i < cn; i++) {
		struct kiln_usage_container *c = &df->containers[df->n_containers++];
		snprintf(c->id, sizeof(c->id), "%s", cv[i].id);
		snprintf(c->image, sizeof(c->image), "%s", cv[i].image);
		snprintf(c->command, sizeof(c->command), "%s", cv[i].command);
		snprintf(c->created, sizeof(c->created), "%s", cv[i].created);
		snprintf(c->status, sizeof(c->status), "%s", cv[i].status);
		snprintf(c->name, sizeof(c->name), "%s", cv[i].name);
		c->exit_code = cv[i].exit_code;
		c->running = kiln_container_running(&cv[i]);
		char key[80];
		snprintf(key, sizeof(key), "ctr-%.64s", cv[i].id);
		struct kiln_snap *snap = NULL;
		struct kiln_err e = {0};
		if (z.sn && kiln_snap_get(z.sn, key, KILN_SNAP_NOMOUNT, &snap, &e) == 0) {
			if (kiln_snap_parent(snap))
				kiln_strv_push(&ctr_chains, kiln_snap_parent(snap));
			kiln_snap_release(snap);
			if (kiln_snap_usage(z.sn, key, &c->size, NULL, &e) < 0)
				c->size = 0;
		}
	}
	free(cv);
	add_snaps(&z, &ctr_objs, &ctr_chains);
	kiln_strv_free(&ctr_chains);

	/* images */
	struct kiln_strv in_use = {0};
	kiln_image_ids_in_use(z.s, &in_use);
	struct kiln_image_entry *iv = NULL;
	size_t in = 0;
	if (kiln_image_list(z.s, &iv, &in, err) < 0)
		in = 0;
	struct kiln_strv *objs = kiln_xcalloc(in + 1, sizeof(*objs));
	struct kiln_strv img_all = {0}, img_active = {0};
	df->images = kiln_xcalloc(in + 1, sizeof(*df->images));
	for (size_t i = 0; i < in; i++) {
		image_objects(&z, &iv[i].manifest, &objs[i]);
		set_union(&img_all, &objs[i]);
		struct kiln_usage_image *m = &df->images[df->n_images++];
		snprintf(m->id, sizeof(m->id), "%s", iv[i].id);
		split_ref(iv[i].refs.n ? iv[i].refs.v[0] : NULL, &m->repo, &m->tag);
		m->created = iv[i].created ? kiln_xstrdup(iv[i].created) : NULL;
		for (size_t k = 0; k < in_use.n; k++)
			if (!strcmp(in_use.v[k], iv[i].id))
				m->containers++;
		if (m->containers)
			set_union(&img_active, &objs[i]);
	}
	for (size_t i = 0; i < in; i++) {
		struct kiln_usage_image *m = &df->images[i];
		for (size_t k = 0; k < objs[i].n; k++) {
			int64_t b = size_of(&z, objs[i].v[k]);
			m->size += b;
			for (size_t j = 0; j < in; j++)
				if (j != i && strv_has(&objs[j], objs[i].v[k])) {
					m->shared += b;
					break;
				}
		}
	}
	struct kiln_usage_row *r = &df->rows[0];
	r->total = df->n_images;
	for (size_t i = 0; i < df->n_images; i++)
		r->active += df->images[i].containers > 0;
	r->size = set_bytes(&z, &img_all, NULL);
	/* what image prune -a would free: not what used images or containers need */
	struct kiln_strv kept = {0};
	set_union(&kept, &img_active);
	set_union(&kept, &ctr_objs);
	r->reclaimable = set_bytes(&z, &img_all, &kept);

	r = &df->rows[1];
	r->total = df->n_containers;
	for (size_t i = 0; i < df->n_containers; i++) {
		r->size += df->containers[i].size;
		if (df->containers[i].running)
			r->active++;
		else
			r->reclaimable += df->containers[i].size;
	}

	/* rows[2], Local Volumes, stays 0: kiln has no named volumes (-v binds host paths) */

	/* build cache: what only the cache keeps (images' and containers' own
	 * objects are counted in their rows) */
	struct cache_walk w = {.z = &z};
	(void)each_record(root, cache_cb, &w, err);
	struct kiln_strv others = {0}, cache_all = {0};
	set_union(&others, &img_all);
	set_union(&others, &ctr_objs);
	df->cache = kiln_xcalloc(w.n + 1, sizeof(*df->cache));
	r = &df->rows[3];
	for (size_t i = 0; i < w.n; i++) {
		struct kiln_usage_cache *c = &df->cache[df->n_cache++];
		snprintf(c->key, sizeof(c->key), "%s", w.v[i].key);
		c->created = w.v[i].created;
		char *top = kiln_xasprintf("s:%s", w.v[i].chain);
		c->shared = w.v[i].chain[0] && strv_has(&others, top);
		free(top);
		c->size = set_bytes(&z, &w.v[i].objs, &others);
		r->active += c->shared;
		set_union(&cache_all, &w.v[i].objs);
		kiln_strv_free(&w.v[i].objs);
	}
	free(w.v);
	r->total = df->n_cache;
	char *mounts = kiln_xasprintf("%s/cache/mounts", root);
	char *ctx = kiln_xasprintf("%s/cache/context", root);
	df->cache_mounts = kiln_reclaim_du(mounts) + kiln_reclaim_du(ctx);
	free(mounts);
	free(ctx);
	r->size = set_bytes(&z, &cache_all, &others) + df->cache_mounts;
	r->reclaimable = r->size;

	for (size_t i = 0; i < in; i++)
		kiln_strv_free(&objs[i]);
	free(objs);
	kiln_strv_free(&img_all);
	kiln_strv_free(&img_active);
	kiln_strv_free(&kept);
	kiln_strv_free(&ctr_objs);
	kiln_strv_free(&others);
	kiln_strv_free(&cache_all);
	kiln_strv_free(&in_use);
	kiln_image_list_free(iv, in);
	kiln_strv_free(&z.names);
	free(z.bytes);
	if (z.sn)
		kiln_snap_close(z.sn);
	kiln_store_close(z.s);
	kiln_err_clear(err);
	return 0;
}

void kiln_reclaim_usage_free(struct kiln_usage *df)
{
	for (size_t i = 0; i < df->n_images; i++) {
		free(df->images[i].repo);
		free(df->images[i].tag);
		free(df->images[i].created);
	}
	free(df->images);
	free(df->containers);
	free(df->cache);
	memset(df, 0, sizeof(*df));
}
