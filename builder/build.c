/* kiln — the builder: Dockerfile → image, step by step, with the cache. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "builder/build.h"
#include "builder/cli.h"
#include "builder/cache.h"
#include "builder/remote_cache.h"
#include "builder/context.h"
#include "builder/copy.h"
#include "builder/userdb.h"
#include "common/units.h"
#include "layers/image.h"
#include "layers/registry.h"
#include "layers/snapshot.h"
#include "layers/store.h"
#include "parser/expand.h"
#include "parser/ignore.h"
#include "parser/parser.h"
#include "parser/plan.h"
#include "runtime/sandbox.h"

/* The modules below are written concurrently; weak references keep kiln
 * linkable while one is missing, and kiln_build reports it clearly. */
#pragma weak kiln_parse
#pragma weak kiln_df_free
#pragma weak kiln_df_check
#pragma weak kiln_registry_pull
#pragma weak kiln_registry_opts_from_env
#pragma weak kiln_sandbox_spec_init
#pragma weak kiln_sandbox_run
#pragma weak kiln_snap_open
#pragma weak kiln_snap_close
#pragma weak kiln_snap_exists
#pragma weak kiln_snap_prepare
#pragma weak kiln_snap_view
#pragma weak kiln_snap_rootfs
#pragma weak kiln_snap_write_layer
#pragma weak kiln_snap_commit
#pragma weak kiln_snap_release
#pragma weak kiln_snap_discard
#pragma weak kiln_snap_apply_layer
#pragma weak kiln_store_open
#pragma weak kiln_image_load
#pragma weak kiln_image_commit

static volatile sig_atomic_t g_interrupted; /* the signal that interrupted the build, or 0 */
static volatile pid_t g_child;

static void on_signal(int sig)
{
	g_interrupted = sig;
	pid_t c = g_child;
	if (c > 0)
		kill(c, SIGKILL);
}

/* The error of a build stopped by ^C or SIGTERM: kiln exits 128+signal, as a
 * shell does; errnum EINTR marks it for the callers. */
static int interrupted(struct kiln_err *err)
{
	int sig = g_interrupted ? g_interrupted : SIGINT;
	kiln_err_set(err, 0, "build interrupted by SIG%s", sigabbrev_np(sig));
	err->errnum = EINTR;
	err->exit_code = 128 + sig;
	return -1;
}

#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

static int open_in_root(int rootfd, const char *path, int flags)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = IN_ROOT};
	while (*path == '/')
		path++;
	if (!*path)
		path = ".";
	int fd;
	do
		fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

/* ---- state ------------------------------------------------------------ */

struct bstage {
	struct kiln_df_node *from;
	size_t first, last;          /* node indices of the steps after FROM */
	char *name;                  /* AS name (lower case) or NULL */
	int index;
	int state;                   /* 0 new, 1 building, 2 built */
	struct kiln_image *img;
	char key[KILN_DIGEST_MAX];   /* cache key after the last step */
	struct kiln_env args;        /* ARGs in scope with a value */
	int step_no, n_steps;
	bool cmd_set;                /* CMD given in this stage (ENTRYPOINT keeps it) */
	char label[96];
};

struct view {
	struct kiln_snap *snap;
	int fd;
};

struct builder {
	const struct kiln_build_opts *o;
	struct kiln_context ctx;
	struct kiln_df *df;
	struct kiln_plan *plan;           /* validation, stage order, --from resolution */
	struct bstage *stages;
	size_t n_stages;
	struct kiln_env global_args;
	struct kiln_env build_args;       /* given with --build-arg */
	struct kiln_strv used_args;
	struct kiln_store *store;
	struct kiln_snapshotter *sn;
	struct kiln_progress prog;
	struct kiln_snap *active;         /* the writable snapshot of the running step */
	struct view *views;
	size_t n_views;
	char *tmpdir;                     /* <root>/tmp (downloads, heredocs) */
	unsigned counter;
	int64_t sde;                      /* SOURCE_DATE_EPOCH or -1 */
	struct kiln_image **extra_images; /* images loaded for COPY --from / mounts */
	size_t n_extra;
	int depth;
	bool dns_checked;                 /* warn_no_nameserver() ran */
};

/* ---- small helpers ---------------------------------------------------- */

static char *first_line(const char *s, size_t max)
{
	const char *nl = strchr(s, '\n');
	size_t len = nl ? (size_t)(nl - s) : strlen(s);
	if (len > max)
		return kiln_xasprintf("%.*s...", (int)max, s);
	return kiln_xstrndup(s, len);
}

static char *node_text(const struct kiln_df_node *n)
{
	if (n->original && *n->original)
		return first_line(n->original, 200);
	return kiln_xasprintf("%s %s", n->instr, n->rest ? n->rest : "");
}

/* "<file>:<line>: <INSTR ...>: " prefix on err. */
static int node_wrap(struct builder *b, const struct kiln_df_node *n, struct kiln_err *err)
{
	KILN_AUTOFREE char *t = node_text(n);
	return kiln_err_wrap(err, "%s:%d: %s", b->ctx.dockerfile_name, n->start_line, t);
}

static int node_fail(struct builder *b, const struct kiln_df_node *n, struct kiln_err *err,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int node_fail(struct builder *b, const struct kiln_df_node *n, struct kiln_err *err,
		     const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kiln_err_set(err, 0, "%s", msg);
	return node_wrap(b, n, err);
}

/* Flags: node->flags holds "--name=value" / "--name" as written. */
static const char *flag_get(const struct kiln_df_node *n, const char *name)
{
	size_t nl = strlen(name);
	const char *found = NULL;
	for (size_t i = 0; i < n->flags.n; i++) {
		const char *f = n->flags.v[i];
		if (strncmp(f, "--", 2))
			continue;
		f += 2;
		if (!strncmp(f, name, nl) && (f[nl] == '=' || f[nl] == 0))
			found = f[nl] == '=' ? f + nl + 1 : "true";
	}
	return found;
}

static bool flag_bool(const struct kiln_df_node *n, const char *name)
{
	const char *v = flag_get(n, name);
	return v && strcasecmp(v, "false") && strcmp(v, "0");
}

static void flag_all(const struct kiln_df_node *n, const char *name, struct kiln_strv *out)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i < n->flags.n; i++) {
		const char *f = n->flags.v[i];
		if (strncmp(f, "--", 2))
			continue;
		f += 2;
		if (!strncmp(f, name, nl) && f[nl] == '=')
			kiln_strv_push(out, f + nl + 1);
	}
}

/* Make an empty list a valid empty NULL-terminated array (v[0] == NULL)
 * without adding an element (a kiln_strv is NULL-terminated once allocated). */
static void strv_alloc(struct kiln_strv *s)
{
	if (!s->v) {
		kiln_strv_push_owned(s, NULL);
		s->n--;
	}
}

static char *join_words(char *const *v, size_t n, const char *sep)
{
	struct kiln_buf b = {0};
	kiln_buf_puts(&b, "");
	for (size_t i = 0; i < n; i++) {
		if (i)
			kiln_buf_puts(&b, sep);
		kiln_buf_puts(&b, v[i]);
	}
	return kiln_buf_steal(&b);
}

