/* kiln — owners of kiln's cgroups, and the removal of the cgroups whose
 * owner died (SIGKILL of a supervisor or of a build: nothing of theirs ran
 * to remove them).
 *
 * The process that makes a cgroup kiln-<id> (a container's supervisor, a
 * build running a step) first claims <id>: a POSIX record lock on
 * /run/kiln/cgroups/<id>, which the kernel drops when the process dies,
 * however it dies, and which its children do not inherit.  Every kiln
 * command sweeps the kiln-<id> cgroups beneath its own cgroup, in every
 * hierarchy (v1 controllers and the v2 mount):
 *   - owner alive (the lock is held): left alone;
 *   - owner dead (the lock file is there, nobody holds it): what is left in
 *     it is killed (the supervisor's death already sent its PID 1 SIGKILL),
 *     then it is removed, then the lock file;
 *   - no lock file (a kiln without owners made it): removed only when no
 *     process is in it and it is older than KILN_CGROUP_GC_GRACE seconds,
 *     so that one being set up right now is never taken away.
 * A cgroup with processes cannot be removed (the kernel refuses), so a
 * running container's cgroup never goes. */
#ifndef KILN_RUNTIME_CGROUP_GC_H
#define KILN_RUNTIME_CGROUP_GC_H

#include "common/err.h"

#define KILN_CGROUP_GC_DIR "/run/kiln/cgroups"
#define KILN_CGROUP_GC_GRACE 60

/* Claim id before making its cgroups: returns the lock's fd (keep it open
 * while the cgroups exist), or -1 with err set. */
int kiln_cgroup_gc_claim(const char *id, struct kiln_err *err);

/* The cgroups of id are gone: drop the claim (fd < 0: nothing to do). */
void kiln_cgroup_gc_release(const char *id, int fd);

/* Remove stale kiln cgroups beneath this process's own (see above); quiet,
 * best effort.  Returns how many cgroups were removed. */
int kiln_cgroup_gc_sweep(void);

/* The same for given texts of /proc/self/cgroup and /proc/self/mountinfo and
 * a lock directory (tests). */
int kiln_cgroup_gc_sweep_in(const char *proc_cgroup, const char *mountinfo, const char *lockdir);

#endif
