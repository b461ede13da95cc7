/* kiln — COPY and ADD: sources (with wildcards) from a context or another
 * tree, copied into a rootfs through directory fds beneath it.
 *
 * Every path in the destination rootfs is resolved with openat2
 * RESOLVE_IN_ROOT (security.md items 4, 11); sources are resolved inside
 * their own root too.  --link is accepted and treated as a normal copy.
 * Extended attributes (file capabilities, user.*) are copied and are part of
 * the source digest; SELinux labels, ACLs and overlayfs' own are not.
 */
#ifndef KILN_BUILDER_COPY_H
#define KILN_BUILDER_COPY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/util.h"

/* Whether relpath (relative to the source root, no leading '/') is excluded,
 * e.g. by .dockerignore: KILN_COPY_INCLUDED, KILN_COPY_EXCLUDED, or for a
 * directory KILN_COPY_DESCEND (excluded, but something below may be
 * re-included: walk it, create it only as a parent). */
enum { KILN_COPY_INCLUDED = 0, KILN_COPY_EXCLUDED = 1, KILN_COPY_DESCEND = 2 };
typedef int (*kiln_copy_filter_fn)(void *arg, const char *relpath, bool is_dir);

/* Digest (32 raw sha256 bytes) of a regular file's content; may use a stat
 * cache.  fd is open for reading; relpath is relative to the source root. */
typedef int (*kiln_copy_hash_fn)(void *arg, int fd, const char *relpath, const struct stat *st,
				 unsigned char out[32], struct kiln_err *err);

struct kiln_copy_src {
	int rootfd;                    /* the tree sources are read from */
	kiln_copy_filter_fn excluded;  /* may be NULL */
	void *excluded_arg;
	kiln_copy_hash_fn hash;        /* may be NULL: hash the content directly */
	void *hash_arg;
	bool keep_owner;               /* COPY --from: keep uid/gid; else 0:0 */
};

struct kiln_copy_opts {
	const char *dest;              /* destination as written (already expanded) */
	const char *workdir;           /* the image's WORKDIR ("/" when NULL) */
	bool chown;                    /* --chown given: uid/gid below */
	uid_t uid;
	gid_t gid;
	bool chmod;                    /* --chmod given: mode below */
	mode_t mode;
	char **excludes;               /* --exclude patterns (NULL-terminated), or NULL;
					* matched (.dockerignore rules) against paths
					* relative to each source */
	bool parents;                  /* --parents */
	bool add;                      /* ADD: local tar archives are extracted */
};

/* Go filepath.Match semantics for one path (pattern and name use '/';
 * '*' and '?' do not match '/'; [...] classes with ^ or ! negation; '\\'
 * escapes).  Returns 1 on a match, 0 on none, -1 on a malformed pattern. */
int kiln_copy_match(const char *pattern, const char *name);

/* Clean a path like Go's path.Clean ("" → "."). Returned string is owned. */
char *kiln_copy_clean(const char *path);

/* The destination path inside the rootfs for a COPY dest and WORKDIR:
 * absolute, cleaned; keeps a trailing '/' when dest had one (or is "." / "..").
 * Returned string is owned. */
char *kiln_copy_dest_path(const char *dest, const char *workdir);

/* Expand the source patterns against src: each pattern is cleaned
 * relative to the source root ("../" cannot leave it); wildcards are
 * matched per path component.  Matches (relative paths, "." for the root)
 * are appended to *out in the order of the patterns, sorted per pattern.
 * A pattern that matches nothing is an error naming it. */
int kiln_copy_expand(const struct kiln_copy_src *src, char *const *patterns, size_t n,
		     struct kiln_strv *out, struct kiln_err *err);

/* Content digest ("sha256:<hex>") of the matched sources as they would be
 * copied: names, types, modes, uid/gid (when keep_owner), sizes, file
 * contents and symlink targets; never mtimes. */
int kiln_copy_digest(const struct kiln_copy_src *src, char *const *matches, size_t n,
		     const struct kiln_copy_opts *opts, char out[72], struct kiln_err *err);

/* Copy the matched sources into the tree at dest_rootfd with Docker's rules:
 * a directory's contents (not the directory itself) are copied; the
 * destination is a directory when it ends in '/', when there are several
 * sources or when it already is one; missing parents are created (0755, owned
 * by --chown's ids when given); hard links among copied files are kept. */
int kiln_copy_run(const struct kiln_copy_src *src, char *const *matches, size_t n,
		  int dest_rootfd, const struct kiln_copy_opts *opts, struct kiln_err *err);

/* mkdir -p of path (absolute inside the tree) beneath rootfd; created
 * directories are 0755 and owned by uid:gid.  Returns an O_DIRECTORY fd of
 * the directory, or -1. */
int kiln_copy_mkdir(int rootfd, const char *path, uid_t uid, gid_t gid, struct kiln_err *err);

/* ADD <url>: download url (http/https) into an unnamed temporary file in
 * tmpdir_fd; verify checksum ("sha256:<hex>", may be NULL); return the open
 * fd, its digest, and the Last-Modified time (0 when absent). */
int kiln_copy_download(const char *url, const char *checksum, int tmpdir_fd, int *fd_out,
		       char digest[72], int64_t *mtime, struct kiln_err *err);

/* Install an already open regular file (e.g. a download) at the destination:
 * name is used when the destination is a directory. Mode 0600 unless --chmod
 * (Docker's mode for ADD <url>). */
int kiln_copy_install_fd(int fd, const char *name, int64_t mtime, int dest_rootfd,
			 const struct kiln_copy_opts *opts, struct kiln_err *err);

#endif