static char *json_strv(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

static size_t strv_len(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

/* The environment for expansion: ARGs in scope, overridden by the image's ENV. */
static void stage_env(struct bstage *st, struct kiln_env *out)
{
	kiln_env_copy(out, &st->args);
	if (!st->img)
		return;
	char **env = kiln_image_get_strv(st->img, "Env");
	for (size_t i = 0; env && env[i]; i++)
		kiln_env_set_kv(out, env[i]);
	kiln_strv_free_raw(env);
}

static int xword(struct builder *b, struct bstage *st, const struct kiln_df_node *n, const char *w,
		 char **out, struct kiln_err *err)
{
	struct kiln_env env = {0};
	stage_env(st, &env);
	int r = kiln_expand_word(w, &env, b->df->escape, out, err);
	kiln_env_free(&env);
	if (r < 0)
		return node_wrap(b, n, err);
	return 0;
}

static void note_used_arg(struct builder *b, const char *name)
{
	for (size_t i = 0; i < b->used_args.n; i++)
		if (!strcmp(b->used_args.v[i], name))
			return;
	kiln_strv_push(&b->used_args, name);
}

/* ---- images and snapshots -------------------------------------------- */

/* Make sure every layer of img has its committed snapshot. */
static int ensure_chain(struct builder *b, struct kiln_image *img, struct kiln_err *err)
{
	char **ids = kiln_image_chain_ids(img);
	int rc = 0;
	for (size_t i = 0; ids[i] && rc == 0; i++) {
		if (kiln_snap_exists(b->sn, ids[i]))
			continue;
		int fd = -1;
		if (kiln_store_blob_open(b->store, img->layers[i].digest, &fd, err) < 0) {
			rc = kiln_err_wrap(err, "layer %s", img->layers[i].digest);
			break;
		}
		char out[KILN_DIGEST_MAX];
		rc = kiln_snap_apply_layer(b->sn, i ? ids[i - 1] : NULL, fd, img->layers[i].diff_id, out, err);
		close(fd);
		if (rc < 0)
			kiln_err_wrap(err, "unpacking layer %s", img->layers[i].digest);
	}
	kiln_strv_free_raw(ids);
	return rc;
}

/* A read-only root fd of the image's filesystem (an empty directory for no layers). */
static int image_root(struct builder *b, struct kiln_image *img, int *fd_out, struct kiln_err *err)
{
	char top[KILN_DIGEST_MAX];
	kiln_image_top_chain_id(img, top);
	if (!top[0]) {
		KILN_AUTOFREE char *empty = kiln_xasprintf("%s/empty-%d-%u", b->tmpdir, getpid(), b->counter++);
		if (mkdir(empty, 0755) < 0 && errno != EEXIST)
			return kiln_err_set(err, errno, "mkdir %s", empty);
		*fd_out = open(empty, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rmdir(empty);
		if (*fd_out < 0)
			return kiln_err_set(err, errno, "opening an empty root");
		b->views = kiln_xrealloc(b->views, (b->n_views + 1) * sizeof(*b->views));
		b->views[b->n_views++] = (struct view){NULL, *fd_out};
		return 0;
	}
	if (ensure_chain(b, img, err) < 0)
		return -1;
	char key[64];
	snprintf(key, sizeof(key), "view-%d-%u", getpid(), b->counter++);
	struct kiln_snap *snap = NULL;
	if (kiln_snap_view(b->sn, top, key, &snap, err) < 0)
		return -1;
	int fd = open(kiln_snap_rootfs(snap), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		kiln_snap_release(snap);
		return kiln_err_set(err, errno, "opening a view of %s", top);
	}
	b->views = kiln_xrealloc(b->views, (b->n_views + 1) * sizeof(*b->views));
	b->views[b->n_views++] = (struct view){snap, fd};
	*fd_out = fd;
	return 0;
}

static int load_image(struct builder *b, const char *name, bool pull, struct kiln_image **out,
		      struct kiln_err *err)
{
	*out = NULL;
	if (!pull && kiln_image_load(b->store, name, out, err) == 0)
		return 0;
	if (!pull && err->errnum != ENOENT)
		return -1;
	if (!kiln_registry_pull) {
		return kiln_err_set(err, ENOENT, "image \"%s\" not found locally (and this kiln cannot pull)", name);
	}
	struct kiln_registry_opts ro = {0};
	if (kiln_registry_opts_from_env)
		kiln_registry_opts_from_env(&ro);
	ro.progress = b->prog.mode == KILN_PROGRESS_QUIET ? NULL : b->prog.out;
	ro.progress_tty = false;
	kiln_progress_info(&b->prog, "pulling %s", name);
	if (kiln_registry_pull(b->store, name, &ro, NULL, err) < 0) {
		if (!pull)
			return kiln_err_wrap(err, "image \"%s\" not found locally and pulling it failed", name);
		return kiln_err_wrap(err, "pulling %s", name);
	}
	return kiln_image_load(b->store, name, out, err);
}

/* ---- stages ----------------------------------------------------------- */

static struct bstage *find_stage(struct builder *b, const char *name, size_t before)
{
	for (size_t i = 0; i < before && i < b->n_stages; i++)
		if (b->stages[i].name && !strcasecmp(b->stages[i].name, name))
			return &b->stages[i];
	char *end;
	long idx = strtol(name, &end, 10);
	if (*name && !*end && idx >= 0 && (size_t)idx < before && (size_t)idx < b->n_stages)
		return &b->stages[idx];
	return NULL;
}

static int build_stage(struct builder *b, struct bstage *st, struct kiln_err *err);

/* A COPY --from / RUN --mount from= value (already expanded) of stage st:
 * *out = the stage it names (earlier or later, built on demand by the
 * caller), or NULL for an image.  The plan refuses an index past the last
 * stage and references that close a cycle. */
static int resolve_from(struct builder *b, struct bstage *st, const char *ref, struct bstage **out,
			struct kiln_err *err)
{
	*out = NULL;
	if (!b->plan) {
		*out = find_stage(b, ref, (size_t)st->index);
		return 0;
	}
	int idx = -1;
	if (kiln_plan_resolve_from(b->plan, st->index, ref, &idx, err) < 0)
		return -1;
	if (idx >= 0 && (size_t)idx < b->n_stages)
		*out = &b->stages[idx];
	return 0;
}

/* ---- step plumbing ---------------------------------------------------- */

static void record_history_time(struct kiln_image *img)
{
	json_t *h = json_object_get(img->config, "history");
	json_t *last = json_array_get(h, json_array_size(h) ? json_array_size(h) - 1 : 0);
	json_t *c = json_object_get(last, "created");
	if (json_is_string(c))
		json_object_set(img->config, "created", c);
}

static void step_key_begin(struct builder *b, struct bstage *st, struct kiln_cache_key *k, const char *instr)
{
	kiln_cache_key_begin(k, "step");
	kiln_cache_key_add(k, "parent", st->key);
	kiln_cache_key_add(k, "instr", instr);
	json_t *cfg = json_deep_copy(kiln_image_cfg(st->img));
	kiln_cache_key_add_json(k, "config", cfg);
	json_decref(cfg);
	json_t *rootfs = json_object_get(st->img->config, "rootfs");
	kiln_cache_key_add_json(k, "rootfs", rootfs);
	kiln_cache_key_add(k, "compression", b->o->compression == KILN_COMPRESS_ZSTD ? "zstd"
					     : b->o->compression == KILN_COMPRESS_NONE ? "none" : "gzip");
}

/* A hit: restore the image state of the record.  Returns 1 on a hit. */
static int cache_try(struct builder *b, struct bstage *st, const char *key, struct kiln_err *err)
{
	if (b->o->no_cache)
		return 0;
	struct kiln_cache_record rec;
	struct kiln_err e;
	if (kiln_cache_get(b->o->root, key, &rec, &e) != 1)
		return 0;
	for (size_t i = 0; i < rec.n_layers; i++)
		if (!kiln_store_blob_exists(b->store, rec.layers[i].digest) &&
		    !kiln_remote_cache_fetch(b->store, rec.layers[i].digest)) {   /* --cache-from: lazily */
			kiln_cache_record_free(&rec);
			return 0;
		}
	json_decref(st->img->config);
	st->img->config = json_incref(rec.config);
	free(st->img->layers);
	st->img->n_layers = rec.n_layers;
	st->img->layers = kiln_xcalloc(rec.n_layers + 1, sizeof(*st->img->layers));
	for (size_t i = 0; i < rec.n_layers; i++) {
		struct kiln_image_layer *l = &st->img->layers[i];
		snprintf(l->digest, sizeof(l->digest), "%s", rec.layers[i].digest);
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", rec.layers[i].diff_id);
		snprintf(l->media_type, sizeof(l->media_type), "%s", rec.layers[i].media_type);
		l->size = rec.layers[i].size;
	}
	kiln_cache_record_free(&rec);
	kiln_remote_cache_note(st->key, key);   /* --cache-to exports what the build used */
	snprintf(st->key, sizeof(st->key), "%s", key);
	(void)err;
	return 1;
}

static int cache_store(struct builder *b, struct bstage *st, const char *key, struct kiln_err *err)
{
	record_history_time(st->img);
	kiln_remote_cache_note(st->key, key);
	snprintf(st->key, sizeof(st->key), "%s", key);
	struct kiln_cache_record rec = {0};
	snprintf(rec.key, sizeof(rec.key), "%s", key);
	rec.config = st->img->config;
	rec.n_layers = st->img->n_layers;
	rec.layers = kiln_xcalloc(rec.n_layers + 1, sizeof(*rec.layers));
	for (size_t i = 0; i < rec.n_layers; i++) {
		snprintf(rec.layers[i].digest, sizeof(rec.layers[i].digest), "%s", st->img->layers[i].digest);
		snprintf(rec.layers[i].diff_id, sizeof(rec.layers[i].diff_id), "%s", st->img->layers[i].diff_id);
		snprintf(rec.layers[i].media_type, sizeof(rec.layers[i].media_type), "%s", st->img->layers[i].media_type);
		rec.layers[i].size = st->img->layers[i].size;
	}
	kiln_image_top_chain_id(st->img, rec.chain_id);
	rec.created = time(NULL);
	int r = kiln_cache_put(b->o->root, &rec, err);
	free(rec.layers);
	if (r < 0)
		kiln_err_wrap(err, "writing the build cache");
	return r;
}

typedef int (*mutate_fn)(struct builder *b, struct bstage *st, const char *rootfs, void *arg,
			 struct kiln_err *err);

/* Prepare a writable child of the image's top snapshot, let fn change it,
 * turn the changes into a layer (an empty tar when nothing changed). */
static int layer_step(struct builder *b, struct bstage *st, const char *created_by, mutate_fn fn,
		      void *arg, struct kiln_err *err)
{
	if (ensure_chain(b, st->img, err) < 0)
		return -1;
	char parent[KILN_DIGEST_MAX];
	kiln_image_top_chain_id(st->img, parent);
	char key[64];
	snprintf(key, sizeof(key), "build-%d-%u", getpid(), b->counter++);
	if (kiln_snap_prepare(b->sn, parent[0] ? parent : NULL, key, 0, &b->active, err) < 0)
		return kiln_err_wrap(err, "preparing a snapshot");
	const char *rootfs = kiln_snap_rootfs(b->active);
	int rc = fn(b, st, rootfs, arg, err);
	if (rc == 0 && g_interrupted)
		rc = interrupted(err);
	struct kiln_blob_writer *w = NULL;
	if (rc == 0)
		rc = kiln_store_blob_begin(b->store, &w, err);
	struct kiln_layer_info info = {0};
	/* A step that changes nothing still gets a layer (the empty tar) and a
	 * history entry with no empty_layer flag, as Docker's builders write it. */
	if (rc == 0) {
		struct kiln_layer_write_opts lo = {.compression = b->o->compression, .source_date_epoch = b->sde};
		rc = kiln_snap_write_layer(b->active, &lo, kiln_blob_writer_fd(w), &info, NULL, err);
		if (rc < 0)
			kiln_err_wrap(err, "writing the layer");
	}
	if (rc == 0) {
		char dg[KILN_DIGEST_MAX];
		int64_t size;
		rc = kiln_store_blob_commit(w, info.digest, dg, &size, err);
		w = NULL;
	}
	if (rc == 0)
		rc = kiln_image_add_layer(st->img, &info, created_by, "buildkit.dockerfile.v0", err);
	if (rc == 0) {
		char chain[KILN_DIGEST_MAX];
		kiln_image_top_chain_id(st->img, chain);
		rc = kiln_snap_commit(b->active, chain, err);
		if (rc < 0)
			kiln_err_wrap(err, "committing the snapshot");
	}
	if (w)
		kiln_store_blob_abort(w);
	if (rc == 0) {
		kiln_snap_release(b->active);
	} else {
		struct kiln_err e;
		kiln_snap_discard(b->active, &e);
	}
	b->active = NULL;
	return rc;
}

/* ---- RUN -------------------------------------------------------------- */

struct run_ctx {
	char **argv;
	char **env;
	enum kiln_net_mode net;
	bool net_entitled;              /* the build holds network.host */
	struct kiln_strv mount_specs;   /* --mount values */
	int stdin_fd;
	const struct kiln_df_node *node;
};

static char *csv_get(char *const *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(key);
		if (!strncmp(kv[i], key, kl) && kv[i][kl] == '=')
			return kv[i] + kl + 1;
		if (!strcmp(kv[i], key))
			return "true";
	}
	return NULL;
}

static bool has_dotdot(const char *p)
{
	KILN_AUTOFREE char *c = kiln_xstrdup(p);
	char *save = NULL;
	for (char *t = strtok_r(c, "/", &save); t; t = strtok_r(NULL, "/", &save))
		if (!strcmp(t, ".."))
			return true;
	return false;
}

static const char *secret_src(struct builder *b, const char *id)
{
	for (size_t i = 0; i < b->o->secrets.n; i++) {
		KILN_AUTOFREE char *s = kiln_xstrdup(b->o->secrets.v[i]);
		const char *sid = NULL, *src = NULL;
		char *save = NULL;
		for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!strncmp(t, "id=", 3))
				sid = t + 3;
			else if (!strncmp(t, "src=", 4))
				src = t + 4;
			else if (!strncmp(t, "source=", 7))
				src = t + 7;
		}
		if (sid && src && !strcmp(sid, id)) {
			static __thread char buf[4096];
			snprintf(buf, sizeof(buf), "%s", src);
			return buf;
		}
	}
	return NULL;
}

struct mounts {
	struct kiln_mount *v;
	size_t n;
	struct kiln_strv strs;   /* owned strings the mounts point at */
	struct kiln_strv tmpdirs;/* copied bind sources, private caches: removed after the step */
	int fds[64];
	size_t nfds;
};

