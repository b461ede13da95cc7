/* kiln — libcurl and libarchive loaded on first use.
 *
 * Most kiln commands (run, ps, images, inspect, a fully cached build) need
 * neither libcurl nor libarchive, yet linking them pulls ~40 shared objects
 * into every process start (about 7 ms of a container's start time).  kiln is
 * therefore not linked against them: common/lazylib.c defines each libcurl and
 * libarchive function kiln calls as a small stub that dlopen()s the library
 * (by its soname) the first time one of its functions is called, resolves the
 * real function once and forwards to it.  Callers include <curl/curl.h> and
 * <archive.h> as usual and notice nothing.
 *
 * A library that cannot be loaded ends the process with one line on stderr
 * naming the library and the package that provides it (exit status 127): it is
 * a broken installation, not an input error a caller could handle.
 *
 * Adding a call to another libcurl/libarchive function means adding its stub to
 * common/lazylib.c; the link of build/kiln fails (undefined reference) until
 * then. */
#ifndef KILN_COMMON_LAZYLIB_H
#define KILN_COMMON_LAZYLIB_H

#define KILN_LAZYLIB_CURL_SONAME "libcurl.so.4"
#define KILN_LAZYLIB_ARCHIVE_SONAME "libarchive.so.13"

enum kiln_lazylib {
	KILN_LAZYLIB_CURL,
	KILN_LAZYLIB_ARCHIVE,
};

/* The address of SYMBOL in library LIB, loading LIB first if needed.  Never
 * returns NULL (a missing library or symbol ends the process, see above). */
void *kiln_lazylib_sym(enum kiln_lazylib lib, const char *symbol);

#endif
