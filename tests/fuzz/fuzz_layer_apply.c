/* Fuzz kiln_layer_apply: the input is a layer (any compression).  It is
 * applied to a fresh directory next to a canary file and a canary "host etc"
 * directory; after every run the canaries must be unchanged and nothing may
 * have appeared next to the root.  Then the root is removed. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sched.h>
#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/layer.h"

static char g_base[64];
static char g_abs_etc[96];   /* "<base>/etc": an absolute path to the canary etc */

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

/* Defence for the machine running this test: the extractor is fed hostile
 * layers aimed at host paths, so if it were broken the damage would happen
 * before any assertion.  In a private mount namespace every mount except /tmp
 * (where all the fuzzer's files live), /proc, /sys and /dev is made read-only.
 * Without the privileges for that, the fuzzer runs as is (with a note). */
static void confine_host_writes(void)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("/tmp", "/tmp", NULL, MS_BIND | MS_REC, NULL) < 0) {
		fprintf(stderr, "note: cannot confine writes to /tmp (%s); running unconfined\n", strerror(errno));
		return;
	}
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	char line[4096];
	while (fgets(line, sizeof line, f)) {
		/* id parent major:minor root mountpoint ... */
		char mp[4096];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		/* unescape \040 and friends */
		char *o = mp;
		for (const char *i = mp; *i; i++) {
			if (i[0] == '\\' && i[1] >= '0' && i[1] <= '7' && i[2] && i[3]) {
				*o++ = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
				i += 3;
			} else {
				*o++ = *i;
			}
		}
		*o = '\0';
		static const char *const keep[] = { "/tmp", "/proc", "/sys", "/dev" };
		bool skip = false;
		for (size_t k = 0; k < sizeof keep / sizeof *keep; k++) {
			size_t l = strlen(keep[k]);
			if (!strncmp(mp, keep[k], l) && (mp[l] == '\0' || mp[l] == '/'))
				skip = true;
		}
		if (!skip)
			(void)mount(NULL, mp, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
	}
	fclose(f);
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
	confine_host_writes();
	snprintf(g_base, sizeof g_base, "/tmp/kiln-fuzz-layer-XXXXXX");
	if (!mkdtemp(g_base))
		die("mkdtemp");
	atexit(remove_base);
	snprintf(g_abs_etc, sizeof g_abs_etc, "%s/etc", g_base);
	put("canary", "canary", 0644);
	char p[256];
	snprintf(p, sizeof p, "%s/etc", g_base);
	if (mkdir(p, 0755) < 0)
		die("mkdir");
	put("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
}

/* Structure-aware mode: an input starting with 0xff is a script of entries,
 * turned into a tar here, so that the fuzzer explores combinations of paths,
 * symlinks, hard links and whiteouts rather than only tar headers.  Record:
 * type byte, name length, name tokens, [target length, target tokens]. */
static const char *TOKENS[] = {
	"a", "b", "c", "/", "..", ".", ".wh.", ".wh..wh..opq", "etc", "passwd", "canary", "x",
	g_abs_etc, "../..", "d/", "//", "./", "\xc3\xa9", "sub", "root",
};
#define NTOK (sizeof TOKENS / sizeof *TOKENS)

struct mem {
	char *p;
	size_t n, cap;
};

static la_ssize_t mem_write(struct archive *a, void *ud, const void *buf, size_t n)
{
	(void)a;
	struct mem *m = ud;
	if (m->n + n > m->cap) {
		m->cap = (m->n + n) * 2;
		m->p = kiln_xrealloc(m->p, m->cap);
	}
	memcpy(m->p + m->n, buf, n);
	m->n += n;
	return (la_ssize_t)n;
}

static size_t take_name(const uint8_t *d, size_t size, size_t *i, char *out, size_t outsz)
{
	size_t len = *i < size ? d[(*i)++] % 8 : 0, o = 0;
	out[0] = '\0';
	for (size_t k = 0; k < len && *i < size; k++) {
		const char *t = TOKENS[d[(*i)++] % NTOK];
		size_t tl = strlen(t);
		if (o + tl + 1 >= outsz)
			break;
		memcpy(out + o, t, tl + 1);
		o += tl;
	}
	return o;
}

static void script_to_tar(const uint8_t *d, size_t size, struct mem *m)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	if (archive_write_open2(a, m, NULL, mem_write, NULL, NULL) != ARCHIVE_OK)
		die("archive_write_open2");
	size_t i = 1;
	for (int n = 0; i < size && n < 64; n++) {
		uint8_t type = d[i++];
		char name[256], target[256];
		take_name(d, size, &i, name, sizeof name);
		if (!name[0])
			continue;
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, name);
		archive_entry_set_mtime(e, 1000, 0);
		archive_entry_set_uid(e, type & 0x80 ? 1000 : 0);
		archive_entry_set_perm(e, (type & 0x40) ? 04755 : 0644);
		switch (type % 6) {
		case 0:
		case 1:
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, 4);
			break;
		case 2:
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, (type & 0x40) ? 0500 : 0755);
			break;
		case 3:
			take_name(d, size, &i, target, sizeof target);
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, target[0] ? target : "/");
			break;
		case 4:
			take_name(d, size, &i, target, sizeof target);
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, target[0] ? target : "a");
			break;
		default:
			archive_entry_set_filetype(e, AE_IFIFO);
			break;
		}
		if (archive_write_header(a, e) >= ARCHIVE_WARN && archive_entry_size(e) == 4)
			archive_write_data(a, "evil", 4);
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();
	struct mem script = {0};
	if (size > 0 && data[0] == 0xff) {
		script_to_tar(data, size, &script);
		data = (const uint8_t *)script.p;
		size = script.n;
	}
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
	free(script.p);
	return 0;
}
