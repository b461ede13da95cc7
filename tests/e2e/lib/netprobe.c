/* netprobe — the network probes of t_build_network.sh, built static by the
 * test so that it runs inside a busybox image (whose nc has no UDP and no
 * unix sockets).
 *
 *   netprobe tcp ADDR PORT              connect, print what the server sends; exit 1 when refused/unreachable
 *   netprobe udp ADDR PORT TEXT         send TEXT as one datagram (exit 0 even when nobody listens)
 *   netprobe abstract NAME              connect to the abstract unix socket @NAME, print what it sends
 *   netprobe serve-tcp ADDR PORT TEXT LOG [READY]
 *                                       accept forever: send TEXT to each client, append its
 *                                       address to LOG; READY (a file) is created once listening
 *   netprobe serve-udp ADDR PORT LOG [READY]  append each datagram (one line) to LOG
 *   netprobe serve-abstract NAME TEXT [READY] accept forever on @NAME, send TEXT to each client
 *   netprobe sink ADDR PORT [READY]     accept forever, read each client to its end (benchmarks)
 *   netprobe send ADDR PORT MIB         send MIB MiB, wait for the sink to close, print MiB/s
 *
 * Every connect has a 5 s timeout (SO_SNDTIMEO), so a dropped packet is a
 * failure, never a hang.  Servers run until killed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

static int die(const char *what)
{
	fprintf(stderr, "netprobe: %s: %s\n", what, strerror(errno));
	return 1;
}

static int addr4(const char *ip, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)atoi(port));
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static socklen_t abstract_addr(const char *name, struct sockaddr_un *su)
{
	memset(su, 0, sizeof(*su));
	su->sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (n > sizeof(su->sun_path) - 1)
		n = sizeof(su->sun_path) - 1;
	memcpy(su->sun_path + 1, name, n);   /* sun_path[0] = '\0': abstract */
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static void timeouts(int s)
{
	struct timeval tv = {5, 0};
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int copy_out(int s)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(s, buf, sizeof(buf))) > 0)
		if (write(1, buf, (size_t)n) != n)
			return 1;
	return n < 0 ? die("read") : 0;
}

static void ready(const char *path)
{
	if (path) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0)
			close(fd);
	}
}

static void append(const char *log, const char *line)
{
	FILE *f = fopen(log, "a");
	if (f) {
		fprintf(f, "%s\n", line);
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return fprintf(stderr, "usage: netprobe tcp|udp|abstract|serve-tcp|serve-udp|serve-abstract ...\n"), 2;
	const char *mode = argv[1];
	struct sockaddr_in sa;
	struct sockaddr_un su;
	if (!strcmp(mode, "tcp") && argc == 4) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("tcp socket/address");
		timeouts(s);
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return die("connect");
		return copy_out(s);
	}
	if (!strcmp(mode, "udp") && argc == 5) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("udp socket/address");
		if (sendto(s, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return die("sendto");
		return 0;
	}
	if (!strcmp(mode, "abstract") && argc == 3) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		socklen_t l = abstract_addr(argv[2], &su);
		if (s < 0)
			return die("unix socket");
		timeouts(s);
		if (connect(s, (struct sockaddr *)&su, l) < 0)
			return die("connect");
		return copy_out(s);
	}
	if (!strcmp(mode, "serve-tcp") && (argc == 6 || argc == 7)) {
		int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("tcp socket/address");
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 16) < 0)
			return die("bind/listen");
		ready(argc == 7 ? argv[6] : NULL);
		for (;;) {
			struct sockaddr_in peer;
			socklen_t pl = sizeof(peer);
			int c = accept(s, (struct sockaddr *)&peer, &pl);
			if (c < 0)
				continue;
			char ip[INET_ADDRSTRLEN] = "?";
			inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
			append(argv[5], ip);
			if (write(c, argv[4], strlen(argv[4])) < 0 || write(c, "\n", 1) < 0)
				perror("netprobe: write");
			close(c);
		}
	}
	if (!strcmp(mode, "serve-udp") && (argc == 5 || argc == 6)) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("udp socket/address");
		if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return die("bind");
		ready(argc == 6 ? argv[5] : NULL);
		for (;;) {
			char buf[512];
			ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
			if (n < 0)
				continue;
			buf[n] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			append(argv[4], buf);
		}
	}
	if (!strcmp(mode, "serve-abstract") && (argc == 4 || argc == 5)) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		socklen_t l = abstract_addr(argv[2], &su);
		if (s < 0 || bind(s, (struct sockaddr *)&su, l) < 0 || listen(s, 16) < 0)
			return die("abstract bind/listen");
		ready(argc == 5 ? argv[4] : NULL);
		for (;;) {
			int c = accept(s, NULL, NULL);
			if (c < 0)
				continue;
			if (write(c, argv[3], strlen(argv[3])) < 0 || write(c, "\n", 1) < 0)
				perror("netprobe: write");
			close(c);
		}
	}
	if (!strcmp(mode, "sink") && (argc == 4 || argc == 5)) {
		int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("tcp socket/address");
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 16) < 0)
			return die("bind/listen");
		ready(argc == 5 ? argv[4] : NULL);
		static char buf[1 << 16];
		for (;;) {
			int c = accept(s, NULL, NULL);
			if (c < 0)
				continue;
			while (read(c, buf, sizeof(buf)) > 0)
				;
			close(c);
		}
	}
	if (!strcmp(mode, "send") && argc == 5) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0 || addr4(argv[2], argv[3], &sa) < 0)
			return die("tcp socket/address");
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return die("connect");
		static char buf[1 << 16];
		long long left = atoll(argv[4]) << 20;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (left > 0) {
			ssize_t n = write(s, buf, left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf));
			if (n <= 0)
				return die("write");
			left -= n;
		}
		shutdown(s, SHUT_WR);
		while (read(s, buf, sizeof(buf)) > 0)
			;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double sec = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("%.0f\n", (double)atoll(argv[4]) / sec);
		return 0;
	}
	fprintf(stderr, "netprobe: bad arguments for %s\n", mode);
	return 2;
}
