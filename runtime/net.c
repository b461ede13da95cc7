/* kiln — container networking through netlink (libmnl): loopback in a new
 * netns, the kiln0 bridge with a veth pair per container, a flock-protected
 * address allocator, and a userland proxy for published ports. */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

/* 10.213.37.0/24: unlikely to clash with the usual docker/podman ranges. */
#define KILN_NET_BASE 0x0AD52500u   /* 10.213.37.0 */
#define KILN_NET_PREFIX 24
#define KILN_IPAM_DIR "/run/kiln/net"

/* Send one request and wait for its ACK; returns 0 or -errno. */
static int nl_talk(struct mnl_socket *nl, struct nlmsghdr *nlh)
{
	static unsigned seq;
	nlh->nlmsg_seq = ++seq + (unsigned)time(NULL);
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	char buf[8192];
	ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (n < 0)
		return -errno;
	int r = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, mnl_socket_get_portid(nl), NULL, NULL);
	return r < 0 ? -errno : 0;
}

static struct mnl_socket *nl_open(struct kiln_err *err)
{
	struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl) {
		kiln_err_set(err, errno, "netlink socket");
		return NULL;
	}
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		kiln_err_set(err, errno, "netlink bind");
		mnl_socket_close(nl);
		return NULL;
	}
	return nl;
}

static int link_up(struct mnl_socket *nl, int ifindex)
{
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_UNSPEC;
	ifm->ifi_index = ifindex;
	ifm->ifi_flags = IFF_UP;
	ifm->ifi_change = IFF_UP;
	return nl_talk(nl, nlh);
}

static int add_addr(struct mnl_socket *nl, int ifindex, uint32_t addr, int prefix)
{
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWADDR;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = (unsigned char)prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned)ifindex;
	uint32_t a = htonl(addr);
	mnl_attr_put_u32(nlh, IFA_LOCAL, a);
	mnl_attr_put_u32(nlh, IFA_ADDRESS, a);
	uint32_t bcast = htonl(addr | ((1u << (32 - prefix)) - 1));
	mnl_attr_put_u32(nlh, IFA_BROADCAST, bcast);
	return nl_talk(nl, nlh);
}

int kiln_net_loopback_up(struct kiln_err *err)
{
	struct mnl_socket *nl = nl_open(err);
	if (!nl)
		return -1;
	int r = link_up(nl, 1);   /* lo is always ifindex 1 in a new netns */
	mnl_socket_close(nl);
	if (r < 0)
		return kiln_err_set(err, -r, "network: bringing up lo");
	return 0;
}

static int ensure_bridge(struct mnl_socket *nl, struct kiln_err *err)
{
	int idx = (int)if_nametoindex(KILN_BRIDGE_NAME);
	if (!idx) {
		char buf[8192];
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
		nlh->nlmsg_type = RTM_NEWLINK;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
		struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
		ifm->ifi_family = AF_UNSPEC;
		mnl_attr_put_strz(nlh, IFLA_IFNAME, KILN_BRIDGE_NAME);
		struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
		mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
		mnl_attr_nest_end(nlh, li);
		int r = nl_talk(nl, nlh);
		if (r < 0 && r != -EEXIST)
			return kiln_err_set(err, -r, "network: creating bridge %s", KILN_BRIDGE_NAME);
		idx = (int)if_nametoindex(KILN_BRIDGE_NAME);
		if (!idx)
			return kiln_err_set(err, errno, "network: bridge %s vanished", KILN_BRIDGE_NAME);
	}
	int r = add_addr(nl, idx, KILN_NET_BASE | 1, KILN_NET_PREFIX);
	if (r < 0 && r != -EEXIST)
		return kiln_err_set(err, -r, "network: address on %s", KILN_BRIDGE_NAME);
	r = link_up(nl, idx);
	if (r < 0)
		return kiln_err_set(err, -r, "network: bringing up %s", KILN_BRIDGE_NAME);
	return idx;
}

/* Allocator: KILN_IPAM_DIR/ipam holds "host pid" lines; a lease whose pid is
 * dead is free again. */
