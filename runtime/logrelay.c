/* kiln — container logs: relay, size-capped files, reading across rotations
 * (the format is described in runtime/logrelay.h). */
#include "runtime/logrelay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/units.h"

/* ---------------------------------------------------------------- options */

void kiln_logopts_default(struct kiln_logopts *o)
{
	o->max_size = KILN_LOG_DEFAULT_MAX_SIZE;
	o->max_file = KILN_LOG_DEFAULT_MAX_FILE;
}

int kiln_logopts_parse(const char *arg, struct kiln_logopts *o, struct kiln_err *err)
{
	KILN_AUTOFREE char *dup = kiln_xstrdup(arg);
	char *save = NULL;
	bool any = false;
	for (char *kv = strtok_r(dup, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		any = true;
		char *eq = strchr(kv, '=');
		if (!eq || eq == kv)
			return kiln_err_set(err, 0, "invalid --log-opt \"%s\": want KEY=VALUE (max-size, max-file)", arg);
		*eq = '\0';
		const char *v = eq + 1;
		if (!strcmp(kv, "max-size")) {
			int64_t sz = 0;
			if (!strcmp(v, "-1")) {
				o->max_size = 0;
				continue;
			}
			struct kiln_err e2 = {0};
			if (!*v || kiln_units_parse_bytes(v, &sz, &e2) < 0 || sz < 1)
				return kiln_err_set(err, 0, "invalid --log-opt max-size=%s: want a positive size "
						    "(k, m, g) or -1", v);
			o->max_size = sz;
		} else if (!strcmp(kv, "max-file")) {
			int64_t n = 0;
			struct kiln_err e2 = {0};
			if (kiln_units_parse_int(v, 1, KILN_LOG_MAX_FILES, &n, &e2) < 0)
				return kiln_err_set(err, 0, "invalid --log-opt max-file=%s: want a number from 1 to %d",
						    v, KILN_LOG_MAX_FILES);
			o->max_file = (int)n;
		} else {
			return kiln_err_set(err, 0, "unknown --log-opt \"%s\" (max-size, max-file)", kv);
		}
	}
	if (!any)
		return kiln_err_set(err, 0, "invalid --log-opt \"%s\": want KEY=VALUE", arg);
	return 0;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at p (1..4), 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t l;
	uint32_t cp, min;
	if (c >= 0xc2 && c <= 0xdf) {
		l = 2, cp = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		l = 3, cp = c & 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		l = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < l)
		return 0;
	for (size_t i = 1; i < l; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return l;
}

/* Cut data (n bytes) at most at pos, not inside a UTF-8 sequence. */
static size_t char_boundary(const char *data, size_t pos, size_t n)
{
	if (pos >= n)
		return n;
	size_t c = pos;
	while (c > 0 && pos - c < 3 && ((unsigned char)data[c] & 0xc0) == 0x80)
		c--;
	return c > 0 && ((unsigned char)data[c] & 0xc0) != 0x80 ? c : pos;
}

/* A full piece of n bytes whose continuation is not known yet: cut before a
 * trailing sequence that is still missing bytes. */
static size_t piece_cut(const char *buf, size_t n)
{
	for (size_t k = n; k > 0 && n - k < 3; k--) {
		unsigned char b = (unsigned char)buf[k - 1];
		if (b < 0x80)
			break;
		if (b >= 0xc0) {
			size_t want = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
			return n - (k - 1) < want && k > 1 ? k - 1 : n;
		}
	}
	return n;
}

/* ---------------------------------------------------------------- splitter */

void kiln_logsplit_feed(struct kiln_logsplit *s, const char *data, size_t n, kiln_log_emit_fn emit, void *arg)
{
	while (n > 0) {
		size_t room = KILN_LOG_PIECE - s->len;
		size_t look = n < room ? n : room;
		const char *nl = memchr(data, '\n', look);
		if (nl) {
			size_t l = (size_t)(nl - data) + 1;
			if (s->len) {
				memcpy(s->buf + s->len, data, l);
				emit(arg, s->buf, s->len + l, false);
				s->len = 0;
			} else {
				emit(arg, data, l, false);   /* straight from the caller's buffer */
			}
			data += l;
			n -= l;
			continue;
		}
		if (n < room) {
			memcpy(s->buf + s->len, data, n);
			s->len += n;
			return;
		}
		/* a full piece without a newline: emit it, cut at a character */
		memcpy(s->buf + s->len, data, room);
		data += room;
		n -= room;
		s->len = KILN_LOG_PIECE;
		size_t cut = piece_cut(s->buf, KILN_LOG_PIECE);
		emit(arg, s->buf, cut, true);
		size_t rest = KILN_LOG_PIECE - cut;
		memmove(s->buf, s->buf + cut, rest);
		s->len = rest;
	}
}

void kiln_logsplit_flush(struct kiln_logsplit *s, kiln_log_emit_fn emit, void *arg)
{
	if (s->len)
		emit(arg, s->buf, s->len, false);
	s->len = 0;
}

/* ---------------------------------------------------------------- encoding */

void kiln_log_time_now(char *buf, size_t len)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char b[32];
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%09ldZ", b, ts.tv_nsec);
}

static const char partial_suffix[] = ",\"partial\":true}";

void kiln_log_encode(struct kiln_buf *b, const char *stream, const char *data, size_t len, bool partial,
		     const char *time)
{
	static const char hex[] = "0123456789abcdef";
	kiln_buf_puts(b, "{\"log\":\"");
	const unsigned char *p = (const unsigned char *)data;
	size_t i = 0;
	while (i < len) {
		/* a run of bytes that need no escaping */
		size_t j = i;
		while (j < len && p[j] >= 0x20 && p[j] < 0x80 && p[j] != '"' && p[j] != '\\')
			j++;
		if (j > i) {
			kiln_buf_append(b, p + i, j - i);
			i = j;
			continue;
		}
		unsigned char c = p[i];
		if (c >= 0x80) {
			size_t l = utf8_len(p + i, len - i);
			if (l) {
				kiln_buf_append(b, p + i, l);
				i += l;
			} else {
				kiln_buf_puts(b, "\\ufffd");
				i++;
			}
			continue;
		}
		char e[7] = {'\\', 0};
		switch (c) {
		case '"': e[1] = '"'; break;
		case '\\': e[1] = '\\'; break;
		case '\n': e[1] = 'n'; break;
		case '\r': e[1] = 'r'; break;
		case '\t': e[1] = 't'; break;
		case '\b': e[1] = 'b'; break;
		case '\f': e[1] = 'f'; break;
		default:
			e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
		}
		kiln_buf_puts(b, e);
		i++;
	}
	kiln_buf_printf(b, "\",\"stream\":\"%s\",\"time\":\"%s\"%s\n", stream, time, partial ? partial_suffix : "}");
}

/* ---------------------------------------------------------------- files */

int kiln_logwriter_open(struct kiln_logwriter *w, const char *dir, const struct kiln_logopts *o,
			struct kiln_err *err)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	w->opts = *o;
	if (w->opts.max_file < 1)
		w->opts.max_file = 1;
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0)
		return kiln_err_set(err, errno, "opening %s", dir);
	w->fd = openat(w->dirfd, "log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	if (w->fd < 0 || fstat(w->fd, &st) < 0) {
		kiln_err_set(err, errno, "opening %s/log", dir);
		kiln_logwriter_close(w);
		return -1;
	}
	w->size = st.st_size;
	return 0;
}

