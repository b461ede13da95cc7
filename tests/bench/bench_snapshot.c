/* kiln — snapshot benchmark helper (built by bench_snapshot.sh, not by make).
 *
 *   bench_snapshot tree DIR NFILES
 *       write a tree of NFILES small files (10 top dirs, 100 files per dir)
 *   bench_snapshot prepare DRIVER SNAPDIR NFILES REPS
 *       time kiln_snap_prepare of a child of an NFILES base (median of REPS)
 *   bench_snapshot diff DRIVER SNAPDIR NFILES NCHANGED
 *       change NCHANGED files in a child of an NFILES base, time kiln_snap_diff
 *
 * Prints "RESULT key=value ..." lines for the script. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "layers/snapshot.h"

static void die(const char *what, const struct kiln_err *err)
{
	fprintf(stderr, "bench_snapshot: %s: %s\n", what, err ? err->msg : strerror(errno));
	exit(1);
}

static void file_path(char *buf, size_t size, const char *root, long i)
{
	long dir = i / 100;
	snprintf(buf, size, "%s/t%ld/d%04ld/f%06ld", root, dir % 10, dir, i);
}

static void make_tree(const char *root, long n)
{
	char p[4096];
	static const char data[] = "some file content that is not very long, 64 bytes or so.....\n";
	for (long i = 0; i < n; i++) {
		if (i % 100 == 0) {
			long dir = i / 100;
			snprintf(p, sizeof(p), "%s/t%ld", root, dir % 10);
			(void)mkdir(p, 0755);
			snprintf(p, sizeof(p), "%s/t%ld/d%04ld", root, dir % 10, dir);
			if (mkdir(p, 0755) && errno != EEXIST)
				die(p, NULL);
		}
		file_path(p, sizeof(p), root, i);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || kiln_write_all(fd, data, sizeof(data) - 1))
			die(p, NULL);
		close(fd);
	}
}

static void base_chain(long n, char out[KILN_DIGEST_MAX])
{
	char diff[KILN_DIGEST_MAX];
	snprintf(diff, sizeof(diff), "sha256:%064lx", n);
	struct kiln_err err = { 0 };
	if (kiln_snap_chain_id(NULL, diff, out, &err))
		die("chain id", &err);
}

static struct kiln_snapshotter *open_with_base(const char *driver, const char *dir, long n,
					       char chain[KILN_DIGEST_MAX])
{
	struct kiln_err err = { 0 };
	struct kiln_snapshotter *sn;
	if (kiln_snap_open(dir, driver, &sn, &err))
		die("open", &err);
	base_chain(n, chain);
	if (kiln_snap_exists(sn, chain))
		return sn;
	struct kiln_snap *s;
	char key[64];
	snprintf(key, sizeof(key), "base-%ld", n);
	if (kiln_snap_prepare(sn, NULL, key, 0, &s, &err))
		die("prepare base", &err);
	make_tree(kiln_snap_rootfs(s), n);
	if (kiln_snap_commit(s, chain, &err))
		die("commit base", &err);
	kiln_snap_release(s);
	sync();
	return sn;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct kiln_err err = { 0 };
	if (argc == 4 && !strcmp(argv[1], "tree")) {
		(void)mkdir(argv[2], 0755);
		make_tree(argv[2], atol(argv[3]));
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "prepare")) {
		long n = atol(argv[4]);
		int reps = atoi(argv[5]);
		char chain[KILN_DIGEST_MAX];
		struct kiln_snapshotter *sn = open_with_base(argv[2], argv[3], n, chain);
		double *t = kiln_xcalloc((size_t)reps, sizeof(double));
		double rm_total = 0;
		for (int r = 0; r < reps; r++) {
			char key[64];
			snprintf(key, sizeof(key), "bench-%d", r);
			struct kiln_snap *s;
			uint64_t t0 = kiln_now_ns();
			if (kiln_snap_prepare(sn, chain, key, 0, &s, &err))
				die("prepare", &err);
			uint64_t t1 = kiln_now_ns();
			if (kiln_snap_discard(s, &err))
				die("discard", &err);
			uint64_t t2 = kiln_now_ns();
			t[r] = (double)(t1 - t0) / 1e6;
			rm_total += (double)(t2 - t1) / 1e6;
		}
		qsort(t, (size_t)reps, sizeof(double), dbl_cmp);
		printf("RESULT op=prepare driver=%s files=%ld ms=%.3f remove_ms=%.3f reps=%d\n",
		       argv[2], n, t[reps / 2], rm_total / reps, reps);
		free(t);
		kiln_snap_close(sn);
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "diff")) {
		long n = atol(argv[4]), k = atol(argv[5]);
		char chain[KILN_DIGEST_MAX];
		struct kiln_snapshotter *sn = open_with_base(argv[2], argv[3], n, chain);
		struct kiln_snap *s;
		if (kiln_snap_prepare(sn, chain, "bench-diff", 0, &s, &err))
			die("prepare", &err);
		const char *root = kiln_snap_rootfs(s);
		char p[4096];
		for (long j = 0; j < k; j++) {
			long i = k > 0 ? j * (n / k) : 0;
			file_path(p, sizeof(p), root, i);
			int fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
			if (fd < 0 || kiln_write_all(fd, "x\n", 2))
				die(p, NULL);
			close(fd);
		}
		struct kiln_changes ch = { 0 };
		uint64_t t0 = kiln_now_ns();
		if (kiln_snap_diff(s, &ch, &err))
			die("diff", &err);
		uint64_t t1 = kiln_now_ns();
		size_t modified = 0;
		for (size_t i = 0; i < ch.n; i++)
			if (ch.v[i].kind == KILN_CHANGE_MODIFY && strrchr(ch.v[i].path, '/') &&
			    strrchr(ch.v[i].path, '/')[1] == 'f')
				modified++;
		printf("RESULT op=diff driver=%s files=%ld changed=%ld ms=%.3f changes=%zu files_reported=%zu\n",
		       argv[2], n, k, (double)(t1 - t0) / 1e6, ch.n, modified);
		if ((long)modified != k) {
			fprintf(stderr, "bench_snapshot: diff reported %zu changed files, expected %ld\n",
				modified, k);
			return 1;
		}
		kiln_changes_free(&ch);
		if (kiln_snap_discard(s, &err))
			die("discard", &err);
		kiln_snap_close(sn);
		return 0;
	}
	fprintf(stderr, "usage: bench_snapshot tree DIR N | prepare DRIVER DIR N REPS | diff DRIVER DIR N K\n");
	return 2;
}
