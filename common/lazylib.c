/* kiln — libcurl and libarchive loaded on first use (see common/lazylib.h). */
#define CURL_DISABLE_TYPECHECK 1 /* the stubs below define curl_easy_setopt & co. */
#include "common/lazylib.h"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const struct {
	const char *soname, *package;
} libs[] = {
	[KILN_LAZYLIB_CURL] = {KILN_LAZYLIB_CURL_SONAME, "libcurl4"},
	[KILN_LAZYLIB_ARCHIVE] = {KILN_LAZYLIB_ARCHIVE_SONAME, "libarchive13"},
};
static void *handles[2];

void *kiln_lazylib_sym(enum kiln_lazylib lib, const char *symbol)
{
	void *h = __atomic_load_n(&handles[lib], __ATOMIC_ACQUIRE);
	if (!h) {
		/* dlopen of a loaded library returns the same handle: a race
		 * between two threads here is harmless. */
		h = dlopen(libs[lib].soname, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			fprintf(stderr, "kiln: cannot load %s (install the Debian package %s): %s\n",
				libs[lib].soname, libs[lib].package, dlerror());
			exit(127);
		}
		__atomic_store_n(&handles[lib], h, __ATOMIC_RELEASE);
	}
	void *p = dlsym(h, symbol);
	if (!p) {
		fprintf(stderr, "kiln: %s lacks %s (the installed version is too old): %s\n",
			libs[lib].soname, symbol, dlerror());
		exit(127);
	}
	return p;
}

