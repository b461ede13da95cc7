/* kiln — /etc/passwd and /etc/group of an image, parsed by hand. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "builder/userdb.h"
#include "common/util.h"

static bool parse_id(const char *s, unsigned long *out)
{
	if (!*s)
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || s[0] == '-' || v > 0xfffffffeUL)
		return false;
	*out = v;
	return true;
}

/* Split a line in place into at most max fields on ':'. Returns the count. */
static int split_fields(char *line, char **f, int max)
{
	int n = 0;
	f[n++] = line;
	for (char *p = line; *p && n < max; p++)
		if (*p == ':') {
			*p = 0;
			f[n++] = p + 1;
		}
	return n;
}

/* Iterate lines: calls fn(fields, nfields, arg) on copies; stops when fn returns 1. */
typedef int (*line_fn)(char **f, int n, void *arg);
static void each_line(const char *text, int max, line_fn fn, void *arg)
{
	if (!text)
		return;
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *line = kiln_xstrndup(p, len);
		if (len && line[len - 1] == '\r')
			line[len - 1] = 0;
		char *f[8] = {0};
		int stop = 0;
		if (line[0] && line[0] != '#') {
			int n = split_fields(line, f, max);
			stop = fn(f, n, arg);
		}
		free(line);
		if (stop || !nl)
			break;
		p = nl + 1;
	}
}

struct pw_query {
	const char *name;    /* match by name, or */
	bool by_id;
	unsigned long id;    /* by uid */
	bool found;
	unsigned long uid, gid;
	char *pw_name;
	char *home;
};

static int pw_cb(char **f, int n, void *arg)
{
	struct pw_query *q = arg;
	if (n < 4)
		return 0;
	unsigned long uid, gid;
	if (!parse_id(f[2], &uid) || !parse_id(f[3], &gid))
		return 0;
	if (q->by_id ? uid != q->id : strcmp(f[0], q->name) != 0)
		return 0;
	q->found = true;
	q->uid = uid;
	q->gid = gid;
	q->pw_name = kiln_xstrdup(f[0]);
	q->home = n >= 6 ? kiln_xstrdup(f[5]) : NULL;
	return 1;
}

struct gr_query {
	const char *name;
	bool by_id;
	unsigned long id;
	bool found;
	unsigned long gid;
};

static int gr_cb(char **f, int n, void *arg)
{
	struct gr_query *q = arg;
	if (n < 3)
		return 0;
	unsigned long gid;
	if (!parse_id(f[2], &gid))
		return 0;
	if (q->by_id ? gid != q->id : strcmp(f[0], q->name) != 0)
		return 0;
	q->found = true;
	q->gid = gid;
	return 1;
}

struct member_query {
	const char *user;
	gid_t primary;
	gid_t *v;
	size_t n;
};

static int member_cb(char **f, int n, void *arg)
{
	struct member_query *q = arg;
	if (n < 4 || !q->user)
		return 0;
	unsigned long gid;
	if (!parse_id(f[2], &gid))
		return 0;
	char *members = f[3];
	char *save = NULL;
	for (char *m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
		while (*m == ' ')
			m++;
		if (strcmp(m, q->user))
			continue;
		bool dup = (gid_t)gid == q->primary;
		for (size_t i = 0; i < q->n && !dup; i++)
			dup = q->v[i] == (gid_t)gid;
		if (!dup && q->n < 65536) {
			q->v = kiln_xrealloc(q->v, (q->n + 1) * sizeof(*q->v));
			q->v[q->n++] = (gid_t)gid;
		}
		break;
	}
	return 0;
}

int kiln_userdb_resolve_text(const char *passwd, const char *group, const char *spec,
			     struct kiln_userdb_ids *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!spec || !*spec)
		spec = "0";
	KILN_AUTOFREE char *user = kiln_xstrdup(spec);
	char *grp = strchr(user, ':');
	if (grp)
		*grp++ = 0;
	if (!*user)
		return kiln_err_set(err, 0, "invalid user specification \"%s\": empty user", spec);

	struct pw_query pq = {0};
	unsigned long id;
	bool numeric = parse_id(user, &id);
	if (numeric) {
		pq.by_id = true;
		pq.id = id;
	} else {
		pq.name = user;
	}
	each_line(passwd, 7, pw_cb, &pq);
	if (!pq.found && !numeric)
		return kiln_err_set(err, 0, "unable to find user %s: no matching entries in passwd file", user);
	out->uid = numeric ? (uid_t)id : (uid_t)pq.uid;
	out->gid = pq.found ? (gid_t)pq.gid : 0;
	out->home = pq.home;
	if (grp) {
		if (!*grp) {
			free(pq.pw_name);
			kiln_userdb_ids_free(out);
			return kiln_err_set(err, 0, "invalid user specification \"%s\": empty group", spec);
		}
		struct gr_query gq = {0};
		bool gnum = parse_id(grp, &id);
		if (gnum) {
			gq.by_id = true;
			gq.id = id;
		} else {
			gq.name = grp;
		}
		each_line(group, 4, gr_cb, &gq);
		if (!gq.found && !gnum) {
			free(pq.pw_name);
			kiln_userdb_ids_free(out);
			return kiln_err_set(err, 0, "unable to find group %s: no matching entries in group file", grp);
		}
		out->gid = gnum ? (gid_t)id : (gid_t)gq.gid;
	} else if (pq.found) {
		struct member_query mq = {.user = pq.pw_name, .primary = out->gid};
		each_line(group, 4, member_cb, &mq);
		out->groups = mq.v;
		out->ngroups = mq.n;
	}
	free(pq.pw_name);
	return 0;
}

static char *read_in_root(int rootfd, const char *path)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	if (fd < 0)
		return NULL;
	char *data = NULL;
	size_t len;
	struct kiln_err e;
	if (kiln_read_fd(fd, 16 << 20, &data, &len, &e) < 0)
		data = NULL;
	close(fd);
	return data;
}

int kiln_userdb_resolve(int rootfd, const char *spec, struct kiln_userdb_ids *out,
			struct kiln_err *err)
{
	KILN_AUTOFREE char *passwd = rootfd >= 0 ? read_in_root(rootfd, "etc/passwd") : NULL;
	KILN_AUTOFREE char *group = rootfd >= 0 ? read_in_root(rootfd, "etc/group") : NULL;
	return kiln_userdb_resolve_text(passwd, group, spec, out, err);
}

void kiln_userdb_ids_free(struct kiln_userdb_ids *ids)
{
	free(ids->groups);
	free(ids->home);
	ids->groups = NULL;
	ids->home = NULL;
	ids->ngroups = 0;
}