static int ipam_alloc(uint32_t *addr, struct kiln_err *err)
{
	if (kiln_mkdir_p(KILN_IPAM_DIR, 0700, err) < 0)
		return -1;
	int fd = open(KILN_IPAM_DIR "/ipam", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return kiln_err_set(err, errno, "network: opening the address allocator");
	if (flock(fd, LOCK_EX) < 0) {
		int e = errno;
		close(fd);
		return kiln_err_set(err, e, "network: locking the address allocator");
	}
	char *text = NULL;
	if (kiln_read_fd(fd, 1 << 20, &text, NULL, err) < 0) {
		close(fd);
		return -1;
	}
	bool used[256] = {false};
	used[0] = used[1] = used[255] = true;
	struct kiln_buf out = {0};
	for (char *p = text; p && *p;) {
		char *eol = strchr(p, '\n');
		if (eol)
			*eol = '\0';
		int h = 0, pid = 0;
		if (sscanf(p, "%d %d", &h, &pid) == 2 && h > 1 && h < 255 && pid > 0 &&
		    (kill(pid, 0) == 0 || errno == EPERM)) {
			used[h] = true;
			kiln_buf_printf(&out, "%d %d\n", h, pid);
		}
		p = eol ? eol + 1 : NULL;
	}
	free(text);
	int h = 2;
	while (h < 255 && used[h])
		h++;
	if (h >= 255) {
		kiln_buf_free(&out);
		close(fd);
		return kiln_err_set(err, 0, "network: no free address in 10.213.37.0/24");
	}
	kiln_buf_printf(&out, "%d %d\n", h, (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, out.data, out.len, 0) != (ssize_t)out.len) {
		int e = errno;
		kiln_buf_free(&out);
		close(fd);
		return kiln_err_set(err, e, "network: writing the address allocator");
	}
	kiln_buf_free(&out);
	close(fd);
	*addr = KILN_NET_BASE | (uint32_t)h;
	return 0;
}

static void ipam_free(uint32_t addr)
{
	int fd = open(KILN_IPAM_DIR "/ipam", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX) < 0) {
		close(fd);
		return;
	}
	char *text = NULL;
	if (kiln_read_fd(fd, 1 << 20, &text, NULL, NULL) == 0) {
		struct kiln_buf out = {0};
		int mine = (int)(addr & 0xff);
		for (char *p = text; p && *p;) {
			char *eol = strchr(p, '\n');
			if (eol)
				*eol = '\0';
			int h = 0, pid = 0;
			if (sscanf(p, "%d %d", &h, &pid) == 2 && h != mine)
				kiln_buf_printf(&out, "%d %d\n", h, pid);
			p = eol ? eol + 1 : NULL;
		}
		if (ftruncate(fd, 0) == 0 && out.len)
			(void)!pwrite(fd, out.data, out.len, 0);
		kiln_buf_free(&out);
		free(text);
	}
	close(fd);
}

int kiln_net_bridge_attach(const char *root, const char *id, pid_t pid,
			   struct kiln_net_lease *lease, struct kiln_err *err)
{
	memset(lease, 0, sizeof(*lease));
	(void)root;
	struct mnl_socket *nl = nl_open(err);
	if (!nl)
		return -1;
	int ret = -1, nsfd = -1;
	int br = ensure_bridge(nl, err);
	if (br < 0 || kiln_net_nat_ensure(err) < 0)
		goto out;
	if (ipam_alloc(&lease->addr, err) < 0)
		goto out;
	lease->active = true;
	lease->gateway = KILN_NET_BASE | 1;
	lease->prefix = KILN_NET_PREFIX;
	snprintf(lease->host_if, sizeof(lease->host_if), "kv%.8s%02x", id, lease->addr & 0xff);
	char nspath[64];
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)pid);
	nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0) {
		kiln_err_set(err, errno, "network: opening %s", nspath);
		goto out;
	}
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, lease->host_if);
	mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)br);
	struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	struct ifinfomsg *pifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifm));
	memset(pifm, 0, sizeof(*pifm));
	pifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)nsfd);
	mnl_attr_nest_end(nlh, peer);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, li);
	int r = nl_talk(nl, nlh);
	if (r < 0) {
		kiln_err_set(err, -r, "network: creating veth pair %s", lease->host_if);
		goto out;
	}
	int hidx = (int)if_nametoindex(lease->host_if);
	r = hidx ? link_up(nl, hidx) : -ENODEV;
	if (r < 0) {
		kiln_err_set(err, -r, "network: bringing up %s", lease->host_if);
		goto out;
	}
	ret = 0;
