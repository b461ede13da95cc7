/* kiln — the content store (see store.h for the layout and the rules). */
#include "layers/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layers/image.h"

#define INDEX_JSON "index.json"
#define OCI_LAYOUT "oci-layout"
#define OCI_LAYOUT_CONTENT "{\"imageLayoutVersion\":\"1.0.0\"}"
#define BLOB_READ_DEFAULT_MAX (64u << 20)

struct kiln_store {
	char *root;
	int dirfd;          /* ROOT, O_RDONLY|O_DIRECTORY */
	int blobs_fd;       /* ROOT/blobs/sha256 */
	int tmp_fd;         /* ROOT/tmp (-1 when read-only and missing) */
	int lock_fd;        /* ROOT/lock, held shared by RDWR handles; -1 for RDONLY */
	int index_lock_fd;  /* ROOT/index.lock while write-locked, else -1 */
	int wlock_depth;
	int xlock_depth;    /* kiln_store_lock_exclusive nesting */
	bool rdwr;
};

struct kiln_blob_writer {
	struct kiln_store *s;
	int fd;
	bool tmpfile;        /* O_TMPFILE (no name until linked) */
	char name[64];       /* name in tmp/ when !tmpfile */
	EVP_MD_CTX *ctx;
	int64_t size;
	bool fd_given;       /* raw fd handed out: rehash at commit */
};

/* ---------------------------------------------------------------- digests */

bool kiln_digest_valid(const char *s)
{
	if (!s || strncmp(s, "sha256:", 7))
		return false;
	const char *h = s + 7;
	size_t i;
	for (i = 0; h[i]; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return false;
	return i == 64;
}

static void hex_of(const unsigned char *md, unsigned len, char out[KILN_DIGEST_MAX])
{
	static const char hx[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < len && i < 32; i++) {
		out[7 + 2 * i] = hx[md[i] >> 4];
		out[8 + 2 * i] = hx[md[i] & 15];
	}
	out[7 + 64] = '\0';
}

void kiln_digest_data(const void *data, size_t len, char out[KILN_DIGEST_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	hex_of(md, mdlen, out);
}

static int digest_fd_at(int fd, off_t off, bool use_pread, char out[KILN_DIGEST_MAX], int64_t *size,
			struct kiln_err *err)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return kiln_err_set(err, ENOMEM, "sha256 init");
	}
	static __thread unsigned char buf[1 << 17];
	int64_t total = 0;
	for (;;) {
		ssize_t r = use_pread ? pread(fd, buf, sizeof(buf), off + total) : read(fd, buf, sizeof(buf));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			EVP_MD_CTX_free(ctx);
			return kiln_err_set(err, e, "read for digest");
		}
		if (r == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)r);
		total += r;
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	hex_of(md, mdlen, out);
	if (size)
		*size = total;
	return 0;
}

