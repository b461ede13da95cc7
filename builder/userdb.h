/* kiln — users and groups of an image, read from the image's own /etc/passwd
 * and /etc/group through a directory fd (never NSS: security.md item 5). */
#ifndef KILN_BUILDER_USERDB_H
#define KILN_BUILDER_USERDB_H

#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

struct kiln_userdb_ids {
	uid_t uid;
	gid_t gid;
	gid_t *groups;       /* supplementary groups (from /etc/group membership), owned */
	size_t ngroups;
	char *home;          /* home directory from /etc/passwd, or NULL; owned */
};

/* Resolve "user", "user:group", "uid", "uid:gid" (names or numbers) against
 * the passwd/group files of the tree at rootfd (paths resolved inside it).
 * A missing /etc/passwd is fine for numeric ids.  A numeric user that is not
 * listed gets gid = uid's passwd gid, or 0 (Docker's behaviour).  When the
 * group part is given, no supplementary groups are added. */
int kiln_userdb_resolve(int rootfd, const char *spec, struct kiln_userdb_ids *out,
			struct kiln_err *err);

/* The same on in-memory file contents (either may be NULL), for tests. */
int kiln_userdb_resolve_text(const char *passwd, const char *group, const char *spec,
			     struct kiln_userdb_ids *out, struct kiln_err *err);

void kiln_userdb_ids_free(struct kiln_userdb_ids *ids);

#endif
