/* kiln — registry client: manifests, blobs (parallel, verified, resumable),
 * and whole-image pull and push on the store. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "layers/image.h"
#include "layers/registry_int.h"
#include "layers/store.h"

#define ACCEPT_MANIFESTS                                                                   \
	KILN_MT_OCI_INDEX ", " KILN_MT_DOCKER_LIST ", " KILN_MT_OCI_MANIFEST ", "          \
	KILN_MT_DOCKER_MANIFEST

#define MANIFEST_MAX (8u << 20)

static bool is_index_mt(const char *mt)
{
	return mt && (!strcmp(mt, KILN_MT_OCI_INDEX) || !strcmp(mt, KILN_MT_DOCKER_LIST));
}

static bool is_manifest_mt(const char *mt)
{
	return mt && (!strcmp(mt, KILN_MT_OCI_MANIFEST) || !strcmp(mt, KILN_MT_DOCKER_MANIFEST));
}

static void short_id(const char *digest, char out[16])
{
	const char *hex = strchr(digest, ':');
	hex = hex ? hex + 1 : digest;
	snprintf(out, 16, "%.12s", hex);
}

/* The media type of served manifest bytes: Content-Type without parameters,
 * checked against the JSON's own mediaType (CVE-2021-41190: they must agree). */
static int manifest_media_type(const char *ctype, const char *data, size_t len, char **out,
			       struct kiln_err *err)
{
	*out = NULL;
	char *ct = NULL;
	if (ctype) {
		size_t n = strcspn(ctype, ";");
		while (n && (ctype[n - 1] == ' ' || ctype[n - 1] == '\t'))
			n--;
		ct = kiln_xstrndup(ctype, n);
	}
	json_t *j = json_loadb(data, len, 0, NULL);
	const char *jm = json_string_value(json_object_get(j, "mediaType"));
	bool has_manifests = json_object_get(j, "manifests") != NULL;
	bool has_layers = json_object_get(j, "layers") != NULL || json_object_get(j, "config") != NULL;
	if (!json_is_object(j)) {
		json_decref(j);
		free(ct);
		return kiln_err_set(err, EINVAL, "the manifest is not a JSON object");
	}
	if (has_manifests && has_layers) {
		json_decref(j);
		free(ct);
		return kiln_err_set(err, EINVAL, "the manifest has both \"manifests\" and \"layers\" (ambiguous)");
	}
	const char *mt = NULL;
	if (ct && (is_index_mt(ct) || is_manifest_mt(ct)))
		mt = ct;
	if (jm && mt && strcmp(jm, mt)) {
		kiln_err_set(err, EINVAL, "the manifest's mediaType \"%s\" differs from its Content-Type \"%s\"", jm, mt);
		json_decref(j);
		free(ct);
		return -1;
	}
	if (!mt)
		mt = jm;
	if (!mt) {
		/* an OCI manifest without mediaType: decide by shape */
		mt = has_manifests ? KILN_MT_OCI_INDEX : KILN_MT_OCI_MANIFEST;
	}
	if (!is_index_mt(mt) && !is_manifest_mt(mt)) {
		kiln_err_set(err, EINVAL, "unsupported manifest media type \"%s\"", mt);
		json_decref(j);
		free(ct);
		return -1;
	}
	if ((is_index_mt(mt) && has_layers) || (is_manifest_mt(mt) && has_manifests)) {
		kiln_err_set(err, EINVAL, "the manifest's content does not match its media type \"%s\"", mt);
		json_decref(j);
		free(ct);
		return -1;
	}
	*out = kiln_xstrdup(mt);
	json_decref(j);
	free(ct);
	return 0;
}

static bool looks_like_digest(const char *s)
{
	return strchr(s, ':') != NULL;
}

int kiln_registry_manifest_get(struct kiln_registry *r, const char *repo, const char *reference,
			       char **data, size_t *len, char **media_type,
			       char digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	*data = NULL;
	*len = 0;
	if (media_type)
		*media_type = NULL;
	if (looks_like_digest(reference) && !kiln_digest_valid(reference))
		return kiln_err_set(err, EINVAL, "unsupported digest \"%s\" (sha256 only)", reference);
	if (reg_ensure_ping(r, err) < 0)
		return -1;
	struct reg_xfer x;
	reg_xfer_init(&x);
	KILN_AUTOFREE char *path = kiln_xasprintf("/v2/%s/manifests/%s", repo, reference);
	reg_xfer_set(r, &x, "GET", path);
	x.accept = kiln_xstrdup(ACCEPT_MANIFESTS);
	x.scope = reg_scope_repo(repo, false);
	x.resp_max = MANIFEST_MAX;
	int rc = reg_do(r, &x, true, err);
	if (rc == 0 && x.status != 200)
		rc = reg_error(&x, err, "%s/%s:%s", r->host, repo, reference);
	char dg[KILN_DIGEST_MAX];
	char *mt = NULL;
	if (rc == 0) {
		kiln_digest_data(x.resp.data ? x.resp.data : "", x.resp.len, dg);
		if (looks_like_digest(reference) && strcmp(dg, reference)) {
			rc = kiln_err_set(err, 0, "%s/%s@%s: the registry served a manifest with digest %s",
					  r->host, repo, reference, dg);
		} else if (x.docker_digest && kiln_str_has_prefix(x.docker_digest, "sha256:") &&
			   strcmp(x.docker_digest, dg)) {
			rc = kiln_err_set(err, 0, "%s/%s:%s: Docker-Content-Digest %s does not match the manifest's %s",
					  r->host, repo, reference, x.docker_digest, dg);
		} else if (manifest_media_type(x.ctype, x.resp.data ? x.resp.data : "", x.resp.len, &mt, err) < 0) {
			rc = kiln_err_wrap(err, "%s/%s:%s", r->host, repo, reference);
		}
	}
	if (rc == 0) {
		*len = x.resp.len;
		*data = kiln_buf_steal(&x.resp);
		memcpy(digest, dg, KILN_DIGEST_MAX);
		if (media_type)
			*media_type = mt;
		else
			free(mt);
	}
	reg_xfer_free(&x);
	return rc;
}