void kiln_logwriter_close(struct kiln_logwriter *w)
{
	if (w->fd >= 0)
		close(w->fd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	w->fd = w->dirfd = -1;
	kiln_buf_free(&w->rec);
}

/* log -> log.1 -> ... -> log.<max_file-1>, the oldest dropped; a new log. */
static int rotate(struct kiln_logwriter *w)
{
	char from[32], to[32];
	int keep = w->opts.max_file - 1;   /* rotated files kept */
	if (keep == 0) {
		unlinkat(w->dirfd, "log", 0);
	} else {
		snprintf(to, sizeof(to), "log.%d", keep);
		unlinkat(w->dirfd, to, 0);
		for (int i = keep - 1; i >= 1; i--) {
			snprintf(from, sizeof(from), "log.%d", i);
			snprintf(to, sizeof(to), "log.%d", i + 1);
			if (renameat(w->dirfd, from, w->dirfd, to) < 0 && errno != ENOENT)
				return -1;
		}
		if (renameat(w->dirfd, "log", w->dirfd, "log.1") < 0 && errno != ENOENT)
			return -1;
	}
	int fd = openat(w->dirfd, "log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	close(w->fd);
	w->fd = fd;
	w->size = 0;
	return 0;
}

int kiln_logwriter_write(struct kiln_logwriter *w, const char *stream, const char *data, size_t len,
			 bool partial)
{
	if (w->fd < 0)
		return -1;
	char ts[64];
	kiln_log_time_now(ts, sizeof(ts));
	w->rec.len = 0;
	kiln_log_encode(&w->rec, stream, data, len, partial, ts);
	int64_t max = w->opts.max_size;
	if (max > 0 && (int64_t)w->rec.len > max && len > 1) {
		/* too large for any file: two pieces, the first one partial */
		size_t half = char_boundary(data, len / 2, len);
		if (half == 0)
			half = len / 2;
		if (kiln_logwriter_write(w, stream, data, half, true) < 0)
			return -1;
		return kiln_logwriter_write(w, stream, data + half, len - half, partial);
	}
	if (max > 0 && w->size > 0 && w->size + (int64_t)w->rec.len > max && rotate(w) < 0)
		return -1;
	if (kiln_write_all(w->fd, w->rec.data, w->rec.len) < 0)
		return -1;
	w->size += (int64_t)w->rec.len;
	return 0;
}

/* ---------------------------------------------------------------- relay */

struct emit_ctx {
	struct kiln_logwriter *w;
	const char *stream;
};

static void emit_record(void *arg, const char *data, size_t len, bool partial)
{
	struct emit_ctx *e = arg;
	kiln_logwriter_write(e->w, e->stream, data, len, partial);
}

void kiln_logrelay_pump(struct kiln_logrelay *r)
{
	static const char *const names[2] = {"stdout", "stderr"};
	struct emit_ctx ctx[2] = {{r->w, names[0]}, {r->w, names[1]}};
	size_t bufsz = 65536;
	char *buf = kiln_xmalloc(bufsz);
	int open_n = 0;
	for (int i = 0; i < 2; i++)
		if (r->fds[i] >= 0)
			open_n++;
	while (open_n > 0) {
		struct pollfd p[2];
		for (int i = 0; i < 2; i++)
			p[i] = (struct pollfd){r->fds[i], POLLIN, 0};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (r->fds[i] < 0 || !p[i].revents)
				continue;
			ssize_t n = read(r->fds[i], buf, bufsz);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				close(r->fds[i]);
				r->fds[i] = -1;
				open_n--;
				kiln_logsplit_flush(&r->split[i], emit_record, &ctx[i]);
				continue;
			}
			if (r->echo[i] >= 0)
				kiln_write_all(r->echo[i], buf, (size_t)n);
			kiln_logsplit_feed(&r->split[i], buf, (size_t)n, emit_record, &ctx[i]);
		}
	}
	free(buf);
}

