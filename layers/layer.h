/* kiln — tar layers: write a change set as an OCI layer, apply a layer safely.
 *
 * The writer and the extractor are the only places that turn file trees into
 * tar streams and back.  Snapshot drivers produce a struct kiln_changes; the
 * builder and the store consume the digests in struct kiln_layer_info.
 */
#ifndef KILN_LAYERS_LAYER_H
#define KILN_LAYERS_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define KILN_DIGEST_MAX 72                 /* "sha256:" + 64 hex + NUL */
#define KILN_EMPTY_LAYER_DIFF_ID \
	"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

#define KILN_MT_LAYER_TAR  "application/vnd.oci.image.layer.v1.tar"
#define KILN_MT_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define KILN_MT_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"

enum kiln_compression {
	KILN_COMPRESS_GZIP = 0,            /* default */
	KILN_COMPRESS_ZSTD,
	KILN_COMPRESS_NONE,
};

/* "gzip" | "zstd" | "none" → enum; -1 on an unknown name. */
int kiln_compression_parse(const char *name, enum kiln_compression *out, struct kiln_err *err);
const char *kiln_compression_media_type(enum kiln_compression c);

enum kiln_change_kind {
	KILN_CHANGE_ADD,        /* path is new in the upper tree */
	KILN_CHANGE_MODIFY,     /* path exists in both; content or metadata differ */
	KILN_CHANGE_DELETE,     /* path existed below and is gone: a .wh.NAME whiteout */
	KILN_CHANGE_OPAQUE,     /* directory replaced: .wh..wh..opq, then its new contents as ADDs */
};

/* One change.  path is relative to the tree root, without a leading '/',
 * cleaned ("a/b", never "./a" or "a//b"). */
struct kiln_change {
	char *path;
	enum kiln_change_kind kind;
};

/* A change set.  The writer sorts it; entries may be in any order.  A parent
 * directory of a changed path need not be listed: the writer adds the parent
 * directories' headers itself (taken from the tree) so that a layer always
 * describes the directories it writes into. */
struct kiln_changes {
	struct kiln_change *v;
	size_t n;
	size_t cap;
};
void kiln_changes_add(struct kiln_changes *c, const char *path, enum kiln_change_kind kind);
void kiln_changes_free(struct kiln_changes *c);

/* What a written layer is. */
struct kiln_layer_info {
	char digest[KILN_DIGEST_MAX];      /* of the (compressed) blob bytes */
	char diff_id[KILN_DIGEST_MAX];     /* of the uncompressed tar */
	int64_t size;                      /* bytes of the blob */
	const char *media_type;            /* static string, one of KILN_MT_LAYER_* */
};

struct kiln_layer_write_opts {
	enum kiln_compression compression;
	int64_t source_date_epoch;         /* >= 0: clamp mtimes to it; < 0: keep mtimes */
	int level;                         /* 0: default (gzip 6, zstd 3); gzip 1-9, zstd 1-19 */
};

/* Write the changes in the tree at rootfd as a layer to out_fd (a regular file
 * or pipe, written from its current position).  Files are read beneath rootfd
 * only (never following symlinks out of it).  Deterministic: sorted entries,
 * numeric ids, no atime/ctime, xattrs once, 1024-byte end, gzip without a
 * timestamp.  Hard links inside the change set become tar hard links.
 *
 * Details: a directory change writes the directory's header only (list its
 * contents as changes of their own); parents are added from the tree; order is
 * bytewise per path component (a directory right before its subtree, an
 * opaque marker right after its directory); mtimes are whole seconds (clamped
 * with source_date_epoch >= 0); whiteouts are empty 0644 files owned 0:0 with
 * mtime source_date_epoch (or 0); a path both deleted and written is written;
 * a path named ".wh.*" is refused (it would read back as a whiteout); sockets
 * are skipped; xattrs are copied except security.selinux, system.*,
 * trusted.overlay.* and user.overlay.*; names are stored as UTF-8 pax records
 * when they are UTF-8, else as raw bytes (hdrcharset=BINARY).  The result is
 * described in *info (digest and size of the blob, diff_id of the tar). */
int kiln_layer_write(int rootfd, const struct kiln_changes *changes,
		     const struct kiln_layer_write_opts *opts, int out_fd,
		     struct kiln_layer_info *info, struct kiln_err *err);

/* The xattrs a layer never records (and COPY never carries over): SELinux
 * labels (the host's), ACLs (system.*) and overlayfs' own bookkeeping
 * (trusted.overlay.*, user.overlay.*). */
