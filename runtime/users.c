/* kiln — users and groups from the image's own /etc/passwd and /etc/group
 * texts.  No NSS: never getpwnam() inside an image (security.md item 5). */
#include "runtime/sandbox.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Parse a decimal id; false when s is not all digits or out of range. */
static bool parse_id(const char *s, size_t len, unsigned long *out)
{
	if (len == 0 || len > 10)
		return false;
	unsigned long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 0xfffffffeUL)
		return false;
	*out = v;
	return true;
}

/* Split one line into at most max fields separated by ':'; returns the count. */
static size_t split_fields(char *line, char **f, size_t max)
{
	size_t n = 0;
	char *p = line;
	while (n < max) {
		f[n++] = p;
		char *c = strchr(p, ':');
		if (!c)
			break;
		*c = '\0';
		p = c + 1;
	}
	return n;
}

struct pw_entry {
	bool found;
	char name[256];
	unsigned long uid, gid;
	char home[256];
};

/* Find a passwd entry by name (byname) or by uid. */
static void passwd_lookup(const char *passwd, const char *name, bool byname, unsigned long uid,
			  struct pw_entry *out)
{
	memset(out, 0, sizeof(*out));
	if (!passwd)
		return;
	const char *p = passwd;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > 0 && len < 4096 && p[0] != '#') {
			char line[4096];
			memcpy(line, p, len);
			line[len] = '\0';
			char *f[7];
			size_t n = split_fields(line, f, 7);
			unsigned long u, g;
			if (n >= 4 && parse_id(f[2], strlen(f[2]), &u) && parse_id(f[3], strlen(f[3]), &g)) {
				bool match = byname ? !strcmp(f[0], name) : u == uid;
				if (match) {
					out->found = true;
					snprintf(out->name, sizeof(out->name), "%s", f[0]);
					out->uid = u;
					out->gid = g;
					snprintf(out->home, sizeof(out->home), "%s",
						 n >= 6 && f[5][0] ? f[5] : "/");
					return;
				}
			}
		}
		if (!eol)
			break;
		p = eol + 1;
	}
}

/* Find a group id by name; false when absent. */
static bool group_lookup(const char *group, const char *name, unsigned long *gid)
{
	if (!group)
		return false;
	const char *p = group;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > 0 && len < 65536 && p[0] != '#') {
			char *line = kiln_xstrndup(p, len);
			char *f[4];
			size_t n = split_fields(line, f, 4);
			unsigned long g;
			bool ok = n >= 3 && !strcmp(f[0], name) && parse_id(f[2], strlen(f[2]), &g);
			free(line);
			if (ok) {
				*gid = g;
				return true;
			}
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	return false;
}

static void add_group(struct kiln_user *u, gid_t g)
{
	for (size_t i = 0; i < u->n_groups; i++)
		if (u->groups[i] == g)
			return;
	if (u->n_groups < sizeof(u->groups) / sizeof(u->groups[0]))
		u->groups[u->n_groups++] = g;
}

/* Supplementary groups: every group whose member list names user. */
static void member_groups(const char *group, const char *user, struct kiln_user *u)
{
	if (!group || !user || !user[0])
		return;
	const char *p = group;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > 0 && len < 65536 && p[0] != '#') {
			char *line = kiln_xstrndup(p, len);
			char *f[4];
			size_t n = split_fields(line, f, 4);
			unsigned long g;
			if (n >= 4 && parse_id(f[2], strlen(f[2]), &g)) {
				char *save = NULL;
				for (char *m = strtok_r(f[3], ",", &save); m; m = strtok_r(NULL, ",", &save))
					if (!strcmp(m, user)) {
						add_group(u, (gid_t)g);
						break;
					}
			}
			free(line);
		}
		if (!eol)
			break;
		p = eol + 1;
	}
}

int kiln_user_resolve(const char *spec, const char *passwd, const char *group,
		      struct kiln_user *out, struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->home, sizeof(out->home), "/");
	const char *s = spec && spec[0] ? spec : "0";
	const char *colon = strchr(s, ':');
	size_t ulen = colon ? (size_t)(colon - s) : strlen(s);
	if (ulen == 0 || ulen >= 256)
		return kiln_err_set(err, 0, "invalid user \"%s\"", s);
	char uname[256];
	memcpy(uname, s, ulen);
	uname[ulen] = '\0';

	struct pw_entry pw;
	unsigned long id;
	if (parse_id(uname, ulen, &id)) {
		passwd_lookup(passwd, NULL, false, id, &pw);
		out->uid = (uid_t)id;
		out->gid = pw.found ? (gid_t)pw.gid : 0;
	} else {
		passwd_lookup(passwd, uname, true, 0, &pw);
		if (!pw.found)
			return kiln_err_set(err, 0, "unable to find user %s: no matching entries in passwd file",
					    uname);
		out->uid = (uid_t)pw.uid;
		out->gid = (gid_t)pw.gid;
	}
	if (pw.found)
		snprintf(out->home, sizeof(out->home), "%s", pw.home);

	if (colon) {
		const char *g = colon + 1;
		if (!g[0])
			return kiln_err_set(err, 0, "invalid user \"%s\": empty group", s);
		if (parse_id(g, strlen(g), &id)) {
			out->gid = (gid_t)id;
		} else if (group_lookup(group, g, &id)) {
			out->gid = (gid_t)id;
		} else {
			return kiln_err_set(err, 0, "unable to find group %s: no matching entries in group file", g);
		}
	}
	add_group(out, out->gid);
	/* Like runc: supplementary groups only in the implicit form ("user"). */
	if (pw.found && !colon)
		member_groups(group, pw.name, out);
	return 0;
}
