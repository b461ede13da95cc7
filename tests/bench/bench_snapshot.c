/* kiln — snapshot benchmark helper (built by bench_snapshot.sh, not by make).
 *
 *   bench_snapshot tree DIR NFILES
 *       write a tree of NFILES small files (10 top dirs, 100 files per dir)
 *   bench_snapshot prepare DRIVER SNAPDIR REPS NFILES...
 *       time kiln_snap_prepare of a child of each NFILES base (median of
 *       REPS, sizes interleaved; BENCH_CP=1: also `cp -a` of the same tree)
 *   bench_snapshot diff DRIVER SNAPDIR NFILES NCHANGED
 *       change NCHANGED files in a child of an NFILES base, time kiln_snap_diff
 *
 * Prints "RESULT key=value ..." lines for the script. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
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
	if (argc >= 6 && !strcmp(argv[1], "prepare")) {
		/* interleaved: rep 1 of every size, rep 2 of every size, ... so that
		 * the machine's load drifts over all sizes alike; each timing starts
		 * on a synced filesystem.  BENCH_CP=1 also times `cp -a` of the same
		 * tree, interleaved the same way. */
		int reps = atoi(argv[4]);
		int nsizes = argc - 5;
		bool cp = getenv("BENCH_CP") && !strcmp(getenv("BENCH_CP"), "1");
		struct kiln_snapshotter *sn = NULL;
		char (*chains)[KILN_DIGEST_MAX] = kiln_xcalloc((size_t)nsizes, KILN_DIGEST_MAX);
		double *t = kiln_xcalloc((size_t)(reps * nsizes), sizeof(double));
		double *tc = kiln_xcalloc((size_t)(reps * nsizes), sizeof(double));
		double *rm = kiln_xcalloc((size_t)nsizes, sizeof(double));
		for (int i = 0; i < nsizes; i++) {
			if (sn)
				kiln_snap_close(sn);
			sn = open_with_base(argv[2], argv[3], atol(argv[5 + i]), chains[i]);
		}
		for (int r = 0; r < reps; r++) {
			for (int i = 0; i < nsizes; i++) {
				char key[64];
				snprintf(key, sizeof(key), "bench-%d-%d", r, i);
				struct kiln_snap *s;
				sync();
				uint64_t t0 = kiln_now_ns();
				if (kiln_snap_prepare(sn, chains[i], key, 0, &s, &err))
					die("prepare", &err);
				uint64_t t1 = kiln_now_ns();
				if (kiln_snap_discard(s, &err))
					die("discard", &err);
				uint64_t t2 = kiln_now_ns();
				t[i * reps + r] = (double)(t1 - t0) / 1e6;
				rm[i] += (double)(t2 - t1) / 1e6 / reps;
				if (!cp)
					continue;
				struct kiln_snap *v;
				snprintf(key, sizeof(key), "view-%d-%d", r, i);
				if (kiln_snap_view(sn, chains[i], key, &v, &err))
					die("view", &err);
				char *cmd = kiln_xasprintf("cp -a '%s' '%s.cp'", kiln_snap_rootfs(v), argv[3]);
				char *rmcmd = kiln_xasprintf("rm -rf '%s.cp'", argv[3]);
				sync();
				t0 = kiln_now_ns();
				if (system(cmd) != 0)
					die(cmd, NULL);
				t1 = kiln_now_ns();
				tc[i * reps + r] = (double)(t1 - t0) / 1e6;
				if (system(rmcmd) != 0)
					die(rmcmd, NULL);
				free(cmd);
				free(rmcmd);
				kiln_snap_release(v);
			}
		}
		for (int i = 0; i < nsizes; i++) {
			qsort(t + i * reps, (size_t)reps, sizeof(double), dbl_cmp);
			qsort(tc + i * reps, (size_t)reps, sizeof(double), dbl_cmp);
			printf("RESULT op=prepare driver=%s files=%s ms=%.3f remove_ms=%.3f reps=%d",
			       argv[2], argv[5 + i], t[i * reps + reps / 2], rm[i], reps);
			if (cp)
				printf(" cp_ms=%.3f", tc[i * reps + reps / 2]);
			printf("\n");
		}
		free(t);
		free(tc);
		free(rm);
		free(chains);
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
	fprintf(stderr, "usage: bench_snapshot tree DIR N | prepare DRIVER DIR REPS N... | diff DRIVER DIR N K\n");
	return 2;
}