/* The real function, resolved once per stub. */
#define REAL(lib, name, type)                                                  \
	typedef __typeof__(type) fn_t;                                                   \
	static fn_t real_##name;                                               \
	fn_t fn = __atomic_load_n(&real_##name, __ATOMIC_ACQUIRE);             \
	if (!fn) {                                                             \
		fn = (fn_t)kiln_lazylib_sym(lib, #name);                       \
		__atomic_store_n(&real_##name, fn, __ATOMIC_RELEASE);          \
	}

/* A stub for a function returning ret, with parameters params called as args. */
#define STUB(lib, ret, name, params, args)                                     \
	ret name params                                                        \
	{                                                                      \
		REAL(lib, name, ret(*) params)                                 \
		return fn args;                                                \
	}
#define STUBV(lib, name, params, args)                                         \
	void name params                                                       \
	{                                                                      \
		REAL(lib, name, void(*) params)                                \
		fn args;                                                       \
	}

#define A KILN_LAZYLIB_ARCHIVE
#define E struct archive_entry *e
#define AR struct archive *a

/* libarchive: entries */
STUB(A, time_t, archive_entry_atime, (E), (e))
STUB(A, int, archive_entry_atime_is_set, (E), (e))
STUB(A, long, archive_entry_atime_nsec, (E), (e))
STUB(A, __LA_MODE_T, archive_entry_filetype, (E), (e))
STUBV(A, archive_entry_free, (E), (e))
STUB(A, la_int64_t, archive_entry_gid, (E), (e))
STUB(A, const char *, archive_entry_hardlink, (E), (e))
STUB(A, const char *, archive_entry_hardlink_utf8, (E), (e))
STUB(A, time_t, archive_entry_mtime, (E), (e))
STUB(A, int, archive_entry_mtime_is_set, (E), (e))
STUB(A, long, archive_entry_mtime_nsec, (E), (e))
STUB(A, struct archive_entry *, archive_entry_new, (void), ())
STUB(A, const char *, archive_entry_pathname, (E), (e))
STUB(A, const char *, archive_entry_pathname_utf8, (E), (e))
STUB(A, __LA_MODE_T, archive_entry_perm, (E), (e))
STUB(A, dev_t, archive_entry_rdevmajor, (E), (e))
STUB(A, dev_t, archive_entry_rdevminor, (E), (e))
STUBV(A, archive_entry_set_filetype, (E, unsigned int v), (e, v))
STUBV(A, archive_entry_set_gid, (E, la_int64_t v), (e, v))
STUBV(A, archive_entry_set_hardlink, (E, const char *v), (e, v))
STUBV(A, archive_entry_set_mode, (E, __LA_MODE_T v), (e, v))
STUBV(A, archive_entry_set_mtime, (E, time_t s, long ns), (e, s, ns))
STUBV(A, archive_entry_set_pathname, (E, const char *v), (e, v))
STUBV(A, archive_entry_set_perm, (E, __LA_MODE_T v), (e, v))
STUBV(A, archive_entry_set_rdevmajor, (E, dev_t v), (e, v))
STUBV(A, archive_entry_set_rdevminor, (E, dev_t v), (e, v))
STUBV(A, archive_entry_set_size, (E, la_int64_t v), (e, v))
STUBV(A, archive_entry_set_symlink, (E, const char *v), (e, v))
STUBV(A, archive_entry_set_uid, (E, la_int64_t v), (e, v))
STUB(A, la_int64_t, archive_entry_size, (E), (e))
STUB(A, int, archive_entry_size_is_set, (E), (e))
STUB(A, const char *, archive_entry_symlink, (E), (e))
STUB(A, const char *, archive_entry_symlink_utf8, (E), (e))
STUB(A, la_int64_t, archive_entry_uid, (E), (e))
STUBV(A, archive_entry_xattr_add_entry, (E, const char *n, const void *v, size_t s), (e, n, v, s))
STUB(A, int, archive_entry_xattr_next, (E, const char **n, const void **v, size_t *s), (e, n, v, s))
STUB(A, int, archive_entry_xattr_reset, (E), (e))

/* libarchive: archives */
STUB(A, int, archive_errno, (AR), (a))
STUB(A, const char *, archive_error_string, (AR), (a))
STUB(A, int, archive_filter_code, (AR, int i), (a, i))
STUB(A, la_ssize_t, archive_read_data, (AR, void *b, size_t n), (a, b, n))
STUB(A, int, archive_read_data_block, (AR, const void **b, size_t *n, la_int64_t *o), (a, b, n, o))
STUB(A, int, archive_read_free, (AR), (a))
STUB(A, struct archive *, archive_read_new, (void), ())
STUB(A, int, archive_read_next_header, (AR, struct archive_entry **e), (a, e))
STUB(A, int, archive_read_open2,
     (AR, void *d, archive_open_callback *o, archive_read_callback *r, archive_skip_callback *s,
      archive_close_callback *c),
     (a, d, o, r, s, c))
STUB(A, int, archive_read_open_fd, (AR, int fd, size_t bs), (a, fd, bs))
STUB(A, int, archive_read_support_filter_bzip2, (AR), (a))
STUB(A, int, archive_read_support_filter_gzip, (AR), (a))
STUB(A, int, archive_read_support_filter_lzma, (AR), (a))
STUB(A, int, archive_read_support_filter_xz, (AR), (a))
STUB(A, int, archive_read_support_filter_zstd, (AR), (a))
STUB(A, int, archive_read_support_format_gnutar, (AR), (a))
STUB(A, int, archive_read_support_format_raw, (AR), (a))
STUB(A, int, archive_read_support_format_tar, (AR), (a))
STUB(A, int, archive_write_add_filter_gzip, (AR), (a))
STUB(A, int, archive_write_add_filter_zstd, (AR), (a))
STUB(A, int, archive_write_close, (AR), (a))
STUB(A, la_ssize_t, archive_write_data, (AR, const void *b, size_t n), (a, b, n))
STUB(A, int, archive_write_finish_entry, (AR), (a))
STUB(A, int, archive_write_free, (AR), (a))
STUB(A, int, archive_write_header, (AR, struct archive_entry *e), (a, e))
STUB(A, struct archive *, archive_write_new, (void), ())
STUB(A, int, archive_write_open2,
     (AR, void *d, archive_open_callback *o, archive_write_callback *w, archive_close_callback *c,
      archive_free_callback *f),
     (a, d, o, w, c, f))
STUB(A, int, archive_write_open_fd, (AR, int fd), (a, fd))
STUB(A, int, archive_write_set_bytes_in_last_block, (AR, int n), (a, n))
STUB(A, int, archive_write_set_bytes_per_block, (AR, int n), (a, n))
STUB(A, int, archive_write_set_filter_option, (AR, const char *m, const char *o, const char *v), (a, m, o, v))
STUB(A, int, archive_write_set_format_option, (AR, const char *m, const char *o, const char *v), (a, m, o, v))
STUB(A, int, archive_write_set_format_pax_restricted, (AR), (a))
STUB(A, int, archive_write_set_format_raw, (AR), (a))

/* The message is formatted here: a va_list cannot be passed on to a "..." */
void archive_set_error(struct archive *a, int err, const char *fmt, ...)
{
	REAL(A, archive_set_error, void (*)(struct archive *, int, const char *, ...))
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fn(a, err, "%s", msg);
}

#undef A
#undef E
#undef AR
#define C KILN_LAZYLIB_CURL

STUBV(C, curl_easy_cleanup, (CURL *h), (h))
STUB(C, char *, curl_easy_escape, (CURL *h, const char *s, int n), (h, s, n))
STUB(C, CURL *, curl_easy_init, (void), ())
STUB(C, CURLcode, curl_easy_perform, (CURL *h), (h))
STUBV(C, curl_easy_reset, (CURL *h), (h))
STUB(C, const char *, curl_easy_strerror, (CURLcode c), (c))
STUBV(C, curl_free, (void *p), (p))
STUB(C, CURLcode, curl_global_init, (long flags), (flags))
STUB(C, CURLMcode, curl_multi_add_handle, (CURLM *m, CURL *h), (m, h))
STUB(C, CURLMcode, curl_multi_cleanup, (CURLM *m), (m))
STUB(C, CURLMsg *, curl_multi_info_read, (CURLM *m, int *n), (m, n))
STUB(C, CURLM *, curl_multi_init, (void), ())
STUB(C, CURLMcode, curl_multi_perform, (CURLM *m, int *n), (m, n))
STUB(C, CURLMcode, curl_multi_poll,
     (CURLM *m, struct curl_waitfd fds[], unsigned int nfds, int timeout_ms, int *ret),
     (m, fds, nfds, timeout_ms, ret))
STUB(C, CURLMcode, curl_multi_remove_handle, (CURLM *m, CURL *h), (m, h))
STUB(C, CURLSHcode, curl_share_cleanup, (CURLSH *s), (s))
STUB(C, CURLSH *, curl_share_init, (void), ())
STUB(C, struct curl_slist *, curl_slist_append, (struct curl_slist *l, const char *s), (l, s))
STUBV(C, curl_slist_free_all, (struct curl_slist *l), (l))

/* The variadic setters take exactly one argument whose type libcurl derives
 * from the option: for easy options the option number's range says it
 * (CURLOPTTYPE_*); it is read here with that type and passed on. */
CURLcode curl_easy_setopt(CURL *h, CURLoption opt, ...)
{
	REAL(C, curl_easy_setopt, CURLcode (*)(CURL *, CURLoption, ...))
	CURLcode rc;
	va_list ap;
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT)
		rc = fn(h, opt, va_arg(ap, long));
	else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
		rc = fn(h, opt, va_arg(ap, void *));
	else if (opt < CURLOPTTYPE_OFF_T)
		rc = fn(h, opt, va_arg(ap, void (*)(void)));
	else if (opt < CURLOPTTYPE_BLOB)
		rc = fn(h, opt, va_arg(ap, curl_off_t));
	else
		rc = fn(h, opt, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

/* Every CURLINFO takes a pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *h, CURLINFO info, ...)
{
	REAL(C, curl_easy_getinfo, CURLcode (*)(CURL *, CURLINFO, ...))
	va_list ap;
	va_start(ap, info);
	void *out = va_arg(ap, void *);
	va_end(ap);
	return fn(h, info, out);
}

/* Share options: SHARE/UNSHARE take a curl_lock_data (an int), LOCKFUNC and
 * UNLOCKFUNC a function, USERDATA a pointer. */
CURLSHcode curl_share_setopt(CURLSH *s, CURLSHoption opt, ...)
{
	REAL(C, curl_share_setopt, CURLSHcode (*)(CURLSH *, CURLSHoption, ...))
	CURLSHcode rc;
	va_list ap;
	va_start(ap, opt);
	switch (opt) {
	case CURLSHOPT_SHARE:
	case CURLSHOPT_UNSHARE:
		rc = fn(s, opt, va_arg(ap, int));
		break;
	case CURLSHOPT_LOCKFUNC:
	case CURLSHOPT_UNLOCKFUNC:
		rc = fn(s, opt, va_arg(ap, void (*)(void)));
		break;
	default:
		rc = fn(s, opt, va_arg(ap, void *));
		break;
	}
	va_end(ap);
	return rc;
}
