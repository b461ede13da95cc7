#include "common/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
	fprintf(stderr, "kiln: out of memory allocating %zu bytes\n", n);
	abort();
}

void *kiln_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *kiln_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *kiln_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *kiln_xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (!p)
		oom(strlen(s));
	return p;
}

char *kiln_xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom(n);
	return p;
}

char *kiln_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p = NULL;
	va_start(ap, fmt);
	int r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom(strlen(fmt));
	return p;
}

void kiln_freep(void *p)
{
	free(*(void **)p);
}

void kiln_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static void buf_grow(struct kiln_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = kiln_xrealloc(b->data, cap);
	b->cap = cap;
}

void kiln_buf_append(struct kiln_buf *b, const void *data, size_t len)
{
	buf_grow(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void kiln_buf_puts(struct kiln_buf *b, const char *s)
{
	kiln_buf_append(b, s, strlen(s));
}

void kiln_buf_putc(struct kiln_buf *b, char c)
{
	kiln_buf_append(b, &c, 1);
}

void kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n > 0) {
		buf_grow(b, (size_t)n);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
		b->len += (size_t)n;
	} else {
		buf_grow(b, 0);
		b->data[b->len] = '\0';
	}
	va_end(ap2);
}

char *kiln_buf_steal(struct kiln_buf *b)
{
	buf_grow(b, 0);
	b->data[b->len] = '\0';
	char *d = b->data;
	b->data = NULL;
	b->len = b->cap = 0;
	return d;
}

void kiln_buf_free(struct kiln_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void kiln_strv_push_owned(struct kiln_strv *s, char *str)
{
	if (s->n + 2 > s->cap) {
		s->cap = s->cap ? s->cap * 2 : 8;
		s->v = kiln_xrealloc(s->v, s->cap * sizeof(char *));
	}
	s->v[s->n++] = str;
	s->v[s->n] = NULL;
}

void kiln_strv_push(struct kiln_strv *s, const char *str)
{
	kiln_strv_push_owned(s, kiln_xstrdup(str));
}

void kiln_strv_free(struct kiln_strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

char **kiln_strv_dup(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	char **out = kiln_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = kiln_xstrdup(v[i]);
	return out;
}

void kiln_strv_free_raw(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

int kiln_read_fd(int fd, size_t max, char **out, size_t *len, struct kiln_err *err)
{
	struct kiln_buf b = {0};
	char chunk[65536];
	for (;;) {
		ssize_t r = read(fd, chunk, sizeof(chunk));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			kiln_buf_free(&b);
			return kiln_err_set(err, errno, "read");
		}
		if (r == 0)
			break;
		if (max && b.len + (size_t)r > max) {
			kiln_buf_free(&b);
			return kiln_err_set(err, EFBIG, "input larger than %zu bytes", max);
		}
		kiln_buf_append(&b, chunk, (size_t)r);
	}
	if (len)
		*len = b.len;
	*out = kiln_buf_steal(&b);
	return 0;
}

int kiln_read_file(const char *path, size_t max, char **out, size_t *len, struct kiln_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "open %s", path);
	int r = kiln_read_fd(fd, max, out, len, err);
	close(fd);
	if (r < 0)
		return kiln_err_wrap(err, "reading %s", path);
	return 0;
}

int kiln_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int kiln_write_file_atomic(int dirfd, const char *name, const void *data, size_t len,
			   mode_t mode, struct kiln_err *err)
{
	char tmp[PATH_MAX];
	const char *slash = strrchr(name, '/');
	static unsigned counter;
	if (slash)
		snprintf(tmp, sizeof(tmp), "%.*s/.tmp-%d-%u-%s", (int)(slash - name), name,
			 (int)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), slash + 1);
	else
		snprintf(tmp, sizeof(tmp), ".tmp-%d-%u-%s", (int)getpid(),
			 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), name);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return kiln_err_set(err, errno, "create %s", tmp);
	if (kiln_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		unlinkat(dirfd, tmp, 0);
		return kiln_err_set(err, e, "write %s", name);
	}
	if (fchmod(fd, mode) < 0) {
		int e = errno;
		close(fd);
		unlinkat(dirfd, tmp, 0);
		return kiln_err_set(err, e, "chmod %s", name);
	}
	close(fd);
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		int e = errno;
		unlinkat(dirfd, tmp, 0);
		return kiln_err_set(err, e, "rename %s", name);
	}
	/* fsync the directory so the rename is durable */
	char dir[PATH_MAX];
	if (slash)
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - name), name);
	else
		snprintf(dir, sizeof(dir), ".");
	int dfd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int kiln_outfile_open(struct kiln_outfile *o, const char *path, mode_t mode, struct kiln_err *err)
{
	memset(o, 0, sizeof(*o));
	o->fd = -1;
	if (!path || !path[0])
		return kiln_err_set(err, EINVAL, "an output file needs a name");
	o->path = kiln_xstrdup(path);
	if (!strcmp(path, "-")) {
		fflush(stdout);
		o->fd = fcntl(1, F_DUPFD_CLOEXEC, 0);
		if (o->fd < 0) {
			kiln_err_set(err, errno, "standard output");
			kiln_outfile_abort(o);
			return -1;
		}
		return 0;
	}
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* a device, a fifo, a symlink (/dev/stdout -> /proc/self/fd/1): written
		 * through, in place, as a shell redirection does; a directory fails
		 * here with EISDIR */
		o->fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
		if (o->fd < 0) {
			kiln_err_set(err, errno, "open %s", path);
			kiln_outfile_abort(o);
			return -1;
		}
		if (fstat(o->fd, &st) == 0 && S_ISREG(st.st_mode) && ftruncate(o->fd, 0) < 0) {
			kiln_err_set(err, errno, "truncate %s", path);
			kiln_outfile_abort(o);
			return -1;
		}
		return 0;
	}
	const char *slash = strrchr(path, '/');
	static unsigned counter;
	o->tmp = slash ? kiln_xasprintf("%.*s/.%s.kiln-tmp-%d-%u", (int)(slash - path), path, slash + 1,
					(int)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED))
		       : kiln_xasprintf(".%s.kiln-tmp-%d-%u", path, (int)getpid(),
					__atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (o->fd < 0) {
		kiln_err_set(err, errno, "create %s", path);
		free(o->tmp);
		o->tmp = NULL;
		kiln_outfile_abort(o);
		return -1;
	}
	return 0;
}

