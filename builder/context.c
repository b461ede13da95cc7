/* kiln — the build context, .dockerignore and the stat cache. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/context.h"
#include "builder/copy.h"
#include "layers/layer.h"
#include "parser/ignore.h"

#pragma weak kiln_layer_apply

/* ---- .dockerignore ---------------------------------------------------- */

int kiln_context_excluded(void *arg, const char *relpath, bool is_dir)
{
	struct kiln_context *ctx = arg;
	if (!ctx || !ctx->ignore || !kiln_ignore_match(ctx->ignore, relpath))
		return KILN_COPY_INCLUDED;
	if (is_dir && kiln_ignore_dir_may_include(ctx->ignore, relpath))
		return KILN_COPY_DESCEND;
	return KILN_COPY_EXCLUDED;
}

/* ---- stat cache ------------------------------------------------------- */

/* The cache is a JSON object: relpath → [size, mtime_ns, ctime_ns, ino, mode, "hex"]. */
struct kiln_statcache {
	json_t *map;
	bool dirty;
};

static int hex2bin(const char *hex, unsigned char out[32])
{
	if (!hex || strlen(hex) != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

int kiln_context_hash(void *arg, int fd, const char *relpath, const struct stat *st,
		      unsigned char out[32], struct kiln_err *err)
{
	struct kiln_context *ctx = arg;
	int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
	int64_t ct = (int64_t)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
	json_t *e = ctx && ctx->sc ? json_object_get(ctx->sc->map, relpath) : NULL;
	if (json_is_array(e) && json_array_size(e) == 6 &&
	    json_integer_value(json_array_get(e, 0)) == (json_int_t)st->st_size &&
	    json_integer_value(json_array_get(e, 1)) == mt && json_integer_value(json_array_get(e, 2)) == ct &&
	    json_integer_value(json_array_get(e, 3)) == (json_int_t)st->st_ino &&
	    json_integer_value(json_array_get(e, 4)) == (json_int_t)st->st_mode &&
	    hex2bin(json_string_value(json_array_get(e, 5)), out) == 0) {
		ctx->cache_hits++;
		return 0;
	}
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(c);
		return kiln_err_set(err, 0, "sha256 init failed");
	}
	static __thread char buf[1 << 17];
	off_t off = 0;
	for (;;) {
		ssize_t r = pread(fd, buf, sizeof(buf), off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			EVP_MD_CTX_free(c);
			return kiln_err_set(err, errno, "reading %s", relpath);
		}
		if (r == 0)
			break;
		EVP_DigestUpdate(c, buf, (size_t)r);
		off += r;
	}
	unsigned int len = 32;
	EVP_DigestFinal_ex(c, out, &len);
	EVP_MD_CTX_free(c);
	if (ctx) {
		ctx->hashed_bytes += (uint64_t)off;
		if (ctx->sc) {
			char hex[65];
			for (int i = 0; i < 32; i++)
				snprintf(hex + 2 * i, 3, "%02x", out[i]);
			json_object_set_new(ctx->sc->map, relpath,
					    json_pack("[I,I,I,I,I,s]", (json_int_t)st->st_size, (json_int_t)mt,
						      (json_int_t)ct, (json_int_t)st->st_ino, (json_int_t)st->st_mode, hex));
			ctx->sc->dirty = true;
		}
	}
	return 0;
}

static void statcache_load(struct kiln_context *ctx, const char *root)
{
	ctx->sc = kiln_xcalloc(1, sizeof(*ctx->sc));
	if (root && ctx->dir && !ctx->tmpdir) {
		char digest[65];
		unsigned char h[32];
		unsigned int len = 32;
		EVP_Digest(ctx->dir, strlen(ctx->dir), h, &len, EVP_sha256(), NULL);
		for (int i = 0; i < 32; i++)
			snprintf(digest + 2 * i, 3, "%02x", h[i]);
		ctx->sc_path = kiln_xasprintf("%s/cache/context/%s.json", root, digest);
		json_error_t je;
		ctx->sc->map = json_load_file(ctx->sc_path, 0, &je);
	}
	if (!json_is_object(ctx->sc->map)) {
		json_decref(ctx->sc->map);
		ctx->sc->map = json_object();
	}
}

static void statcache_save(struct kiln_context *ctx)
{
	if (!ctx->sc || !ctx->sc->dirty || !ctx->sc_path)
		return;
	KILN_AUTOFREE char *dir = kiln_xstrdup(ctx->sc_path);
	*strrchr(dir, '/') = 0;
	struct kiln_err e;
	if (kiln_mkdir_p(dir, 0700, &e) < 0)
		return;
	char *s = json_dumps(ctx->sc->map, JSON_COMPACT);
	if (!s)
		return;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		kiln_write_file_atomic(dfd, strrchr(ctx->sc_path, '/') + 1, s, strlen(s), 0600, &e);
		close(dfd);
	}
	free(s);
}