/* ---------------------------------------------------------------- reading */

bool kiln_log_decode(const char *line, size_t len, struct kiln_log_rec *r, void **holder)
{
	*holder = NULL;
	memset(r, 0, sizeof(*r));
	json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return false;
	}
	json_t *log = json_object_get(o, "log");
	r->log = json_string_value(log);
	r->len = json_string_length(log);
	r->stream = json_string_value(json_object_get(o, "stream"));
	r->time = json_string_value(json_object_get(o, "time"));
	r->partial = json_is_true(json_object_get(o, "partial"));
	if (!r->log) {
		json_decref(o);
		return false;
	}
	if (!r->stream)
		r->stream = "stdout";
	if (!r->time)
		r->time = "";
	*holder = o;
	return true;
}

void kiln_log_rec_done(void *holder)
{
	json_decref(holder);
}

struct logfile {
	long n;   /* 0 = "log" */
	ino_t ino;
};

static int cmp_logfile(const void *a, const void *b)
{
	const struct logfile *x = a, *y = b;
	return x->n < y->n ? 1 : x->n > y->n ? -1 : 0;   /* oldest (highest n) first */
}

/* The log files of dirfd, oldest first. */
static size_t list_files(int dirfd, struct logfile **out)
{
	*out = NULL;
	int dfd = dup(dirfd);
	if (dfd < 0)
		return 0;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	rewinddir(d);
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		long num = 0;
		if (strcmp(e->d_name, "log") != 0) {
			char *end;
			if (strncmp(e->d_name, "log.", 4) || e->d_name[4] < '1' || e->d_name[4] > '9')
				continue;
			num = strtol(e->d_name + 4, &end, 10);
			if (*end || num < 1)
				continue;
		}
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 8;
			*out = kiln_xrealloc(*out, cap * sizeof(**out));
		}
		(*out)[n++] = (struct logfile){num, st.st_ino};
	}
	closedir(d);
	if (n)
		qsort(*out, n, sizeof(**out), cmp_logfile);
	return n;
}

