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

/* devices.c: the device filter on a cgroup directory: v1 devices.deny /
 * devices.allow writes, or the v2 device program attached (loaded once per
 * process for the default rules). */
int kiln_devices_apply_v1(const char *dir, const struct kiln_device_rule *rules, size_t n,
			  struct kiln_err *err);
int kiln_devices_attach_bpf(const char *dir, const struct kiln_device_rule *rules, size_t n,
			    struct kiln_err *err);

/* cgroup.c */
#define KILN_CG_MAX 6
struct kiln_cgroup {
	enum kiln_cgroup_layout layout;
	int n;
	char *dirs[KILN_CG_MAX];     /* created directories */
	char *ctrl[KILN_CG_MAX];     /* their controller ("memory", ...; "" = v2) */
	int64_t memory_limit;
};
/* A container's cgroups: the hierarchies its limits need and the one that
 * carries its device filter (rules; NULL = none, privileged): on cgroup v1
 * and hybrid the devices controller, else (v2, or hybrid without a v1
 * devices hierarchy) a device program on the cgroup2 hierarchy.  Refuses
 * when a filter is asked for and neither is usable. */
int kiln_cgroup_create(struct kiln_cgroup *cg, const char *id, const struct kiln_limits *lim,
		       const struct kiln_device_rule *rules, size_t n_rules, struct kiln_err *err);
int kiln_cgroup_add(const struct kiln_cgroup *cg, pid_t pid, struct kiln_err *err);
/* v2 memory.events oom_kill, v1 memory.oom_control oom_kill, else (old v1)
 * memory.failcnt when the main process died of SIGKILL. */
bool kiln_cgroup_oom_killed(const struct kiln_cgroup *cg, bool sigkilled);
void kiln_cgroup_destroy(struct kiln_cgroup *cg);
/* Put pid into every kiln cgroup that target is in (kiln exec): those named
 * kiln-<id> (any kiln-* when id is NULL).  Fails unless one of them is the
 * devices (v1) or cgroup2 one, where the container's device filter is. */
int kiln_cgroup_join_like(pid_t target, pid_t pid, const char *id, struct kiln_err *err);

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
#define KILN_NET_SUBNET "10.213.37.0/24"
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
/* nat.c: IPv4 forwarding on and kiln's nftables table (masquerade for the
 * bridge's subnet, forward accept for kiln0), installed idempotently in one
 * transaction; called by kiln_net_bridge_attach. */
int kiln_net_nat_ensure(struct kiln_err *err);
/* Start the userland port proxy (a forked process); returns its pid or -1. */
pid_t kiln_net_proxy_start(const struct kiln_port *ports, size_t n, uint32_t container_addr,
			   struct kiln_err *err);

#endif