int kiln_digest_fd(int fd, char out[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err)
{
	return digest_fd_at(fd, 0, false, out, size, err);
}

/* ---------------------------------------------------------------- open/close */

static int mkdirat_p(int dirfd, const char *name, mode_t mode, struct kiln_err *err)
{
	if (mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
		return kiln_err_set(err, errno, "create %s", name);
	return 0;
}

static int fsync_dirfd(int fd)
{
	return fsync(fd);
}

/* Write ROOT/name atomically through tmp/ (same filesystem). */
static int store_write_meta(struct kiln_store *s, const char *name, const char *data, size_t len,
			    struct kiln_err *err)
{
	char tmpname[96];
	static unsigned counter;
	snprintf(tmpname, sizeof(tmpname), "meta-%d-%u-%s", (int)getpid(),
		 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), name);
	int fd = openat(s->tmp_fd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return kiln_err_set(err, errno, "create %s/tmp/%s", s->root, tmpname);
	if (kiln_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		unlinkat(s->tmp_fd, tmpname, 0);
		return kiln_err_set(err, e, "write %s/%s", s->root, name);
	}
	close(fd);
	if (renameat(s->tmp_fd, tmpname, s->dirfd, name) < 0) {
		int e = errno;
		unlinkat(s->tmp_fd, tmpname, 0);
		return kiln_err_set(err, e, "rename into %s/%s", s->root, name);
	}
	fsync_dirfd(s->dirfd);
	return 0;
}

static void clean_tmp(struct kiln_store *s)
{
	if (s->tmp_fd < 0)
		return;
	int fd = openat(s->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	struct dirent *de;
	struct kiln_strv names = {0};
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			kiln_strv_push(&names, de->d_name);
	closedir(d);
	for (size_t i = 0; i < names.n; i++) {
		struct kiln_err e2 = {0};
		kiln_rm_rf_at(s->tmp_fd, names.v[i], &e2);
	}
	kiln_strv_free(&names);
}

static const char *const store_subdirs[] = {"blobs", "blobs/sha256", "tmp", "snapshots", "cache", "containers"};

int kiln_store_open(const char *root, unsigned flags, struct kiln_store **out, struct kiln_err *err)
{
	*out = NULL;
	bool rdwr = flags & KILN_STORE_RDWR;
	if (!root || !*root)
		return kiln_err_set(err, 0, "no store root given");
	if (rdwr && kiln_mkdir_p(root, 0700, err) < 0)
		return kiln_err_wrap(err, "create store root %s", root);
	struct kiln_store *s = kiln_xcalloc(1, sizeof(*s));
	s->root = kiln_xstrdup(root);
	s->dirfd = s->blobs_fd = s->tmp_fd = s->lock_fd = s->index_lock_fd = -1;
	s->rdwr = rdwr;
	s->dirfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		kiln_err_set(err, errno, "open store %s", root);
		goto fail;
	}
	if (rdwr) {
		struct stat st;
		if (fstat(s->dirfd, &st) == 0 && geteuid() == 0) {
			if ((st.st_mode & 07777) != 0700)
				fchmod(s->dirfd, 0700);
			if (st.st_uid != 0 || st.st_gid != 0)
				if (fchown(s->dirfd, 0, 0) < 0) { /* best effort */ }
		}
		for (size_t i = 0; i < sizeof(store_subdirs) / sizeof(store_subdirs[0]); i++)
			if (mkdirat_p(s->dirfd, store_subdirs[i], 0700, err) < 0) {
				kiln_err_wrap(err, "store %s", root);
				goto fail;
			}
	}
	if (!rdwr && faccessat(s->dirfd, OCI_LAYOUT, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
	    faccessat(s->dirfd, INDEX_JSON, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		kiln_err_set(err, 0, "no kiln store at %s", root);
		goto fail;
	}
	if (rdwr) {
		s->lock_fd = openat(s->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (s->lock_fd < 0) {
			kiln_err_set(err, errno, "open %s/lock", root);
			goto fail;
		}
	}
	s->blobs_fd = openat(s->dirfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->blobs_fd < 0) {
		kiln_err_set(err, errno, "open %s/blobs/sha256", root);
		goto fail;
	}
	s->tmp_fd = openat(s->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->tmp_fd < 0 && rdwr) {
		kiln_err_set(err, errno, "open %s/tmp", root);
		goto fail;
	}
	/* Nobody else has the store open: clean the staging area first. */
	if (rdwr && flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0)
		clean_tmp(s);
	/* Writers hold the store lock shared for their lifetime, so gc never
	 * removes a blob they wrote but have not referenced yet.  Read-only
	 * handles take no lifetime lock (a container's supervisor may keep one). */
	while (rdwr && flock(s->lock_fd, LOCK_SH) < 0) {
		if (errno != EINTR) {
			kiln_err_set(err, errno, "lock %s/lock", root);
			goto fail;
		}
	}
	if (rdwr) {
		if (faccessat(s->dirfd, OCI_LAYOUT, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
		    store_write_meta(s, OCI_LAYOUT, OCI_LAYOUT_CONTENT, strlen(OCI_LAYOUT_CONTENT), err) < 0)
			goto fail;
		if (faccessat(s->dirfd, INDEX_JSON, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
			if (kiln_store_write_lock(s, err) < 0)
				goto fail;
			int rc = 0;
			if (faccessat(s->dirfd, INDEX_JSON, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
				const char *empty = "{\"manifests\":[],\"mediaType\":\"" KILN_MT_OCI_INDEX
						    "\",\"schemaVersion\":2}";
				rc = store_write_meta(s, INDEX_JSON, empty, strlen(empty), err);
			}
			kiln_store_write_unlock(s);
			if (rc < 0)
				goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	kiln_store_close(s);
	return -1;
}

void kiln_store_close(struct kiln_store *s)
{
	if (!s)
		return;
	if (s->index_lock_fd >= 0)
		close(s->index_lock_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->blobs_fd >= 0)
		close(s->blobs_fd);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->root);
	free(s);
}

const char *kiln_store_root_path(const struct kiln_store *s)
{
	return s->root;
}

int kiln_store_dirfd(const struct kiln_store *s)
{
	return s->dirfd;
}

static int need_rdwr(struct kiln_store *s, struct kiln_err *err)
{
	if (!s->rdwr)
		return kiln_err_set(err, EROFS, "store %s is open read-only", s->root);
	return 0;
}

int kiln_store_write_lock(struct kiln_store *s, struct kiln_err *err)
{
	if (need_rdwr(s, err) < 0)
		return -1;
	if (s->wlock_depth++ > 0)
		return 0;
	s->index_lock_fd = openat(s->dirfd, "index.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->index_lock_fd < 0) {
		s->wlock_depth = 0;
		return kiln_err_set(err, errno, "open %s/index.lock", s->root);
	}
	while (flock(s->index_lock_fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int e = errno;
			close(s->index_lock_fd);
			s->index_lock_fd = -1;
			s->wlock_depth = 0;
			return kiln_err_set(err, e, "lock %s/index.lock", s->root);
		}
	}
	return 0;
}

void kiln_store_write_unlock(struct kiln_store *s)
{
	if (s->wlock_depth <= 0)
		return;
	if (--s->wlock_depth == 0 && s->index_lock_fd >= 0) {
		close(s->index_lock_fd);   /* releases the flock */
		s->index_lock_fd = -1;
	}
}

/* ---------------------------------------------------------------- blobs */

static const char *hex_part(const char *digest)
{
	return digest + 7;
}

char *kiln_store_blob_path(const struct kiln_store *s, const char *digest)
{
	if (!kiln_digest_valid(digest))
		return NULL;
	return kiln_xasprintf("%s/blobs/sha256/%s", s->root, hex_part(digest));
}

int kiln_store_blob_begin(struct kiln_store *s, struct kiln_blob_writer **out, struct kiln_err *err)
{
	*out = NULL;
	if (need_rdwr(s, err) < 0)
		return -1;
	struct kiln_blob_writer *w = kiln_xcalloc(1, sizeof(*w));
	w->s = s;
	w->fd = openat(s->tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	if (w->fd >= 0) {
		w->tmpfile = true;
	} else {
		static unsigned counter;
		snprintf(w->name, sizeof(w->name), "blob-%d-%u-%llx", (int)getpid(),
			 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), (unsigned long long)kiln_now_ns());
		w->fd = openat(s->tmp_fd, w->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (w->fd < 0) {
			int e = errno;
			free(w);
			return kiln_err_set(err, e, "create a blob in %s/tmp", s->root);
		}
	}
	w->ctx = EVP_MD_CTX_new();
	if (!w->ctx || EVP_DigestInit_ex(w->ctx, EVP_sha256(), NULL) != 1) {
		kiln_store_blob_abort(w);
		return kiln_err_set(err, ENOMEM, "sha256 init");
	}
	*out = w;
	return 0;
}

int kiln_blob_write(struct kiln_blob_writer *w, const void *data, size_t len, struct kiln_err *err)
{
	if (kiln_write_all(w->fd, data, len) < 0)
		return kiln_err_set(err, errno, "write blob to %s/tmp", w->s->root);
	EVP_DigestUpdate(w->ctx, data, len);
	w->size += (int64_t)len;
	return 0;
}

int kiln_blob_writer_fd(struct kiln_blob_writer *w)
{
	w->fd_given = true;
	return w->fd;
}

void kiln_store_blob_abort(struct kiln_blob_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (!w->tmpfile && w->name[0])
		unlinkat(w->s->tmp_fd, w->name, 0);
	EVP_MD_CTX_free(w->ctx);
	free(w);
}

int kiln_store_blob_commit(struct kiln_blob_writer *w, const char *expected_digest,
			   char out_digest[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err)
{
	struct kiln_store *s = w->s;
	char dg[KILN_DIGEST_MAX];
	int64_t sz = w->size;
	if (expected_digest && !kiln_digest_valid(expected_digest)) {
		kiln_err_set(err, 0, "invalid digest \"%s\"", expected_digest);
		goto fail;
	}
	if (fsync(w->fd) < 0) {
		kiln_err_set(err, errno, "fsync blob");
		goto fail;
	}
	if (w->fd_given) {
		if (digest_fd_at(w->fd, 0, true, dg, &sz, err) < 0)
			goto fail;
	} else {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		EVP_DigestFinal_ex(w->ctx, md, &mdlen);
		hex_of(md, mdlen, dg);
	}
	if (expected_digest && strcmp(expected_digest, dg)) {
		kiln_err_set(err, 0, "digest mismatch: expected %s, got %s (%lld bytes)", expected_digest, dg,
			     (long long)sz);
		goto fail;
	}
	const char *hex = hex_part(dg);
	if (faccessat(s->blobs_fd, hex, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		/* already stored (content addressed): keep the existing one */
	} else if (w->tmpfile) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->fd);
		fchmod(w->fd, 0444);
		if (linkat(AT_FDCWD, proc, s->blobs_fd, hex, AT_SYMLINK_FOLLOW) < 0 && errno != EEXIST) {
			kiln_err_set(err, errno, "store blob %s", dg);
			goto fail;
		}
		fsync_dirfd(s->blobs_fd);
	} else {
		fchmod(w->fd, 0444);
		if (renameat(s->tmp_fd, w->name, s->blobs_fd, hex) < 0) {
			kiln_err_set(err, errno, "store blob %s", dg);
			goto fail;
		}
		w->name[0] = '\0';
		fsync_dirfd(s->blobs_fd);
	}
	if (out_digest)
		memcpy(out_digest, dg, KILN_DIGEST_MAX);
	if (size)
		*size = sz;
	kiln_store_blob_abort(w);
	return 0;
fail:
	kiln_store_blob_abort(w);
	return -1;
}

int kiln_store_blob_import_fd(struct kiln_store *s, int in_fd, const char *expected_digest,
			      char out_digest[KILN_DIGEST_MAX], int64_t *size, struct kiln_err *err)
{
	struct kiln_blob_writer *w;
	if (kiln_store_blob_begin(s, &w, err) < 0)
		return -1;
	static __thread char buf[1 << 17];
	for (;;) {
		ssize_t r = read(in_fd, buf, sizeof(buf));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			kiln_store_blob_abort(w);
			return kiln_err_set(err, e, "read blob data");
		}
		if (r == 0)
			break;
		if (kiln_blob_write(w, buf, (size_t)r, err) < 0) {
			kiln_store_blob_abort(w);
			return -1;
		}
	}
	return kiln_store_blob_commit(w, expected_digest, out_digest, size, err);
}

int kiln_store_blob_put(struct kiln_store *s, const void *data, size_t len,
			char out_digest[KILN_DIGEST_MAX], struct kiln_err *err)
{
	char dg[KILN_DIGEST_MAX];
	kiln_digest_data(data, len, dg);
	if (need_rdwr(s, err) < 0)
		return -1;
	if (faccessat(s->blobs_fd, hex_part(dg), F_OK, AT_SYMLINK_NOFOLLOW) != 0) {
		struct kiln_blob_writer *w;
		if (kiln_store_blob_begin(s, &w, err) < 0)
			return -1;
		if (kiln_blob_write(w, data, len, err) < 0) {
			kiln_store_blob_abort(w);
			return -1;
		}
		if (kiln_store_blob_commit(w, dg, NULL, NULL, err) < 0)
			return -1;
	}
	if (out_digest)
		memcpy(out_digest, dg, KILN_DIGEST_MAX);
	return 0;
}

int kiln_store_blob_open(struct kiln_store *s, const char *digest, int *fd, struct kiln_err *err)
{
	*fd = -1;
	if (!kiln_digest_valid(digest))
		return kiln_err_set(err, 0, "invalid digest \"%s\"", digest ? digest : "");
	int f = openat(s->blobs_fd, hex_part(digest), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (f < 0) {
		int e = errno;
		kiln_err_set(err, e, "blob %s", digest);
		err->errnum = e;
		return -1;
	}
	*fd = f;
	return 0;
}

int kiln_store_blob_read(struct kiln_store *s, const char *digest, size_t max,
			 char **data, size_t *len, struct kiln_err *err)
{
	*data = NULL;
	int fd;
	if (kiln_store_blob_open(s, digest, &fd, err) < 0)
		return -1;
	char *buf;
	size_t n;
	int rc = kiln_read_fd(fd, max ? max : BLOB_READ_DEFAULT_MAX, &buf, &n, err);
	close(fd);
	if (rc < 0)
		return kiln_err_wrap(err, "blob %s", digest);
	char dg[KILN_DIGEST_MAX];
	kiln_digest_data(buf, n, dg);
	if (strcmp(dg, digest)) {
		free(buf);
		return kiln_err_set(err, 0, "blob %s is corrupt (its content has digest %s)", digest, dg);
	}
	*data = buf;
	if (len)
		*len = n;
	return 0;
}

bool kiln_store_blob_exists(struct kiln_store *s, const char *digest)
{
	return kiln_digest_valid(digest) &&
	       faccessat(s->blobs_fd, hex_part(digest), F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int kiln_store_blob_size(struct kiln_store *s, const char *digest, int64_t *size, struct kiln_err *err)
{
	if (!kiln_digest_valid(digest))
		return kiln_err_set(err, 0, "invalid digest \"%s\"", digest ? digest : "");
	struct stat st;
	if (fstatat(s->blobs_fd, hex_part(digest), &st, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_set(err, errno, "blob %s", digest);
	*size = st.st_size;
	return 0;
}

int kiln_store_blob_verify(struct kiln_store *s, const char *digest, struct kiln_err *err)
{
	int fd;
	if (kiln_store_blob_open(s, digest, &fd, err) < 0)
		return -1;
	char dg[KILN_DIGEST_MAX];
	int rc = kiln_digest_fd(fd, dg, NULL, err);
	close(fd);
	if (rc < 0)
		return kiln_err_wrap(err, "blob %s", digest);
	if (strcmp(dg, digest))
		return kiln_err_set(err, 0, "blob %s is corrupt (its content has digest %s)", digest, dg);
	return 0;
}

int kiln_store_blob_remove(struct kiln_store *s, const char *digest, struct kiln_err *err)
{
	if (need_rdwr(s, err) < 0)
		return -1;
	if (!kiln_digest_valid(digest))
		return kiln_err_set(err, 0, "invalid digest \"%s\"", digest ? digest : "");
	if (unlinkat(s->blobs_fd, hex_part(digest), 0) < 0 && errno != ENOENT)
		return kiln_err_set(err, errno, "remove blob %s", digest);
	return 0;
}

/* ---------------------------------------------------------------- index */

static int index_load(struct kiln_store *s, json_t **out, struct kiln_err *err)
{
	*out = NULL;
	int fd = openat(s->dirfd, INDEX_JSON, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT) {
			*out = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", KILN_MT_OCI_INDEX,
					 "manifests");
			return 0;
		}
		return kiln_err_set(err, errno, "open %s/index.json", s->root);
	}
	char *data;
	size_t len;
	int rc = kiln_read_fd(fd, 64u << 20, &data, &len, err);
	close(fd);
	if (rc < 0)
		return kiln_err_wrap(err, "%s/index.json", s->root);
	json_error_t je;
	json_t *j = json_loadb(data, len, 0, &je);
	free(data);
	if (!j || !json_is_object(j))
		goto bad;
	json_t *m = json_object_get(j, "manifests");
	if (!m) {
		json_object_set_new(j, "manifests", json_array());
	} else if (!json_is_array(m)) {
		goto bad;
	}
	*out = j;
	return 0;
bad:
	json_decref(j);
	return kiln_err_set(err, 0, "%s/index.json is not a valid image index", s->root);
}

static int index_save(struct kiln_store *s, json_t *idx, struct kiln_err *err)
{
	char *txt = kiln_json_canonical(idx);
	int rc = store_write_meta(s, INDEX_JSON, txt, strlen(txt), err);
	free(txt);
	return rc;
}

/* The normalized name of an index entry, or NULL (malloc'd). */
static char *entry_name(const json_t *ent)
{
	json_t *ann = json_object_get(ent, "annotations");
	if (!json_is_object(ann))
		return NULL;
	const char *n = json_string_value(json_object_get(ann, KILN_ANNOT_IMAGE_NAME));
	if (!n)
		n = json_string_value(json_object_get(ann, KILN_ANNOT_REF_NAME));
	if (!n || !*n)
		return NULL;
	struct kiln_err e = {0};
	return kiln_ref_normalize(n, &e);
}

static const char *entry_digest(const json_t *ent)
{
	return json_string_value(json_object_get(ent, "digest"));
}

static bool index_has_digest(json_t *m, const char *digest)
{
	size_t i;
	json_t *ent;
	json_array_foreach(m, i, ent) {
		const char *d = entry_digest(ent);
		if (d && !strcmp(d, digest))
			return true;
	}
	return false;
}

int kiln_store_tag_set(struct kiln_store *s, const char *ref, const struct kiln_desc *manifest,
		       struct kiln_err *err)
{
	char *name = kiln_ref_normalize(ref, err);
	if (!name)
		return -1;
	if (!kiln_digest_valid(manifest->digest)) {
		free(name);
		return kiln_err_set(err, 0, "invalid manifest digest \"%s\"", manifest->digest);
	}
	if (!kiln_store_blob_exists(s, manifest->digest)) {
		free(name);
		return kiln_err_set(err, ENOENT, "tag %s: manifest %s is not in the store", ref, manifest->digest);
	}
	if (kiln_store_write_lock(s, err) < 0) {
		free(name);
		return -1;
	}
	json_t *idx = NULL;
	int rc = -1;
	if (index_load(s, &idx, err) < 0)
		goto out;
	json_t *m = json_object_get(idx, "manifests");
	char *old = NULL;
	for (size_t i = 0; i < json_array_size(m);) {
		json_t *ent = json_array_get(m, i);
		char *n = entry_name(ent);
		const char *d = entry_digest(ent);
		bool drop = false;
		if (n && !strcmp(n, name)) {
			drop = true;
			if (d && !old)
				old = kiln_xstrdup(d);
		} else if (!n && d && !strcmp(d, manifest->digest)) {
			drop = true;   /* the untagged entry of the image now tagged */
		}
		free(n);
		if (drop)
			json_array_remove(m, i);
		else
			i++;
	}
	json_t *ent = kiln_desc_to_json(manifest);
	json_object_set_new(ent, "annotations",
			    json_pack("{s:s, s:s}", KILN_ANNOT_REF_NAME, name, KILN_ANNOT_IMAGE_NAME, name));
	json_array_append_new(m, ent);
	if (old && strcmp(old, manifest->digest) && !index_has_digest(m, old)) {
		/* the previous image keeps living, untagged (docker's <none>) */
		json_t *u = json_pack("{s:s, s:s, s:I}", "mediaType", KILN_MT_OCI_MANIFEST, "digest", old, "size",
				      (json_int_t)0);
		struct kiln_desc od;
		struct kiln_err e2 = {0};
		/* keep the media type and size from the blob itself */
		char *data = NULL;
		size_t len = 0;
		if (kiln_store_blob_read(s, old, 0, &data, &len, &e2) == 0) {
			json_t *mj = json_loadb(data, len, 0, NULL);
			const char *mt = json_string_value(json_object_get(mj, "mediaType"));
			snprintf(od.media_type, sizeof(od.media_type), "%s", mt ? mt : KILN_MT_OCI_MANIFEST);
			json_object_set_new(u, "mediaType", json_string(od.media_type));
			json_object_set_new(u, "size", json_integer((json_int_t)len));
			json_decref(mj);
			json_array_append(m, u);
		}
		free(data);
		json_decref(u);
	}
	free(old);
	rc = index_save(s, idx, err);
out:
	json_decref(idx);
	kiln_store_write_unlock(s);
	free(name);
	return rc;
}

int kiln_store_tag_get(struct kiln_store *s, const char *ref, struct kiln_desc *out, struct kiln_err *err)
{
	char *name = kiln_ref_normalize(ref, err);
	if (!name)
		return -1;
	json_t *idx;
	if (index_load(s, &idx, err) < 0) {
		free(name);
		return -1;
	}
	json_t *m = json_object_get(idx, "manifests");
	int rc = -1;
	size_t i;
	json_t *ent;
	json_array_foreach(m, i, ent) {
		char *n = entry_name(ent);
		bool hit = n && !strcmp(n, name);
		free(n);
		if (hit) {
			rc = kiln_desc_from_json(ent, out, err);
			if (rc < 0)
				kiln_err_wrap(err, "index.json entry for %s", name);
			break;
		}
	}
	if (rc < 0 && i == json_array_size(m)) {
		kiln_err_set(err, 0, "no such image: %s", ref);
		err->errnum = ENOENT;
	}
	json_decref(idx);
	free(name);
	return rc;
}

int kiln_store_tag_remove(struct kiln_store *s, const char *ref, bool keep_untagged, struct kiln_err *err)
{
	char *name = kiln_ref_normalize(ref, err);
	if (!name)
		return -1;
	if (kiln_store_write_lock(s, err) < 0) {
		free(name);
		return -1;
	}
	json_t *idx = NULL;
	int rc = -1;
	if (index_load(s, &idx, err) < 0)
		goto out;
	json_t *m = json_object_get(idx, "manifests");
	json_t *removed = NULL;
	for (size_t i = 0; i < json_array_size(m);) {
		json_t *ent = json_array_get(m, i);
		char *n = entry_name(ent);
		bool hit = n && !strcmp(n, name);
		free(n);
		if (hit) {
			if (!removed)
				removed = json_incref(ent);
			json_array_remove(m, i);
		} else {
			i++;
		}
	}
	if (!removed) {
		kiln_err_set(err, 0, "no such image: %s", ref);
		err->errnum = ENOENT;
		goto out;
	}
	const char *d = entry_digest(removed);
	if (keep_untagged && d && !index_has_digest(m, d)) {
		json_object_del(removed, "annotations");
		json_array_append(m, removed);
	}
	json_decref(removed);
	rc = index_save(s, idx, err);
out:
	json_decref(idx);
	kiln_store_write_unlock(s);
	free(name);
	return rc;
}

int kiln_store_index_add_untagged(struct kiln_store *s, const struct kiln_desc *manifest, struct kiln_err *err)
{
	if (!kiln_store_blob_exists(s, manifest->digest))
		return kiln_err_set(err, ENOENT, "manifest %s is not in the store", manifest->digest);
	if (kiln_store_write_lock(s, err) < 0)
		return -1;
	json_t *idx = NULL;
	int rc = -1;
	if (index_load(s, &idx, err) < 0)
		goto out;
	json_t *m = json_object_get(idx, "manifests");
	if (index_has_digest(m, manifest->digest)) {
		rc = 0;
		goto out;
	}
	json_array_append_new(m, kiln_desc_to_json(manifest));
	rc = index_save(s, idx, err);
out:
	json_decref(idx);
	kiln_store_write_unlock(s);
	return rc;
}

int kiln_store_index_remove_digest(struct kiln_store *s, const char *manifest_digest, struct kiln_err *err)
{
	if (kiln_store_write_lock(s, err) < 0)
		return -1;
	json_t *idx = NULL;
	int rc = -1;
	if (index_load(s, &idx, err) < 0)
		goto out;
	json_t *m = json_object_get(idx, "manifests");
	bool changed = false;
	for (size_t i = 0; i < json_array_size(m);) {
		const char *d = entry_digest(json_array_get(m, i));
		if (d && !strcmp(d, manifest_digest)) {
			json_array_remove(m, i);
			changed = true;
		} else {
			i++;
		}
	}
	rc = changed ? index_save(s, idx, err) : 0;
out:
	json_decref(idx);
	kiln_store_write_unlock(s);
	return rc;
}

int kiln_store_tag_list(struct kiln_store *s, struct kiln_tag **out, size_t *n, struct kiln_err *err)
{
	*out = NULL;
	*n = 0;
	json_t *idx;
	if (index_load(s, &idx, err) < 0)
		return -1;
	json_t *m = json_object_get(idx, "manifests");
	struct kiln_tag *v = kiln_xcalloc(json_array_size(m) + 1, sizeof(*v));
	size_t k = 0, i;
	json_t *ent;
	json_array_foreach(m, i, ent) {
		struct kiln_err e2 = {0};
		if (kiln_desc_from_json(ent, &v[k].desc, &e2) < 0)
			continue;   /* fsck reports it */
		v[k].ref = entry_name(ent);
		k++;
	}
	json_decref(idx);
	*out = v;
	*n = k;
	return 0;
}

void kiln_store_tags_free(struct kiln_tag *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].ref);
	free(v);
}

/* ---------------------------------------------------------------- gc */

struct digest_set {
	char **v;
	size_t n, cap;
};

static int dcmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool set_has(struct digest_set *set, const char *d)
{
	return set->n && bsearch(&d, set->v, set->n, sizeof(char *), dcmp) != NULL;
}

/* Insert keeping the list sorted; false when already present. */
static bool set_add(struct digest_set *set, const char *d)
{
	size_t lo = 0, hi = set->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(set->v[mid], d);
		if (c == 0)
			return false;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (set->n == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 64;
		set->v = kiln_xrealloc(set->v, set->cap * sizeof(char *));
	}
	memmove(set->v + lo + 1, set->v + lo, (set->n - lo) * sizeof(char *));
	set->v[lo] = kiln_xstrdup(d);
	set->n++;
	return true;
}

static void set_free(struct digest_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->v[i]);
	free(set->v);
}

/* Mark digest and, when it is a JSON manifest/index, what it references. */
static void mark(struct kiln_store *s, struct digest_set *set, const char *digest, bool maybe_json, int depth)
{
	if (!kiln_digest_valid(digest) || !set_add(set, digest) || !maybe_json || depth > 8)
		return;
	int64_t size;
	struct kiln_err e = {0};
	if (kiln_store_blob_size(s, digest, &size, &e) < 0 || size > (16 << 20))
		return;
	char *data;
	size_t len;
	if (kiln_store_blob_read(s, digest, 0, &data, &len, &e) < 0)
		return;
	json_t *j = (len && data[0] == '{') ? json_loadb(data, len, 0, NULL) : NULL;
	free(data);
	if (!json_is_object(j)) {
		json_decref(j);
		return;
	}
	json_t *cfg = json_object_get(j, "config");
	if (json_is_object(cfg))
		mark(s, set, json_string_value(json_object_get(cfg, "digest")), false, depth + 1);
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(j, "layers"), i, x)
		mark(s, set, json_string_value(json_object_get(x, "digest")), false, depth + 1);
	json_array_foreach(json_object_get(j, "manifests"), i, x)
		mark(s, set, json_string_value(json_object_get(x, "digest")), true, depth + 1);
	json_decref(j);
}

static void lock_shared_again(struct kiln_store *s);

static int lock_exclusive(struct kiln_store *s, uint64_t wait_ns, struct kiln_err *err)
{
	uint64_t deadline = kiln_now_ns() + wait_ns;
	for (;;) {
		if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR) {
			int e = errno;
			lock_shared_again(s);
			return kiln_err_set(err, e, "lock %s/lock", s->root);
		}
		if (kiln_now_ns() > deadline) {
			lock_shared_again(s);
			kiln_err_set(err, 0, "the store %s is in use by another kiln process; try again when it ends",
				     s->root);
			err->errnum = EBUSY;
			return -1;
		}
		struct timespec ts = {0, 50 * 1000000};
		nanosleep(&ts, NULL);
	}
}

static void lock_shared_again(struct kiln_store *s)
{
	while (flock(s->lock_fd, LOCK_SH) < 0 && errno == EINTR)
		;
}

int kiln_store_lock_exclusive(struct kiln_store *s, bool wait, struct kiln_err *err)
{
	if (need_rdwr(s, err) < 0)
		return -1;
	if (s->xlock_depth > 0) {
		s->xlock_depth++;
		return 0;
	}
	if (wait) {
		if (lock_exclusive(s, 10ull * 1000000000ull, err) < 0)
			return -1;
	} else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		/* a failed conversion drops the shared lock: take it back */
		lock_shared_again(s);
		if (e == EWOULDBLOCK)
			return 1;
		return kiln_err_set(err, e, "lock %s/lock", s->root);
	}
	s->xlock_depth = 1;
	return 0;
}

void kiln_store_unlock_exclusive(struct kiln_store *s)
{
	if (s->xlock_depth > 0 && --s->xlock_depth == 0)
		lock_shared_again(s);
}

static int gc_locked(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		     struct kiln_gc_stats *stats, struct kiln_err *err);

int kiln_store_gc(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		  struct kiln_gc_stats *stats, struct kiln_err *err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	if (kiln_store_lock_exclusive(s, true, err) < 0)
		return -1;
	int rc = gc_locked(s, roots_fn, ctx, stats, err);
	kiln_store_unlock_exclusive(s);
	return rc;
}

int kiln_store_gc_try(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		      struct kiln_gc_stats *stats, struct kiln_err *err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	int r = kiln_store_lock_exclusive(s, false, err);
	if (r != 0)
		return r;
	int rc = gc_locked(s, roots_fn, ctx, stats, err);
	kiln_store_unlock_exclusive(s);
	return rc;
}

static int gc_locked(struct kiln_store *s, kiln_store_roots_fn roots_fn, void *ctx,
		     struct kiln_gc_stats *stats, struct kiln_err *err)
{
	int rc = -1;
	struct digest_set set = {0};
	struct kiln_strv roots = {0};
	json_t *idx = NULL;
	if (kiln_store_write_lock(s, err) < 0)
		goto out;
	if (index_load(s, &idx, err) < 0)
		goto out_unlock;
	size_t i;
	json_t *ent;
	json_array_foreach(json_object_get(idx, "manifests"), i, ent)
		kiln_strv_push(&roots, entry_digest(ent));
	if (roots_fn && roots_fn(s, &roots, ctx, err) < 0)
		goto out_unlock;
	if (kiln_store_gc_extra_roots && kiln_store_gc_extra_roots(s, &roots, err) < 0) {
		kiln_err_wrap(err, "build cache roots");
		goto out_unlock;
	}
	for (i = 0; i < roots.n; i++)
		mark(s, &set, roots.v[i], true, 0);

	int fd = openat(s->blobs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		kiln_err_set(err, errno, "read %s/blobs/sha256", s->root);
		goto out_unlock;
	}
	struct kiln_strv victims = {0};
	struct dirent *de;
	while ((de = readdir(d))) {
		char dg[KILN_DIGEST_MAX];
		snprintf(dg, sizeof(dg), "sha256:%.64s", de->d_name);
		if (strlen(de->d_name) != 64 || !kiln_digest_valid(dg))
			continue;
		if (!set_has(&set, dg))
			kiln_strv_push(&victims, dg);
	}
	closedir(d);
	for (i = 0; i < victims.n; i++) {
		struct stat st;
		int64_t sz = fstatat(s->blobs_fd, hex_part(victims.v[i]), &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_size : 0;
		if (unlinkat(s->blobs_fd, hex_part(victims.v[i]), 0) == 0 && stats) {
			stats->blobs_removed++;
			stats->bytes_removed += sz;
		}
	}
	kiln_strv_free(&victims);
	fsync_dirfd(s->blobs_fd);
	clean_tmp(s);
	rc = 0;
out_unlock:
	kiln_store_write_unlock(s);
out:
	json_decref(idx);
	kiln_strv_free(&roots);
	set_free(&set);
	return rc;
}

/* ---------------------------------------------------------------- fsck */

static void problem(struct kiln_fsck_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct kiln_fsck_report *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *m = NULL;
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	if (m)
		kiln_strv_push_owned(&r->problems, m);
}

static void check_desc_blob(struct kiln_store *s, struct kiln_fsck_report *r, struct digest_set *bad,
			    const char *what, const char *owner, const struct kiln_desc *d)
{
	int64_t size;
	struct kiln_err e = {0};
	if (kiln_store_blob_size(s, d->digest, &size, &e) < 0) {
		problem(r, "%s: %s %s is missing", owner, what, d->digest);
		return;
	}
	if (size != d->size)
		problem(r, "%s: %s %s has %lld bytes, the descriptor says %lld", owner, what, d->digest,
			(long long)size, (long long)d->size);
	if (set_has(bad, d->digest))
		problem(r, "%s: %s %s is corrupt", owner, what, d->digest);
}

static void check_manifest(struct kiln_store *s, struct kiln_fsck_report *r, struct digest_set *bad,
			   const char *owner, const struct kiln_desc *md, int depth)
{
	check_desc_blob(s, r, bad, "manifest", owner, md);
	if (depth > 4 || set_has(bad, md->digest))
		return;
	char *data;
	size_t len;
	struct kiln_err e = {0};
	if (kiln_store_blob_read(s, md->digest, 0, &data, &len, &e) < 0)
		return;   /* missing: already reported */
	json_t *j = NULL;
	const char *mt = md->media_type;
	if (!strcmp(mt, KILN_MT_OCI_INDEX) || !strcmp(mt, KILN_MT_DOCKER_LIST)) {
		if (kiln_index_parse(data, len, &j, &e) < 0) {
			problem(r, "%s: index %s: %s", owner, md->digest, e.msg);
			free(data);
			return;
		}
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(j, "manifests"), i, x) {
			struct kiln_desc sub;
			if (kiln_desc_from_json(x, &sub, &e) < 0) {
				problem(r, "%s: index %s entry %zu: %s", owner, md->digest, i, e.msg);
				continue;
			}
			/* A pulled index may list platforms that were not fetched. */
			if (kiln_store_blob_exists(s, sub.digest))
				check_manifest(s, r, bad, owner, &sub, depth + 1);
		}
		json_decref(j);
		free(data);
		return;
	}
	if (kiln_manifest_parse(data, len, NULL, &j, &e) < 0) {
		problem(r, "%s: manifest %s: %s", owner, md->digest, e.msg);
		free(data);
		return;
	}
	free(data);
	r->images_checked++;
	struct kiln_desc cd;
	if (kiln_desc_from_json(json_object_get(j, "config"), &cd, &e) == 0) {
		check_desc_blob(s, r, bad, "config", owner, &cd);
		char *cdata;
		size_t clen;
		json_t *layers = json_object_get(j, "layers");
		if (!set_has(bad, cd.digest) && kiln_store_blob_read(s, cd.digest, 0, &cdata, &clen, &e) == 0) {
			json_t *cfg = json_loadb(cdata, clen, 0, NULL);
			free(cdata);
			json_t *diff_ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
			if (!json_is_object(cfg))
				problem(r, "%s: config %s is not a JSON object", owner, cd.digest);
			else if (!json_is_array(diff_ids))
				problem(r, "%s: config %s has no rootfs.diff_ids", owner, cd.digest);
			else if (json_array_size(diff_ids) != json_array_size(layers))
				problem(r, "%s: config %s lists %zu diff_ids but the manifest %zu layers", owner,
					cd.digest, json_array_size(diff_ids), json_array_size(layers));
			json_decref(cfg);
		}
		size_t i;
		json_t *x;
		json_array_foreach(layers, i, x) {
			struct kiln_desc ld;
			if (kiln_desc_from_json(x, &ld, &e) == 0)
				check_desc_blob(s, r, bad, "layer", owner, &ld);
		}
	}
	json_decref(j);
}

int kiln_store_fsck(struct kiln_store *s, struct kiln_fsck_report *r, struct kiln_err *err)
{
	memset(r, 0, sizeof(*r));
	char *lay = NULL;
	size_t laylen;
	int lfd = openat(s->dirfd, OCI_LAYOUT, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (lfd < 0 || kiln_read_fd(lfd, 4096, &lay, &laylen, err) < 0) {
		problem(r, "oci-layout is missing or unreadable");
	} else {
		json_t *j = json_loads(lay, 0, NULL);
		if (!j || strcmp(json_string_value(json_object_get(j, "imageLayoutVersion")) ?: "", "1.0.0"))
			problem(r, "oci-layout does not say imageLayoutVersion 1.0.0");
		json_decref(j);
	}
	free(lay);
	if (lfd >= 0)
		close(lfd);

	struct digest_set bad = {0};
	int fd = openat(s->blobs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return kiln_err_set(err, errno, "read %s/blobs/sha256", s->root);
	}
	struct kiln_strv names = {0};
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			kiln_strv_push(&names, de->d_name);
	closedir(d);
	if (names.n)
		qsort(names.v, names.n, sizeof(char *), dcmp);
	for (size_t i = 0; i < names.n; i++) {
		char dg[KILN_DIGEST_MAX];
		snprintf(dg, sizeof(dg), "sha256:%.64s", names.v[i]);
		if (strlen(names.v[i]) != 64 || !kiln_digest_valid(dg)) {
			problem(r, "blobs/sha256/%s is not named by a sha256 digest", names.v[i]);
			continue;
		}
		r->blobs_checked++;
		struct kiln_err e = {0};
		if (kiln_store_blob_verify(s, dg, &e) < 0) {
			problem(r, "%s", e.msg);
			set_add(&bad, dg);
		}
	}
	kiln_strv_free(&names);

	json_t *idx = NULL;
	struct kiln_err e = {0};
	if (index_load(s, &idx, &e) < 0) {
		problem(r, "%s", e.msg);
	} else {
		size_t i;
		json_t *ent;
		json_array_foreach(json_object_get(idx, "manifests"), i, ent) {
			struct kiln_desc md;
			char *n = entry_name(ent);
			char *owner = n ? kiln_ref_familiarize(n) : kiln_xasprintf("index.json entry %zu", i);
			if (kiln_desc_from_json(ent, &md, &e) < 0)
				problem(r, "%s: %s", owner, e.msg);
			else
				check_manifest(s, r, &bad, owner, &md, 0);
			free(owner);
			free(n);
		}
	}
	json_decref(idx);
	set_free(&bad);
	return 0;
}

void kiln_fsck_report_free(struct kiln_fsck_report *r)
{
	if (r)
		kiln_strv_free(&r->problems);
}