static int open_logfile(int dirfd, const struct logfile *f, ino_t *ino)
{
	char name[32];
	if (f->n)
		snprintf(name, sizeof(name), "log.%ld", f->n);
	else
		snprintf(name, sizeof(name), "log");
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -1;
	}
	*ino = st.st_ino;
	return fd;
}

static void cursor_push(struct kiln_logcursor *c, int fd, ino_t ino)
{
	c->fds = kiln_xrealloc(c->fds, (c->n + 1) * sizeof(*c->fds));
	c->inos = kiln_xrealloc(c->inos, (c->n + 1) * sizeof(*c->inos));
	c->fds[c->n] = fd;
	c->inos[c->n] = ino;
	c->n++;
}

static void cursor_pop(struct kiln_logcursor *c)
{
	close(c->fds[0]);
	memmove(c->fds, c->fds + 1, (c->n - 1) * sizeof(*c->fds));
	memmove(c->inos, c->inos + 1, (c->n - 1) * sizeof(*c->inos));
	c->n--;
	c->pend.len = 0;
}

/* A record ending at line[len] (the '\n' excluded) ends its line. */
static bool ends_line(const char *rec, size_t len)
{
	size_t sl = sizeof(partial_suffix) - 1;
	return len < sl || memcmp(rec + len - sl, partial_suffix, sl) != 0;
}

/* Find where the tail-th last line starts: file index and offset. */
static void tail_start(struct kiln_logcursor *c, long tail, size_t *file, off_t *off)
{
	*file = 0;
	*off = 0;
	if (c->n == 0)
		return;
	if (tail == 0) {
		struct stat st;
		*file = c->n - 1;
		*off = fstat(c->fds[*file], &st) == 0 ? st.st_size : 0;
		return;
	}
	enum { BLK = 65536, LOOK = sizeof(partial_suffix) - 1 };
	char *blk = kiln_xmalloc(BLK + LOOK);
	long seen = 0;
	for (size_t i = c->n; i-- > 0;) {
		struct stat st;
		if (fstat(c->fds[i], &st) < 0)
			continue;
		off_t hi = st.st_size;
		while (hi > 0) {
			off_t lo = hi > BLK ? hi - BLK : 0;
			off_t from = lo > LOOK ? lo - LOOK : 0;
			ssize_t got = pread(c->fds[i], blk, (size_t)(hi - from), from);
			if (got != hi - from)
				goto done;
			for (off_t p = hi - 1; p >= lo; p--) {
				if (blk[p - from] != '\n')
					continue;
				/* the record ending here; the first '\n' from the end of
				 * the newest file ends the last record */
				if (p - from >= LOOK ? ends_line(blk + (p - from) - LOOK, LOOK) : true) {
					if (seen++ == tail) {
						*file = i;
						*off = p + 1;
						free(blk);
						return;
					}
				}
			}
			hi = lo;
		}
	}
done:
	free(blk);
	*file = 0;
	*off = 0;
}