out:
	if (nsfd >= 0)
		close(nsfd);
	mnl_socket_close(nl);
	if (ret < 0)
		kiln_net_release(lease);
	return ret;
}

int kiln_net_configure_eth0(const struct kiln_net_lease *lease, struct kiln_err *err)
{
	struct mnl_socket *nl = nl_open(err);
	if (!nl)
		return -1;
	int ret = -1;
	int idx = (int)if_nametoindex("eth0");
	int r;
	if (!idx) {
		kiln_err_set(err, errno, "network: eth0 missing in the container");
		goto out;
	}
	if ((r = link_up(nl, 1)) < 0 || (r = add_addr(nl, idx, lease->addr, lease->prefix)) < 0 ||
	    (r = link_up(nl, idx)) < 0) {
		kiln_err_set(err, -r, "network: configuring eth0");
		goto out;
	}
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	rtm->rtm_dst_len = 0;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(lease->gateway));
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)idx);
	r = nl_talk(nl, nlh);
	if (r < 0 && r != -EEXIST) {
		kiln_err_set(err, -r, "network: default route");
		goto out;
	}
	ret = 0;
out:
	mnl_socket_close(nl);
	return ret;
}

void kiln_net_release(struct kiln_net_lease *lease)
{
	if (!lease->active)
		return;
	int idx = lease->host_if[0] ? (int)if_nametoindex(lease->host_if) : 0;
	if (idx) {
		struct mnl_socket *nl = nl_open(NULL);
		if (nl) {
			char buf[8192];
			struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
			nlh->nlmsg_type = RTM_DELLINK;
			nlh->nlmsg_flags = NLM_F_REQUEST;
			struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
			ifm->ifi_family = AF_UNSPEC;
			ifm->ifi_index = idx;
			nl_talk(nl, nlh);
			mnl_socket_close(nl);
		}
	}
	ipam_free(lease->addr);
	lease->active = false;
}

/* ---- resolv.conf ---- */

/* "nameserver ADDR" → ADDR's family and whether it is a loopback address;
 * false when the line is no nameserver line. */
static bool nameserver_line(const char *line, int *family, bool *loopback)
{
	if (strncmp(line, "nameserver", 10) || (line[10] != ' ' && line[10] != '\t'))
		return false;
	const char *a = line + 10;
	a += strspn(a, " \t");
	char addr[INET6_ADDRSTRLEN + 16];
	size_t n = strcspn(a, " \t#;%");   /* an IPv6 zone ("%eth0") is not part of the address */
	if (n == 0 || n >= sizeof(addr)) {
		*family = AF_UNSPEC;
		*loopback = false;
		return true;
	}
	memcpy(addr, a, n);
	addr[n] = '\0';
	struct in_addr v4;
	struct in6_addr v6;
	if (inet_pton(AF_INET, addr, &v4) == 1) {
		*family = AF_INET;
		*loopback = (ntohl(v4.s_addr) >> 24) == 127;
	} else if (inet_pton(AF_INET6, addr, &v6) == 1) {
		*family = AF_INET6;
		*loopback = IN6_IS_ADDR_LOOPBACK(&v6) ||
			    (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
	} else {
		*family = AF_UNSPEC;
		*loopback = false;
	}
	return true;
}

int kiln_net_resolv_conf(const char *host_text, bool host_net, char **out)
{
	struct kiln_buf b = {0};
	int kept = 0;
	kiln_buf_puts(&b, "");
	for (const char *p = host_text; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		KILN_AUTOFREE char *line = kiln_xstrndup(p, len);
		int family;
		bool loopback;
		bool keep = true;
		if (nameserver_line(line, &family, &loopback)) {
			/* in a namespace of its own the host's loopback is not
			 * there, and kiln0 carries IPv4 only */
			keep = host_net || (family == AF_INET && !loopback);
			if (keep)
				kept++;
		}
		if (keep) {
			kiln_buf_puts(&b, line);
			kiln_buf_putc(&b, '\n');
		}
		p = eol ? eol + 1 : NULL;
	}
	*out = kiln_buf_steal(&b);
	return kept;
}

/* ---- userland proxy ---- */

static void relay(int a, int b)
{
	char buf[16384];
	struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
	bool open_a = true, open_b = true;
	while (open_a || open_b) {
		p[0].fd = open_a ? a : -1;
		p[1].fd = open_b ? b : -1;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int from = i ? b : a, to = i ? a : b;
			ssize_t n = read(from, buf, sizeof(buf));
			if (n <= 0) {
				shutdown(to, SHUT_WR);
				if (i)
					open_b = false;
				else
					open_a = false;
				continue;
			}
			if (kiln_write_all(to, buf, (size_t)n) < 0)
				return;
		}
	}
}