static void mounts_free(struct mounts *m)
{
	for (size_t i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	for (size_t i = 0; i < m->tmpdirs.n; i++) {
		struct kiln_err e = {0};
		if (kiln_rm_rf(m->tmpdirs.v[i], &e) < 0)
			fprintf(stderr, "kiln: warning: removing %s: %s\n", m->tmpdirs.v[i], e.msg);
	}
	kiln_strv_free(&m->tmpdirs);
	free(m->v);
	kiln_strv_free(&m->strs);
	memset(m, 0, sizeof(*m));
}

static const char *keep_str(struct mounts *m, char *s)
{
	kiln_strv_push_owned(&m->strs, s);
	return s;
}

static int add_fd(struct mounts *m, int fd)
{
	if (m->nfds < 64)
		m->fds[m->nfds++] = fd;
	return fd;
}

/* The source of a bind mount (rootfd: the context, or a stage's or an image's
 * root), as BuildKit shows it.  From the context, what .dockerignore excludes
 * is not there (a build never sees those files, be it through COPY or a
 * mount); a read-write mount (rw) lets the step write, and its writes are
 * discarded afterwards.  When neither applies, the source itself is mounted
 * (read-only); otherwise the source (a file or a directory) is copied,
 * filtered, into a private directory under the kiln root that is removed
 * after the step.  Returns an O_PATH fd, or -1. */
static int bind_source(struct builder *b, struct mounts *m, int rootfd, bool context, const char *source,
		       bool rw, struct kiln_err *err)
{
	const char *rel = source ? source : ".";
	int fd = open_in_root(rootfd, rel, O_PATH);
	if (fd < 0)
		return kiln_err_set(err, errno, "bind mount source %s", source ? source : "/");
	if (!rw && !(context && kiln_ignore_count(b->ctx.ignore) > 0))
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return kiln_err_set(err, e, "bind mount source %s", rel);
	}
	close(fd);
	const char *inside = rel;
	while (*inside == '/')
		inside++;
	KILN_AUTOFREE char *clean = kiln_copy_clean(inside); /* "" -> "." */
	if (context && strcmp(clean, ".") &&
	    kiln_context_excluded(&b->ctx, clean, S_ISDIR(st.st_mode)) == KILN_COPY_EXCLUDED)
		return kiln_err_set(err, 0, "bind mount source %s is excluded by .dockerignore", rel);
	KILN_AUTOFREE char *dir = kiln_xasprintf("%s/tmp/bindctx-XXXXXX", b->o->root);
	if (!mkdtemp(dir))
		return kiln_err_set(err, errno, "bind mount source %s: making %s", rel, dir);
	kiln_strv_push(&m->tmpdirs, dir);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_set(err, errno, "bind mount source %s: opening %s", rel, dir);
	struct kiln_copy_src src = {.rootfd = rootfd, .keep_owner = true};
	if (context) {
		src.excluded = kiln_context_excluded;
		src.excluded_arg = &b->ctx;
	}
	struct kiln_copy_opts co = {.dest = "/", .workdir = "/"};
	char *matches[] = {clean, NULL};
	int r = kiln_copy_run(&src, matches, 1, dfd, &co, err);
	if (r == 0) {
		/* a directory's contents went to the top, a file under its name */
		const char *base = strrchr(clean, '/') ? strrchr(clean, '/') + 1 : clean;
		fd = openat(dfd, S_ISDIR(st.st_mode) ? "." : base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			r = kiln_err_set(err, errno, "bind mount source %s: the filtered copy", rel);
	}
	close(dfd);
	if (r < 0)
		return kiln_err_wrap(err, "bind mount source %s", rel);
	return fd;
}

/* Parse the --mount values into sandbox mounts. */
static int build_mounts(struct builder *b, struct bstage *st, const struct kiln_df_node *n,
			struct kiln_strv *specs, struct mounts *m, struct kiln_err *err)
{
	for (size_t i = 0; i < specs->n; i++) {
		struct kiln_strv kv = {0};
		KILN_AUTOFREE char *s = kiln_xstrdup(specs->v[i]);
		char *save = NULL;
		for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save))
			kiln_strv_push(&kv, t);
		const char *type = csv_get(kv.v, kv.n, "type");
		if (!type)
			type = "bind";
		const char *target = csv_get(kv.v, kv.n, "target");
		if (!target)
			target = csv_get(kv.v, kv.n, "dst");
		if (!target)
			target = csv_get(kv.v, kv.n, "destination");
		const char *source = csv_get(kv.v, kv.n, "source");
		if (!source)
			source = csv_get(kv.v, kv.n, "src");
		const char *prop = csv_get(kv.v, kv.n, "bind-propagation");
		int rc = 0;
		static const char *const known[] = {"type", "target", "dst", "destination", "source", "src", "from",
						    "readonly", "ro", "rw", "readwrite", "bind-propagation", "id",
						    "sharing", "mode", "uid", "gid", "required", "size", "tmpfs-size",
						    "env", NULL};
		for (size_t k = 0; k < kv.n && rc == 0; k++) {
			size_t kl = strcspn(kv.v[k], "=");
			bool ok = false;
			for (const char *const *w = known; *w && !ok; w++)
				ok = strlen(*w) == kl && !strncmp(*w, kv.v[k], kl);
			if (!ok)
				rc = node_fail(b, n, err, "unexpected key '%.*s' in '%s'", (int)kl, kv.v[k], specs->v[i]);
		}
		struct kiln_mount mt = {.source_fd = -1};
		if (rc < 0) {
			/* reported above */
		} else if (prop && strcmp(prop, "shared") && strcmp(prop, "slave") && strcmp(prop, "private") &&
		    strcmp(prop, "rshared") && strcmp(prop, "rslave") && strcmp(prop, "rprivate")) {
			rc = node_fail(b, n, err, "invalid bind-propagation \"%s\"", prop);
		} else if (!strcmp(type, "secret")) {
			const char *id = csv_get(kv.v, kv.n, "id");
			if (!id && target)
				id = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
			if (!id) {
				rc = node_fail(b, n, err, "secret mount needs id= or target=");
			} else {
				const char *src = secret_src(b, id);
				const char *req = csv_get(kv.v, kv.n, "required");
				if (!src) {
					if (req && strcasecmp(req, "false"))
						rc = node_fail(b, n, err, "secret %s: not provided (use --secret id=%s,src=FILE)", id, id);
					kiln_strv_free(&kv);
					if (rc < 0)
						return -1;
					continue;
				}
				int fd = open(src, O_PATH | O_CLOEXEC);
				if (fd < 0) {
					rc = kiln_err_set(err, errno, "secret %s: %s", id, src);
				} else {
					add_fd(m, fd);
					mt.type = KILN_MOUNT_BIND;
					mt.source_fd = fd;
					mt.source = keep_str(m, kiln_xstrdup(src));
					mt.target = keep_str(m, target ? kiln_xstrdup(target) : kiln_xasprintf("/run/secrets/%s", id));
					mt.readonly = true;
				}
			}
		} else if (!target) {
			rc = node_fail(b, n, err, "mount %s: target= is required", specs->v[i]);
		} else if (has_dotdot(target) || (source && has_dotdot(source))) {
			rc = node_fail(b, n, err, "mount %s: \"..\" is not allowed in source= or target=", specs->v[i]);
		} else if (!strcmp(type, "tmpfs")) {
			mt.type = KILN_MOUNT_TMPFS;
			mt.target = keep_str(m, kiln_xstrdup(target));
			const char *size = csv_get(kv.v, kv.n, "size");
			if (!size)
				size = csv_get(kv.v, kv.n, "tmpfs-size");
			mt.options = size ? keep_str(m, kiln_xasprintf("size=%s", size)) : NULL;
		} else if (!strcmp(type, "cache")) {
			const char *id = csv_get(kv.v, kv.n, "id");
			if (!id)
				id = target;
			char dg[KILN_DIGEST_MAX];
			kiln_digest_data(id, strlen(id), dg);
			KILN_AUTOFREE char *dir = kiln_xasprintf("%s/cache/mounts/%.32s", b->o->root, dg + 7);
			/* sharing (as BuildKit): shared (the default) lets every step use
			 * the cache at once; locked waits until no other step, in this
			 * or another kiln process, has it; private takes it when no one
			 * else has it, else gives the step an empty one of its own.  A
			 * flock on <dir>.lock, held until the step ends, says who has it. */
			const char *sharing = csv_get(kv.v, kv.n, "sharing");
			if (!sharing)
				sharing = "shared";
			bool fresh = false;
			KILN_AUTOFREE char *lk = kiln_xasprintf("%s.lock", dir);
			KILN_AUTOFREE char *parent = kiln_xasprintf("%s/cache/mounts", b->o->root);
			int lfd = -1;
			if (rc < 0) {
				/* reported above */
			} else if (kiln_mkdir_p(parent, 0700, err) < 0) {
				rc = -1;
			} else if ((lfd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
				rc = kiln_err_set(err, errno, "cache mount %s: lock file", id);
			} else {
				add_fd(m, lfd);
				int op = !strcmp(sharing, "shared") ? LOCK_SH : LOCK_EX;
				if (!strcmp(sharing, "private"))
					op |= LOCK_NB;
				int r;
				while ((r = flock(lfd, op)) < 0 && errno == EINTR && !g_interrupted)
					;
				if (r < 0 && errno == EWOULDBLOCK) {
					/* private, and in use: an empty cache of our own */
					free(dir);
					dir = kiln_xasprintf("%s/tmp/cachemnt-XXXXXX", b->o->root);
					if (!mkdtemp(dir))
						rc = kiln_err_set(err, errno, "cache mount %s: a private instance", id);
					else
						kiln_strv_push(&m->tmpdirs, dir);
					fresh = true;
				} else if (r < 0) {
					rc = g_interrupted ? interrupted(err)
					   : kiln_err_set(err, errno, "cache mount %s: locking", id);
				}
			}
			struct stat sbuf;
			if (!fresh)
				fresh = stat(dir, &sbuf) < 0;
			if (rc < 0) {
				/* reported above */
			} else if (kiln_mkdir_p(dir, 0755, err) < 0) {
				rc = -1;
			} else {
				int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				if (dfd < 0) {
					rc = kiln_err_set(err, errno, "opening cache mount %s", dir);
				} else {
					const char *u = csv_get(kv.v, kv.n, "uid"), *g = csv_get(kv.v, kv.n, "gid");
					const char *mode = csv_get(kv.v, kv.n, "mode");
					if (fresh) {
						if (fchown(dfd, u ? (uid_t)atoi(u) : 0, g ? (gid_t)atoi(g) : 0) < 0 ||
						    fchmod(dfd, mode ? (mode_t)strtol(mode, NULL, 8) : 0755) < 0)
							rc = kiln_err_set(err, errno, "setting up cache mount %s", id);
					}
					int sfd = dfd;
					if (rc == 0 && source && strcmp(source, "/") && strcmp(source, ".")) {
						struct kiln_err e2;
						int sub = kiln_copy_mkdir(dfd, source, 0, 0, &e2);
						close(dfd);
						if (sub < 0)
							rc = kiln_err_set(err, e2.errnum, "cache mount source %s: %s", source, e2.msg);
						sfd = sub;
					}
					if (rc == 0) {
						add_fd(m, sfd);
						mt.type = KILN_MOUNT_BIND;
						mt.source_fd = sfd;
						mt.source = keep_str(m, kiln_xstrdup(dir));
						mt.target = keep_str(m, kiln_xstrdup(target));
						mt.readonly = csv_get(kv.v, kv.n, "ro") || csv_get(kv.v, kv.n, "readonly");
					}
				}
			}
		} else if (!strcmp(type, "bind")) {
			const char *from_raw = csv_get(kv.v, kv.n, "from");
			KILN_AUTOFREE char *from = NULL;
			int rootfd = -1;
			struct bstage *dep = NULL;
			if (from_raw && (xword(b, st, n, from_raw, &from, err) < 0 || resolve_from(b, st, from, &dep, err) < 0)) {
				rc = -1;
			} else if (from) {
				if (dep) {
					if (build_stage(b, dep, err) < 0)
						rc = -1;
					else
						rc = image_root(b, dep->img, &rootfd, err);
				} else {
					struct kiln_image *img = NULL;
					rc = load_image(b, from, false, &img, err);
					if (rc == 0) {
						b->extra_images = kiln_xrealloc(b->extra_images, (b->n_extra + 1) * sizeof(*b->extra_images));
						b->extra_images[b->n_extra++] = img;
						rc = image_root(b, img, &rootfd, err);
					}
				}
			} else {
				rootfd = b->ctx.dirfd;
				if (rootfd < 0)
					rc = node_fail(b, n, err, "bind mount from the context, but the build has no context");
			}
			const char *rw = csv_get(kv.v, kv.n, "rw");
			if (!rw)
				rw = csv_get(kv.v, kv.n, "readwrite");
			bool writable = rw && strcasecmp(rw, "false");
			if (rc == 0) {
				int fd = bind_source(b, m, rootfd, !from, source, writable, err);
				if (fd < 0) {
					rc = node_wrap(b, n, err);
				} else {
					add_fd(m, fd);
					mt.type = KILN_MOUNT_BIND;
					mt.source_fd = fd;
					mt.source = keep_str(m, kiln_xstrdup(source ? source : "/"));
					mt.target = keep_str(m, kiln_xstrdup(target));
					mt.readonly = !writable;
				}
			}
		} else {
			rc = node_fail(b, n, err, "unsupported mount type \"%s\"", type);
		}
		kiln_strv_free(&kv);
		if (rc < 0)
			return -1;
		if (mt.target && mt.target[0] != '/')
			mt.target = keep_str(m, kiln_xasprintf("/%s", mt.target));
		m->v = kiln_xrealloc(m->v, (m->n + 1) * sizeof(*m->v));
		m->v[m->n++] = mt;
	}
	return 0;
}

/* The cache key part of what one --mount value exposes (as BuildKit keys
 * it): a bind mount from the context adds the content digest of its source
 * (hashed like COPY: .dockerignore honoured, mtimes never); from=<stage> adds
 * that stage's key; from=<image> its image id.  cache, tmpfs and secret
 * mounts add nothing (a secret's content is never hashed). */
static int mount_key_add(struct builder *b, struct bstage *st, const struct kiln_df_node *n,
			 const char *spec, struct kiln_cache_key *k, struct kiln_err *err)
{
	struct kiln_strv kv = {0};
	KILN_AUTOFREE char *s = kiln_xstrdup(spec);
	char *save = NULL;
	for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save))
		kiln_strv_push(&kv, t);
	const char *type = csv_get(kv.v, kv.n, "type");
	const char *source = csv_get(kv.v, kv.n, "source");
	if (!source)
		source = csv_get(kv.v, kv.n, "src");
	const char *from_raw = csv_get(kv.v, kv.n, "from");
	int rc = 0;
	if (type && strcmp(type, "bind")) {
		/* cache, tmpfs, secret: not part of the key */
	} else if (from_raw) {
		KILN_AUTOFREE char *from = NULL;
		struct bstage *dep = NULL;
		if (xword(b, st, n, from_raw, &from, err) < 0 || resolve_from(b, st, from, &dep, err) < 0) {
			rc = -1;
		} else if (dep) {
			rc = build_stage(b, dep, err);
			if (rc == 0)
				kiln_cache_key_add(k, "mount-from", dep->key);
		} else {
			struct kiln_image *img = NULL;
			rc = load_image(b, from, false, &img, err);
			if (rc == 0) {
				b->extra_images = kiln_xrealloc(b->extra_images, (b->n_extra + 1) * sizeof(*b->extra_images));
				b->extra_images[b->n_extra++] = img;
				kiln_cache_key_add(k, "mount-image", img->id);
			}
		}
	} else if (b->ctx.dirfd >= 0) {
		KILN_AUTOFREE char *clean = kiln_copy_clean(source ? source : ".");
		const char *rel = clean;
		while (*rel == '/')
			rel++;
		if (!*rel)
			rel = ".";
		struct kiln_copy_src src = {.rootfd = b->ctx.dirfd, .excluded = kiln_context_excluded,
					    .excluded_arg = &b->ctx, .hash = kiln_context_hash, .hash_arg = &b->ctx};
		struct kiln_copy_opts co = {0};
		char *matches[] = {(char *)rel};
		char dg[KILN_DIGEST_MAX];
		rc = kiln_copy_digest(&src, matches, 1, &co, dg, err);
		if (rc == 0)
			kiln_cache_key_add(k, "mount-context", dg);
		else
			kiln_err_wrap(err, "bind mount source %s", source ? source : ".");
	}
	kiln_strv_free(&kv);
	return rc;
}