int kiln_registry_manifest_put(struct kiln_registry *r, const char *repo, const char *reference,
			       const char *media_type, const void *data, size_t len,
			       char digest_out[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (reg_ensure_ping(r, err) < 0)
		return -1;
	char dg[KILN_DIGEST_MAX];
	kiln_digest_data(data, len, dg);
	if (looks_like_digest(reference) && strcmp(reference, dg))
		return kiln_err_set(err, EINVAL, "pushing manifest %s under the different digest %s", dg, reference);
	struct reg_xfer x;
	reg_xfer_init(&x);
	KILN_AUTOFREE char *path = kiln_xasprintf("/v2/%s/manifests/%s", repo, reference);
	reg_xfer_set(r, &x, "PUT", path);
	x.scope = reg_scope_repo(repo, true);
	x.content_type = kiln_xstrdup(media_type);
	reg_xfer_body_mem(&x, data, len);
	int rc = reg_do(r, &x, true, err);
	if (rc == 0 && x.status != 201 && x.status != 200)
		rc = reg_error(&x, err, "pushing manifest %s to %s/%s:%s", dg, r->host, repo, reference);
	if (rc == 0 && x.docker_digest && kiln_str_has_prefix(x.docker_digest, "sha256:") &&
	    strcmp(x.docker_digest, dg))
		rc = kiln_err_set(err, 0, "pushing manifest to %s/%s: the registry computed digest %s, not %s",
				  r->host, repo, x.docker_digest, dg);
	if (rc == 0 && digest_out)
		memcpy(digest_out, dg, KILN_DIGEST_MAX);
	reg_xfer_free(&x);
	return rc;
}

int kiln_registry_blob_exists(struct kiln_registry *r, const char *repo, const char *digest,
			      bool *exists, int64_t *size, struct kiln_err *err)
{
	*exists = false;
	if (!kiln_digest_valid(digest))
		return kiln_err_set(err, EINVAL, "invalid digest \"%s\"", digest);
	if (reg_ensure_ping(r, err) < 0)
		return -1;
	struct reg_xfer x;
	reg_xfer_init(&x);
	KILN_AUTOFREE char *path = kiln_xasprintf("/v2/%s/blobs/%s", repo, digest);
	reg_xfer_set(r, &x, "HEAD", path);
	x.scope = reg_scope_repo(repo, false);
	int rc = reg_do(r, &x, true, err);
	if (rc == 0) {
		if (x.status == 200) {
			*exists = true;
			if (size)
				*size = x.clen;
		} else if (x.status != 404) {
			rc = reg_error(&x, err, "HEAD blob %s in %s/%s", digest, r->host, repo);
		}
	}
	reg_xfer_free(&x);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* Downloads                                                                   */

struct get_job {
	struct reg_job job;
	struct kiln_registry *r;
	struct kiln_store *store;
	const char *repo;
	const struct kiln_registry_blob *blob;
	struct kiln_blob_writer *w;
	int64_t have;
	char label[16];
	/* the commit (fsync, digest check, link into blobs/) runs in a thread
	 * so that it does not stall the other transfers */
	pthread_t thread;
	bool thread_started;
	int commit_done;             /* atomic */
	int commit_rc;
	struct kiln_err commit_err;
};

static void *get_commit_thread(void *arg)
{
	struct get_job *g = arg;
	struct kiln_blob_writer *w = g->w;
	g->w = NULL;
	g->commit_rc = kiln_store_blob_commit(w, g->blob->digest, NULL, NULL, &g->commit_err);
	__atomic_store_n(&g->commit_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void get_join(struct get_job *g)
{
	if (g->thread_started) {
		pthread_join(g->thread, NULL);
		g->thread_started = false;
	}
}

static int get_poll(struct reg_job *j, struct kiln_err *err)
{
	struct get_job *g = (struct get_job *)j;
	if (!__atomic_load_n(&g->commit_done, __ATOMIC_ACQUIRE))
		return 1;
	get_join(g);
	if (g->commit_rc < 0) {
		*err = g->commit_err;
		return kiln_err_wrap(err, "blob from %s/%s rejected", g->r->host, g->repo);
	}
	j->status_text = "Pull complete";
	return REG_JOB_DONE;
}

static int get_sink_begin(void *ctx, int64_t offset, struct kiln_err *err)
{
	struct get_job *g = ctx;
	if (offset == g->have)
		return 0;
	if (offset != 0)
		return kiln_err_set(err, 0, "blob %s: the registry resumed at byte %lld, not %lld",
				    g->blob->digest, (long long)offset, (long long)g->have);
	/* the server ignored Range: start over */
	kiln_store_blob_abort(g->w);
	g->w = NULL;
	g->have = 0;
	g->job.progress_base = 0;
	return kiln_store_blob_begin(g->store, &g->w, err);
}

static int get_sink(void *ctx, const void *data, size_t len, struct kiln_err *err)
{
	struct get_job *g = ctx;
	if (g->blob->size >= 0 && g->have + (int64_t)len > g->blob->size)
		return kiln_err_set(err, 0, "blob %s: the registry sent more than the %lld bytes the manifest gives",
				    g->blob->digest, (long long)g->blob->size);
	if (kiln_blob_write(g->w, data, len, err) < 0)
		return -1;
	g->have += (int64_t)len;
	return 0;
}

static void get_request(struct get_job *g)
{
	KILN_AUTOFREE char *path = kiln_xasprintf("/v2/%s/blobs/%s", g->repo, g->blob->digest);
	reg_xfer_set(g->r, &g->job.x, "GET", path);
	g->job.x.scope = reg_scope_repo(g->repo, false);
	g->job.x.sink = get_sink;
	g->job.x.sink_begin = get_sink_begin;
	g->job.x.sink_ctx = g;
	g->job.x.range_from = g->have;
	g->job.progress_base = g->have;
}

static int get_start(struct reg_job *j, struct kiln_err *err)
{
	struct get_job *g = (struct get_job *)j;
	if (kiln_store_blob_exists(g->store, g->blob->digest)) {
		j->status_text = "Already exists";
		return REG_JOB_DONE;
	}
	if (kiln_store_blob_begin(g->store, &g->w, err) < 0)
		return -1;
	g->have = 0;
	j->status_text = "Downloading";
	get_request(g);
	return REG_JOB_NEXT;
}

static int get_retry(struct reg_job *j, struct kiln_err *err)
{
	struct get_job *g = (struct get_job *)j;
	/* resume where the broken transfer stopped */
	get_request(g);
	return 0;
}

static int get_done(struct reg_job *j, struct kiln_err *err)
{
	struct get_job *g = (struct get_job *)j;
	struct reg_xfer *x = &j->x;
	/* 416 for a resume at the very end: everything had arrived already */
	bool complete = x->status == 416 && g->blob->size >= 0 && g->have == g->blob->size && x->range_from > 0;
	if (x->status != 200 && x->status != 206 && !complete)
		return reg_error(x, err, "GET blob %s from %s/%s", g->blob->digest, g->r->host, g->repo);
	if (g->blob->size >= 0 && g->have != g->blob->size) {
		/* the connection ended cleanly but short: resume */
		if (j->attempt < g->r->retries) {
			j->attempt++;
			get_request(g);
			return REG_JOB_NEXT;
		}
		return kiln_err_set(err, 0, "blob %s: got %lld of %lld bytes", g->blob->digest, (long long)g->have,
				    (long long)g->blob->size);
	}
	j->status_text = "Verifying";
	g->commit_done = 0;
	if (pthread_create(&g->thread, NULL, get_commit_thread, g) == 0) {
		g->thread_started = true;
		return REG_JOB_BACKGROUND;
	}
	/* no thread: commit here */
	get_commit_thread(g);
	return get_poll(j, err);
}

int kiln_registry_blob_get_to_store(struct kiln_registry *r, struct kiln_store *store,
				    const char *repo, const struct kiln_registry_blob *blobs,
				    size_t n, struct kiln_err *err)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!kiln_digest_valid(blobs[i].digest))
			return kiln_err_set(err, EINVAL, "invalid blob digest \"%s\"", blobs[i].digest);
	struct get_job *gs = kiln_xcalloc(n, sizeof(*gs));
	struct reg_job **jobs = kiln_xcalloc(n, sizeof(*jobs));
	size_t nj = 0;
	for (size_t i = 0; i < n; i++) {
		/* the same blob twice (a repeated layer) is fetched once */
		bool dup = false;
		for (size_t k = 0; k < i; k++)
			if (!strcmp(blobs[k].digest, blobs[i].digest))
				dup = true;
		if (dup)
			continue;
		struct get_job *g = &gs[nj];
		reg_xfer_init(&g->job.x);
		g->r = r;
		g->store = store;
		g->repo = repo;
		g->blob = &blobs[i];
		short_id(blobs[i].digest, g->label);
		g->job.start = get_start;
		g->job.done = get_done;
		g->job.retry = get_retry;
		g->job.poll = get_poll;
		g->job.label = g->label;
		g->job.total = blobs[i].size;
		g->job.show = !blobs[i].media_type || (strcmp(blobs[i].media_type, KILN_MT_OCI_CONFIG) &&
						       strcmp(blobs[i].media_type, KILN_MT_DOCKER_CONFIG));
		jobs[nj++] = &g->job;
	}
	int rc = reg_run_jobs(r, jobs, nj, err);
	for (size_t i = 0; i < nj; i++) {
		get_join(&gs[i]);
		kiln_store_blob_abort(gs[i].w);
		reg_xfer_free(&gs[i].job.x);
	}
	free(jobs);
	free(gs);
	return rc;
}

int kiln_registry_blob_get_mem(struct kiln_registry *r, const char *repo,
			       const struct kiln_registry_blob *blob, size_t max,
			       char **data, size_t *len, struct kiln_err *err)
{
	*data = NULL;
	*len = 0;
	if (!kiln_digest_valid(blob->digest))
		return kiln_err_set(err, EINVAL, "invalid blob digest \"%s\"", blob->digest);
	if (blob->size >= 0 && max && (uint64_t)blob->size > max)
		return kiln_err_set(err, EFBIG, "blob %s is larger than %zu bytes", blob->digest, max);
	if (reg_ensure_ping(r, err) < 0)
		return -1;
	struct reg_xfer x;
	reg_xfer_init(&x);
	KILN_AUTOFREE char *path = kiln_xasprintf("/v2/%s/blobs/%s", repo, blob->digest);
	reg_xfer_set(r, &x, "GET", path);
	x.scope = reg_scope_repo(repo, false);
	x.resp_max = max ? max : (64u << 20);
	int rc = reg_do(r, &x, true, err);
	if (rc == 0 && x.status != 200)
		rc = reg_error(&x, err, "GET blob %s from %s/%s", blob->digest, r->host, repo);
	if (rc == 0) {
		char dg[KILN_DIGEST_MAX];
		kiln_digest_data(x.resp.data ? x.resp.data : "", x.resp.len, dg);
		if (strcmp(dg, blob->digest))
			rc = kiln_err_set(err, 0, "blob from %s/%s rejected: digest mismatch: expected %s, got %s",
					  r->host, repo, blob->digest, dg);
		else if (blob->size >= 0 && (int64_t)x.resp.len != blob->size)
			rc = kiln_err_set(err, 0, "blob %s: %zu bytes, expected %lld", blob->digest, x.resp.len,
					  (long long)blob->size);
	}
	if (rc == 0) {
		*len = x.resp.len;
		*data = kiln_buf_steal(&x.resp);
		if (!*data)
			*data = kiln_xstrdup("");
	}
	reg_xfer_free(&x);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* Uploads                                                                     */

enum put_state { P_HEAD, P_MOUNT, P_POST, P_PUT_MONO, P_PATCH, P_PUT_FINAL, P_STATUS };

struct put_job {
	struct reg_job job;
	struct kiln_registry *r;
	struct kiln_store *store;
	const char *repo;
	const char *mount_from;
	struct kiln_registry_blob blob;
	/* memory source (put_mem) or a store blob */
	const void *mem;
	int fd;
	enum put_state st;
	char *location;
	int64_t off;          /* bytes the registry has */
	int64_t chunk_len;    /* of the PATCH in flight */
	int restarts;
	char label[16];
	char status[160];
};

/* Resolve a Location header against the registry base. */
static char *resolve_location(struct kiln_registry *r, const char *loc)
{
	if (strstr(loc, "://"))
		return kiln_xstrdup(loc);
	if (loc[0] == '/')
		return kiln_xasprintf("%s%s", r->base, loc);
	return kiln_xasprintf("%s/%s", r->base, loc);
}

static bool take_location(struct put_job *p)
{
	if (!p->job.x.location || !*p->job.x.location)
		return false;
	char *l = resolve_location(p->r, p->job.x.location);
	free(p->location);
	p->location = l;
	return true;
}

/* "0-N" (distribution's Range on uploads) → N+1 bytes held; -1 when absent. */
static int64_t upload_range_end(const char *h)
{
	if (!h)
		return -1;
	const char *s = h;
	if (!strncasecmp(s, "bytes=", 6))
		s += 6;
	const char *dash = strchr(s, '-');
	if (!dash)
		return -1;
	char *end;
	long long v = strtoll(dash + 1, &end, 10);
	if (end == dash + 1)
		return -1;
	return v + 1;
}

static void put_body(struct put_job *p, int64_t off, int64_t len)
{
	if (p->mem)
		reg_xfer_body_mem(&p->job.x, (const char *)p->mem + off, (size_t)len);
	else
		reg_xfer_body_fd(&p->job.x, p->fd, off, len);
	p->job.progress_base = off;
}

static char *digest_param(const char *location, const char *digest)
{
	/* the Location already carries ?_state=…: append with & */
	KILN_AUTOFREE char *esc = reg_url_escape(digest);
	return kiln_xasprintf("%s%cdigest=%s", location, strchr(location, '?') ? '&' : '?', esc);
}

static void put_set(struct put_job *p, enum put_state st)
{
	struct kiln_registry *r = p->r;
	struct reg_xfer *x = &p->job.x;
	p->st = st;
	KILN_AUTOFREE char *path = NULL;
	switch (st) {
	case P_HEAD:
		path = kiln_xasprintf("/v2/%s/blobs/%s", p->repo, p->blob.digest);
		reg_xfer_set(r, x, "HEAD", path);
		x->scope = reg_scope_repo(p->repo, true);
		p->job.status_text = "Preparing";
		break;
	case P_MOUNT: {
		KILN_AUTOFREE char *d = reg_url_escape(p->blob.digest);
		KILN_AUTOFREE char *f = reg_url_escape(p->mount_from);
		path = kiln_xasprintf("/v2/%s/blobs/uploads/?mount=%s&from=%s", p->repo, d, f);
		reg_xfer_set(r, x, "POST", path);
		/* a cross-repository mount needs pull on the source too */
		char *own = reg_scope_repo(p->repo, true);
		char *src = reg_scope_repo(p->mount_from, false);
		x->scope = kiln_xasprintf("%s %s", own, src);
		free(own);
		free(src);
		break;
	}
	case P_POST:
		path = kiln_xasprintf("/v2/%s/blobs/uploads/", p->repo);
		reg_xfer_set(r, x, "POST", path);
		x->scope = reg_scope_repo(p->repo, true);
		p->off = 0;
		break;
	case P_PUT_MONO: {
		char *u = digest_param(p->location, p->blob.digest);
		reg_xfer_set(r, x, "PUT", u);
		free(u);
		x->scope = reg_scope_repo(p->repo, true);
		put_body(p, 0, p->blob.size);
		p->job.status_text = "Pushing";
		break;
	}
	case P_PATCH: {
		reg_xfer_set(r, x, "PATCH", p->location);
		x->scope = reg_scope_repo(p->repo, true);
		int64_t len = p->blob.size - p->off;
		if (len > r->chunk_size)
			len = r->chunk_size;
		p->chunk_len = len;
		x->content_range = kiln_xasprintf("%lld-%lld", (long long)p->off, (long long)(p->off + len - 1));
		put_body(p, p->off, len);
		p->job.status_text = "Pushing";
		break;
	}
	case P_PUT_FINAL: {
		char *u = digest_param(p->location, p->blob.digest);
		reg_xfer_set(r, x, "PUT", u);
		free(u);
		x->scope = reg_scope_repo(p->repo, true);
		reg_xfer_body_mem(x, "", 0);
		p->job.progress_base = p->blob.size;
		break;
	}
	case P_STATUS:
		reg_xfer_set(r, x, "GET", p->location);
		x->follow = false;
		x->scope = reg_scope_repo(p->repo, true);
		break;
	}
}

static void put_upload(struct put_job *p)
{
	if (p->r->chunk_size > 0 && p->blob.size > p->r->chunk_size) {
		if (p->off >= p->blob.size)
			put_set(p, P_PUT_FINAL);
		else
			put_set(p, P_PATCH);
	} else {
		put_set(p, P_PUT_MONO);
	}
}

static int put_start(struct reg_job *j, struct kiln_err *err)
{
	struct put_job *p = (struct put_job *)j;
	if (!p->mem) {
		if (kiln_store_blob_open(p->store, p->blob.digest, &p->fd, err) < 0)
			return kiln_err_wrap(err, "pushing blob %s", p->blob.digest);
		struct stat st;
		if (fstat(p->fd, &st) < 0)
			return kiln_err_set(err, errno, "stat blob %s", p->blob.digest);
		if (p->blob.size < 0)
			p->blob.size = st.st_size;
		if (st.st_size != p->blob.size)
			return kiln_err_set(err, 0, "blob %s is %lld bytes in the store, the manifest says %lld",
					    p->blob.digest, (long long)st.st_size, (long long)p->blob.size);
		j->total = p->blob.size;
	}
	put_set(p, P_HEAD);
	return REG_JOB_NEXT;
}

/* The upload session is gone (404, or 400 BLOB_UPLOAD_* after a registry
 * restart with another secret)? */
static bool upload_lost(const struct reg_xfer *x)
{
	return x->status == 404 ||
	       (x->status == 400 && x->resp.data && strstr(x->resp.data, "BLOB_UPLOAD_"));
}

static int put_restart(struct put_job *p, struct kiln_err *err)
{
	if (++p->restarts > 3)
		return reg_error(&p->job.x, err, "pushing blob %s to %s/%s", p->blob.digest, p->r->host, p->repo);
	put_set(p, P_POST);
	return REG_JOB_NEXT;
}

static int put_done(struct reg_job *j, struct kiln_err *err)
{
	struct put_job *p = (struct put_job *)j;
	struct reg_xfer *x = &j->x;
	long s = x->status;
	switch (p->st) {
	case P_HEAD:
		if (s == 200) {
			j->status_text = "Layer already exists";
			return REG_JOB_DONE;
		}
		if (s != 404)
			return reg_error(x, err, "HEAD blob %s in %s/%s", p->blob.digest, p->r->host, p->repo);
		if (p->mount_from && *p->mount_from && strcmp(p->mount_from, p->repo))
			put_set(p, P_MOUNT);
		else
			put_set(p, P_POST);
		return REG_JOB_NEXT;
	case P_MOUNT:
		if (s == 201) {
			snprintf(p->status, sizeof(p->status), "Mounted from %s", p->mount_from);
			j->status_text = p->status;
			return REG_JOB_DONE;
		}
		if (s == 202 && take_location(p)) {
			p->off = 0;
			put_upload(p);
			return REG_JOB_NEXT;
		}
		/* no mount (no access to the source): upload normally */
		put_set(p, P_POST);
		return REG_JOB_NEXT;
	case P_POST:
		if (s != 202 || !take_location(p))
			return reg_error(x, err, "starting the upload of blob %s to %s/%s", p->blob.digest,
					 p->r->host, p->repo);
		p->off = 0;
		put_upload(p);
		return REG_JOB_NEXT;
	case P_PUT_MONO:
	case P_PUT_FINAL:
		if (s == 201 || s == 204) {
			if (x->docker_digest && kiln_str_has_prefix(x->docker_digest, "sha256:") &&
			    strcmp(x->docker_digest, p->blob.digest))
				return kiln_err_set(err, 0, "pushing blob %s: the registry stored %s", p->blob.digest,
						    x->docker_digest);
			j->status_text = "Pushed";
			return REG_JOB_DONE;
		}
		if (upload_lost(x))
			return put_restart(p, err);
		return reg_error(x, err, "pushing blob %s to %s/%s", p->blob.digest, p->r->host, p->repo);
	case P_PATCH:
		if (s == 202) {
			take_location(p);
			int64_t have = upload_range_end(x->range_hdr);
			p->off = have >= 0 ? have : p->off + p->chunk_len;
			put_upload(p);
			return REG_JOB_NEXT;
		}
		if (s == 416 && p->location) {
			put_set(p, P_STATUS);
			return REG_JOB_NEXT;
		}
		if (upload_lost(x))
			return put_restart(p, err);
		return reg_error(x, err, "pushing blob %s to %s/%s", p->blob.digest, p->r->host, p->repo);
	case P_STATUS:
		if (s == 204 || s == 202) {
			take_location(p);
			int64_t have = upload_range_end(x->range_hdr);
			p->off = have >= 0 ? have : 0;
			if (p->off > p->blob.size)
				return put_restart(p, err);
			put_upload(p);
			if (p->st == P_PUT_MONO) {
				/* a monolithic upload cannot continue a session with data */
				if (p->off > 0)
					put_set(p, P_POST);
			}
			return REG_JOB_NEXT;
		}
		return put_restart(p, err);
	}
	return kiln_err_set(err, 0, "internal: bad upload state");
}

static int put_retry(struct reg_job *j, struct kiln_err *err)
{
	struct put_job *p = (struct put_job *)j;
	switch (p->st) {
	case P_PUT_MONO:
		/* the session may hold part of the body: start a new one */
		put_set(p, P_POST);
		break;
	case P_PATCH:
	case P_PUT_FINAL:
		/* ask the registry how much it has, continue from there */
		put_set(p, P_STATUS);
		break;
	default:
		/* HEAD, POST, mount and status requests are repeated as they are */
		put_set(p, p->st);
		break;
	}
	return 0;
}

static void put_job_init(struct put_job *p, struct kiln_registry *r, const char *repo,
			 const char *mount_from)
{
	reg_xfer_init(&p->job.x);
	p->r = r;
	p->repo = repo;
	p->mount_from = mount_from;
	p->fd = -1;
	p->job.start = put_start;
	p->job.done = put_done;
	p->job.retry = put_retry;
	p->job.label = p->label;
}

static void put_job_free(struct put_job *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	free(p->location);
	p->location = NULL;
	reg_xfer_free(&p->job.x);
}

int kiln_registry_blob_put(struct kiln_registry *r, struct kiln_store *store, const char *repo,
			   const struct kiln_registry_blob *blobs, size_t n,
			   const char *mount_from, struct kiln_err *err)
{
	if (n == 0)
		return 0;
	if (!mount_from)
		mount_from = r->opts.mount_from;
	struct put_job *ps = kiln_xcalloc(n, sizeof(*ps));
	struct reg_job **jobs = kiln_xcalloc(n, sizeof(*jobs));
	size_t nj = 0;
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (!kiln_digest_valid(blobs[i].digest)) {
			rc = kiln_err_set(err, EINVAL, "invalid blob digest \"%s\"", blobs[i].digest);
			break;
		}
		bool dup = false;
		for (size_t k = 0; k < i; k++)
			if (!strcmp(blobs[k].digest, blobs[i].digest))
				dup = true;
		if (dup)
			continue;
		struct put_job *p = &ps[nj];
		put_job_init(p, r, repo, mount_from);
		p->store = store;
		p->blob = blobs[i];
		short_id(blobs[i].digest, p->label);
		p->job.total = blobs[i].size;
		p->job.show = !blobs[i].media_type || (strcmp(blobs[i].media_type, KILN_MT_OCI_CONFIG) &&
						       strcmp(blobs[i].media_type, KILN_MT_DOCKER_CONFIG));
		jobs[nj++] = &p->job;
	}
	if (rc == 0)
		rc = reg_run_jobs(r, jobs, nj, err);
	for (size_t i = 0; i < nj; i++)
		put_job_free(&ps[i]);
	free(jobs);
	free(ps);
	return rc;
}

int kiln_registry_blob_put_mem(struct kiln_registry *r, const char *repo, const void *data,
			       size_t len, char digest_out[KILN_DIGEST_MAX], struct kiln_err *err)
{
	struct put_job p = {0};
	put_job_init(&p, r, repo, NULL);
	p.mem = data ? data : "";
	kiln_digest_data(p.mem, len, p.blob.digest);
	p.blob.size = (int64_t)len;
	short_id(p.blob.digest, p.label);
	p.job.total = (int64_t)len;
	struct reg_job *jobs[1] = {&p.job};
	int rc = reg_run_jobs(r, jobs, 1, err);
	if (rc == 0 && digest_out)
		memcpy(digest_out, p.blob.digest, KILN_DIGEST_MAX);
	put_job_free(&p);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* Artifacts                                                                   */

static int manifest_blobs(json_t *man, struct kiln_registry_blob **out, size_t *n, struct kiln_err *err);

int kiln_registry_artifact_push(struct kiln_registry *r, struct kiln_store *store, const char *repo,
				const char *reference, const char *config_media_type,
				const void *config, size_t config_len,
				const struct kiln_registry_blob *blobs, size_t n, json_t *annotations,
				char out_digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	if (!config_media_type || !*config_media_type)
		return kiln_err_set(err, EINVAL, "artifact push: no config media type");
	if (n && kiln_registry_blob_put(r, store, repo, blobs, n, NULL, err) < 0)
		return -1;
	char cdg[KILN_DIGEST_MAX];
	if (kiln_registry_blob_put_mem(r, repo, config, config_len, cdg, err) < 0)
		return -1;
	json_t *layers = json_array();
	for (size_t i = 0; i < n; i++) {
		int64_t size = blobs[i].size;
		if (size < 0 && kiln_store_blob_size(store, blobs[i].digest, &size, err) < 0) {
			json_decref(layers);
			return -1;
		}
		json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType",
							blobs[i].media_type ? blobs[i].media_type
									    : KILN_MT_LAYER_GZIP,
							"digest", blobs[i].digest, "size", (json_int_t)size));
	}
	json_t *m = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
			      KILN_MT_OCI_MANIFEST, "config", "mediaType", config_media_type, "digest", cdg,
			      "size", (json_int_t)config_len, "layers", layers);
	if (annotations && json_is_object(annotations))
		json_object_set(m, "annotations", annotations);
	char *text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(m);
	if (!text)
		return kiln_err_set(err, ENOMEM, "encoding the artifact manifest");
	int rc = kiln_registry_manifest_put(r, repo, reference, KILN_MT_OCI_MANIFEST, text, strlen(text),
					    out_digest, err);
	free(text);
	return rc;
}

