/* kiln — COPY/ADD semantics into a rootfs, through fds beneath it. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "builder/copy.h"
#include "layers/layer.h"
#include "parser/ignore.h"

/* The extractor lives in layers/; stay linkable while it is being written. */
#pragma weak kiln_layer_apply

/* ---- paths and patterns ------------------------------------------------ */

static int match_here(const char *p, const char *s)
{
	for (;;) {
		switch (*p) {
		case 0:
			return *s == 0;
		case '*': {
			while (*p == '*')
				p++;
			for (const char *t = s;; t++) {
				int r = match_here(p, t);
				if (r != 0)
					return r;
				if (!*t || *t == '/')
					return 0;
			}
		}
		case '?':
			if (!*s || *s == '/')
				return 0;
			p++;
			s++;
			break;
		case '[': {
			p++;
			bool neg = false;
			if (*p == '^' || *p == '!') {
				neg = true;
				p++;
			}
			bool ok = false;
			int nranges = 0;
			unsigned char c = (unsigned char)*s;
			while (*p != ']') {
				if (!*p)
					return -1;
				unsigned char lo = (unsigned char)*p++;
				if (lo == '\\') {
					if (!*p)
						return -1;
					lo = (unsigned char)*p++;
				}
				unsigned char hi = lo;
				if (*p == '-' && p[1] != ']') {
					p++;
					if (!*p)
						return -1;
					hi = (unsigned char)*p++;
					if (hi == '\\') {
						if (!*p)
							return -1;
						hi = (unsigned char)*p++;
					}
				}
				if (lo <= c && c <= hi)
					ok = true;
				nranges++;
			}
			if (nranges == 0)
				return -1;
			p++;
			if (!*s || *s == '/' || ok == neg)
				return 0;
			s++;
			break;
		}
		case '\\':
			p++;
			if (!*p)
				return -1;
			/* fall through */
		default:
			if (*p != *s)
				return 0;
			p++;
			s++;
		}
	}
}

int kiln_copy_match(const char *pattern, const char *name)
{
	return match_here(pattern, name);
}

static bool has_meta(const char *s)
{
	return strpbrk(s, "*?[\\") != NULL;
}

char *kiln_copy_clean(const char *path)
{
	bool rooted = path[0] == '/';
	size_t len = strlen(path);
	char **comps = kiln_xcalloc(len / 2 + 2, sizeof(char *));
	size_t n = 0, dotdot = 0;     /* leading ".." count for unrooted paths */
	KILN_AUTOFREE char *copy = kiln_xstrdup(path);
	char *save = NULL;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			if (n > dotdot)
				n--;
			else if (!rooted)
				comps[n++] = c, dotdot++;
			continue;
		}
		comps[n++] = c;
	}
	struct kiln_buf b = {0};
	if (rooted)
		kiln_buf_putc(&b, '/');
	for (size_t i = 0; i < n; i++) {
		if (i)
			kiln_buf_putc(&b, '/');
		kiln_buf_puts(&b, comps[i]);
	}
	free(comps);
	if (b.len == 0)
		kiln_buf_putc(&b, '.');
	return kiln_buf_steal(&b);
}

char *kiln_copy_dest_path(const char *dest, const char *workdir)
{
	if (!workdir || !*workdir)
		workdir = "/";
	size_t dl = strlen(dest);
	bool dir = dl == 0 || dest[dl - 1] == '/' || !strcmp(dest, ".") || !strcmp(dest, "..") ||
		   kiln_str_has_suffix(dest, "/.") || kiln_str_has_suffix(dest, "/..");
	KILN_AUTOFREE char *joined = dest[0] == '/' ? kiln_xstrdup(dest)
						    : kiln_xasprintf("/%s/%s", workdir, dest);
	char *c = kiln_copy_clean(joined);
	if (dir && strcmp(c, "/")) {
		char *d = kiln_xasprintf("%s/", c);
		free(c);
		c = d;
	}
	return c;
}

/* The source-relative form of a pattern: "." or "a/b" (never leaves the root). */
static char *src_rel(const char *pattern)
{
	KILN_AUTOFREE char *rooted = kiln_xasprintf("/%s", pattern);
	char *c = kiln_copy_clean(rooted);
	if (!strcmp(c, "/")) {
		free(c);
		return kiln_xstrdup(".");
	}
	char *r = kiln_xstrdup(c + 1);
	free(c);
	return r;
}

static char *join_rel(const char *a, const char *b)
{
	if (!strcmp(a, "."))
		return kiln_xstrdup(b);
	return kiln_xasprintf("%s/%s", a, b);
}

static int open_in_root(int rootfd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = resolve};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

/* ---- expansion -------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Excluded for good (a directory that may re-include something is walked). */
static bool excluded(const struct kiln_copy_src *src, const char *rel, bool is_dir)
{
	return src->excluded && strcmp(rel, ".") &&
	       src->excluded(src->excluded_arg, rel, is_dir) == KILN_COPY_EXCLUDED;
}

