/* kiln run — the values of -v, --tmpfs and -p, checked as docker checks them.
 *
 * They are validated while the command line is parsed (a bad value is a
 * usage error naming the flag before any image is opened) and turned into
 * the sandbox's mounts and ports afterwards.
 */
#ifndef KILN_BUILDER_RUN_OPTS_H
#define KILN_BUILDER_RUN_OPTS_H

#include <stdbool.h>

#include "common/err.h"
#include "runtime/sandbox.h"

/* -v HOST:CONTAINER[:OPTS]: both paths absolute and non-empty, no empty
 * section, OPTS a comma list of at most one each of rw|ro, z|Z,
 * private|rprivate, consistent|cached|delegated.  On success *host and
 * *container are allocated (NULL may be passed to only check). */
int kiln_run_volume_parse(const char *spec, char **host, char **container, bool *readonly,
			  struct kiln_err *err);

/* --tmpfs PATH[:OPTS]: PATH absolute and not "/", OPTS from ro, rw, exec,
 * noexec, suid, nosuid, dev, nodev, size=SIZE (docker's units, or N%),
 * mode=OCTAL, uid=N, gid=N, nr_inodes=N.  *target and *options (NULL when
 * none; sizes rewritten in bytes) are allocated (NULL may be passed). */
int kiln_run_tmpfs_parse(const char *spec, char **target, char **options, struct kiln_err *err);

/* -p [IP:]HOST:CONTAINER[/tcp|udp] or CONTAINER[/...]: ports 1-65535, IP a
 * dotted IPv4 address.  p->host_ip is allocated when given. */
int kiln_run_parse_port(const char *s, struct kiln_port *p, struct kiln_err *err);

#endif
