/* kiln — helpers shared by the runtime's own files (not for other modules;
 * their interface is runtime/sandbox.h and runtime/container.h). */
#ifndef KILN_RUNTIME_INTERNAL_H
#define KILN_RUNTIME_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "runtime/sandbox.h"

/* caps.c: the highest capability number the kernel knows. */
int kiln_caps_last(void);
/* Limit the bounding set to caps (needs CAP_SETPCAP). */
int kiln_caps_bound(uint64_t caps, struct kiln_err *err);
/* permitted = effective = caps, inheritable = ambient = empty. */
int kiln_caps_set(uint64_t caps, struct kiln_err *err);

/* cgroup.c */
#define KILN_CG_MAX 4
struct kiln_cgroup {
	enum kiln_cgroup_layout layout;
	int n;
	char *dirs[KILN_CG_MAX];     /* created directories */
	char *ctrl[KILN_CG_MAX];     /* their controller ("memory", ...; "" = v2) */
	int64_t memory_limit;
};
int kiln_cgroup_create(struct kiln_cgroup *cg, const char *id, const struct kiln_limits *lim,
		       struct kiln_err *err);
int kiln_cgroup_add(const struct kiln_cgroup *cg, pid_t pid, struct kiln_err *err);
/* v2 memory.events oom_kill, v1 memory.oom_control oom_kill, else (old v1)
 * memory.failcnt when the main process died of SIGKILL. */
bool kiln_cgroup_oom_killed(const struct kiln_cgroup *cg, bool sigkilled);
void kiln_cgroup_destroy(struct kiln_cgroup *cg);
/* Put pid into every cgroup that target is in (kiln exec). */
int kiln_cgroup_join_like(pid_t target, pid_t pid, struct kiln_err *err);

/* net.c */
struct kiln_net_lease {
	bool active;
	uint32_t addr;        /* host byte order */
	uint32_t gateway;
	int prefix;
	char host_if[16];
	char root[512];
};
#define KILN_BRIDGE_NAME "kiln0"
/* Child side: bring lo up (own netns). */
int kiln_net_loopback_up(struct kiln_err *err);
/* Parent side: allocate an address, make sure the bridge exists, create a
 * veth pair whose peer ("eth0") lands in the netns of pid. */
int kiln_net_bridge_attach(const char *root, const char *id, pid_t pid,
			   struct kiln_net_lease *lease, struct kiln_err *err);
/* Child side: address, link up and default route on eth0. */
int kiln_net_configure_eth0(const struct kiln_net_lease *lease, struct kiln_err *err);
/* Parent side: free the address (the veth dies with the netns). */
void kiln_net_release(struct kiln_net_lease *lease);
/* Start the userland port proxy (a forked process); returns its pid or -1. */
pid_t kiln_net_proxy_start(const struct kiln_port *ports, size_t n, uint32_t container_addr,
			   struct kiln_err *err);

#endif