/* Mount targets the sandbox will create in the rootfs ("stubs") must not
 * reach the layer.  Before the run: remember the first missing component of
 * each target and what lies below it; after: remove exactly those, only when
 * they are still an empty directory or an empty file, never following a
 * symlink (security.md item 11). */
static void stubs_record(int rootfd, const struct mounts *m, struct kiln_strv *stubs)
{
	for (size_t i = 0; i < m->n; i++) {
		KILN_AUTOFREE char *clean = kiln_copy_clean(m->v[i].target);
		const char *rel = clean[0] == '/' ? clean + 1 : clean;
		if (!*rel || !strcmp(rel, "."))
			continue;
		KILN_AUTOFREE char *copy = kiln_xstrdup(rel);
		bool missing = false;
		for (char *slash = copy;; slash++) {
			slash = strchr(slash, '/');
			if (slash)
				*slash = 0;
			if (!missing) {
				int fd = open_in_root(rootfd, copy, O_PATH | O_NOFOLLOW);
				if (fd < 0 && errno == ENOENT)
					missing = true;
				if (fd >= 0)
					close(fd);
			}
			if (missing)
				kiln_strv_push(stubs, copy);
			if (!slash)
				break;
			*slash = '/';
		}
	}
}

static void stubs_remove(int rootfd, struct kiln_strv *stubs)
{
	for (size_t i = stubs->n; i-- > 0;) {
		const char *p = stubs->v[i];
		const char *slash = strrchr(p, '/');
		KILN_AUTOFREE char *parent = slash ? kiln_xstrndup(p, (size_t)(slash - p)) : kiln_xstrdup(".");
		const char *name = slash ? slash + 1 : p;
		int pfd = open_in_root(rootfd, parent, O_RDONLY | O_DIRECTORY);
		if (pfd < 0)
			continue;
		struct stat st;
		if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (S_ISDIR(st.st_mode))
				unlinkat(pfd, name, AT_REMOVEDIR);   /* only when empty */
			else if (S_ISREG(st.st_mode) && st.st_size == 0)
				unlinkat(pfd, name, 0);
		}
		close(pfd);
	}
}

static int on_start_cb(pid_t pid, void *arg)
{
	(void)arg;
	g_child = pid;
	return g_interrupted ? -1 : 0;
}

static int run_mutate(struct builder *b, struct bstage *st, const char *rootfs, void *arg,
		      struct kiln_err *err)
{
	struct run_ctx *rc_ = arg;
	struct mounts m = {0};
	if (build_mounts(b, st, rc_->node, &rc_->mount_specs, &m, err) < 0) {
		mounts_free(&m);
		return -1;
	}
	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	spec.origin = KILN_ORIGIN_BUILD;
	spec.rootfs = rootfs;
	spec.argv = rc_->argv;
	spec.env = rc_->env;
	spec.cwd = kiln_image_get_string(st->img, "WorkingDir");
	if (spec.cwd && !*spec.cwd)
		spec.cwd = NULL;
	spec.user = kiln_image_get_string(st->img, "User");
	if (spec.user && !*spec.user)
		spec.user = NULL;
	spec.mounts = m.v;
	spec.n_mounts = m.n;
	spec.net = rc_->net;
	if (rc_->net_entitled)
		spec.entitlements |= KILN_ENT_NET_HOST;
	spec.limits.memory = b->o->memory;
	spec.limits.nano_cpus = b->o->nano_cpus;
	spec.limits.pids = b->o->pids > 0 ? b->o->pids : b->o->pids < 0 ? 0 : KILN_BUILD_PIDS_DEFAULT;
	spec.limits.pids_default = b->o->pids == 0;
	spec.hostname = "buildkitsandbox";
	/* a small init as PID 1: it reaps what the step leaves behind and passes
	 * SIGINT/SIGTERM on (a bare PID 1 ignores them, so ^C would not stop
	 * the step) */
	spec.init = true;
	int out = kiln_progress_relay_begin(&b->prog);
	int devnull = -1;
	if (rc_->stdin_fd >= 0) {
		spec.stdin_fd = rc_->stdin_fd;
	} else {
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		spec.stdin_fd = devnull;
	}
	spec.stdout_fd = out;
	spec.stderr_fd = out;
	spec.on_start = on_start_cb;
	struct kiln_exit ex = {0};
	struct kiln_strv stubs = {0};
	int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd >= 0)
		stubs_record(rootfd, &m, &stubs);
	g_child = 0;
	int r = kiln_sandbox_run(&spec, &ex, err);
	g_child = 0;
	if (rootfd >= 0) {
		stubs_remove(rootfd, &stubs);
		close(rootfd);
	}
	kiln_strv_free(&stubs);
	kiln_progress_relay_end(&b->prog);
	if (devnull >= 0)
		close(devnull);
	mounts_free(&m);
	if (r < 0)
		return node_wrap(b, rc_->node, err);
	/* ^C or a SIGTERM (CI cancelling the job) reached the sandbox, which
	 * passed it on: the build was interrupted, the step did not fail */
	if (ex.forwarded_signal == SIGINT || ex.forwarded_signal == SIGTERM || ex.forwarded_signal == SIGHUP)
		g_interrupted = ex.forwarded_signal;
	if (!g_interrupted && (ex.signal == SIGINT || ex.code == 128 + SIGINT))
		g_interrupted = SIGINT;
	if (g_interrupted)
		return interrupted(err);
	if (ex.code != 0 || ex.signal) {
		KILN_AUTOFREE char *cmd = join_words(rc_->argv, strv_len(rc_->argv), " ");
		if (ex.oom_killed)
			kiln_err_set(err, 0, "process \"%s\" did not complete successfully: %s", cmd,
				     ex.message[0] ? ex.message : "killed: out of memory");
		else if (ex.signal)
			kiln_err_set(err, 0, "process \"%s\" did not complete successfully: killed by signal %d (exit code: %d)",
				     cmd, ex.signal, ex.code);
		else
			kiln_err_set(err, 0, "process \"%s\" did not complete successfully: exit code: %d", cmd, ex.code);
		return node_wrap(b, rc_->node, err);
	}
	return 0;
}

/* Once per build: a RUN step on the default network whose resolv.conf names
 * no nameserver (the host's are all on loopback) is told so, never given a
 * public resolver instead. */
static void warn_no_nameserver(struct builder *b)
{
	if (b->dns_checked)
		return;
	b->dns_checked = true;
	KILN_AUTOFREE char *host = NULL, *rc = NULL;
	if (kiln_read_file("/etc/resolv.conf", 1 << 16, &host, NULL, NULL) < 0)
		host = NULL;
	if (kiln_net_resolv_conf(host, false, &rc) == 0)
		kiln_progress_note(&b->prog, "[warning] /etc/resolv.conf names no nameserver a RUN step can "
				   "reach (loopback and IPv6 ones are left out): RUN steps have no DNS");
}

static char **default_shell(struct kiln_image *img)
{
	char **sh = kiln_image_get_strv(img, "Shell");
	if (sh && sh[0])
		return sh;
	kiln_strv_free_raw(sh);
	char *def[] = {"/bin/sh", "-c", NULL};
	return kiln_strv_dup(def);
}

static char *args_canon(const struct kiln_env *e)
{
	struct kiln_buf buf = {0};
	kiln_buf_puts(&buf, "");
	for (size_t i = 0; i < e->n; i++)
		kiln_buf_printf(&buf, "%s=%s\n", e->v[i].key, e->v[i].value);
	return kiln_buf_steal(&buf);
}

