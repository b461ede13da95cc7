/* kiln run — -v, --tmpfs and -p values (see run_opts.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/run_opts.h"
#include "common/units.h"
#include "common/util.h"

/* Split s at sep into at most max fields, keeping empty ones.  Returns the
 * number of fields, or max + 1 when there are more; fields[i] are
 * allocated copies (freed with free_fields). */
static int split_fields(const char *s, char sep, char **fields, int max)
{
	int n = 0;
	for (const char *p = s;; n++) {
		const char *e = strchr(p, sep);
		if (n == max)
			return max + 1;
		fields[n] = e ? kiln_xstrndup(p, (size_t)(e - p)) : kiln_xstrdup(p);
		if (!e)
			return n + 1;
		p = e + 1;
	}
}

static void free_fields(char **fields, int n)
{
	for (int i = 0; i < n; i++)
		free(fields[i]);
}

static bool in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

static int volume_modes(const char *opts, bool *readonly, struct kiln_err *err)
{
	static const char *const rw[] = {"rw", "ro", NULL};
	static const char *const label[] = {"z", "Z", NULL};
	static const char *const propagation[] = {"private", "rprivate", NULL};
	static const char *const unsupported[] = {"shared", "rshared", "slave", "rslave", NULL};
	static const char *const consistency[] = {"consistent", "cached", "delegated", NULL};
	int n_rw = 0, n_label = 0, n_prop = 0, n_cons = 0;
	const char *p = opts;
	for (;;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		KILN_AUTOFREE char *o = kiln_xstrndup(p, len);
		if (in_list(o, rw)) {
			n_rw++;
			*readonly = !strcmp(o, "ro");
		} else if (in_list(o, label)) {
			n_label++;     /* no SELinux here: relabelling is a no-op */
		} else if (in_list(o, propagation)) {
			n_prop++;      /* kiln's binds are always private */
		} else if (in_list(o, consistency)) {
			n_cons++;      /* meaningful on macOS only, ignored on Linux as by docker */
		} else if (in_list(o, unsupported)) {
			return kiln_err_set(err, 0, "%s propagation is not supported (binds are "
					    "private)", o);
		} else if (!strcmp(o, "nocopy")) {
			return kiln_err_set(err, 0, "nocopy applies to named volumes only");
		} else {
			return kiln_err_set(err, 0, "invalid mode \"%s\" (rw, ro, z, Z, private, rprivate)", o);
		}
		if (!e)
			break;
		p = e + 1;
	}
	if (n_rw > 1 || n_label > 1 || n_prop > 1 || n_cons > 1)
		return kiln_err_set(err, 0, "conflicting options \"%s\"", opts);
	return 0;
}

int kiln_run_volume_parse(const char *spec, char **host, char **container, bool *readonly,
			  struct kiln_err *err)
{
	char *f[3];
	int n = split_fields(spec, ':', f, 3);
	int rc = -1;
	bool ro = false;
	if (n > 3) {
		free_fields(f, 3);
		return kiln_err_set(err, 0, "too many colons");
	}
	if (n < 2)
		kiln_err_set(err, 0, "want HOST:CONTAINER[:OPTIONS] (anonymous and named volumes are not "
			     "supported)");
	else if (!f[0][0] || !f[1][0] || (n == 3 && !f[2][0]))
		kiln_err_set(err, 0, "empty section between colons");
	else if (f[0][0] != '/')
		kiln_err_set(err, 0, "the host path must be absolute (named volumes are not "
			     "supported)");
	else if (f[1][0] != '/')
		kiln_err_set(err, 0, "the container path must be absolute");
	else if (f[1][strspn(f[1], "/")] == '\0')
		kiln_err_set(err, 0, "the container path cannot be '/'");
	else if (n == 3 && volume_modes(f[2], &ro, err) < 0)
		;
	else
		rc = 0;
	if (rc == 0) {
		if (host) {
			*host = f[0];
			f[0] = NULL;
		}
		if (container) {
			*container = f[1];
			f[1] = NULL;
		}
		if (readonly)
			*readonly = ro;
	}
	free_fields(f, n);
	return rc;
}

/* size=: docker's units, or a percentage of RAM as the kernel takes it */
static int tmpfs_size(const char *v, struct kiln_buf *out, struct kiln_err *err)
{
	size_t l = strlen(v);
	int64_t x;
	if (l > 1 && v[l - 1] == '%') {
		KILN_AUTOFREE char *num = kiln_xstrndup(v, l - 1);
		if (kiln_units_parse_int(num, 1, 100, &x, err) < 0)
			return kiln_err_wrap(err, "size=%s", v);
		kiln_buf_printf(out, "size=%lld%%", (long long)x);
		return 0;
	}
	if (kiln_units_parse_bytes(v, &x, err) < 0)
		return kiln_err_wrap(err, "size=%s", v);
	kiln_buf_printf(out, "size=%lld", (long long)x);
	return 0;
}

