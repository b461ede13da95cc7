/* kiln — snapshots: collection of committed snapshots nothing needs, the
 * closure of a set of chain ids, and the consistency check.  See snapshot.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snap_internal.h"

/* One committed snapshot: its chain id, its parent (NULL: a base layer). */
struct node {
	char *id;
	char *parent;
	int depth;           /* 0 = not computed yet */
	bool keep;
};

struct graph {
	struct node *v;
	size_t n;
};

static int node_cmp(const void *a, const void *b)
{
	return strcmp(((const struct node *)a)->id, ((const struct node *)b)->id);
}

static struct node *graph_find(struct graph *g, const char *id)
{
	if (!id || !g->n)
		return NULL;
	struct node key = {.id = (char *)id};
	return bsearch(&key, g->v, g->n, sizeof(*g->v), node_cmp);
}

static void graph_free(struct graph *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->v[i].id);
		free(g->v[i].parent);
	}
	free(g->v);
	memset(g, 0, sizeof(*g));
}

/* Every committed snapshot with its parent file. */
static int graph_load(struct kiln_snapshotter *sn, struct graph *g, struct kiln_err *err)
{
	memset(g, 0, sizeof(*g));
	int fd = openat(sn->dirfd, "snaps", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s/snaps", sn->dir);
	struct kiln_strv names = {0};
	int rc = snap_list_dir(fd, &names, err);
	if (rc == 0)
		g->v = kiln_xcalloc(names.n + 1, sizeof(*g->v));
	for (size_t i = 0; rc == 0 && i < names.n; i++) {
		char *id = kiln_xasprintf("sha256:%s", names.v[i]);
		if (!snap_chain_hex(id)) {
			free(id);
			continue;
		}
		char *pf = kiln_xasprintf("%s/parent", names.v[i]);
		struct kiln_err e2;
		char *parent = snap_read_text(fd, pf, &e2);
		free(pf);
		if (!parent && errno != ENOENT) {
			if (err)
				*err = e2;
			free(id);
			rc = kiln_err_wrap(err, "snapshot %s", names.v[i]);
			break;
		}
		g->v[g->n++] = (struct node){.id = id, .parent = parent};
	}
	close(fd);
	kiln_strv_free(&names);
	if (rc) {
		graph_free(g);
		return -1;
	}
	qsort(g->v, g->n, sizeof(*g->v), node_cmp);
	return 0;
}

/* Keep id and every ancestor of it. */
static void graph_keep(struct graph *g, const char *id)
{
	for (struct node *x = graph_find(g, id); x && !x->keep; x = graph_find(g, x->parent))
		x->keep = true;
}

/* Depth in the chain (1 for a base layer); a broken parent chain or a cycle
 * ends the count. */
static int graph_depth(struct graph *g, struct node *x)
{
	if (x->depth)
		return x->depth;
	int d = 1;
	struct node *p = graph_find(g, x->parent);
	for (size_t guard = 0; p && guard < g->n; guard++) {
		if (p->depth) {
			d += p->depth;
			break;
		}
		d++;
		p = graph_find(g, p->parent);
	}
	x->depth = d;
	return d;
}

/* The chain ids the writable snapshots and views in active/ stand on. */
static int active_parents(struct kiln_snapshotter *sn, struct kiln_strv *out, struct kiln_err *err)
{
	int fd = openat(sn->dirfd, "active", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s/active", sn->dir);
	struct kiln_strv names = {0};
	int rc = snap_list_dir(fd, &names, err);
	for (size_t i = 0; rc == 0 && i < names.n; i++) {
		static const char *const files[] = {"parent", "view"};
		for (size_t f = 0; f < 2; f++) {
			char *pf = kiln_xasprintf("%s/%s", names.v[i], files[f]);
			struct kiln_err e2;
			char *p = snap_read_text(fd, pf, &e2);
			free(pf);
			if (p)
				kiln_strv_push_owned(out, p);
		}
	}
	close(fd);
	kiln_strv_free(&names);
	return rc;
}

static int depth_desc(const void *a, const void *b)
{
	const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;
	if (x->depth != y->depth)
		return x->depth < y->depth ? 1 : -1;
	return strcmp(x->id, y->id);
}

static bool strv_has(const struct kiln_strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->v[i], s))
			return true;
	return false;
}