static int expand_rec(const struct kiln_copy_src *src, const char *prefix, char **comps, size_t i,
		      size_t n, struct kiln_strv *out, struct kiln_err *err)
{
	if (i == n) {
		kiln_strv_push(out, prefix);
		return 0;
	}
	if (!has_meta(comps[i])) {
		KILN_AUTOFREE char *next = join_rel(prefix, comps[i]);
		int fd = open_in_root(src->rootfd, next, O_PATH, IN_ROOT);
		if (fd < 0)
			return 0;
		struct stat st;
		int r = fstat(fd, &st);
		close(fd);
		if (r < 0 || excluded(src, next, S_ISDIR(st.st_mode)))
			return 0;
		return expand_rec(src, next, comps, i + 1, n, out, err);
	}
	int dfd = open_in_root(src->rootfd, prefix, O_RDONLY | O_DIRECTORY, IN_ROOT);
	if (dfd < 0)
		return 0;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return kiln_err_set(err, errno, "reading %s", prefix);
	}
	struct kiln_strv names = {0};
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		int m = kiln_copy_match(comps[i], e->d_name);
		if (m < 0) {
			closedir(d);
			kiln_strv_free(&names);
			return kiln_err_set(err, 0, "bad pattern \"%s\"", comps[i]);
		}
		if (m)
			kiln_strv_push(&names, e->d_name);
	}
	closedir(d);
	if (names.n)
		qsort(names.v, names.n, sizeof(char *), cmp_str);
	int rc = 0;
	for (size_t k = 0; k < names.n && rc == 0; k++) {
		KILN_AUTOFREE char *next = join_rel(prefix, names.v[k]);
		struct stat st;
		int fd = open_in_root(src->rootfd, next, O_PATH, IN_ROOT);
		if (fd < 0)
			continue;
		int r = fstat(fd, &st);
		close(fd);
		if (r < 0 || excluded(src, next, S_ISDIR(st.st_mode)))
			continue;
		if (i + 1 < n && !S_ISDIR(st.st_mode))
			continue;
		rc = expand_rec(src, next, comps, i + 1, n, out, err);
	}
	kiln_strv_free(&names);
	return rc;
}

int kiln_copy_expand(const struct kiln_copy_src *src, char *const *patterns, size_t n,
		     struct kiln_strv *out, struct kiln_err *err)
{
	for (size_t p = 0; p < n; p++) {
		KILN_AUTOFREE char *rel = src_rel(patterns[p]);
		size_t before = out->n;
		if (!strcmp(rel, ".")) {
			kiln_strv_push(out, ".");
			continue;
		}
		KILN_AUTOFREE char *copy = kiln_xstrdup(rel);
		char *comps[256];
		size_t nc = 0;
		char *save = NULL;
		for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
			if (nc == 256)
				return kiln_err_set(err, 0, "source path too deep: %s", patterns[p]);
			comps[nc++] = c;
		}
		if (expand_rec(src, ".", comps, 0, nc, out, err) < 0)
			return -1;
		if (out->n == before)
			return kiln_err_set(err, ENOENT,
					    "source \"%s\" not found in the build context or excluded by .dockerignore",
					    patterns[p]);
	}
	return 0;
}

/* ---- exclusion (--exclude) -------------------------------------------- */

static int excludes_compile(const struct kiln_copy_opts *opts, struct kiln_ignore **out,
			    struct kiln_err *err)
{
	*out = NULL;
	if (!opts || !opts->excludes || !opts->excludes[0])
		return 0;
	size_t n = 0;
	while (opts->excludes[n])
		n++;
	if (kiln_ignore_from_patterns(opts->excludes, n, out, err) < 0)
		return kiln_err_wrap(err, "--exclude");
	return 0;
}

static bool opt_excluded(const struct kiln_ignore *ig, const char *rel)
{
	return ig && kiln_ignore_match(ig, rel);
}

/* ---- digest ----------------------------------------------------------- */

static int hash_fd(int fd, unsigned char out[32], struct kiln_err *err)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(c);
		return kiln_err_set(err, 0, "sha256 init failed");
	}
	static __thread char buf[1 << 16];
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			EVP_MD_CTX_free(c);
			return kiln_err_set(err, errno, "reading a source file");
		}
		if (r == 0)
			break;
		EVP_DigestUpdate(c, buf, (size_t)r);
	}
	unsigned int len = 32;
	EVP_DigestFinal_ex(c, out, &len);
	EVP_MD_CTX_free(c);
	return 0;
}

struct digest_walk {
	const struct kiln_copy_src *src;
	const struct kiln_copy_opts *opts;
	struct kiln_ignore *ex;
	EVP_MD_CTX *md;
};