static int do_run(struct builder *b, struct bstage *st, const struct kiln_df_node *n, struct kiln_err *err)
{
	if (n->args.n == 0)
		return node_fail(b, n, err, "RUN needs a command");
	struct kiln_strv argv = {0};
	int stdin_fd = -1;
	char **shell = default_shell(st->img);
	KILN_AUTOFREE char *shown = NULL;
	if (n->json) {
		for (size_t i = 0; i < n->args.n; i++)
			kiln_strv_push(&argv, n->args.v[i]);
		shown = join_words(n->args.v, n->args.n, " ");
	} else {
		KILN_AUTOFREE char *cmd = join_words(n->args.v, n->args.n, " ");
		for (char **s = shell; *s; s++)
			kiln_strv_push(&argv, *s);
		const char *c = cmd;
		while (*c == ' ' || *c == '\t')
			c++;
		bool only_heredoc = n->n_heredocs == 1 && c[0] == '<' && c[1] == '<' && !strpbrk(c, " \t");
		if (only_heredoc) {
			const char *body = n->heredocs[0].content ? n->heredocs[0].content : "";
			if (!strncmp(body, "#!", 2)) {
				/* a script with its own interpreter: run it from stdin */
				kiln_strv_free(&argv);
				const char *nl = strchr(body, '\n');
				KILN_AUTOFREE char *interp = kiln_xstrndup(body + 2, nl ? (size_t)(nl - body - 2) : strlen(body + 2));
				char *save = NULL;
				for (char *t = strtok_r(interp, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
					kiln_strv_push(&argv, t);
				kiln_strv_push(&argv, "/dev/stdin");
				stdin_fd = memfd_create("kiln-heredoc", MFD_CLOEXEC);
				if (stdin_fd < 0 || kiln_write_all(stdin_fd, body, strlen(body)) < 0) {
					kiln_strv_free(&argv);
					kiln_strv_free_raw(shell);
					if (stdin_fd >= 0)
						close(stdin_fd);
					return kiln_err_set(err, errno, "heredoc script");
				}
				lseek(stdin_fd, 0, SEEK_SET);
			} else {
				kiln_strv_push(&argv, body);
			}
		} else if (n->n_heredocs) {
			struct kiln_buf full = {0};
			kiln_buf_puts(&full, cmd);
			for (size_t i = 0; i < n->n_heredocs; i++)
				kiln_buf_printf(&full, "\n%s%s", n->heredocs[i].content ? n->heredocs[i].content : "",
						n->heredocs[i].name);
			kiln_strv_push_owned(&argv, kiln_buf_steal(&full));
		} else {
			kiln_strv_push(&argv, cmd);
		}
		shown = join_words(argv.v, argv.n, " ");
	}
	kiln_strv_free_raw(shell);

	/* environment: image ENV + ARGs in scope (ENV wins) */
	struct kiln_env env = {0};
	kiln_env_copy(&env, &st->args);
	char **ienv = kiln_image_get_strv(st->img, "Env");
	for (size_t i = 0; ienv && ienv[i]; i++)
		kiln_env_set_kv(&env, ienv[i]);
	kiln_strv_free_raw(ienv);
	for (size_t i = 0; i < st->args.n; i++)
		note_used_arg(b, st->args.v[i].key);
	char **envv = kiln_env_to_strv(&env);
	kiln_env_free(&env);

	struct run_ctx rc_ = {.argv = argv.v, .env = envv, .stdin_fd = stdin_fd, .node = n};
	flag_all(n, "mount", &rc_.mount_specs);
	/* BuildKit's network modes: the command line's --network is every
	 * step's default, RUN --network= overrides it for one step; the host's
	 * network asked for by the Dockerfile needs the network.host
	 * entitlement, which --network host on the command line also grants
	 * (as buildx does) */
	const char *cli_net = b->o->network ? b->o->network : "default";
	const char *net = flag_get(n, "network");
	bool from_df = net && strcmp(net, "default");
	if (!net || !strcmp(net, "default"))
		net = cli_net;
	bool entitled = b->o->allow_net_host || !strcmp(cli_net, "host");
	int rc = 0;
	if (strcmp(net, "default") && strcmp(net, "host") && strcmp(net, "none"))
		rc = node_fail(b, n, err, "unsupported network mode \"%s\" (default, none or host)", net);
	else if (!strcmp(net, "host") && from_df && !entitled)
		rc = node_fail(b, n, err, "RUN --network=host needs the network.host entitlement "
			       "(kiln build --allow network.host)");
	rc_.net = !strcmp(net, "host") ? KILN_NET_HOST : !strcmp(net, "none") ? KILN_NET_NONE : KILN_NET_BRIDGE;
	rc_.net_entitled = entitled;
	if (rc == 0 && rc_.net == KILN_NET_BRIDGE)
		warn_no_nameserver(b);
	const char *sec = flag_get(n, "security");
	if (rc == 0 && sec && strcmp(sec, "sandbox"))
		rc = node_fail(b, n, err, "RUN --security=%s is not allowed (kiln grants no extra privileges to RUN)", sec);

	char key[KILN_DIGEST_MAX];
	if (rc == 0) {
		struct kiln_cache_key k;
		step_key_begin(b, st, &k, "run");
		KILN_AUTOFREE char *av = json_strv(argv.v, argv.n);
		kiln_cache_key_add(&k, "argv", av);
		KILN_AUTOFREE char *ev = json_strv(envv, strv_len(envv));
		kiln_cache_key_add(&k, "env", ev);
		KILN_AUTOFREE char *ac = args_canon(&st->args);
		kiln_cache_key_add(&k, "args", ac);
		/* "network" keeps the value steps had when they shared the host's
		 * network by default ("host": the step had a network), so caches
		 * made then still match default steps; the host's own network
		 * namespace is a different step and says so in a field of its own */
		kiln_cache_key_add(&k, "network", rc_.net == KILN_NET_NONE ? "none" : "host");
		if (rc_.net == KILN_NET_HOST)
			kiln_cache_key_add(&k, "netns", "host");
		for (size_t i = 0; i < rc_.mount_specs.n && rc == 0; i++) {
			kiln_cache_key_add(&k, "mount", rc_.mount_specs.v[i]);
			/* what the mount exposes: context content, source stage, image */
			rc = mount_key_add(b, st, n, rc_.mount_specs.v[i], &k, err);
		}
		if (stdin_fd >= 0)
			kiln_cache_key_add(&k, "script", n->heredocs[0].content);
		kiln_cache_key_end(&k, key);
	}
	if (rc == 0) {
		if (cache_try(b, st, key, err)) {
			kiln_progress_cached(&b->prog);
		} else {
			KILN_AUTOFREE char *created_by = kiln_xasprintf("RUN %s # buildkit", shown);
			rc = layer_step(b, st, created_by, run_mutate, &rc_, err);
			if (rc == 0)
				rc = cache_store(b, st, key, err);
			if (rc == 0)
				kiln_progress_done(&b->prog);
		}
	}
	kiln_strv_free(&rc_.mount_specs);
	kiln_strv_free(&argv);
	kiln_strv_free_raw(envv);
	if (stdin_fd >= 0)
		close(stdin_fd);
	return rc;
}

/* ---- COPY / ADD ------------------------------------------------------- */

struct copy_ctx {
	const struct kiln_df_node *node;
	struct kiln_copy_src src;
	struct kiln_strv matches;
	struct kiln_copy_opts opts;
	const char *chown_spec;
	int url_fd;                  /* ADD <url>: the download */
	char *url_name;
	int64_t url_mtime;
};

static int copy_mutate(struct builder *b, struct bstage *st, const char *rootfs, void *arg,
		       struct kiln_err *err)
{
	struct copy_ctx *c = arg;
	int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kiln_err_set(err, errno, "opening %s", rootfs);
	int rc = 0;
	if (c->chown_spec) {
		struct kiln_userdb_ids ids;
		if (kiln_userdb_resolve(rootfd, c->chown_spec, &ids, err) < 0) {
			close(rootfd);
			return node_wrap(b, c->node, err);
		}
		c->opts.chown = true;
		c->opts.uid = ids.uid;
		c->opts.gid = ids.gid;
		kiln_userdb_ids_free(&ids);
	}
	if (c->url_fd >= 0)
		rc = kiln_copy_install_fd(c->url_fd, c->url_name, c->url_mtime, rootfd, &c->opts, err);
	if (rc == 0 && c->matches.n)
		rc = kiln_copy_run(&c->src, c->matches.v, c->matches.n, rootfd, &c->opts, err);
	close(rootfd);
	if (rc < 0)
		return node_wrap(b, c->node, err);
	return 0;
}

static bool is_url(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}

static int do_copy(struct builder *b, struct bstage *st, const struct kiln_df_node *n, bool add,
		   struct kiln_err *err)
{
	if (n->args.n < 2)
		return node_fail(b, n, err, "%s requires at least two arguments", add ? "ADD" : "COPY");
	struct copy_ctx c = {.node = n, .url_fd = -1};
	struct kiln_strv srcs = {0};
	char *dest = NULL;
	int rc = 0;
	int heredoc_dir = -1;
	KILN_AUTOFREE char *heredoc_path = NULL;
	/* expand sources and dest */
	for (size_t i = 0; i < n->args.n && rc == 0; i++) {
		char *w = NULL;
		const char *a = n->args.v[i];
		bool hd = false;
		for (size_t h = 0; h < n->n_heredocs; h++)
			if (a[0] == '<' && a[1] == '<' && strstr(a, n->heredocs[h].name))
				hd = true;
		if (hd && i + 1 < n->args.n) {
			kiln_strv_push(&srcs, a);
			continue;
		}
		if (xword(b, st, n, a, &w, err) < 0) {
			rc = -1;
			break;
		}
		if (i + 1 == n->args.n)
			dest = w;
		else
			kiln_strv_push_owned(&srcs, w);
	}
	const char *from = flag_get(n, "from");
	const char *chown = flag_get(n, "chown");
	const char *chmod = flag_get(n, "chmod");
	KILN_AUTOFREE char *chown_x = NULL;
	KILN_AUTOFREE char *from_x = NULL;
	if (rc == 0 && chown && *chown)
		rc = xword(b, st, n, chown, &chown_x, err);
	if (rc == 0 && from)
		rc = xword(b, st, n, from, &from_x, err);
	c.chown_spec = chown_x;
	if (rc == 0 && chmod) {
		char *end;
		long mode = strtol(chmod, &end, 8);
		if (*end || mode < 0 || mode > 07777)
			rc = node_fail(b, n, err, "invalid --chmod=%s (octal expected)", chmod);
		c.opts.chmod = true;
		c.opts.mode = (mode_t)mode;
	}
	struct kiln_strv excludes = {0};
	flag_all(n, "exclude", &excludes);
	c.opts.excludes = excludes.n ? excludes.v : NULL;
	c.opts.parents = flag_bool(n, "parents");
	c.opts.add = add;
	c.opts.dest = dest;
	c.opts.workdir = kiln_image_get_string(st->img, "WorkingDir");

	char srcdigest[KILN_DIGEST_MAX] = "";
	const char *src_id = "context";
	/* the source tree */
	if (rc == 0 && srcs.n && srcs.v[0][0] == '<' && srcs.v[0][1] == '<') {
		/* heredoc sources: files in a private directory */
		heredoc_path = kiln_xasprintf("%s/heredoc-%d-%u", b->tmpdir, getpid(), b->counter++);
		if (mkdir(heredoc_path, 0700) < 0) {
			rc = kiln_err_set(err, errno, "mkdir %s", heredoc_path);
		} else {
			heredoc_dir = open(heredoc_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			struct kiln_env env = {0};
			stage_env(st, &env);
			for (size_t i = 0; i < srcs.n && rc == 0; i++) {
				const char *nm = srcs.v[i] + 2;
				while (*nm == '-')
					nm++;
				for (size_t h = 0; h < n->n_heredocs; h++) {
					if (strcmp(n->heredocs[h].name, nm) && !strstr(srcs.v[i], n->heredocs[h].name))
						continue;
					KILN_AUTOFREE char *body = NULL;
					if (n->heredocs[h].expand)
						rc = kiln_expand(n->heredocs[h].content, &env,
								 &(struct kiln_expand_opts){.escape = b->df->escape}, &body,
								 NULL, err);
					else
						body = kiln_xstrdup(n->heredocs[h].content);
					if (rc == 0 &&
					    kiln_write_file_atomic(heredoc_dir, n->heredocs[h].name, body, strlen(body), 0644, err) < 0)
						rc = -1;
					free(srcs.v[i]);
					srcs.v[i] = kiln_xstrdup(n->heredocs[h].name);
					break;
				}
			}
			kiln_env_free(&env);
			c.src.rootfd = heredoc_dir;
			src_id = "heredoc";
		}
	} else if (rc == 0 && from_x) {
		struct bstage *dep = NULL;
		struct kiln_image *img = NULL;
		if (resolve_from(b, st, from_x, &dep, err) < 0) {
			rc = -1;
		} else if (dep) {
			if (build_stage(b, dep, err) < 0)
				rc = -1;
			img = dep->img;
			src_id = dep->key;
		} else {
			rc = load_image(b, from_x, false, &img, err);
			if (rc == 0) {
				b->extra_images = kiln_xrealloc(b->extra_images, (b->n_extra + 1) * sizeof(*b->extra_images));
				b->extra_images[b->n_extra++] = img;
				src_id = img->id;
			}
		}
		if (rc == 0)
			rc = image_root(b, img, &c.src.rootfd, err);
		c.src.keep_owner = true;
		if (rc < 0)
			node_wrap(b, n, err);
	} else if (rc == 0) {
		c.src.rootfd = b->ctx.dirfd;
		c.src.excluded = kiln_context_excluded;
		c.src.excluded_arg = &b->ctx;
		c.src.hash = kiln_context_hash;
		c.src.hash_arg = &b->ctx;
		if (c.src.rootfd < 0) {
			/* no context: only URLs are possible */
			for (size_t i = 0; i < srcs.n; i++)
				if (!is_url(srcs.v[i]))
					rc = node_fail(b, n, err, "no build context: cannot copy %s", srcs.v[i]);
		}
	}
	/* ADD <url> */
	struct kiln_strv local = {0};
	for (size_t i = 0; i < srcs.n && rc == 0; i++) {
		if (!add || !is_url(srcs.v[i])) {
			kiln_strv_push(&local, srcs.v[i]);
			continue;
		}
		if (c.url_fd >= 0) {
			rc = node_fail(b, n, err, "only one URL source per ADD is supported");
			break;
		}
		int tfd = open(b->tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = kiln_copy_download(srcs.v[i], flag_get(n, "checksum"), tfd, &c.url_fd, srcdigest, &c.url_mtime, err);
		close(tfd);
		if (rc < 0) {
			node_wrap(b, n, err);
			break;
		}
		const char *u = srcs.v[i];
		const char *q = strpbrk(u + 8, "?#");
		KILN_AUTOFREE char *path = q ? kiln_xstrndup(u, (size_t)(q - u)) : kiln_xstrdup(u);
		const char *slash = strrchr(path, '/');
		c.url_name = kiln_xstrdup(slash && slash[1] && slash > path + 8 ? slash + 1 : "index.html");
	}
	if (rc == 0 && local.n) {
		rc = kiln_copy_expand(&c.src, local.v, local.n, &c.matches, err);
		char d2[KILN_DIGEST_MAX];
		if (rc == 0)
			rc = kiln_copy_digest(&c.src, c.matches.v, c.matches.n, &c.opts, d2, err);
		if (rc == 0) {
			KILN_AUTOFREE char *both = kiln_xasprintf("%s%s", srcdigest, d2);
			snprintf(srcdigest, sizeof(srcdigest), "%s", both);
		}
		if (rc < 0)
			node_wrap(b, n, err);
	}
	kiln_strv_free(&local);
	char key[KILN_DIGEST_MAX];
	if (rc == 0) {
		struct kiln_cache_key k;
		step_key_begin(b, st, &k, add ? "add" : "copy");
		KILN_AUTOFREE char *sv = json_strv(srcs.v, srcs.n);
		kiln_cache_key_add(&k, "srcs", sv);
		kiln_cache_key_add(&k, "dest", dest);
		kiln_cache_key_add(&k, "from", src_id);
		kiln_cache_key_add(&k, "chown", chown_x);
		kiln_cache_key_add(&k, "chmod", chmod);
		KILN_AUTOFREE char *ex = json_strv(excludes.v, excludes.n);
		kiln_cache_key_add(&k, "exclude", ex);
		kiln_cache_key_add(&k, "parents", c.opts.parents ? "1" : "0");
		kiln_cache_key_add(&k, "digest", srcdigest);
		kiln_cache_key_end(&k, key);
		if (cache_try(b, st, key, err)) {
			kiln_progress_cached(&b->prog);
		} else {
			KILN_AUTOFREE char *created_by = kiln_xasprintf("%s %s # buildkit", add ? "ADD" : "COPY", n->rest ? n->rest : "");
			rc = layer_step(b, st, created_by, copy_mutate, &c, err);
			if (rc == 0)
				rc = cache_store(b, st, key, err);
			if (rc == 0)
				kiln_progress_done(&b->prog);
		}
	}
	if (c.url_fd >= 0)
		close(c.url_fd);
	free(c.url_name);
	if (heredoc_dir >= 0)
		close(heredoc_dir);
	if (heredoc_path) {
		struct kiln_err e;
		kiln_rm_rf(heredoc_path, &e);
	}
	kiln_strv_free(&c.matches);
	kiln_strv_free(&excludes);
	kiln_strv_free(&srcs);
	free(dest);
	return rc;
}

/* ---- WORKDIR ---------------------------------------------------------- */

struct workdir_ctx {
	const char *path;
	const struct kiln_df_node *node;
};

static int workdir_mutate(struct builder *b, struct bstage *st, const char *rootfs, void *arg,
			  struct kiln_err *err)
{
	struct workdir_ctx *w = arg;
	int rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kiln_err_set(err, errno, "opening %s", rootfs);
	/* Directories WORKDIR creates belong to the stage's USER, as BuildKit
	 * makes them (existing ones keep their owner). */
	uid_t uid = 0;
	gid_t gid = 0;
	const char *user = kiln_image_get_string(st->img, "User");
	if (user && *user) {
		struct kiln_userdb_ids ids = {0};
		if (kiln_userdb_resolve(rootfd, user, &ids, err) < 0) {
			close(rootfd);
			return node_wrap(b, w->node, err);
		}
		uid = ids.uid;
		gid = ids.gid;
		kiln_userdb_ids_free(&ids);
	}
	int fd = kiln_copy_mkdir(rootfd, w->path, uid, gid, err);
	close(rootfd);
	if (fd < 0)
		return node_wrap(b, w->node, err);
	close(fd);
	return 0;
}

/* ---- metadata instructions ------------------------------------------- */

static int meta_apply(struct builder *b, struct bstage *st, const struct kiln_df_node *n, struct kiln_buf *hist,
		      struct kiln_err *err)
{
	const char *in = n->instr_lower;
	struct kiln_image *img = st->img;
	if (!strcmp(in, "env") || !strcmp(in, "label")) {
		bool env = in[0] == 'e';
		kiln_buf_puts(hist, env ? "ENV" : "LABEL");
		/* the tree holds triples: key, value, separator ("=" or "") */
		if (n->args.n % 3)
			return node_fail(b, n, err, "%s needs key=value pairs", env ? "ENV" : "LABEL");
		/* Expand every pair against the environment from before the
		 * instruction, then set them: in `ENV A=2 B=$A` B gets the old A
		 * (the Dockerfile reference's def=$abc example). */
		size_t np = n->args.n / 3;
		struct kiln_strv kv = {0};
		int rc = 0;
		for (size_t i = 0; i < np && rc == 0; i++) {
			KILN_AUTOFREE char *k = NULL;
			KILN_AUTOFREE char *v = NULL;
			rc = xword(b, st, n, n->args.v[3 * i], &k, err);
			if (rc == 0)
				rc = xword(b, st, n, n->args.v[3 * i + 1], &v, err);
			if (rc == 0) {
				kiln_strv_push(&kv, k);
				kiln_strv_push(&kv, v);
			}
		}
		for (size_t i = 0; rc == 0 && i + 1 < kv.n; i += 2) {
			if (env)
				kiln_image_env_set(img, kv.v[i], kv.v[i + 1]);
			else
				kiln_image_label_set(img, kv.v[i], kv.v[i + 1]);
			kiln_buf_printf(hist, " %s=%s", kv.v[i], kv.v[i + 1]);
		}
		kiln_strv_free(&kv);
		return rc;
	}
	if (!strcmp(in, "maintainer")) {
		KILN_AUTOFREE char *v = join_words(n->args.v, n->args.n, " ");
		json_object_set_new(img->config, "author", json_string(v));
		kiln_buf_printf(hist, "MAINTAINER %s", v);
		return 0;
	}
	if (!strcmp(in, "user") || !strcmp(in, "stopsignal")) {
		if (n->args.n != 1)
			return node_fail(b, n, err, "%s requires exactly one argument", in[0] == 'u' ? "USER" : "STOPSIGNAL");
		KILN_AUTOFREE char *v = NULL;
		if (xword(b, st, n, n->args.v[0], &v, err) < 0)
			return -1;
		kiln_image_set_string(img, in[0] == 'u' ? "User" : "StopSignal", v);
		kiln_buf_printf(hist, "%s %s", in[0] == 'u' ? "USER" : "STOPSIGNAL", v);
		return 0;
	}
	if (!strcmp(in, "expose")) {
		kiln_buf_puts(hist, "EXPOSE");
		for (size_t i = 0; i < n->args.n; i++) {
			struct kiln_strv words = {0};
			struct kiln_env env = {0};
			stage_env(st, &env);
			int r = kiln_expand_words(n->args.v[i], &env, b->df->escape, &words, err);
			kiln_env_free(&env);
			if (r < 0) {
				kiln_strv_free(&words);
				return node_wrap(b, n, err);
			}
			for (size_t w = 0; w < words.n; w++) {
				const char *p = words.v[w];
				KILN_AUTOFREE char *port = strchr(p, '/') ? kiln_xstrdup(p) : kiln_xasprintf("%s/tcp", p);
				for (char *c = port; *c; c++)
					*c = (char)tolower((unsigned char)*c);
				const char *num = port;
				if (!isdigit((unsigned char)num[0])) {
					kiln_strv_free(&words);
					return node_fail(b, n, err, "invalid port \"%s\"", p);
				}
				kiln_image_expose(img, port);
				kiln_buf_printf(hist, " %s", port);
			}
			kiln_strv_free(&words);
		}
		return 0;
	}
	if (!strcmp(in, "volume")) {
		kiln_buf_puts(hist, "VOLUME [");
		for (size_t i = 0; i < n->args.n; i++) {
			KILN_AUTOFREE char *v = NULL;
			if (xword(b, st, n, n->args.v[i], &v, err) < 0)
				return -1;
			if (!*v)
				return node_fail(b, n, err, "VOLUME specified can not be an empty string");
			kiln_image_volume_add(img, v);
			kiln_buf_printf(hist, "%s%s", i ? " " : "", v);
		}
		kiln_buf_puts(hist, "]");
		return 0;
	}
	if (!strcmp(in, "shell")) {
		if (!n->json || n->args.n == 0)
			return node_fail(b, n, err, "SHELL requires the arguments to be in JSON form");
		kiln_image_set_strv(img, "Shell", n->args.v);
		KILN_AUTOFREE char *j = json_strv(n->args.v, n->args.n);
		kiln_buf_printf(hist, "SHELL %s", j);
		return 0;
	}
	if (!strcmp(in, "cmd") || !strcmp(in, "entrypoint")) {
		bool cmd = in[0] == 'c';
		struct kiln_strv v = {0};
		if (n->json) {
			for (size_t i = 0; i < n->args.n; i++)
				kiln_strv_push(&v, n->args.v[i]);
		} else if (n->args.n) {
			char **sh = default_shell(img);
			for (char **s = sh; *s; s++)
				kiln_strv_push(&v, *s);
			kiln_strv_free_raw(sh);
			kiln_strv_push_owned(&v, join_words(n->args.v, n->args.n, " "));
		}
		strv_alloc(&v);
		if (!cmd) {
			/* ENTRYPOINT resets a CMD inherited from the base image */
			if (!st->cmd_set)
				kiln_image_set_strv(img, "Cmd", NULL);
		}
		kiln_image_set_strv(img, cmd ? "Cmd" : "Entrypoint", v.v);
		KILN_AUTOFREE char *j = json_strv(v.v, v.n);
		kiln_buf_printf(hist, "%s %s", cmd ? "CMD" : "ENTRYPOINT", j);
		kiln_strv_free(&v);
		return 0;
	}
	if (!strcmp(in, "healthcheck")) {
		if (n->args.n == 0)
			return node_fail(b, n, err, "HEALTHCHECK needs NONE or CMD");
		json_t *hc = json_object();
		json_t *test = json_array();
		if (!strcasecmp(n->args.v[0], "none")) {
			json_array_append_new(test, json_string("NONE"));
		} else {
			if (strcasecmp(n->args.v[0], "cmd")) {
				json_decref(hc);
				json_decref(test);
				return node_fail(b, n, err, "unknown type \"%s\" in HEALTHCHECK (try CMD)", n->args.v[0]);
			}
			if (n->json) {
				json_array_append_new(test, json_string("CMD"));
				for (size_t i = 1; i < n->args.n; i++)
					json_array_append_new(test, json_string(n->args.v[i]));
			} else {
				json_array_append_new(test, json_string("CMD-SHELL"));
				KILN_AUTOFREE char *c = join_words(n->args.v + 1, n->args.n - 1, " ");
				json_array_append_new(test, json_string(c));
			}
			static const char *const durs[][2] = {{"interval", "Interval"}, {"timeout", "Timeout"},
							      {"start-period", "StartPeriod"},
							      {"start-interval", "StartInterval"}};
			for (size_t i = 0; i < 4; i++) {
				const char *v = flag_get(n, durs[i][0]);
				if (!v)
					continue;
				int64_t ns = 0;
				if (kiln_units_parse_duration(v, &ns, err) < 0) {
					json_decref(hc);
					json_decref(test);
					return node_wrap(b, n, err);
				}
				if (ns)
					json_object_set_new(hc, durs[i][1], json_integer(ns));
			}
			const char *r = flag_get(n, "retries");
			if (r) {
				char *end;
				long rv = strtol(r, &end, 10);
				if (*end || rv < 0) {
					json_decref(hc);
					json_decref(test);
					return node_fail(b, n, err, "invalid --retries=%s", r);
				}
				if (rv)
					json_object_set_new(hc, "Retries", json_integer(rv));
			}
		}
		json_object_set_new(hc, "Test", test);
		char *s = json_dumps(test, JSON_COMPACT);
		kiln_buf_printf(hist, "HEALTHCHECK %s", s ? s : "");
		free(s);
		kiln_image_set_healthcheck(img, hc);
		return 0;
	}
	if (!strcmp(in, "onbuild")) {
		const char *trigger = n->rest ? n->rest : "";
		char **cur = kiln_image_get_strv(img, "OnBuild");
		struct kiln_strv v = {0};
		for (size_t i = 0; cur && cur[i]; i++)
			kiln_strv_push(&v, cur[i]);
		kiln_strv_free_raw(cur);
		kiln_strv_push(&v, trigger);
		kiln_image_set_strv(img, "OnBuild", v.v);
		kiln_strv_free(&v);
		kiln_buf_printf(hist, "ONBUILD %s", trigger);
		return 0;
	}
	return node_fail(b, n, err, "unknown instruction %s", n->instr);
}

/* ---- ARG -------------------------------------------------------------- */

static int arg_decl(struct builder *b, struct bstage *st, const struct kiln_df_node *n, struct kiln_env *scope,
		    bool global, struct kiln_buf *hist, struct kiln_err *err)
{
	/* Every word of one ARG line is expanded against the scope as it was
	 * before the line (BuildKit expands the whole instruction first), so in
	 * `ARG A=2 B=$A` B gets the earlier A; names are expanded too. */
	size_t na = n->args.n;
	char **names = kiln_xcalloc(na + 1, sizeof(char *));
	char **values = kiln_xcalloc(na + 1, sizeof(char *));
	int rc = 0;
	for (size_t i = 0; i < na && rc == 0; i++) {
		const char *a = n->args.v[i];
		const char *eq = strchr(a, '=');
		KILN_AUTOFREE char *raw = eq ? kiln_xstrndup(a, (size_t)(eq - a)) : kiln_xstrdup(a);
		if (global) {
			if (kiln_expand_word(raw, scope, b->df->escape, &names[i], err) < 0)
				rc = node_wrap(b, n, err);
		} else {
			rc = xword(b, st, n, raw, &names[i], err);
		}
		if (rc == 0 && !names[i][0])
			rc = node_fail(b, n, err, "ARG name \"%s\" expands to an empty string", raw);
		if (rc < 0)
			break;
		const char *name = names[i];
		const char *given = kiln_env_get(&b->build_args, name);
		if (given) {
			values[i] = kiln_xstrdup(given);
			note_used_arg(b, name);
		} else if (eq) {
			if (global) {
				if (kiln_expand_word(eq + 1, scope, b->df->escape, &values[i], err) < 0)
					rc = node_wrap(b, n, err);
			} else {
				rc = xword(b, st, n, eq + 1, &values[i], err);
			}
		} else if (!global && kiln_env_get(&b->global_args, name)) {
			values[i] = kiln_xstrdup(kiln_env_get(&b->global_args, name));
		}
	}
	for (size_t i = 0; i < na && rc == 0; i++) {
		if (values[i])
			kiln_env_set(scope, names[i], values[i]);
		if (hist) {
			if (hist->len)
				kiln_buf_putc(hist, ' ');
			else
				kiln_buf_puts(hist, "ARG ");
			if (values[i])
				kiln_buf_printf(hist, "%s=%s", names[i], values[i]);
			else
				kiln_buf_puts(hist, names[i]);
		}
	}
	for (size_t i = 0; i < na; i++) {
		free(names[i]);
		free(values[i]);
	}
	free(names);
	free(values);
	return rc;
}

/* ---- steps ------------------------------------------------------------ */

static int exec_node(struct builder *b, struct bstage *st, const struct kiln_df_node *n, struct kiln_err *err)
{
	if (g_interrupted)
		return interrupted(err);
	const char *in = n->instr_lower;
	st->step_no++;
	char label[160];
	snprintf(label, sizeof(label), "%s %d/%d", st->label, st->step_no, st->n_steps);
	KILN_AUTOFREE char *text = node_text(n);
	kiln_progress_step(&b->prog, label, text);
	int rc;
	if (!strcmp(in, "run")) {
		rc = do_run(b, st, n, err);
	} else if (!strcmp(in, "copy") || !strcmp(in, "add")) {
		rc = do_copy(b, st, n, in[0] == 'a', err);
	} else if (!strcmp(in, "from")) {
		rc = node_fail(b, n, err, "unexpected FROM");
	} else if (!strcmp(in, "workdir")) {
		if (n->args.n != 1)
			return node_fail(b, n, err, "WORKDIR requires exactly one argument");
		KILN_AUTOFREE char *v = NULL;
		if (xword(b, st, n, n->args.v[0], &v, err) < 0)
			return -1;
		const char *cur = kiln_image_get_string(st->img, "WorkingDir");
		KILN_AUTOFREE char *joined = v[0] == '/' ? kiln_xstrdup(v)
							 : kiln_xasprintf("%s/%s", cur && *cur ? cur : "/", v);
		KILN_AUTOFREE char *clean = kiln_copy_clean(joined);
		struct kiln_cache_key k;
		step_key_begin(b, st, &k, "workdir");
		kiln_cache_key_add(&k, "path", clean);
		char key[KILN_DIGEST_MAX];
		kiln_cache_key_end(&k, key);
		if (cache_try(b, st, key, err)) {
			kiln_progress_cached(&b->prog);
			return 0;
		}
		kiln_image_set_string(st->img, "WorkingDir", clean);
		KILN_AUTOFREE char *created_by = kiln_xasprintf("WORKDIR %s", clean);
		struct workdir_ctx w = {clean, n};
		rc = layer_step(b, st, created_by, workdir_mutate, &w, err);
		if (rc == 0)
			rc = cache_store(b, st, key, err);
		if (rc == 0)
			kiln_progress_done(&b->prog);
	} else {
		struct kiln_buf hist = {0};
		kiln_buf_puts(&hist, "");
		struct kiln_cache_key k;
		step_key_begin(b, st, &k, in);
		kiln_cache_key_add(&k, "text", n->original);
		KILN_AUTOFREE char *ac = args_canon(&st->args);
		if (!strcmp(in, "arg")) {
			hist.len = 0;
			rc = arg_decl(b, st, n, &st->args, false, &hist, err);
			ac = (free(ac), args_canon(&st->args));
		} else {
			rc = 0;
		}
		kiln_cache_key_add(&k, "args", ac);
		char key[KILN_DIGEST_MAX];
		kiln_cache_key_end(&k, key);
		if (rc == 0 && cache_try(b, st, key, err)) {
			kiln_progress_cached(&b->prog);
		} else if (rc == 0) {
			if (strcmp(in, "arg"))
				rc = meta_apply(b, st, n, &hist, err);
			if (rc == 0) {
				kiln_image_add_history(st->img, hist.data, "buildkit.dockerfile.v0", true);
				rc = cache_store(b, st, key, err);
			}
			if (rc == 0)
				kiln_progress_done(&b->prog);
		}
		kiln_buf_free(&hist);
	}
	if (rc < 0)
		kiln_progress_error(&b->prog, err->msg);
	else if (!strcmp(in, "cmd"))
		st->cmd_set = true;
	return rc;
}

/* ONBUILD triggers of the base image run first. */
static int run_onbuild(struct builder *b, struct bstage *st, struct kiln_err *err)
{
	char **trig = kiln_image_get_strv(st->img, "OnBuild");
	if (!trig || !trig[0]) {
		kiln_strv_free_raw(trig);
		return 0;
	}
	kiln_image_set_strv(st->img, "OnBuild", NULL);
	json_object_del(kiln_image_cfg(st->img), "OnBuild");
	int rc = 0;
	for (size_t i = 0; trig[i] && rc == 0; i++) {
		struct kiln_df *df = NULL;
		if (kiln_parse(trig[i], strlen(trig[i]), "ONBUILD", &df, err) < 0) {
			rc = kiln_err_wrap(err, "base image ONBUILD trigger \"%s\"", trig[i]);
			break;
		}
		st->n_steps += (int)df->n_nodes;
		for (size_t j = 0; j < df->n_nodes && rc == 0; j++) {
			const char *in = df->nodes[j].instr_lower;
			if (!strcmp(in, "from") || !strcmp(in, "onbuild") || !strcmp(in, "maintainer"))
				rc = kiln_err_set(err, 0, "ONBUILD trigger %s is not allowed", df->nodes[j].instr);
			else
				rc = exec_node(b, st, &df->nodes[j], err);
		}
		kiln_df_free(df);
	}
	kiln_strv_free_raw(trig);
	return rc;
}

static int do_from(struct builder *b, struct bstage *st, struct kiln_err *err)
{
	const struct kiln_df_node *n = st->from;
	if (n->args.n < 1)
		return node_fail(b, n, err, "FROM requires an image");
	KILN_AUTOFREE char *image = NULL;
	if (kiln_expand_word(n->args.v[0], &b->global_args, b->df->escape, &image, err) < 0)
		return node_wrap(b, n, err);
	if (!*image)
		return node_fail(b, n, err, "base name (%s) should not be blank", n->args.v[0]);
	const char *plat = flag_get(n, "platform");
	if (plat) {
		KILN_AUTOFREE char *p = NULL;
		if (kiln_expand_word(plat, &b->global_args, b->df->escape, &p, err) < 0)
			return node_wrap(b, n, err);
		if (strcmp(p, "linux/amd64") && strcmp(p, "linux/x86_64"))
			return node_fail(b, n, err, "platform \"%s\" is not supported (kiln builds linux/amd64 only)", p);
	}
	st->step_no = 1;
	char label[160];
	snprintf(label, sizeof(label), "%s 1/%d", st->label, st->n_steps);
	KILN_AUTOFREE char *text = node_text(n);
	kiln_progress_step(&b->prog, label, text);
	struct kiln_cache_key k;
	kiln_cache_key_begin(&k, "from");
	struct bstage *dep = find_stage(b, image, (size_t)st->index);
	if (dep && dep != st) {
		if (build_stage(b, dep, err) < 0)
			return -1;
		st->img = kiln_image_copy(dep->img);
		snprintf(st->key, sizeof(st->key), "%s", dep->key);
		kiln_cache_key_end(&k, (char[KILN_DIGEST_MAX]){0});
		kiln_progress_done(&b->prog);
	} else if (!strcasecmp(image, "scratch")) {
		st->img = kiln_image_new_scratch();
		json_object_del(st->img->config, "created");
		/* BuildKit gives a scratch stage the default PATH in its config. */
		kiln_image_env_set(st->img, "PATH", KILN_DEFAULT_PATH);
		kiln_cache_key_add(&k, "base", "scratch");
		kiln_cache_key_add(&k, "env", "PATH=" KILN_DEFAULT_PATH);
		kiln_cache_key_end(&k, st->key);
		kiln_progress_done(&b->prog);
	} else {
		struct kiln_image *base = NULL;
		if (load_image(b, image, b->o->pull, &base, err) < 0) {
			kiln_cache_key_end(&k, (char[KILN_DIGEST_MAX]){0});
			return node_wrap(b, n, err);
		}
		st->img = kiln_image_copy(base);
		kiln_cache_key_add(&k, "base", base->id);
		kiln_cache_key_end(&k, st->key);
		kiln_image_free(base);
		kiln_progress_done(&b->prog);
	}
	return run_onbuild(b, st, err);
}

static int build_stage(struct builder *b, struct bstage *st, struct kiln_err *err)
{
	if (st->state == 2)
		return 0;
	if (st->state == 1)
		return kiln_err_set(err, 0, "circular dependency involving stage %s", st->label);
	if (++b->depth > 64)
		return kiln_err_set(err, 0, "stages nested too deeply");
	st->state = 1;
	int rc = do_from(b, st, err);
	for (size_t i = st->first; i < st->last && rc == 0; i++)
		rc = exec_node(b, st, &b->df->nodes[i], err);
	b->depth--;
	if (rc == 0)
		st->state = 2;
	return rc;
}

/* ---- plan ------------------------------------------------------------- */

static int split_stages(struct builder *b, struct kiln_err *err)
{
	struct kiln_df *df = b->df;
	/* automatic platform ARGs in the global scope */
	const char *arch = "amd64";
	kiln_env_set(&b->global_args, "TARGETPLATFORM", "linux/amd64");
	kiln_env_set(&b->global_args, "TARGETOS", "linux");
	kiln_env_set(&b->global_args, "TARGETARCH", arch);
	kiln_env_set(&b->global_args, "BUILDPLATFORM", "linux/amd64");
	kiln_env_set(&b->global_args, "BUILDOS", "linux");
	kiln_env_set(&b->global_args, "BUILDARCH", arch);
	size_t i = 0;
	for (; i < df->n_nodes && strcmp(df->nodes[i].instr_lower, "from"); i++) {
		const struct kiln_df_node *n = &df->nodes[i];
		if (strcmp(n->instr_lower, "arg"))
			return kiln_err_set(err, 0, "%s:%d: no build stage in current context: %s must come after FROM",
					    b->ctx.dockerfile_name, n->start_line, n->instr);
		if (arg_decl(b, NULL, n, &b->global_args, true, NULL, err) < 0)
			return -1;
	}
	if (i == df->n_nodes)
		return kiln_err_set(err, 0, "%s: no FROM instruction (file with no build stage)", b->ctx.dockerfile_name);
	for (; i < df->n_nodes; i++) {
		if (strcmp(df->nodes[i].instr_lower, "from"))
			continue;
		b->stages = kiln_xrealloc(b->stages, (b->n_stages + 1) * sizeof(*b->stages));
		struct bstage *st = &b->stages[b->n_stages];
		memset(st, 0, sizeof(*st));
		st->index = (int)b->n_stages;
		st->from = &df->nodes[i];
		st->first = i + 1;
		size_t j = i + 1;
		while (j < df->n_nodes && strcmp(df->nodes[j].instr_lower, "from"))
			j++;
		st->last = j;
		st->n_steps = (int)(j - i);
		const struct kiln_df_node *f = st->from;
		if (f->args.n >= 3 && !strcasecmp(f->args.v[1], "as")) {
			st->name = kiln_xstrdup(f->args.v[2]);
			for (char *c = st->name; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			for (size_t k = 0; k < b->n_stages; k++)
				if (b->stages[k].name && !strcmp(b->stages[k].name, st->name))
					return kiln_err_set(err, 0, "%s:%d: duplicate stage name \"%s\"",
							    b->ctx.dockerfile_name, f->start_line, st->name);
			snprintf(st->label, sizeof(st->label), "%s", st->name);
		} else if (f->args.n != 1) {
			return kiln_err_set(err, 0, "%s:%d: FROM requires either one or three arguments",
					    b->ctx.dockerfile_name, f->start_line);
		} else {
			snprintf(st->label, sizeof(st->label), "stage-%zu", b->n_stages);
		}
		b->n_stages++;
	}
	return 0;
}

/* ---- outputs ---------------------------------------------------------- */

static int export_local(struct builder *b, struct kiln_image *img, const char *dest, struct kiln_err *err)
{
	int rootfd;
	if (image_root(b, img, &rootfd, err) < 0)
		return -1;
	if (kiln_mkdir_p(dest, 0755, err) < 0)
		return -1;
	int dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_err_set(err, errno, "opening %s", dest);
	struct kiln_copy_src src = {.rootfd = rootfd, .keep_owner = true};
	struct kiln_copy_opts co = {.dest = "/"};
	char *m[] = {".", NULL};
	int r = kiln_copy_run(&src, m, 1, dfd, &co, err);
	close(dfd);
	return r < 0 ? kiln_err_wrap(err, "exporting to %s", dest) : 0;
}

static void list_tree(int dfd, const char *rel, struct kiln_changes *ch)
{
	int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		KILN_AUTOFREE char *p = rel[0] ? kiln_xasprintf("%s/%s", rel, e->d_name) : kiln_xstrdup(e->d_name);
		kiln_changes_add(ch, p, KILN_CHANGE_ADD);
		struct stat st;
		if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
			int c = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (c >= 0) {
				list_tree(c, p, ch);
				close(c);
			}
		}
	}
	closedir(d);
}

/* --output type=tar: the final rootfs as one tar (the layer writer, no compression). */
static int export_tar(struct builder *b, struct kiln_image *img, const char *dest, struct kiln_err *err)
{
	int rootfd;
	if (image_root(b, img, &rootfd, err) < 0)
		return -1;
	struct kiln_changes ch = {0};
	list_tree(rootfd, "", &ch);
	struct kiln_outfile out;   /* "-", a device or fifo in place, a file atomically */
	if (kiln_outfile_open(&out, dest, 0644, err) < 0) {
		kiln_changes_free(&ch);
		return -1;
	}
	struct kiln_layer_write_opts lo = {.compression = KILN_COMPRESS_NONE, .source_date_epoch = b->sde};
	struct kiln_layer_info info;
	int r = kiln_layer_write(rootfd, &ch, &lo, out.fd, &info, err);
	if (r == 0)
		r = kiln_outfile_commit(&out, err);
	kiln_outfile_abort(&out);
	kiln_changes_free(&ch);
	return r < 0 ? kiln_err_wrap(err, "exporting to %s", dest) : 0;
}

/* --output type=oci|docker: an archive of the image, as `kiln save` writes it. */
static int export_archive(const char *id, const char *dest, struct kiln_err *err)
{
	if (!kiln_cmd_save)
		return kiln_err_set(err, ENOSYS, "this kiln cannot write image archives");
	char *argv[] = {"save", "-o", (char *)dest, (char *)id, NULL};
	fflush(stdout);
	if (kiln_cmd_save(4, argv) != 0)
		return kiln_err_set(err, 0, "exporting the image to %s failed", dest);
	return 0;
}

/* ---- entry ------------------------------------------------------------ */

static int check_linked(struct kiln_err *err)
{
	const struct {
		const void *fn;
		const char *what;
	} need[] = {
		{(const void *)kiln_parse, "the Dockerfile parser"},
		{(const void *)kiln_store_open, "the content store"},
		{(const void *)kiln_image_load, "the image model"},
		{(const void *)kiln_image_commit, "the image model"},
		{(const void *)kiln_snap_open, "snapshots"},
		{(const void *)kiln_snap_prepare, "snapshots"},
		{(const void *)kiln_snap_write_layer, "snapshots"},
		{(const void *)kiln_snap_apply_layer, "snapshots"},
		{(const void *)kiln_sandbox_run, "the sandbox"},
	};
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (!need[i].fn)
			return kiln_err_set(err, ENOSYS, "this kiln was built without %s", need[i].what);
	return 0;
}

static void builder_free(struct builder *b)
{
	if (b->active) {
		struct kiln_err e;
		kiln_snap_discard(b->active, &e);
		b->active = NULL;
	}
	for (size_t i = 0; i < b->n_views; i++) {
		if (b->views[i].fd >= 0)
			close(b->views[i].fd);
		if (b->views[i].snap)
			kiln_snap_release(b->views[i].snap);
	}
	free(b->views);
	for (size_t i = 0; i < b->n_extra; i++)
		kiln_image_free(b->extra_images[i]);
	free(b->extra_images);
	for (size_t i = 0; i < b->n_stages; i++) {
		kiln_image_free(b->stages[i].img);
		kiln_env_free(&b->stages[i].args);
		free(b->stages[i].name);
	}
	free(b->stages);
	kiln_env_free(&b->global_args);
	kiln_env_free(&b->build_args);
	kiln_strv_free(&b->used_args);
	if (b->sn)
		kiln_snap_close(b->sn);
	if (b->store)
		kiln_store_close(b->store);
	if (b->plan)
		kiln_plan_free(b->plan);
	if (b->df)
		kiln_df_free(b->df);
	kiln_context_close(&b->ctx);
	free(b->tmpdir);
	kiln_progress_destroy(&b->prog);
}

int kiln_build(const struct kiln_build_opts *o, char id_out[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (check_linked(err) < 0)
		return -1;
	if (o->platform && strcmp(o->platform, "linux/amd64") && strcmp(o->platform, "linux/x86_64") &&
	    strcmp(o->platform, "amd64")) {
		err->exit_code = 1;
		return kiln_err_set(err, 0, "platform \"%s\" is not supported: kiln builds linux/amd64 only", o->platform);
	}
	struct builder b;
	memset(&b, 0, sizeof(b));
	b.o = o;
	b.ctx.dirfd = -1;
	b.sde = -1;
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	if (sde && *sde)
		b.sde = strtoll(sde, NULL, 10);
	kiln_progress_init(&b.prog, o->progress, o->quiet, stderr);
	g_interrupted = 0;
	struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	int rc = 0;
	for (size_t i = 0; i < o->build_args.n; i++) {
		const char *a = o->build_args.v[i];
		const char *eq = strchr(a, '=');
		if (eq) {
			KILN_AUTOFREE char *k = kiln_xstrndup(a, (size_t)(eq - a));
			kiln_env_set(&b.build_args, k, eq + 1);
		} else if (getenv(a)) {
			kiln_env_set(&b.build_args, a, getenv(a));
		}
	}
	struct kiln_context_opts co = {.path = o->context, .dockerfile = o->dockerfile, .root = o->root, .stdin_fd = 0};
	rc = kiln_context_open(&co, &b.ctx, err);
	if (rc == 0) {
		kiln_progress_note(&b.prog, "[internal] load build definition from %s (%zu bytes)",
				   b.ctx.dockerfile_name, b.ctx.dockerfile_len);
		rc = kiln_parse(b.ctx.dockerfile, b.ctx.dockerfile_len, b.ctx.dockerfile_name, &b.df, err);
	}
	if (rc == 0 && kiln_df_check)
		rc = kiln_df_check(b.df, err);
	/* Every plan error (stage names, --target, --from cycles, mount specs,
	 * ...) is reported here, before anything is pulled or run. */
	if (rc == 0)
		rc = kiln_plan_build(b.df, &b.build_args, o->target, &b.plan, err);
	if (rc == 0)
		rc = split_stages(&b, err);
	if (rc == 0 && b.plan->n_stages != b.n_stages)
		rc = kiln_err_set(err, 0, "%s: internal error: the plan has %zu stages, the builder %zu",
				  b.ctx.dockerfile_name, b.plan->n_stages, b.n_stages);
	if (rc == 0)
		rc = kiln_store_open(o->root, KILN_STORE_RDWR, &b.store, err);
	if (rc == 0) {
		b.tmpdir = kiln_xasprintf("%s/tmp", o->root);
		rc = kiln_mkdir_p(b.tmpdir, 0700, err);
	}
	if (rc == 0) {
		KILN_AUTOFREE char *sd = kiln_xasprintf("%s/snapshots", o->root);
		rc = kiln_snap_open(sd, o->storage_driver, &b.sn, err);
	}
	struct bstage *target = NULL;
	int *order = NULL;
	size_t n_order = 0;
	if (rc == 0) {
		/* the stages the target needs, dependencies first, the target last;
		 * a stage whose expanded --from names another stage the plan did
		 * not see builds that one on demand (build_stage) */
		rc = kiln_plan_needed_stages(b.plan, -1, &order, &n_order, err);
		int t = b.plan->target;
		if (rc == 0 && (!n_order || t < 0 || (size_t)t >= b.n_stages))
			rc = kiln_err_set(err, 0, "%s: internal error: no target stage in the plan", b.ctx.dockerfile_name);
		if (rc == 0)
			target = &b.stages[t];
		for (size_t i = 0; rc == 0 && i < n_order; i++)
			if (order[i] >= 0 && (size_t)order[i] < b.n_stages)
				rc = build_stage(&b, &b.stages[order[i]], err);
		free(order);
	}
	if (rc == 0)
		rc = build_stage(&b, target, err);   /* already built: a no-op */
	if (rc == 0 && g_interrupted)
		rc = interrupted(err);
	if (rc == 0) {
		/* unused build args */
		struct kiln_buf unused = {0};
		for (size_t i = 0; i < b.build_args.n; i++) {
			bool used = false;
			for (size_t j = 0; j < b.used_args.n && !used; j++)
				used = !strcmp(b.used_args.v[j], b.build_args.v[i].key);
			if (!used && !kiln_env_get(&b.global_args, b.build_args.v[i].key))
				kiln_buf_printf(&unused, "%s%s", unused.len ? " " : "", b.build_args.v[i].key);
		}
		if (unused.len)
			kiln_progress_note(&b.prog, "[warning] one or more build-args [%s] were not consumed", unused.data);
		kiln_buf_free(&unused);
		for (size_t i = 0; i < o->labels.n; i++) {
			const char *eq = strchr(o->labels.v[i], '=');
			KILN_AUTOFREE char *k = eq ? kiln_xstrndup(o->labels.v[i], (size_t)(eq - o->labels.v[i]))
						   : kiln_xstrdup(o->labels.v[i]);
			kiln_image_label_set(target->img, k, eq ? eq + 1 : "");
		}
		if (!json_is_string(json_object_get(target->img->config, "created")))
			record_history_time(target->img);
	}
	char id[KILN_DIGEST_MAX] = "";
	if (rc == 0) {
		uint64_t t0 = kiln_now_ns();
		struct kiln_strv tags = {0};
		for (size_t i = 0; i < o->tags.n; i++)
			kiln_strv_push(&tags, o->tags.v[i]);
		strv_alloc(&tags);
		rc = kiln_image_commit(b.store, target->img, (const char *const *)tags.v, id, err);
		kiln_strv_free(&tags);
		if (rc == 0) {
			kiln_progress_note(&b.prog, "exporting to image");
			kiln_progress_info(&b.prog, "writing image %s", id);
			for (size_t i = 0; i < o->tags.n; i++) {
				struct kiln_err e;
				char *full = kiln_ref_normalize(o->tags.v[i], &e);
				kiln_progress_info(&b.prog, "naming to %s", full ? full : o->tags.v[i]);
				free(full);
			}
			kiln_progress_info(&b.prog, "DONE %.1fs", (double)(kiln_now_ns() - t0) / 1e9);
		}
	}
	for (size_t i = 0; rc == 0 && i < o->outputs.n; i++) {
		KILN_AUTOFREE char *spec = kiln_xstrdup(o->outputs.v[i]);
		const char *type = NULL, *dest = NULL;
		char *save = NULL;
		for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!strncmp(t, "type=", 5))
				type = t + 5;
			else if (!strncmp(t, "dest=", 5))
				dest = t + 5;
		}
		if (!type && dest)
			type = "local";
		if (!type && !dest && spec[0]) {
			type = "local";
			dest = spec;
		}
		if (type && !strcmp(type, "local") && dest)
			rc = export_local(&b, target->img, dest, err);
		else if (type && !strcmp(type, "tar") && dest)
			rc = export_tar(&b, target->img, dest, err);
		else if (type && (!strcmp(type, "oci") || !strcmp(type, "docker")) && dest)
			rc = export_archive(id, dest, err);
		else if (type && !strcmp(type, "image"))
			;
		else
			rc = kiln_err_set(err, 0, "unsupported --output \"%s\" (type=local|tar|oci|docker,dest=PATH or type=image)",
					  o->outputs.v[i]);
	}
	if (rc == 0 && o->iidfile)
		rc = kiln_outfile_write(o->iidfile, id, strlen(id), 0644, err);
	if (rc == 0 && id_out)
		snprintf(id_out, KILN_DIGEST_MAX, "%s", id);
	if (rc < 0 && g_interrupted && err->errnum != EINTR) {
		kiln_err_wrap(err, "build interrupted");
		err->exit_code = 128 + g_interrupted;
	}
	builder_free(&b);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}

void kiln_build_opts_free(struct kiln_build_opts *o)
{
	kiln_strv_free(&o->tags);
	kiln_strv_free(&o->build_args);
	kiln_strv_free(&o->labels);
	kiln_strv_free(&o->outputs);
	kiln_strv_free(&o->secrets);
}