int kiln_snap_gc(struct kiln_snapshotter *sn, const struct kiln_strv *keep,
		 struct kiln_snap_gc_stats *stats, struct kiln_err *err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	struct graph g;
	if (graph_load(sn, &g, err))
		return kiln_err_wrap(err, "collecting snapshots");
	struct kiln_strv act = {0};
	if (active_parents(sn, &act, err)) {
		graph_free(&g);
		return kiln_err_wrap(err, "collecting snapshots");
	}
	for (size_t i = 0; keep && i < keep->n; i++)
		graph_keep(&g, keep->v[i]);
	for (size_t i = 0; i < act.n; i++)
		graph_keep(&g, act.v[i]);
	kiln_strv_free(&act);

	/* Nothing kept has an unkept ancestor, so removing the deepest first
	 * never leaves a committed snapshot without its parent, even when the
	 * collection stops half way (a crash, an error). */
	struct node **victims = kiln_xcalloc(g.n + 1, sizeof(*victims));
	size_t nv = 0;
	for (size_t i = 0; i < g.n; i++)
		if (!g.v[i].keep) {
			graph_depth(&g, &g.v[i]);
			victims[nv++] = &g.v[i];
		}
	qsort(victims, nv, sizeof(*victims), depth_desc);
	int rc = 0;
	for (size_t i = 0; i < nv && rc == 0; i++) {
		struct node *x = victims[i];
		/* a writable snapshot prepared since the scan (kiln run takes no
		 * store lock) keeps its parent */
		struct kiln_strv now = {0};
		if (active_parents(sn, &now, err)) {
			rc = -1;
			break;
		}
		bool busy = strv_has(&now, x->id);
		kiln_strv_free(&now);
		if (busy) {
			graph_keep(&g, x->id);
			continue;
		}
		if (x->keep)
			continue;
		int64_t bytes = 0;
		struct kiln_err e2;
		if (kiln_snap_usage(sn, x->id, &bytes, NULL, &e2))
			bytes = 0;
		if (snap_remove_committed(sn, snap_chain_hex(x->id), err)) {
			if (err && err->errnum == ENOENT) {   /* removed by someone else */
				kiln_err_clear(err);
				continue;
			}
			rc = kiln_err_wrap(err, "collecting snapshot %s", x->id);
			break;
		}
		if (stats) {
			stats->removed++;
			stats->bytes += bytes;
		}
	}
	free(victims);
	graph_free(&g);
	return rc;
}

int kiln_snap_closure(struct kiln_snapshotter *sn, const struct kiln_strv *ids,
		      struct kiln_strv *out, struct kiln_err *err)
{
	struct graph g;
	if (graph_load(sn, &g, err))
		return -1;
	for (size_t i = 0; i < ids->n; i++)
		graph_keep(&g, ids->v[i]);
	for (size_t i = 0; i < g.n; i++)
		if (g.v[i].keep)
			kiln_strv_push(out, g.v[i].id);
	graph_free(&g);
	return 0;
}

/* ---- check ---- */

static void problem(struct kiln_strv *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct kiln_strv *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s)
		kiln_strv_push_owned(p, s);
}

static bool dir_at(int dirfd, const char *path)
{
	struct stat st;
	return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* overlay: snaps/<hex>/link names l/<link> → ../snaps/<hex>/fs; lower names l/ entries */
static void check_overlay(struct kiln_snapshotter *sn, const struct node *x, struct kiln_strv *p)
{
	const char *hex = snap_chain_hex(x->id);
	char *f = kiln_xasprintf("snaps/%s/link", hex);
	struct kiln_err e;
	char *name = snap_read_text(sn->dirfd, f, &e);
	free(f);
	if (!name) {
		problem(p, "snapshot %s: no overlay link file", x->id);
		return;
	}
	char *l = kiln_xasprintf("l/%s", name);
	char *want = kiln_xasprintf("../snaps/%s/fs", hex);
	char cur[PATH_MAX];
	ssize_t n = readlinkat(sn->dirfd, l, cur, sizeof(cur) - 1);
	if (n < 0 || (cur[n] = 0, strcmp(cur, want)))
		problem(p, "snapshot %s: overlay link %s is missing or points elsewhere", x->id, l);
	free(want);
	free(l);
	free(name);
	if (!x->parent)
		return;
	f = kiln_xasprintf("snaps/%s/lower", hex);
	char *lower = snap_read_text(sn->dirfd, f, &e);
	free(f);
	if (!lower) {
		problem(p, "snapshot %s: no overlay lower file", x->id);
		return;
	}
	char *save = NULL;
	for (char *t = strtok_r(lower, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
		char *lt = kiln_xasprintf("l/%s", t);
		struct stat st;
		if (fstatat(sn->dirfd, lt, &st, 0) < 0 || !S_ISDIR(st.st_mode))
			problem(p, "snapshot %s: lower layer %s is missing", x->id, lt);
		free(lt);
	}
	free(lower);
}

int kiln_snap_check(struct kiln_snapshotter *sn, struct kiln_strv *problems, struct kiln_err *err)
{
	struct graph g;
	if (graph_load(sn, &g, err))
		return kiln_err_wrap(err, "checking snapshots");
	for (size_t i = 0; i < g.n; i++) {
		struct node *x = &g.v[i];
		char *fs = kiln_xasprintf("snaps/%s/fs", snap_chain_hex(x->id));
		if (!dir_at(sn->dirfd, fs))
			problem(problems, "snapshot %s: no fs directory", x->id);
		free(fs);
		if (x->parent && !graph_find(&g, x->parent))
			problem(problems, "snapshot %s: its parent %s is missing", x->id, x->parent);
		if (sn->drv == SNAP_OVERLAY)
			check_overlay(sn, x, problems);
	}
	struct kiln_strv act = {0};
	int rc = active_parents(sn, &act, err);
	for (size_t i = 0; rc == 0 && i < act.n; i++)
		if (!graph_find(&g, act.v[i]))
			problem(problems, "a writable snapshot or view stands on %s, which is missing", act.v[i]);
	kiln_strv_free(&act);
	graph_free(&g);
	return rc;
}