static void tcp_conn(int client, uint32_t addr, uint16_t port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(addr)};
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		_exit(1);
	relay(client, s);
	_exit(0);
}

static void proxy_loop(const struct kiln_port *ports, int *fds, size_t n, uint32_t addr)
{
	struct pollfd *p = kiln_xcalloc(n, sizeof(*p));
	int *udp_back = kiln_xcalloc(n, sizeof(int));
	struct sockaddr_in *udp_peer = kiln_xcalloc(n, sizeof(*udp_peer));
	for (size_t i = 0; i < n; i++)
		udp_back[i] = -1;
	signal(SIGCHLD, SIG_IGN);   /* auto-reap connection children */
	for (;;) {
		size_t np = 0;
		struct pollfd all[2 * 64];
		size_t idx[2 * 64];
		bool back[2 * 64];
		for (size_t i = 0; i < n && np < 128; i++) {
			all[np] = (struct pollfd){fds[i], POLLIN, 0};
			idx[np] = i;
			back[np++] = false;
			if (udp_back[i] >= 0 && np < 128) {
				all[np] = (struct pollfd){udp_back[i], POLLIN, 0};
				idx[np] = i;
				back[np++] = true;
			}
		}
		if (poll(all, np, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (size_t k = 0; k < np; k++) {
			if (!(all[k].revents & POLLIN))
				continue;
			size_t i = idx[k];
			if (!ports[i].udp) {
				int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
				if (c < 0)
					continue;
				pid_t pid = fork();
				if (pid == 0) {
					prctl(PR_SET_PDEATHSIG, SIGKILL);
					tcp_conn(c, addr, ports[i].container_port);
				}
				close(c);
			} else if (!back[k]) {
				char buf[65536];
				socklen_t sl = sizeof(udp_peer[i]);
				ssize_t r = recvfrom(fds[i], buf, sizeof(buf), 0, (struct sockaddr *)&udp_peer[i], &sl);
				if (r < 0)
					continue;
				if (udp_back[i] < 0) {
					udp_back[i] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
					struct sockaddr_in sa = {.sin_family = AF_INET,
						.sin_port = htons(ports[i].container_port), .sin_addr.s_addr = htonl(addr)};
					if (udp_back[i] >= 0)
						connect(udp_back[i], (struct sockaddr *)&sa, sizeof(sa));
				}
				if (udp_back[i] >= 0)
					(void)!send(udp_back[i], buf, (size_t)r, 0);
			} else {
				char buf[65536];
				ssize_t r = recv(udp_back[i], buf, sizeof(buf), 0);
				if (r > 0)
					(void)!sendto(fds[i], buf, (size_t)r, 0, (struct sockaddr *)&udp_peer[i],
						       sizeof(udp_peer[i]));
			}
		}
	}
	free(p);
}

pid_t kiln_net_proxy_start(const struct kiln_port *ports, size_t n, uint32_t container_addr,
			   struct kiln_err *err)
{
	if (n > 64)
		return kiln_err_set(err, 0, "too many published ports (at most 64)");
	int fds[64];
	for (size_t i = 0; i < n; i++) {
		int s = socket(AF_INET, (ports[i].udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(ports[i].host_port)};
		const char *ip = ports[i].host_ip && ports[i].host_ip[0] ? ports[i].host_ip : "0.0.0.0";
		int one = 1;
		if (s >= 0)
			setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (s < 0 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1 ||
		    bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    (!ports[i].udp && listen(s, 128) < 0)) {
			int e = errno;
			if (s >= 0)
				close(s);
			for (size_t j = 0; j < i; j++)
				close(fds[j]);
			return kiln_err_set(err, e, "publishing port %s:%u", ip, ports[i].host_port);
		}
		fds[i] = s;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
		return kiln_err_set(err, e, "fork of the port proxy");
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_DFL);
		proxy_loop(ports, fds, n, container_addr);
		_exit(0);
	}
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	return pid;
}