/* one key=value option of --tmpfs, appended to out in the kernel's form */
static int tmpfs_value(const char *key, const char *v, struct kiln_buf *out,
		       struct kiln_err *err)
{
	int64_t x;
	if (!v)
		goto unknown;
	if (!strcmp(key, "size"))
		return tmpfs_size(v, out, err);
	if (!strcmp(key, "mode")) {
		if (!v[0] || strspn(v, "01234567") != strlen(v) || strlen(v) > 5 || strtol(v, NULL, 8) > 07777)
			return kiln_err_set(err, 0, "mode=%s is not an octal mode", v);
		kiln_buf_printf(out, "mode=%s", v);
		return 0;
	}
	if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
		if (kiln_units_parse_int(v, 0, 4294967294LL, &x, err) < 0)
			return kiln_err_wrap(err, "%s=%s", key, v);
		kiln_buf_printf(out, "%s=%lld", key, (long long)x);
		return 0;
	}
	if (!strcmp(key, "nr_inodes")) {
		if (kiln_units_parse_bytes(v, &x, err) < 0)
			return kiln_err_wrap(err, "nr_inodes=%s", v);
		kiln_buf_printf(out, "nr_inodes=%lld", (long long)x);
		return 0;
	}
unknown:
	return kiln_err_set(err, 0, "unknown option \"%s\" (ro, rw, exec, noexec, suid, nosuid, "
			    "dev, nodev, size=, mode=, uid=, gid=, nr_inodes=)", key);
}

int kiln_run_tmpfs_parse(const char *spec, char **target, char **options, struct kiln_err *err)
{
	static const char *const flags[] = {"ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", NULL};
	const char *colon = strchr(spec, ':');
	KILN_AUTOFREE char *path = colon ? kiln_xstrndup(spec, (size_t)(colon - spec)) : kiln_xstrdup(spec);
	if (path[0] != '/')
		return kiln_err_set(err, 0, "the path must be absolute");
	if (path[strspn(path, "/")] == '\0')
		return kiln_err_set(err, 0, "the path cannot be '/'");
	struct kiln_buf b = {0};
	const char *p = colon && colon[1] ? colon + 1 : NULL;
	while (p) {
		const char *e = strchr(p, ',');
		KILN_AUTOFREE char *o = e ? kiln_xstrndup(p, (size_t)(e - p)) : kiln_xstrdup(p);
		p = e ? e + 1 : NULL;
		if (b.len)
			kiln_buf_putc(&b, ',');
		char *eq = strchr(o, '=');
		int r;
		if (eq) {
			*eq = '\0';
			r = tmpfs_value(o, eq + 1, &b, err);
		} else if (in_list(o, flags)) {
			kiln_buf_puts(&b, o);
			r = 0;
		} else {
			r = tmpfs_value(o, NULL, &b, err);
		}
		if (r < 0) {
			kiln_buf_free(&b);
			return -1;
		}
	}
	if (target) {
		*target = path;
		path = NULL;
	}
	if (options)
		*options = b.len ? kiln_buf_steal(&b) : NULL;
	kiln_buf_free(&b);
	return 0;
}

int kiln_run_parse_port(const char *s, struct kiln_port *p, struct kiln_err *err)
{
	memset(p, 0, sizeof(*p));
	const char *slash = strchr(s, '/');
	KILN_AUTOFREE char *spec = slash ? kiln_xstrndup(s, (size_t)(slash - s)) : kiln_xstrdup(s);
	if (slash) {
		if (!strcmp(slash + 1, "udp"))
			p->udp = true;
		else if (strcmp(slash + 1, "tcp"))
			return kiln_err_set(err, 0, "invalid protocol \"%s\" (tcp or udp)", slash + 1);
	}
	/* [IP:]HOST:CONTAINER or CONTAINER */
	char *f[3];
	int n = split_fields(spec, ':', f, 3);
	if (n > 3) {
		free_fields(f, 3);
		return kiln_err_set(err, 0, "want [IP:]HOST:CONTAINER[/udp]");
	}
	int64_t hp = 0, cp = 0;
	int rc = -1;
	struct in_addr a;
	if (n == 3 && inet_pton(AF_INET, f[0], &a) != 1)
		kiln_err_set(err, 0, "\"%s\" is not an IPv4 address", f[0]);
	else if (f[n - 1][0] == '+' || (n > 1 && f[n - 2][0] == '+'))
		kiln_err_set(err, 0, "a port is a number from 1 to 65535");
	else if (kiln_units_parse_int(f[n - 1], 1, 65535, &cp, err) < 0)
		kiln_err_wrap(err, "container port \"%s\"", f[n - 1]);
	else if (n > 1 && kiln_units_parse_int(f[n - 2], 1, 65535, &hp, err) < 0)
		kiln_err_wrap(err, "host port \"%s\"", f[n - 2]);
	else
		rc = 0;
	if (rc == 0) {
		p->container_port = (uint16_t)cp;
		p->host_port = (uint16_t)(n > 1 ? hp : cp);
		if (n == 3) {
			p->host_ip = f[0];
			f[0] = NULL;
		}
	}
	free_fields(f, n);
	return rc;
}
