/* Fuzz kiln_layer_apply: the input is a layer (any compression).  It is
 * applied to a fresh directory next to a canary file and a canary "host etc"
 * directory; after every run the canaries must be unchanged and nothing may
 * have appeared next to the root.  Then the root is removed. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/layer.h"

static char g_base[64];

static void die(const char *what)
{
	fprintf(stderr, "fuzz_layer_apply: %s\n", what);
	abort();
}

static void put(const char *rel, const char *data, mode_t mode)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", g_base, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0 || kiln_write_all(fd, data, strlen(data)) < 0)
		die("setup");
	close(fd);
}

static void check(const char *rel, const char *want, mode_t mode)
{
	char p[256], buf[128];
	snprintf(p, sizeof p, "%s/%s", g_base, rel);
	struct stat st;
	if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 07777) != mode || st.st_nlink != 1)
		die("a canary was replaced, relinked or chmodded");
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("canary unreadable");
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		die("canary unreadable");
	buf[n] = '\0';
	if (strcmp(buf, want))
		die("a canary was modified");
}

static void remove_base(void)
{
	struct kiln_err err = {0};
	if (g_base[0])
		(void)kiln_rm_rf(g_base, &err);
}

static void setup_once(void)
{
	if (g_base[0])
		return;
	snprintf(g_base, sizeof g_base, "/tmp/kiln-fuzz-layer-XXXXXX");
	if (!mkdtemp(g_base))
		die("mkdtemp");
	atexit(remove_base);
	put("canary", "canary", 0644);
	char p[256];
	snprintf(p, sizeof p, "%s/etc", g_base);
	if (mkdir(p, 0755) < 0)
		die("mkdir");
	put("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();
	char root[256];
	snprintf(root, sizeof root, "%s/root", g_base);
	if (mkdir(root, 0755) < 0)
		die("mkdir root");
	int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int in = memfd_create("layer", MFD_CLOEXEC);
	if (rfd < 0 || in < 0 || kiln_write_all(in, data, size) < 0 || lseek(in, 0, SEEK_SET) != 0)
		die("setup");
	struct kiln_layer_apply_opts o = { .whiteouts = true, .keep_owner = true, .uid_offset = 0 };
	struct kiln_err err = {0};
	char diff[KILN_DIGEST_MAX];
	(void)kiln_layer_apply(rfd, in, &o, diff, &err);
	close(in);
	close(rfd);

	check("canary", "canary", 0644);
	check("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
	struct stat st;
	if (lstat(g_base, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0700)
		die("the base directory changed");
	char p[256];
	snprintf(p, sizeof p, "%s/etc", g_base);
	if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0755)
		die("the host etc directory changed");
	DIR *d = opendir(g_base);
	if (!d)
		die("opendir");
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		if (strcmp(n, ".") && strcmp(n, "..") && strcmp(n, "canary") && strcmp(n, "etc") &&
		    strcmp(n, "root"))
			die("something was created outside the root");
	}
	closedir(d);
	d = opendir(p);
	if (!d)
		die("opendir etc");
	int cnt = 0;
	while ((de = readdir(d)))
		cnt++;
	closedir(d);
	if (cnt != 3)
		die("something was created in the host etc");
	/* remove the root; fall back to rm(1) for trees deeper than our fd limit
	 * or directories we cannot enter (when not root) */
	if (kiln_rm_rf(root, &err) < 0) {
		char cmd[320];
		snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", root, root);
		if (system(cmd) != 0)
			die("cannot remove the root");
	}
	if (access(root, F_OK) == 0)
		die("cannot remove the root");
	return 0;
}