int kiln_registry_artifact_pull(struct kiln_registry *r, struct kiln_store *store, const char *repo,
				const char *reference, json_t **manifest, char **config,
				size_t *config_len, struct kiln_err *err)
{
	*manifest = NULL;
	*config = NULL;
	*config_len = 0;
	char *data = NULL, *mt = NULL;
	size_t len = 0;
	char dg[KILN_DIGEST_MAX];
	if (kiln_registry_manifest_get(r, repo, reference, &data, &len, &mt, dg, err) < 0)
		return -1;
	int rc = -1;
	json_t *m = NULL;
	struct kiln_registry_blob *blobs = NULL;
	size_t nb = 0;
	if (!is_manifest_mt(mt)) {
		kiln_err_set(err, EINVAL, "%s/%s:%s is a %s, not a manifest", r->host, repo, reference, mt);
		goto out;
	}
	m = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(m) || !json_is_array(json_object_get(m, "layers"))) {
		kiln_err_set(err, EINVAL, "%s/%s:%s: not a manifest with layers", r->host, repo, reference);
		goto out;
	}
	if (manifest_blobs(m, &blobs, &nb, err) < 0)
		goto out;
	if (kiln_registry_blob_get_mem(r, repo, &blobs[0], 16u << 20, config, config_len, err) < 0)
		goto out;
	if (nb > 1 && kiln_registry_blob_get_to_store(r, store, repo, blobs + 1, nb - 1, err) < 0)
		goto out;
	*manifest = m;
	m = NULL;
	rc = 0;
