/* kiln — capabilities (through libcap) and THE privilege decision. */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "common/util.h"

int kiln_caps_last(void)
{
	static int last = -1;
	if (last >= 0)
		return last;
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	if (f) {
		if (fscanf(f, "%d", &last) != 1)
			last = -1;
		fclose(f);
	}
	if (last < 0 || last > 63)
		last = CAP_LAST_CAP;
	return last;
}

int kiln_cap_from_name(const char *name)
{
	if (!name || !name[0])
		return -1;
	char buf[64];
	const char *n = name;
	if (!strncasecmp(n, "CAP_", 4))
		n += 4;
	if (strlen(n) + 5 > sizeof(buf))
		return -1;
	int len = snprintf(buf, sizeof(buf), "cap_%s", n);
	for (int i = 0; i < len; i++)
		buf[i] = (char)tolower((unsigned char)buf[i]);
	cap_value_t v;
	if (cap_from_name(buf, &v) != 0)
		return -1;
	if (v < 0 || v > 63)
		return -1;
	return (int)v;
}

static uint64_t all_caps(void)
{
	int last = kiln_caps_last();
	return last >= 63 ? ~0ULL : ((1ULL << (last + 1)) - 1);
}

static bool list_has_all(char *const *v)
{
	for (; v && *v; v++)
		if (!strcasecmp(*v, "ALL"))
			return true;
	return false;
}

static bool list_nonempty(char *const *v)
{
	return v && v[0];
}

static const char *origin_name(enum kiln_sandbox_origin o)
{
	switch (o) {
	case KILN_ORIGIN_RUN: return "run";
	case KILN_ORIGIN_BUILD: return "RUN step";
	case KILN_ORIGIN_EXEC: return "exec";
	case KILN_ORIGIN_HEALTHCHECK: return "healthcheck";
	}
	return "sandbox";
}

/* The one place that decides what a sandbox may do (security.md item 12). */
int kiln_sandbox_decide(const struct kiln_sandbox_spec *spec, struct kiln_privileges *out,
			struct kiln_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *who = origin_name(spec->origin);
	unsigned ent = spec->entitlements;
	bool healthcheck = spec->origin == KILN_ORIGIN_HEALTHCHECK;

	if (spec->privileged && (healthcheck || !(ent & KILN_ENT_PRIVILEGED)))
		return kiln_err_set(err, 0, "%s: privileged mode is not allowed without an explicit "
				    "entitlement (--privileged / --allow security.insecure)", who);
	if (spec->net == KILN_NET_HOST && spec->origin != KILN_ORIGIN_EXEC &&
	    (healthcheck || !(ent & KILN_ENT_NET_HOST)))
		return kiln_err_set(err, 0, "%s: host network is not allowed without an explicit "
				    "entitlement (--network host / --allow network.host)", who);
	if (list_nonempty(spec->cap_add) && (healthcheck || !(ent & KILN_ENT_CAP_ADD)))
		return kiln_err_set(err, 0, "%s: adding capabilities is not allowed without an explicit "
				    "--cap-add", who);
	if (spec->seccomp != KILN_SECCOMP_DEFAULT && !spec->privileged &&
	    (healthcheck || !(ent & KILN_ENT_UNCONFINED)))
		return kiln_err_set(err, 0, "%s: a custom or unconfined seccomp profile is not allowed "
				    "without an explicit --security-opt", who);
	if (spec->seccomp == KILN_SECCOMP_FILE && (!spec->seccomp_file || !spec->seccomp_file[0]))
		return kiln_err_set(err, 0, "%s: seccomp profile file not given", who);

	uint64_t caps = spec->privileged ? all_caps() : KILN_DEFAULT_CAPS;
	/* Docker's order: ALL in drop empties the set first, then adds apply;
	 * ALL in add fills the set, then drops apply. */
	if (list_has_all(spec->cap_drop))
		caps = 0;
	for (char *const *v = spec->cap_add; v && *v; v++) {
		if (!strcasecmp(*v, "ALL")) {
			caps = all_caps();
			continue;
		}
		int c = kiln_cap_from_name(*v);
		if (c < 0 || c > kiln_caps_last())
			return kiln_err_set(err, 0, "%s: unknown capability to add: \"%s\"", who, *v);
		caps |= 1ULL << c;
	}
	for (char *const *v = spec->cap_drop; v && *v; v++) {
		if (!strcasecmp(*v, "ALL"))
			continue;
		int c = kiln_cap_from_name(*v);
		if (c < 0 || c > kiln_caps_last())
			return kiln_err_set(err, 0, "%s: unknown capability to drop: \"%s\"", who, *v);
		caps &= ~(1ULL << c);
	}
	out->caps = caps & all_caps();
	out->seccomp = !spec->privileged && spec->seccomp != KILN_SECCOMP_UNCONFINED;
	out->masks = !spec->privileged;
	out->no_new_privs = spec->no_new_privs;
	out->host_net = spec->net == KILN_NET_HOST;
	out->host_devices = spec->privileged;
	out->sys_rw = spec->privileged;
	return 0;
}

int kiln_caps_bound(uint64_t caps, struct kiln_err *err)
{
	int last = kiln_caps_last();
	for (int c = 0; c <= last; c++) {
		if (caps & (1ULL << c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			return kiln_err_set(err, errno, "dropping capability %d from the bounding set", c);
	}
	return 0;
}

int kiln_caps_set(uint64_t caps, struct kiln_err *err)
{
	cap_t c = cap_init();   /* all clear */
	if (!c)
		return kiln_err_set(err, errno, "cap_init");
	/* never ask for more than we hold (e.g. privileged on a host that
	 * withholds CAP_SYS_RESOURCE from us) */
	cap_t cur = cap_get_proc();
	cap_value_t vals[64];
	int n = 0;
	int last = kiln_caps_last();
	for (int i = 0; i <= last; i++) {
		cap_flag_value_t have = CAP_SET;
		if (cur && cap_get_flag(cur, i, CAP_PERMITTED, &have) < 0)
			have = CAP_CLEAR;
		if ((caps & (1ULL << i)) && have == CAP_SET)
			vals[n++] = i;
	}
	if (cur)
		cap_free(cur);
	if (n > 0 && (cap_set_flag(c, CAP_PERMITTED, n, vals, CAP_SET) < 0 ||
		      cap_set_flag(c, CAP_EFFECTIVE, n, vals, CAP_SET) < 0)) {
		cap_free(c);
		return kiln_err_set(err, errno, "cap_set_flag");
	}
	int r = cap_set_proc(c);
	int e = errno;
	cap_free(c);
	if (r < 0)
		return kiln_err_set(err, e, "setting capabilities");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return kiln_err_set(err, errno, "clearing ambient capabilities");
	return 0;
}