int kiln_outfile_commit(struct kiln_outfile *o, struct kiln_err *err)
{
	int rc = 0;
	if (o->tmp) {
		if (fsync(o->fd) < 0)
			rc = kiln_err_set(err, errno, "write %s", o->path);
		if (close(o->fd) < 0 && rc == 0)
			rc = kiln_err_set(err, errno, "write %s", o->path);
		o->fd = -1;
		if (rc == 0 && rename(o->tmp, o->path) < 0)
			rc = kiln_err_set(err, errno, "rename to %s", o->path);
		if (rc == 0) {
			free(o->tmp);
			o->tmp = NULL;
		}
	} else if (o->fd >= 0) {
		if (close(o->fd) < 0)
			rc = kiln_err_set(err, errno, "write %s", o->path);
		o->fd = -1;
	}
	kiln_outfile_abort(o);
	return rc;
}

void kiln_outfile_abort(struct kiln_outfile *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	if (o->tmp)
		unlink(o->tmp);
	free(o->tmp);
	o->tmp = NULL;
	free(o->path);
	o->path = NULL;
}

int kiln_outfile_write(const char *path, const void *data, size_t len, mode_t mode, struct kiln_err *err)
{
	struct kiln_outfile o;
	if (kiln_outfile_open(&o, path, mode, err) < 0)
		return -1;
	if (kiln_write_all(o.fd, data, len) < 0) {
		kiln_err_set(err, errno, "write %s", path);
		kiln_outfile_abort(&o);
		return -1;
	}
	return kiln_outfile_commit(&o, err);
}

int kiln_mkdir_p(const char *path, mode_t mode, struct kiln_err *err)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf))
		return kiln_err_set(err, ENAMETOOLONG, "mkdir %s", path);
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return kiln_err_set(err, errno, "mkdir %s", buf);
			*p = c;
			if (c == '\0')
				break;
		}
	}
	struct stat st;
	if (stat(path, &st) < 0)
		return kiln_err_set(err, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode))
		return kiln_err_set(err, ENOTDIR, "mkdir %s", path);
	return 0;
}

int kiln_rm_rf_at(int parentfd, const char *name, struct kiln_err *err)
{
	struct stat st;
	if (fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return kiln_err_set(err, errno, "stat %s", name);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(parentfd, name, 0) < 0 && errno != ENOENT)
			return kiln_err_set(err, errno, "unlink %s", name);
		return 0;
	}
	int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "open %s", name);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return kiln_err_set(err, errno, "opendir %s", name);
	}
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (kiln_rm_rf_at(dirfd(d), de->d_name, err) < 0) {
			rc = -1;
			break;
		}
	}
	closedir(d);
	if (rc < 0)
		return rc;
	if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return kiln_err_set(err, errno, "rmdir %s", name);
	return 0;
}

int kiln_rm_rf(const char *path, struct kiln_err *err)
{
	return kiln_rm_rf_at(AT_FDCWD, path, err);
}

bool kiln_str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool kiln_str_has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

uint64_t kiln_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