out:
	if (rc < 0) {
		free(*config);
		*config = NULL;
		*config_len = 0;
	}
	json_decref(m);
	free(blobs);
	free(data);
	free(mt);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* Whole images                                                                */

static void say(const struct kiln_registry_opts *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void say(const struct kiln_registry_opts *o, const char *fmt, ...)
{
	if (!o || !o->progress)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(o->progress, fmt, ap);
	va_end(ap);
	fflush(o->progress);
}

struct platform {
	char os[32], arch[32], variant[32];
};

static int platform_parse(const char *s, struct platform *p, struct kiln_err *err)
{
	memset(p, 0, sizeof(*p));
	if (!s || !*s) {
		snprintf(p->os, sizeof(p->os), "linux");
		snprintf(p->arch, sizeof(p->arch), "%s", kiln_host_arch());
		return 0;
	}
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", s);
	char *save = NULL;
	char *a = strtok_r(buf, "/", &save);
	char *b = a ? strtok_r(NULL, "/", &save) : NULL;
	char *c = b ? strtok_r(NULL, "/", &save) : NULL;
	if (!a || !b || strtok_r(NULL, "/", &save) || strlen(a) >= 32 || strlen(b) >= 32 ||
	    (c && strlen(c) >= 32))
		return kiln_err_set(err, EINVAL, "invalid platform \"%s\" (want os/arch[/variant])", s);
	snprintf(p->os, sizeof(p->os), "%s", a);
	snprintf(p->arch, sizeof(p->arch), "%s", b);
	if (c)
		snprintf(p->variant, sizeof(p->variant), "%s", c);
	return 0;
}

/* Pick the manifest of an index for the platform (attestations skipped). */
static int index_select(json_t *idx, const struct platform *want, struct kiln_desc *out,
			struct kiln_err *err)
{
	json_t *ms = json_object_get(idx, "manifests");
	size_t i;
	json_t *m;
	int best = -1;
	json_array_foreach(ms, i, m) {
		json_t *ann = json_object_get(m, "annotations");
		const char *rt = json_string_value(json_object_get(ann, "vnd.docker.reference.type"));
		if (rt && !strcmp(rt, "attestation-manifest"))
			continue;
		json_t *pl = json_object_get(m, "platform");
		const char *os = json_string_value(json_object_get(pl, "os"));
		const char *arch = json_string_value(json_object_get(pl, "architecture"));
		const char *variant = json_string_value(json_object_get(pl, "variant"));
		if (!os || !arch || strcmp(os, want->os) || strcmp(arch, want->arch))
			continue;
		if (want->variant[0] && (!variant || strcmp(variant, want->variant)))
			continue;
		const char *mt = json_string_value(json_object_get(m, "mediaType"));
		if (!is_manifest_mt(mt))
			continue;
		best = (int)i;
		break;
	}
	if (best < 0)
		return kiln_err_set(err, ENOENT, "no matching manifest for %s/%s%s%s in the manifest list entries",
				    want->os, want->arch, want->variant[0] ? "/" : "", want->variant);
	return kiln_desc_from_json(json_array_get(ms, (size_t)best), out, err);
}

/* Config and layers of a parsed manifest as blobs to move. */
static int manifest_blobs(json_t *man, struct kiln_registry_blob **out, size_t *n, struct kiln_err *err)
{
	json_t *layers = json_object_get(man, "layers");
	size_t nl = json_array_size(layers);
	struct kiln_registry_blob *v = kiln_xcalloc(nl + 1, sizeof(*v));
	struct kiln_desc d;
	if (kiln_desc_from_json(json_object_get(man, "config"), &d, err) < 0) {
		free(v);
		return -1;
	}
	/* media_type pointers must outlive the call: point into the JSON */
	snprintf(v[0].digest, sizeof(v[0].digest), "%s", d.digest);
	v[0].size = d.size;
	v[0].media_type = json_string_value(json_object_get(json_object_get(man, "config"), "mediaType"));
	for (size_t i = 0; i < nl; i++) {
		json_t *l = json_array_get(layers, i);
		if (kiln_desc_from_json(l, &d, err) < 0) {
			free(v);
			return -1;
		}
		snprintf(v[i + 1].digest, sizeof(v[i + 1].digest), "%s", d.digest);
		v[i + 1].size = d.size;
		v[i + 1].media_type = json_string_value(json_object_get(l, "mediaType"));
	}
	*out = v;
	*n = nl + 1;
	return 0;
}

/* The config must be an object whose rootfs.diff_ids match the layers. */
static int check_config(struct kiln_store *store, const struct kiln_registry_blob *blobs, size_t nb,
			struct kiln_err *err)
{
	char *data = NULL;
	size_t len = 0;
	if (kiln_store_blob_read(store, blobs[0].digest, 16u << 20, &data, &len, err) < 0)
		return -1;
	json_t *cfg = json_loadb(data, len, 0, NULL);
	free(data);
	json_t *ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
	int rc = 0;
	if (!json_is_object(cfg))
		rc = kiln_err_set(err, EINVAL, "image config %s is not a JSON object", blobs[0].digest);
	else if (!json_is_array(ids) || json_array_size(ids) != nb - 1)
		rc = kiln_err_set(err, EINVAL, "image config %s lists %zu diff_ids for %zu layers", blobs[0].digest,
				  json_array_size(ids), nb - 1);
	json_decref(cfg);
	return rc;
}

int kiln_registry_pull(struct kiln_store *store, const char *ref,
		       const struct kiln_registry_opts *opts,
		       char out_manifest_digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	struct kiln_registry_opts o = {0};
	if (opts)
		o = *opts;
	struct kiln_ref rf;
	if (kiln_ref_parse(ref, &rf, err) < 0)
		return -1;
	struct platform want;
	if (platform_parse(o.platform, &want, err) < 0) {
		kiln_ref_free(&rf);
		return -1;
	}
	KILN_AUTOFREE char *full = kiln_ref_string(&rf);
	KILN_AUTOFREE char *familiar = kiln_ref_familiar(&rf);
	struct kiln_registry *r = NULL;
	char *top = NULL, *man = NULL, *top_mt = NULL, *man_mt = NULL;
	size_t top_len = 0, man_len = 0;
	char top_dg[KILN_DIGEST_MAX] = "", man_dg[KILN_DIGEST_MAX] = "";
	json_t *idx = NULL, *mj = NULL;
	struct kiln_registry_blob *blobs = NULL;
	size_t nb = 0;
	int rc = -1;
	const char *reference = rf.digest ? rf.digest : (rf.tag ? rf.tag : "latest");

	if (kiln_registry_open(rf.domain, &o, &r, err) < 0)
		goto out;
	say(&o, "%s: Pulling from %s\n", rf.tag && !rf.digest ? rf.tag : reference, rf.path);
	if (kiln_registry_manifest_get(r, rf.path, reference, &top, &top_len, &top_mt, top_dg, err) < 0)
		goto out;
	if (is_index_mt(top_mt)) {
		if (kiln_index_parse(top, top_len, &idx, err) < 0) {
			kiln_err_wrap(err, "%s", full);
			goto out;
		}
		struct kiln_desc d;
		if (index_select(idx, &want, &d, err) < 0) {
			kiln_err_wrap(err, "%s", full);
			goto out;
		}
		if (kiln_registry_manifest_get(r, rf.path, d.digest, &man, &man_len, &man_mt, man_dg, err) < 0)
			goto out;
		if ((int64_t)man_len != d.size) {
			kiln_err_set(err, 0, "%s: manifest %s is %zu bytes, the index says %lld", full, d.digest,
				     man_len, (long long)d.size);
			goto out;
		}
		if (!is_manifest_mt(man_mt) || strcmp(man_mt, d.media_type)) {
			kiln_err_set(err, 0, "%s: manifest %s has media type %s, the index says %s", full,
				     d.digest, man_mt ? man_mt : "?", d.media_type);
			goto out;
		}
	} else {
		man = top;
		man_len = top_len;
		man_mt = top_mt;
		memcpy(man_dg, top_dg, sizeof(man_dg));
		top = NULL;
		top_mt = NULL;
	}
	if (kiln_manifest_parse(man, man_len, man_mt, &mj, err) < 0) {
		kiln_err_wrap(err, "%s", full);
		goto out;
	}
	if (manifest_blobs(mj, &blobs, &nb, err) < 0)
		goto out;
	if (!blobs[0].media_type || (strcmp(blobs[0].media_type, KILN_MT_OCI_CONFIG) &&
				     strcmp(blobs[0].media_type, KILN_MT_DOCKER_CONFIG))) {
		kiln_err_set(err, EINVAL, "%s: not a container image (config media type \"%s\")", full,
			     blobs[0].media_type ? blobs[0].media_type : "");
		goto out;
	}
	if (kiln_registry_blob_get_to_store(r, store, rf.path, blobs, nb, err) < 0) {
		kiln_err_wrap(err, "pulling %s", familiar);
		goto out;
	}
	if (check_config(store, blobs, nb, err) < 0) {
		kiln_err_wrap(err, "%s", full);
		goto out;
	}
	/* the manifests last, byte for byte, so a store never names missing blobs */
	char stored[KILN_DIGEST_MAX];
	if (top) {
		if (kiln_store_blob_put(store, top, top_len, stored, err) < 0)
			goto out;
	}
	if (kiln_store_blob_put(store, man, man_len, stored, err) < 0)
		goto out;
	struct kiln_desc md = {0};
	snprintf(md.media_type, sizeof(md.media_type), "%s", man_mt);
	memcpy(md.digest, man_dg, sizeof(md.digest));
	md.size = (int64_t)man_len;
	struct kiln_desc old;
	struct kiln_err e2 = {0};
	bool same = kiln_store_tag_get(store, full, &old, &e2) == 0 && !strcmp(old.digest, md.digest);
	if (kiln_store_tag_set(store, full, &md, err) < 0)
		goto out;
	say(&o, "Digest: %s\n", top_dg);
	say(&o, "Status: %s for %s\n", same ? "Image is up to date" : "Downloaded newer image", familiar);
	if (out_manifest_digest)
		memcpy(out_manifest_digest, top ? top_dg : man_dg, KILN_DIGEST_MAX);
	rc = 0;
out:
	json_decref(idx);
	json_decref(mj);
	free(blobs);
	free(top);
	free(top_mt);
	free(man);
	free(man_mt);
	kiln_registry_close(r);
	kiln_ref_free(&rf);
	return rc;
}

/* A repository on the same registry that already has this image (another
 * tag in the store): blobs can be mounted from it. */
static char *find_mount_source(struct kiln_store *store, const struct kiln_desc *manifest,
			       const struct kiln_ref *dest)
{
	struct kiln_tag *tags = NULL;
	size_t n = 0;
	struct kiln_err e = {0};
	if (kiln_store_tag_list(store, &tags, &n, &e) < 0)
		return NULL;
	char *src = NULL;
	for (size_t i = 0; i < n && !src; i++) {
		if (!tags[i].ref || strcmp(tags[i].desc.digest, manifest->digest))
			continue;
		struct kiln_ref t;
		if (kiln_ref_parse(tags[i].ref, &t, &e) < 0)
			continue;
		if (!strcmp(t.domain, dest->domain) && strcmp(t.path, dest->path))
			src = kiln_xstrdup(t.path);
		kiln_ref_free(&t);
	}
	kiln_store_tags_free(tags, n);
	return src;
}

static int push_manifest(struct kiln_registry *r, struct kiln_store *store, const char *repo,
			 const struct kiln_desc *md, const char *reference, const char *mount_from,
			 char out_digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	char *data = NULL;
	size_t len = 0;
	json_t *mj = NULL;
	struct kiln_registry_blob *blobs = NULL;
	size_t nb = 0;
	int rc = -1;
	if (kiln_store_blob_read(store, md->digest, MANIFEST_MAX, &data, &len, err) < 0)
		goto out;
	if (kiln_manifest_parse(data, len, md->media_type, &mj, err) < 0)
		goto out;
	if (manifest_blobs(mj, &blobs, &nb, err) < 0)
		goto out;
	if (kiln_registry_blob_put(r, store, repo, blobs, nb, mount_from, err) < 0)
		goto out;
	if (kiln_registry_manifest_put(r, repo, reference, md->media_type, data, len, out_digest, err) < 0)
		goto out;
	rc = 0;
out:
	json_decref(mj);
	free(blobs);
	free(data);
	return rc;
}

int kiln_registry_push(struct kiln_store *store, const char *name, const char *dest,
		       const struct kiln_registry_opts *opts,
		       char out_digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	struct kiln_registry_opts o = {0};
	if (opts)
		o = *opts;
	struct kiln_desc md;
	char id[KILN_DIGEST_MAX];
	struct kiln_err e2 = {0};
	if (kiln_store_tag_get(store, name, &md, &e2) < 0) {
		if (kiln_image_resolve(store, name, &md, id, err) < 0)
			return kiln_err_wrap(err, "push %s", name);
	}
	struct kiln_ref rf;
	if (kiln_ref_parse(dest ? dest : name, &rf, err) < 0)
		return -1;
	KILN_AUTOFREE char *familiar = kiln_ref_familiar(&rf);
	struct kiln_registry *r = NULL;
	int rc = -1;
	char *mount_src = NULL;
	char dg[KILN_DIGEST_MAX] = "";
	const char *reference = rf.tag ? rf.tag : (rf.digest ? rf.digest : "latest");
	if (kiln_registry_open(rf.domain, &o, &r, err) < 0)
		goto out;
	if (!o.mount_from)
		mount_src = find_mount_source(store, &md, &rf);
	say(&o, "The push refers to repository [%s/%s]\n", rf.domain, rf.path);
	if (is_index_mt(md.media_type)) {
		/* push every platform manifest the store has, then the index */
		char *data = NULL;
		size_t len = 0;
		json_t *idx = NULL;
		if (kiln_store_blob_read(store, md.digest, MANIFEST_MAX, &data, &len, err) < 0)
			goto out;
		if (kiln_index_parse(data, len, &idx, err) < 0) {
			free(data);
			goto out;
		}
		json_t *ms = json_object_get(idx, "manifests");
		size_t i;
		json_t *m;
		int prc = 0;
		json_array_foreach(ms, i, m) {
			struct kiln_desc cd;
			if (kiln_desc_from_json(m, &cd, err) < 0) {
				prc = -1;
				break;
			}
			if (!kiln_store_blob_exists(store, cd.digest)) {
				prc = kiln_err_set(err, ENOENT, "push %s: the index names manifest %s (%s) which is not in the store",
						   name, cd.digest, cd.media_type);
				break;
			}
			if (!is_manifest_mt(cd.media_type))
				continue;
			if (push_manifest(r, store, rf.path, &cd, cd.digest, mount_src, NULL, err) < 0) {
				prc = -1;
				break;
			}
		}
		json_decref(idx);
		if (prc == 0 && kiln_registry_manifest_put(r, rf.path, reference, md.media_type, data, len, dg, err) < 0)
			prc = -1;
		free(data);
		if (prc < 0)
			goto out;
	} else {
		if (push_manifest(r, store, rf.path, &md, reference, mount_src, dg, err) < 0)
			goto out;
	}
	say(&o, "%s: digest: %s size: %lld\n", reference, dg, (long long)md.size);
	if (out_digest)
		memcpy(out_digest, dg, KILN_DIGEST_MAX);
	rc = 0;
out:
	if (rc < 0 && err && !strstr(err->msg, familiar))
		kiln_err_wrap(err, "push %s", familiar);
	free(mount_src);
	kiln_registry_close(r);
	kiln_ref_free(&rf);
	return rc;
}