/* ---- opening ---------------------------------------------------------- */

static bool is_archive(const unsigned char *h, size_t n)
{
	if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b)
		return true;
	if (n >= 3 && !memcmp(h, "BZh", 3))
		return true;
	if (n >= 6 && !memcmp(h, "\xfd" "7zXZ\0", 6))
		return true;
	if (n >= 4 && !memcmp(h, "\x28\xb5\x2f\xfd", 4))
		return true;
	if (n >= 262 && !memcmp(h + 257, "ustar", 5))
		return true;
	return false;
}

static int read_in_context(struct kiln_context *ctx, const char *rel, char **out, size_t *len,
			   struct kiln_err *err)
{
	int fd = openat(ctx->dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening %s in the build context", rel);
	int r = kiln_read_fd(fd, 64 << 20, out, len, err);
	close(fd);
	return r;
}

int kiln_context_open(const struct kiln_context_opts *opts, struct kiln_context *ctx,
		      struct kiln_err *err)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->dirfd = -1;
	const char *path = opts->path ? opts->path : ".";
	bool df_stdin = opts->dockerfile && !strcmp(opts->dockerfile, "-");
	if (!strcmp(path, "-")) {
		if (df_stdin)
			return kiln_err_set(err, 0, "invalid argument: can't use stdin for both the build context and the Dockerfile");
		/* stdin: a tar context or a Dockerfile */
		int mfd = memfd_create("kiln-context", MFD_CLOEXEC);
		if (mfd < 0)
			return kiln_err_set(err, errno, "memfd_create");
		char buf[65536];
		for (;;) {
			ssize_t r = read(opts->stdin_fd, buf, sizeof(buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				close(mfd);
				return kiln_err_set(err, errno, "reading the context from stdin");
			}
			if (r == 0)
				break;
			if (kiln_write_all(mfd, buf, (size_t)r) < 0) {
				close(mfd);
				return kiln_err_set(err, errno, "buffering stdin");
			}
		}
		unsigned char head[512];
		ssize_t hn = pread(mfd, head, sizeof(head), 0);
		if (hn > 0 && is_archive(head, (size_t)hn)) {
			if (!kiln_layer_apply) {
				close(mfd);
				return kiln_err_set(err, ENOSYS, "a tar context needs the layer extractor, missing in this build");
			}
			char tmpl[] = "/tmp/kiln-context-XXXXXX";
			if (!mkdtemp(tmpl)) {
				close(mfd);
				return kiln_err_set(err, errno, "creating a temporary context directory");
			}
			ctx->tmpdir = kiln_xstrdup(tmpl);
			ctx->dir = kiln_xstrdup(tmpl);
			ctx->dirfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			lseek(mfd, 0, SEEK_SET);
			struct kiln_layer_apply_opts ao = {.whiteouts = false, .allow_devices = false, .keep_owner = false};
			if (ctx->dirfd < 0 || kiln_layer_apply(ctx->dirfd, mfd, &ao, NULL, err) < 0) {
				close(mfd);
				kiln_err_wrap(err, "extracting the context from stdin");
				kiln_context_close(ctx);
				return -1;
			}
			close(mfd);
		} else {
			lseek(mfd, 0, SEEK_SET);
			int r = kiln_read_fd(mfd, 64 << 20, &ctx->dockerfile, &ctx->dockerfile_len, err);
			close(mfd);
			if (r < 0)
				return -1;
			ctx->dockerfile_name = kiln_xstrdup("Dockerfile");
			statcache_load(ctx, NULL);
			return 0;
		}
	} else {
		char real[PATH_MAX];
		if (!realpath(path, real))
			return kiln_err_set(err, errno, "unable to prepare context: path \"%s\" not found", path);
		ctx->dirfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ctx->dirfd < 0)
			return kiln_err_set(err, errno, "unable to prepare context: \"%s\" is not a directory", path);
		ctx->dir = kiln_xstrdup(real);
	}
	/* the Dockerfile */
	KILN_AUTOFREE char *ignore_specific = NULL;
	if (df_stdin) {
		if (kiln_read_fd(opts->stdin_fd, 64 << 20, &ctx->dockerfile, &ctx->dockerfile_len, err) < 0) {
			kiln_context_close(ctx);
			return kiln_err_wrap(err, "reading the Dockerfile from stdin");
		}
		ctx->dockerfile_name = kiln_xstrdup("Dockerfile");
	} else if (opts->dockerfile && !ctx->tmpdir) {
		if (kiln_read_file(opts->dockerfile, 64 << 20, &ctx->dockerfile, &ctx->dockerfile_len, err) < 0) {
			kiln_context_close(ctx);
			return kiln_err_wrap(err, "unable to read the Dockerfile");
		}
		ctx->dockerfile_name = kiln_xstrdup(opts->dockerfile);
		ignore_specific = kiln_xasprintf("%s.dockerignore", opts->dockerfile);
	} else {
		const char *rel = opts->dockerfile ? opts->dockerfile : "Dockerfile";
		if (read_in_context(ctx, rel, &ctx->dockerfile, &ctx->dockerfile_len, err) < 0) {
			/* docker also accepts a lower-case dockerfile */
			struct kiln_err e2;
			if (opts->dockerfile ||
			    read_in_context(ctx, "dockerfile", &ctx->dockerfile, &ctx->dockerfile_len, &e2) < 0) {
				kiln_context_close(ctx);
				return kiln_err_wrap(err, "unable to read the Dockerfile");
			}
		}
		ctx->dockerfile_name = kiln_xstrdup(rel);
	}
	/* .dockerignore: <Dockerfile>.dockerignore first, then the context's */
	if (ctx->dirfd >= 0) {
		KILN_AUTOFREE char *dfpath = NULL;
		if (ignore_specific)
			dfpath = kiln_xstrdup(opts->dockerfile);
		else if (!df_stdin)
			dfpath = kiln_xasprintf("%s/%s", ctx->dir, opts->dockerfile ? opts->dockerfile : "Dockerfile");
		if (kiln_ignore_load(ctx->dir, dfpath, &ctx->ignore, NULL, err) < 0) {
			kiln_context_close(ctx);
			return kiln_err_wrap(err, "reading .dockerignore");
		}
	}
	statcache_load(ctx, opts->root);
	return 0;
}

void kiln_context_close(struct kiln_context *ctx)
{
	statcache_save(ctx);
	if (ctx->sc) {
		json_decref(ctx->sc->map);
		free(ctx->sc);
	}
	if (ctx->dirfd >= 0)
		close(ctx->dirfd);
	if (ctx->tmpdir) {
		struct kiln_err e;
		kiln_rm_rf(ctx->tmpdir, &e);
	}
	free(ctx->tmpdir);
	free(ctx->dir);
	free(ctx->dockerfile);
	free(ctx->dockerfile_name);
	free(ctx->sc_path);
	kiln_ignore_free(ctx->ignore);
	memset(ctx, 0, sizeof(*ctx));
	ctx->dirfd = -1;
}
