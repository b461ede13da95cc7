/* kiln — outbound NAT for the kiln0 bridge: IPv4 forwarding on and kiln's own
 * nftables table (`table ip kiln`), installed through libnftables.
 *
 * libnftables is loaded with dlopen() on first use, like common/lazylib does
 * for libcurl: only a start on the bridge pays for it, and kiln needs no
 * nftables headers to build.  The table is replaced as a whole in one
 * transaction (create, delete, create with its chains), so installing it is
 * idempotent, atomic for other kiln processes doing the same at once, and
 * repairs a table someone edited or flushed.  Connections already running
 * keep their NAT binding: it lives in conntrack, not in the table.  One
 * process installs it once (a build's later RUN steps reuse it): libnftables'
 * first command in a process costs 15-40 ms here, later ones 0.3 ms.
 *
 * What the table does:
 *   postrouting (nat)  traffic from 10.213.37.0/24 leaving by another
 *                      interface than kiln0 is masqueraded to that
 *                      interface's address (Docker's MASQUERADE rule);
 *   forward (filter)   what enters from kiln0 is accepted, replies going
 *                      back to kiln0 are accepted, any other connection
 *                      towards kiln0 is dropped (the containers' addresses
 *                      are not reachable from other hosts);
 *   input (filter)     packets from kiln0 addressed to 127.0.0.0/8 are
 *                      dropped (route_localnet, which stays off, already
 *                      makes them martians: this states it where it shows).
 * The table stays after the last container (like Docker's rules); it only
 * ever matches traffic of kiln0. */
#include "runtime/sandbox.h"
#include "runtime/internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

#define NFTABLES_SONAME "libnftables.so.1"
#define IP_FORWARD "/proc/sys/net/ipv4/ip_forward"

static const char nat_ruleset[] =
	"table ip kiln\n"
	"delete table ip kiln\n"
	"table ip kiln {\n"
	"\tchain postrouting {\n"
	"\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
	"\t\tip saddr " KILN_NET_SUBNET " oifname != \"" KILN_BRIDGE_NAME "\" masquerade\n"
	"\t}\n"
	"\tchain forward {\n"
	"\t\ttype filter hook forward priority filter; policy accept;\n"
	"\t\tiifname \"" KILN_BRIDGE_NAME "\" accept\n"
	"\t\toifname \"" KILN_BRIDGE_NAME "\" ct state established,related accept\n"
	"\t\toifname \"" KILN_BRIDGE_NAME "\" drop\n"
	"\t}\n"
	"\tchain input {\n"
	"\t\ttype filter hook input priority filter; policy accept;\n"
	"\t\tiifname \"" KILN_BRIDGE_NAME "\" ip daddr 127.0.0.0/8 drop\n"
	"\t}\n"
	"}\n";

/* The part of libnftables' API kiln uses (nftables/libnftables.h). */
struct nft_ctx;
static struct {
	struct nft_ctx *(*ctx_new)(uint32_t flags);
	void (*ctx_free)(struct nft_ctx *ctx);
	int (*buffer_output)(struct nft_ctx *ctx);
	int (*buffer_error)(struct nft_ctx *ctx);
	const char *(*get_error_buffer)(struct nft_ctx *ctx);
	int (*run_cmd_from_buffer)(struct nft_ctx *ctx, const char *buf);
} nft;
static pthread_once_t nft_once = PTHREAD_ONCE_INIT;
static char nft_load_error[256];

static void nft_load(void)
{
	void *h = dlopen(NFTABLES_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(nft_load_error, sizeof(nft_load_error),
			 "cannot load " NFTABLES_SONAME " (install the Debian package libnftables1): %s", dlerror());
		return;
	}
	static const char *const names[] = {"nft_ctx_new", "nft_ctx_free", "nft_ctx_buffer_output",
					    "nft_ctx_buffer_error", "nft_ctx_get_error_buffer",
					    "nft_run_cmd_from_buffer"};
	void **slots[] = {(void **)&nft.ctx_new, (void **)&nft.ctx_free, (void **)&nft.buffer_output,
			  (void **)&nft.buffer_error, (void **)&nft.get_error_buffer,
			  (void **)&nft.run_cmd_from_buffer};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		*slots[i] = dlsym(h, names[i]);
		if (!*slots[i]) {
			snprintf(nft_load_error, sizeof(nft_load_error), NFTABLES_SONAME " lacks %s", names[i]);
			nft.ctx_new = NULL;
			return;
		}
	}
}

static int nat_install(struct kiln_err *err);

static int forwarding_on(struct kiln_err *err)
{
	char cur[4] = "";
	int fd = open(IP_FORWARD, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return kiln_err_set(err, errno, "network: opening " IP_FORWARD);
	ssize_t n = read(fd, cur, sizeof(cur) - 1);
	if (n > 0 && cur[0] == '1') {
		close(fd);
		return 0;
	}
	if (pwrite(fd, "1\n", 2, 0) != 2) {
		int e = errno;
		close(fd);
		return kiln_err_set(err, e, "network: turning on IPv4 forwarding (" IP_FORWARD ")");
	}
	close(fd);
	return 0;
}

int kiln_net_nat_ensure(struct kiln_err *err)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static bool installed;
	pthread_mutex_lock(&lock);
	int r = installed ? 0 : nat_install(err);
	if (r == 0)
		installed = true;
	pthread_mutex_unlock(&lock);
	return r;
}

static int nat_install(struct kiln_err *err)
{
	if (forwarding_on(err) < 0)
		return -1;
	pthread_once(&nft_once, nft_load);
	if (!nft.ctx_new)
		return kiln_err_set(err, 0, "network: outbound NAT for %s: %s", KILN_BRIDGE_NAME, nft_load_error);
	struct nft_ctx *ctx = nft.ctx_new(0);
	if (!ctx)
		return kiln_err_set(err, ENOMEM, "network: nftables context");
	nft.buffer_output(ctx);
	nft.buffer_error(ctx);
	int r = nft.run_cmd_from_buffer(ctx, nat_ruleset);
	if (r != 0) {
		/* the error buffer is several lines (message, the rule, a caret
		 * line): keep the first one */
		const char *e = nft.get_error_buffer(ctx);
		char line[200];
		snprintf(line, sizeof(line), "%s", e && *e ? e : "rejected");
		line[strcspn(line, "\n")] = '\0';
		nft.ctx_free(ctx);
		return kiln_err_set(err, 0, "network: installing the nftables table \"ip kiln\" (outbound NAT "
				    "for %s): %s", KILN_BRIDGE_NAME, line);
	}
	nft.ctx_free(ctx);
	return 0;
}