int kiln_logcursor_open(struct kiln_logcursor *c, const char *dir, long tail, struct kiln_err *err)
{
	memset(c, 0, sizeof(*c));
	c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0)
		return kiln_err_set(err, errno, "opening %s", dir);
	/* open them all now: a rotation while we read renames, never loses */
	for (int tries = 0; tries < 10; tries++) {
		struct logfile *f = NULL;
		size_t n = list_files(c->dirfd, &f);
		bool ok = true;
		for (size_t i = 0; i < n && ok; i++) {
			ino_t ino;
			int fd = open_logfile(c->dirfd, &f[i], &ino);
			if (fd < 0 && errno == ENOENT && f[i].n > 0) {
				continue;   /* rotated out meanwhile */
			} else if (fd < 0 || ino != f[i].ino) {
				if (fd >= 0)
					close(fd);
				ok = false;
			} else {
				cursor_push(c, fd, ino);
			}
		}
		free(f);
		if (ok)
			break;
		while (c->n)
			cursor_pop(c);
	}
	if (tail >= 0) {
		size_t file;
		off_t off;
		tail_start(c, tail, &file, &off);
		while (file-- > 0)
			cursor_pop(c);
		if (c->n)
			lseek(c->fds[0], off, SEEK_SET);
	}
	return 0;
}

void kiln_logcursor_close(struct kiln_logcursor *c)
{
	while (c->n)
		cursor_pop(c);
	free(c->fds);
	free(c->inos);
	c->fds = NULL;
	c->inos = NULL;
	if (c->dirfd >= 0)
		close(c->dirfd);
	c->dirfd = -1;
	kiln_buf_free(&c->pend);
}

/* Read the current file to its end, delivering complete records. */
static bool drain(struct kiln_logcursor *c, kiln_log_rec_fn fn, void *arg)
{
	bool got = false;
	char buf[65536];
	ssize_t r;
	while ((r = read(c->fds[0], buf, sizeof(buf))) > 0) {
		got = true;
		size_t start = 0;
		for (size_t i = 0; i < (size_t)r; i++) {
			if (buf[i] != '\n')
				continue;
			const char *line = buf + start;
			size_t len = i - start;
			if (c->pend.len) {
				kiln_buf_append(&c->pend, line, len);
				line = c->pend.data;
				len = c->pend.len;
			}
			struct kiln_log_rec rec;
			void *holder;
			if (kiln_log_decode(line, len, &rec, &holder)) {
				fn(arg, &rec);
				kiln_log_rec_done(holder);
			}
			c->pend.len = 0;
			start = i + 1;
		}
		/* a record is at most a few hundred KiB: more is not a record */
		if (c->pend.len + ((size_t)r - start) > (8u << 20))
			c->pend.len = 0;
		else
			kiln_buf_append(&c->pend, buf + start, (size_t)r - start);
	}
	return got;
}

int kiln_logcursor_read(struct kiln_logcursor *c, kiln_log_rec_fn fn, void *arg)
{
	bool got = false;
	for (;;) {
		if (c->n == 0) {
			/* nothing open yet (the container has not written) */
			struct logfile f = {0, 0};
			ino_t ino;
			int fd = open_logfile(c->dirfd, &f, &ino);
			if (fd < 0)
				return got;
			cursor_push(c, fd, ino);
		}
		if (drain(c, fn, arg))
			got = true;
		if (c->n > 1) {
			cursor_pop(c);
			continue;
		}
		/* the newest file we know: still the one being written? */
		struct stat st;
		if (fstatat(c->dirfd, "log", &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino == c->inos[0])
			return got;
		/* rotated: what was written before the rotation is in our file */
		if (drain(c, fn, arg))
			got = true;
		struct logfile *f = NULL;
		size_t n = list_files(c->dirfd, &f);
		size_t next = 0;   /* ours was rotated out of existence: the oldest */
		for (size_t i = 0; i < n; i++)
			if (f[i].ino == c->inos[0]) {
				next = i + 1;
				break;
			}
		int fd = -1;
		ino_t ino = 0;
		if (next < n) {
			fd = open_logfile(c->dirfd, &f[next], &ino);
			if (fd >= 0 && ino != f[next].ino) {
				/* rotated again meanwhile: look again */
				close(fd);
				fd = -1;
				free(f);
				continue;
			}
		}
		free(f);
		if (fd < 0)
			return got;
		cursor_pop(c);
		cursor_push(c, fd, ino);
		got = true;
	}
}