static void md_printf(EVP_MD_CTX *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void md_printf(EVP_MD_CTX *md, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	EVP_DigestUpdate(md, s, (size_t)n + 1);
	free(s);
}

static int digest_entry(struct digest_walk *w, int fd, const char *rel, const char *top_rel,
			const struct stat *st, struct kiln_err *err);

static int digest_dir(struct digest_walk *w, int dfd, const char *rel, const char *top_rel,
		      struct kiln_err *err)
{
	int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return kiln_err_set(err, errno, "reading directory %s", rel);
	}
	struct kiln_strv names = {0};
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			kiln_strv_push(&names, e->d_name);
	closedir(d);
	if (names.n)
		qsort(names.v, names.n, sizeof(char *), cmp_str);
	int rc = 0;
	for (size_t i = 0; i < names.n && rc == 0; i++) {
		KILN_AUTOFREE char *crel = join_rel(rel, names.v[i]);
		KILN_AUTOFREE char *ctop = join_rel(top_rel, names.v[i]);
		struct stat st;
		if (fstatat(dfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = kiln_err_set(err, errno, "stat %s", crel);
			break;
		}
		if (excluded(w->src, crel, S_ISDIR(st.st_mode)) || opt_excluded(w->ex, ctop))
			continue;
		int cfd = -1;
		if (S_ISDIR(st.st_mode))
			cfd = openat(dfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		else if (S_ISREG(st.st_mode))
			cfd = openat(dfd, names.v[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		else if (S_ISLNK(st.st_mode))
			cfd = openat(dfd, names.v[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		else
			cfd = openat(dfd, names.v[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			rc = kiln_err_set(err, errno, "opening %s", crel);
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t l = readlinkat(dfd, names.v[i], target, sizeof(target) - 1);
			if (l < 0) {
				close(cfd);
				rc = kiln_err_set(err, errno, "readlink %s", crel);
				break;
			}
			target[l] = 0;
			md_printf(w->md, "L %s %s", ctop, target);
			md_printf(w->md, "%u %u", w->src->keep_owner ? st.st_uid : 0,
				  w->src->keep_owner ? st.st_gid : 0);
			close(cfd);
			continue;
		}
		rc = digest_entry(w, cfd, crel, ctop, &st, err);
		close(cfd);
	}
	kiln_strv_free(&names);
	return rc;
}

/* The names of the xattrs of fd that COPY carries over (all that a layer
 * records), sorted; none on a file system without xattrs.  -1 (errno set)
 * when they cannot be listed. */
static int copied_xattrs(int fd, struct kiln_strv *out)
{
	char names[16384];
	ssize_t n = flistxattr(fd, names, sizeof(names));
	if (n < 0)
		return errno == ENOTSUP || errno == ENODATA ? 0 : -1;
	for (char *name = names; name < names + n; name += strlen(name) + 1)
		if (!kiln_layer_xattr_skipped(name))
			kiln_strv_push(out, name);
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), cmp_str);
	return 0;
}

/* The value of xattr name of fd into *buf (grown as needed): its length, or
 * -1 when it cannot be read (e.g. removed meanwhile). */
static ssize_t xattr_value(int fd, const char *name, char **buf)
{
	ssize_t vl = fgetxattr(fd, name, NULL, 0);
	if (vl < 0)
		return -1;
	*buf = kiln_xrealloc(*buf, (size_t)vl + 1);
	return fgetxattr(fd, name, *buf, (size_t)vl);
}

/* The xattrs COPY carries over, into the digest: a file that only gained a
 * capability is a different source. */
static void digest_xattrs(struct digest_walk *w, int fd)
{
	struct kiln_strv names = {0};
	if (copied_xattrs(fd, &names) < 0)
		return;
	char *val = NULL;
	for (size_t i = 0; i < names.n; i++) {
		ssize_t vl = xattr_value(fd, names.v[i], &val);
		if (vl < 0)
			continue;
		md_printf(w->md, "X %s %zd", names.v[i], vl);
		EVP_DigestUpdate(w->md, val, (size_t)vl);
	}
	free(val);
	kiln_strv_free(&names);
}

static int digest_entry(struct digest_walk *w, int fd, const char *rel, const char *top_rel,
			const struct stat *st, struct kiln_err *err)
{
	unsigned mode = st->st_mode & 07777;
	unsigned uid = w->src->keep_owner ? st->st_uid : 0, gid = w->src->keep_owner ? st->st_gid : 0;
	if (S_ISDIR(st->st_mode)) {
		md_printf(w->md, "D %s %o %u %u", top_rel, mode, uid, gid);
		digest_xattrs(w, fd);
		return digest_dir(w, fd, rel, top_rel, err);
	}
	if (S_ISREG(st->st_mode)) {
		unsigned char h[32];
		int r = w->src->hash ? w->src->hash(w->src->hash_arg, fd, rel, st, h, err) : hash_fd(fd, h, err);
		if (r < 0)
			return kiln_err_wrap(err, "hashing %s", rel);
		char hex[65];
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", h[i]);
		md_printf(w->md, "F %s %o %u %u %lld %s %lu", top_rel, mode, uid, gid,
			  (long long)st->st_size, hex, (unsigned long)st->st_nlink > 1 ? (unsigned long)st->st_ino : 0UL);
		digest_xattrs(w, fd);
		return 0;
	}
	md_printf(w->md, "S %s %o %o %u %u %lu", top_rel, mode, (unsigned)(st->st_mode & S_IFMT), uid, gid,
		  (unsigned long)st->st_rdev);
	return 0;
}

int kiln_copy_digest(const struct kiln_copy_src *src, char *const *matches, size_t n,
		     const struct kiln_copy_opts *opts, char out[72], struct kiln_err *err)
{
	struct digest_walk w = {.src = src, .opts = opts, .md = EVP_MD_CTX_new()};
	if (!w.md || !EVP_DigestInit_ex(w.md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(w.md);
		return kiln_err_set(err, 0, "sha256 init failed");
	}
	if (excludes_compile(opts, &w.ex, err) < 0) {
		EVP_MD_CTX_free(w.md);
		return -1;
	}
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		md_printf(w.md, "M %s", matches[i]);
		int fd = open_in_root(src->rootfd, matches[i], O_PATH, IN_ROOT);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = kiln_err_set(err, errno, "source %s", matches[i]);
			if (fd >= 0)
				close(fd);
			break;
		}
		close(fd);
		int flags = S_ISDIR(st.st_mode) ? O_RDONLY | O_DIRECTORY : S_ISREG(st.st_mode) ? O_RDONLY | O_NOCTTY : O_PATH;
		fd = open_in_root(src->rootfd, matches[i], flags, IN_ROOT);
		if (fd < 0) {
			rc = kiln_err_set(err, errno, "opening source %s", matches[i]);
			break;
		}
		const char *base = strrchr(matches[i], '/');
		base = base ? base + 1 : matches[i];
		rc = digest_entry(&w, fd, matches[i], S_ISDIR(st.st_mode) ? "." : base, &st, err);
		close(fd);
	}
	if (rc == 0) {
		unsigned char h[32];
		unsigned int len = 32;
		EVP_DigestFinal_ex(w.md, h, &len);
		strcpy(out, "sha256:");
		for (int i = 0; i < 32; i++)
			snprintf(out + 7 + 2 * i, 3, "%02x", h[i]);
	}
	EVP_MD_CTX_free(w.md);
	kiln_ignore_free(w.ex);
	return rc;
}

/* ---- writing into the rootfs ------------------------------------------ */

struct hardlink {
	dev_t dev;
	ino_t ino;
	int fd;            /* O_PATH of the first copy */
};

struct copier {
	const struct kiln_copy_src *src;
	const struct kiln_copy_opts *opts;
	struct kiln_ignore *ex;
	struct hardlink *links;
	size_t nlinks;
};

static void owner_of(const struct copier *c, const struct stat *st, uid_t *uid, gid_t *gid)
{
	if (c->opts->chown) {
		*uid = c->opts->uid;
		*gid = c->opts->gid;
	} else if (c->src->keep_owner && st) {
		*uid = st->st_uid;
		*gid = st->st_gid;
	} else {
		*uid = 0;
		*gid = 0;
	}
}

/* mkdir -p beneath rootfd; returns an O_DIRECTORY fd of path (absolute or relative). */
static int mkdir_in_root(int rootfd, const char *path, const struct copier *c, struct kiln_err *err)
{
	KILN_AUTOFREE char *clean = kiln_copy_clean(path[0] == '/' ? path + 1 : path);
	int fd = open_in_root(rootfd, ".", O_RDONLY | O_DIRECTORY, IN_ROOT);
	if (fd < 0)
		return kiln_err_set(err, errno, "opening the rootfs");
	if (!strcmp(clean, "."))
		return fd;
	char *save = NULL;
	struct kiln_buf sofar = {0};
	for (char *comp = strtok_r(clean, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		if (sofar.len)
			kiln_buf_putc(&sofar, '/');
		kiln_buf_puts(&sofar, comp);
		int next = open_in_root(rootfd, sofar.data, O_RDONLY | O_DIRECTORY, IN_ROOT);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
				int e = errno;
				close(fd);
				kiln_err_set(err, e, "creating directory /%s", sofar.data);
				kiln_buf_free(&sofar);
				return -1;
			}
			next = open_in_root(rootfd, sofar.data, O_RDONLY | O_DIRECTORY, IN_ROOT);
			if (next >= 0) {
				uid_t u;
				gid_t g;
				owner_of(c, NULL, &u, &g);
				if (fchown(next, u, g) < 0 || fchmod(next, 0755) < 0) {
					int e = errno;
					close(next);
					close(fd);
					kiln_err_set(err, e, "setting owner of /%s", sofar.data);
					kiln_buf_free(&sofar);
					return -1;
				}
			}
		}
		if (next < 0) {
			int e = errno;
			close(fd);
			kiln_err_set(err, e, e == ENOTDIR ? "/%s is not a directory" : "opening directory /%s",
				     sofar.data);
			kiln_buf_free(&sofar);
			return -1;
		}
		close(fd);
		fd = next;
	}
	kiln_buf_free(&sofar);
	return fd;
}

static int copy_data(int in, int out, struct kiln_err *err)
{
	for (;;) {
		ssize_t r = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (r == 0)
			return 0;
		if (r > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == EBADF)
			break;
		return kiln_err_set(err, errno, "copying file data");
	}
	static __thread char buf[1 << 16];
	for (;;) {
		ssize_t r = read(in, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kiln_err_set(err, errno, "reading a source file");
		if (r == 0)
			return 0;
		if (kiln_write_all(out, buf, (size_t)r) < 0)
			return kiln_err_set(err, errno, "writing a file");
	}
}

/* Remove what is at dirfd/name unless it is a directory and keep_dir. */
static int clear_slot(int dirfd, const char *name, bool want_dir, bool *is_dir, struct kiln_err *err)
{
	struct stat st;
	*is_dir = false;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return kiln_err_set(err, errno, "stat %s", name);
	}
	if (S_ISDIR(st.st_mode)) {
		if (want_dir) {
			*is_dir = true;
			return 0;
		}
		return kiln_err_set(err, EISDIR, "cannot replace directory %s with a file", name);
	}
	if (unlinkat(dirfd, name, 0) < 0)
		return kiln_err_set(err, errno, "replacing %s", name);
	return 0;
}

/* Extended attributes of src onto dst (both readable fds), after the owner
 * is set (a chown drops security.capability); those a layer does not record
 * are not copied (kiln_layer_xattr_skipped).  A file system without xattr
 * support on the destination takes none, as with Docker. */
static int copy_xattrs(int src, int dst, struct kiln_err *err)
{
	struct kiln_strv names = {0};
	if (copied_xattrs(src, &names) < 0)
		return kiln_err_set(err, errno, "listing xattrs");
	char *val = NULL;
	int rc = 0;
	for (size_t i = 0; i < names.n && rc == 0; i++) {
		ssize_t vl = xattr_value(src, names.v[i], &val);
		if (vl >= 0 && fsetxattr(dst, names.v[i], val, (size_t)vl, 0) < 0 && errno != ENOTSUP)
			rc = kiln_err_set(err, errno, "setting xattr %s", names.v[i]);
	}
	free(val);
	kiln_strv_free(&names);
	return rc;
}

static int set_meta_fd(int fd, int srcfd, const struct copier *c, const struct stat *st, bool is_dir,
		       struct kiln_err *err)
{
	uid_t u;
	gid_t g;
	owner_of(c, st, &u, &g);
	if (fchown(fd, u, g) < 0)
		return kiln_err_set(err, errno, "chown");
	mode_t mode = c->opts->chmod ? c->opts->mode : (st->st_mode & 07777);
	(void)is_dir;
	if (fchmod(fd, mode) < 0)
		return kiln_err_set(err, errno, "chmod");
	if (srcfd >= 0 && copy_xattrs(srcfd, fd, err) < 0)
		return -1;
	struct timespec ts[2] = {st->st_mtim, st->st_mtim};
	if (futimens(fd, ts) < 0)
		return kiln_err_set(err, errno, "setting times");
	return 0;
}

static int copy_file(struct copier *c, int srcfd, const struct stat *st, int dstdir, const char *name,
		     struct kiln_err *err)
{
	bool is_dir;
	if (clear_slot(dstdir, name, false, &is_dir, err) < 0)
		return -1;
	if (st->st_nlink > 1) {
		for (size_t i = 0; i < c->nlinks; i++) {
			if (c->links[i].dev != st->st_dev || c->links[i].ino != st->st_ino)
				continue;
			if (linkat(c->links[i].fd, "", dstdir, name, AT_EMPTY_PATH) == 0)
				return 0;
			break;
		}
	}
	int out = openat(dstdir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return kiln_err_set(err, errno, "creating %s", name);
	int rc = copy_data(srcfd, out, err);
	if (rc == 0)
		rc = set_meta_fd(out, srcfd, c, st, false, err);
	if (rc == 0 && st->st_nlink > 1) {
		int pfd = openat(dstdir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (pfd >= 0) {
			c->links = kiln_xrealloc(c->links, (c->nlinks + 1) * sizeof(*c->links));
			c->links[c->nlinks++] = (struct hardlink){st->st_dev, st->st_ino, pfd};
		}
	}
	close(out);
	if (rc < 0)
		kiln_err_wrap(err, "copying %s", name);
	return rc;
}

static int copy_symlink(struct copier *c, int srcdir, const char *srcname, const struct stat *st,
			int dstdir, const char *name, struct kiln_err *err)
{
	char target[4096];
	ssize_t l = readlinkat(srcdir, srcname, target, sizeof(target) - 1);
	if (l < 0)
		return kiln_err_set(err, errno, "readlink %s", srcname);
	target[l] = 0;
	bool is_dir;
	if (clear_slot(dstdir, name, false, &is_dir, err) < 0)
		return -1;
	if (symlinkat(target, dstdir, name) < 0)
		return kiln_err_set(err, errno, "creating symlink %s", name);
	uid_t u;
	gid_t g;
	owner_of(c, st, &u, &g);
	if (fchownat(dstdir, name, u, g, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_set(err, errno, "chown of symlink %s", name);
	struct timespec ts[2] = {st->st_mtim, st->st_mtim};
	utimensat(dstdir, name, ts, AT_SYMLINK_NOFOLLOW);
	return 0;
}

static int copy_dir_contents(struct copier *c, int srcdir, const char *top_rel, const char *src_rel_path,
			     int dstdir, struct kiln_err *err);

static int copy_child(struct copier *c, int srcdir, const char *sname, const char *crel, const char *ctop,
		      int dstdir, const char *dname, struct kiln_err *err)
{
	struct stat st;
	if (fstatat(srcdir, sname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_err_set(err, errno, "stat %s", crel);
	if (S_ISLNK(st.st_mode))
		return copy_symlink(c, srcdir, sname, &st, dstdir, dname, err);
	if (S_ISREG(st.st_mode)) {
		int fd = openat(srcdir, sname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return kiln_err_set(err, errno, "opening %s", crel);
		int rc = copy_file(c, fd, &st, dstdir, dname, err);
		close(fd);
		return rc;
	}
	if (S_ISDIR(st.st_mode)) {
		int sfd = openat(srcdir, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0)
			return kiln_err_set(err, errno, "opening %s", crel);
		bool is_dir;
		if (clear_slot(dstdir, dname, true, &is_dir, err) < 0) {
			close(sfd);
			return -1;
		}
		if (!is_dir && mkdirat(dstdir, dname, 0700) < 0) {
			close(sfd);
			return kiln_err_set(err, errno, "creating directory %s", dname);
		}
		int dfd = openat(dstdir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0) {
			close(sfd);
			return kiln_err_set(err, errno, "opening directory %s", dname);
		}
		int rc = copy_dir_contents(c, sfd, ctop, crel, dfd, err);
		if (rc == 0)
			rc = set_meta_fd(dfd, sfd, c, &st, true, err);
		close(dfd);
		close(sfd);
		return rc;
	}
	if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		bool is_dir;
		if (clear_slot(dstdir, dname, false, &is_dir, err) < 0)
			return -1;
		if (mknodat(dstdir, dname, st.st_mode & (S_IFMT | 07777), st.st_rdev) < 0)
			return kiln_err_set(err, errno, "creating node %s", dname);
		uid_t u;
		gid_t g;
		owner_of(c, &st, &u, &g);
		fchownat(dstdir, dname, u, g, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	return 0; /* sockets are skipped */
}

static int copy_dir_contents(struct copier *c, int srcdir, const char *top_rel, const char *src_rel_path,
			     int dstdir, struct kiln_err *err)
{
	int dup_fd = fcntl(srcdir, F_DUPFD_CLOEXEC, 0);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return kiln_err_set(err, errno, "reading directory %s", src_rel_path);
	}
	struct kiln_strv names = {0};
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			kiln_strv_push(&names, e->d_name);
	closedir(d);
	if (names.n)
		qsort(names.v, names.n, sizeof(char *), cmp_str);
	int rc = 0;
	for (size_t i = 0; i < names.n && rc == 0; i++) {
		KILN_AUTOFREE char *crel = join_rel(src_rel_path, names.v[i]);
		KILN_AUTOFREE char *ctop = join_rel(top_rel, names.v[i]);
		struct stat st;
		if (fstatat(srcdir, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (excluded(c->src, crel, S_ISDIR(st.st_mode)) || opt_excluded(c->ex, ctop))
			continue;
		rc = copy_child(c, srcdir, names.v[i], crel, ctop, dstdir, names.v[i], err);
	}
	kiln_strv_free(&names);
	return rc;
}

static const char *archive_kind(int fd)
{
	unsigned char h[512];
	ssize_t r = pread(fd, h, sizeof(h), 0);
	if (r < 0)
		return NULL;
	if (r >= 2 && h[0] == 0x1f && h[1] == 0x8b)
		return "gzip";
	if (r >= 3 && !memcmp(h, "BZh", 3))
		return "bzip2";
	if (r >= 6 && !memcmp(h, "\xfd" "7zXZ\0", 6))
		return "xz";
	if (r >= 4 && !memcmp(h, "\x28\xb5\x2f\xfd", 4))
		return "zstd";
	if (r >= 262 && !memcmp(h + 257, "ustar", 5))
		return "tar";
	return NULL;
}

static int dir_exists_in_root(int rootfd, const char *path)
{
	int fd = open_in_root(rootfd, path[0] == '/' ? path + 1 : path, O_PATH, IN_ROOT);
	if (fd < 0)
		return 0;
	struct stat st;
	int r = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
	close(fd);
	return r;
}

static char *dirname_of(const char *abs)
{
	const char *s = strrchr(abs, '/');
	if (!s || s == abs)
		return kiln_xstrdup("/");
	return kiln_xstrndup(abs, (size_t)(s - abs));
}

static const char *basename_of(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

int kiln_copy_run(const struct kiln_copy_src *src, char *const *matches, size_t n,
		  int dest_rootfd, const struct kiln_copy_opts *opts, struct kiln_err *err)
{
	struct copier c = {.src = src, .opts = opts};
	KILN_AUTOFREE char *dest = kiln_copy_dest_path(opts->dest, opts->workdir);
	size_t dl = strlen(dest);
	bool dest_slash = dest[dl - 1] == '/';
	if (n > 1 && !dest_slash && !opts->parents)
		return kiln_err_set(err, 0,
				    "when using COPY with more than one source file, the destination must be a directory and end with a /");
	KILN_AUTOFREE char *dest_noslash = dl > 1 && dest_slash ? kiln_xstrndup(dest, dl - 1) : kiln_xstrdup(dest);
	if (excludes_compile(opts, &c.ex, err) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *m = matches[i];
		int pfd = open_in_root(src->rootfd, m, O_PATH, IN_ROOT);
		struct stat st;
		if (pfd < 0 || fstat(pfd, &st) < 0) {
			rc = kiln_err_set(err, errno, "source %s", m);
			if (pfd >= 0)
				close(pfd);
			break;
		}
		close(pfd);
		/* the target path of this source */
		KILN_AUTOFREE char *target = NULL;
		if (opts->parents && strcmp(m, "."))
			target = kiln_xasprintf("%s/%s", strcmp(dest_noslash, "/") ? dest_noslash : "", m);
		if (S_ISDIR(st.st_mode)) {
			int sfd = open_in_root(src->rootfd, m, O_RDONLY | O_DIRECTORY, IN_ROOT);
			if (sfd < 0) {
				rc = kiln_err_set(err, errno, "opening source %s", m);
				break;
			}
			int dfd = mkdir_in_root(dest_rootfd, target ? target : dest_noslash, &c, err);
			if (dfd < 0) {
				close(sfd);
				rc = -1;
				break;
			}
			rc = copy_dir_contents(&c, sfd, ".", m, dfd, err);
			close(dfd);
			close(sfd);
			continue;
		}
		int sfd = -1;
		if (S_ISREG(st.st_mode)) {
			sfd = open_in_root(src->rootfd, m, O_RDONLY | O_NOCTTY, IN_ROOT);
			if (sfd < 0) {
				rc = kiln_err_set(err, errno, "opening source %s", m);
				break;
			}
		}
		if (sfd >= 0 && opts->add && archive_kind(sfd)) {
			KILN_AUTOFREE char *tparent = target ? dirname_of(target) : NULL;
			int dfd = mkdir_in_root(dest_rootfd, tparent ? tparent : dest_noslash, &c, err);
			if (dfd < 0) {
				close(sfd);
				rc = -1;
				break;
			}
			if (!kiln_layer_apply) {
				rc = kiln_err_set(err, ENOSYS, "ADD %s: archive extraction is not available in this build", m);
			} else {
				struct kiln_layer_apply_opts ao = {.whiteouts = false, .allow_devices = geteuid() == 0,
								   .keep_owner = true};
				rc = kiln_layer_apply(dfd, sfd, &ao, NULL, err);
				if (rc < 0)
					kiln_err_wrap(err, "extracting %s", m);
			}
			close(dfd);
			close(sfd);
			continue;
		}
		/* a single non-directory */
		KILN_AUTOFREE char *parent = NULL;
		const char *name;
		if (target) {
			parent = dirname_of(target);
			name = basename_of(target);
		} else if (dest_slash || dir_exists_in_root(dest_rootfd, dest_noslash)) {
			parent = kiln_xstrdup(dest_noslash);
			name = basename_of(m);
		} else {
			parent = dirname_of(dest_noslash);
			name = basename_of(dest_noslash);
		}
		int dfd = mkdir_in_root(dest_rootfd, parent, &c, err);
		if (dfd < 0) {
			if (sfd >= 0)
				close(sfd);
			rc = -1;
			break;
		}
		if (sfd >= 0) {
			rc = copy_file(&c, sfd, &st, dfd, name, err);
			close(sfd);
		} else {
			/* a device or fifo as a top-level source: recreate it */
			KILN_AUTOFREE char *mparent = strchr(m, '/') ? dirname_of(m) : kiln_xstrdup(".");
			int pdir = open_in_root(src->rootfd, mparent, O_RDONLY | O_DIRECTORY, IN_ROOT);
			if (pdir >= 0) {
				rc = copy_child(&c, pdir, basename_of(m), m, basename_of(m), dfd, name, err);
				close(pdir);
			}
		}
		close(dfd);
	}
	for (size_t i = 0; i < c.nlinks; i++)
		close(c.links[i].fd);
	free(c.links);
	kiln_ignore_free(c.ex);
	return rc;
}

int kiln_copy_mkdir(int rootfd, const char *path, uid_t uid, gid_t gid, struct kiln_err *err)
{
	struct kiln_copy_src src = {.rootfd = -1};
	struct kiln_copy_opts opts = {.chown = true, .uid = uid, .gid = gid};
	struct copier c = {.src = &src, .opts = &opts};
	return mkdir_in_root(rootfd, path, &c, err);
}

/* ---- ADD <url> -------------------------------------------------------- */

struct dl_state {
	int fd;
	EVP_MD_CTX *md;
	int werr;
};

static size_t dl_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct dl_state *s = arg;
	size_t n = size * nmemb;
	if (kiln_write_all(s->fd, ptr, n) < 0) {
		s->werr = errno;
		return 0;
	}
	EVP_DigestUpdate(s->md, ptr, n);
	return n;
}

int kiln_copy_download(const char *url, const char *checksum, int tmpdir_fd, int *fd_out,
		       char digest[72], int64_t *mtime, struct kiln_err *err)
{
	*fd_out = -1;
	*mtime = 0;
	int fd = openat(tmpdir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return kiln_err_set(err, errno, "creating a temporary file for %s", url);
	struct dl_state s = {.fd = fd, .md = EVP_MD_CTX_new()};
	EVP_DigestInit_ex(s.md, EVP_sha256(), NULL);
	CURL *h = curl_easy_init();
	if (!h) {
		close(fd);
		EVP_MD_CTX_free(s.md);
		return kiln_err_set(err, 0, "curl init failed");
	}
	char ebuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln/0.1");
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	CURLcode cr = curl_easy_perform(h);
	long ft = -1;
	if (cr == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_FILETIME, &ft);
	curl_easy_cleanup(h);
	unsigned char md[32];
	unsigned int mdl = 32;
	EVP_DigestFinal_ex(s.md, md, &mdl);
	EVP_MD_CTX_free(s.md);
	if (cr != CURLE_OK) {
		close(fd);
		if (s.werr)
			return kiln_err_set(err, s.werr, "downloading %s", url);
		return kiln_err_set(err, 0, "downloading %s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(cr));
	}
	strcpy(digest, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(digest + 7 + 2 * i, 3, "%02x", md[i]);
	if (checksum && *checksum) {
		const char *want = checksum;
		if (!kiln_str_has_prefix(want, "sha256:")) {
			close(fd);
			return kiln_err_set(err, 0, "unsupported checksum \"%s\" (only sha256:<hex>)", checksum);
		}
		if (strcasecmp(want, digest)) {
			close(fd);
			return kiln_err_set(err, 0, "checksum mismatch for %s: expected %s, got %s", url, want, digest);
		}
	}
	if (ft > 0)
		*mtime = ft;
	lseek(fd, 0, SEEK_SET);
	*fd_out = fd;
	return 0;
}

int kiln_copy_install_fd(int fd, const char *name, int64_t mtime, int dest_rootfd,
			 const struct kiln_copy_opts *opts, struct kiln_err *err)
{
	struct kiln_copy_src src = {.rootfd = -1};
	struct copier c = {.src = &src, .opts = opts};
	KILN_AUTOFREE char *dest = kiln_copy_dest_path(opts->dest, opts->workdir);
	size_t dl = strlen(dest);
	bool dest_slash = dest[dl - 1] == '/';
	KILN_AUTOFREE char *dest_noslash = dl > 1 && dest_slash ? kiln_xstrndup(dest, dl - 1) : kiln_xstrdup(dest);
	KILN_AUTOFREE char *parent = NULL;
	const char *fname;
	if (dest_slash || dir_exists_in_root(dest_rootfd, dest_noslash)) {
		parent = kiln_xstrdup(dest_noslash);
		fname = name;
	} else {
		parent = dirname_of(dest_noslash);
		fname = basename_of(dest_noslash);
	}
	if (!fname || !*fname || strchr(fname, '/') || !strcmp(fname, ".") || !strcmp(fname, ".."))
		return kiln_err_set(err, 0, "cannot determine a file name for the download; end the destination without '/'");
	int dfd = mkdir_in_root(dest_rootfd, parent, &c, err);
	if (dfd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(dfd);
		return kiln_err_set(err, errno, "stat of the download");
	}
	st.st_mode = (st.st_mode & S_IFMT) | 0600;
	st.st_nlink = 1;
	if (mtime > 0) {
		st.st_mtim.tv_sec = mtime;
		st.st_mtim.tv_nsec = 0;
	}
	lseek(fd, 0, SEEK_SET);
	int rc = copy_file(&c, fd, &st, dfd, fname, err);
	close(dfd);
	return rc;
}