bool kiln_layer_xattr_skipped(const char *name);

struct kiln_layer_apply_opts {
	bool whiteouts;        /* apply .wh. entries (true for image layers) */
	bool allow_devices;    /* create device nodes (only when running as root) */
	bool keep_owner;       /* chown to the uid/gid in the tar (numeric ids only) */
	uid_t uid_offset;      /* added to ids when keep_owner (user namespaces) */
	gid_t gid_offset;
};

/* Apply the (possibly compressed: gzip, zstd, xz, bzip2 or none, detected)
 * layer read from in_fd to the directory rootfd.  Never writes outside rootfd:
 * entries with "..", absolute paths, or paths through symlinks that leave the
 * root are resolved inside it or rejected; hard links must point inside the
 * root.  On success *diff_id (if not NULL) holds the sha256 of the
 * uncompressed stream (a regular file is then read to its end); with diff_id
 * NULL, or when in_fd is a pipe or a device, at most KILN_LAYER_TRAIL_MAX
 * bytes after the end-of-archive marker are read. */
int kiln_layer_apply(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
		     char diff_id[KILN_DIGEST_MAX], struct kiln_err *err);

/* What the extractor reads after the tar's end-of-archive marker when it does
 * not need the whole stream's digests (see kiln_layer_apply_ex): tar writers
 * pad to a record of 10 KiB (GNU tar, Go) up to a few hundred KiB; an input
 * with no entry and more than this after the marker (/dev/zero) is not a tar. */
#define KILN_LAYER_TRAIL_MAX (1 << 20)

/* Like kiln_layer_apply, and also describes the bytes read: info->digest and
 * info->size cover everything read from in_fd (a regular file is read to its
 * end, so a blob can be verified while it is applied; a pipe or device only
 * KILN_LAYER_TRAIL_MAX bytes past the end-of-archive marker), info->diff_id the uncompressed stream,
 * info->media_type the detected compression (KILN_MT_LAYER_*; NULL for xz or
 * bzip2, which have no OCI media type). */
int kiln_layer_apply_ex(int rootfd, int in_fd, const struct kiln_layer_apply_opts *opts,
			struct kiln_layer_info *info, struct kiln_err *err);

/* Set up a libarchive reader's decompressors: gzip, zstd, xz, lzma, bzip2,
 * in-process only (never a filter that runs an external program such as
 * lrzip, lzop or grzip).  Every archive kiln reads goes through this. */
struct archive;
void kiln_layer_read_filters(struct archive *a);

/* Path semantics of kiln_layer_apply (the extractor):
 *  - names are cleaned: a leading "/" and "." components are dropped; a name
 *    with a ".." component fails the whole layer (as does a hard link target
 *    with one);
 *  - parent directories are resolved with openat2(RESOLVE_IN_ROOT): a symlink
 *    in the tree resolves as if the tree were "/" (a -> /etc, then a/passwd
 *    writes ROOT/etc/passwd); missing parents are created 0755;
 *  - the last component is never followed: what is there is removed first
 *    (a directory is kept when the entry is a directory, else removed
 *    recursively); the later of duplicate entries wins;
 *  - hard links are made with linkat between dirfds beneath the root; a target
 *    that does not exist there, or a directory, fails the layer;
 *  - the stream may be gzip, zstd, xz, lzma, bzip2 or plain, decoded only by
 *    libarchive's built-in decoders (never an external program); the tar may
 *    be ustar, pax or GNU (long names, sparse files are written sparse);
 *  - whiteouts (opts->whiteouts): ".wh.NAME" removes NAME, ".wh..wh..opq"
 *    empties the directory of everything this layer did not create before it
 *    (recursively: what the layer wrote deeper before the marker stays);
 *    ".wh." with an empty, "." or ".." name fails the layer; other
 *    ".wh..wh.*" names are ignored;
 *  - devices only with allow_devices as root (else skipped); fifos always;
 *    sockets skipped; setuid/setgid bits and security.capability dropped
 *    unless keep_owner;
 *  - xattrs: all but security.selinux, system.*, trusted.overlay.* and
 *    user.overlay.* (the writer skips the same); EPERM/ENOTSUP ignored;
 *  - directory mtimes are set at the end, only where (dev, ino) still match
 *    (without root, a directory without owner rwx keeps u+rwx until then, so
 *    the entries after it can be written). */

#endif
