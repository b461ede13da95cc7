/* kiln builder prune — remove build cache records (and let gc free blobs). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "builder/cache.h"
#include "builder/cli.h"
#include "common/util.h"
#include "layers/snapshot.h"
#include "layers/store.h"

#pragma weak kiln_snap_open
#pragma weak kiln_snap_close
#pragma weak kiln_snap_remove
#pragma weak kiln_store_open
#pragma weak kiln_store_gc

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln builder prune [-a] [-f]\n\n"
		   "Remove build cache.\n\n"
		   "  -a, --all     remove every cache record and the RUN cache mounts\n"
		   "                (default: records whose layers are gone)\n"
		   "  -f, --force   do not prompt for confirmation\n");
}

static int prune(int argc, char **argv)
{
	bool all = false, force = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
			all = true;
		else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force"))
			force = true;
		else if (!strcmp(argv[i], "-af") || !strcmp(argv[i], "-fa"))
			all = force = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "kiln: unknown option %s for builder prune\n", argv[i]);
			return KILN_EXIT_USAGE;
		}
	}
	if (!force && isatty(0)) {
		fprintf(stderr, "WARNING! This will remove %s build cache. Are you sure you want to continue? [y/N] ",
			all ? "all" : "dangling");
		char ans[16] = "";
		if (!fgets(ans, sizeof(ans), stdin) || (ans[0] != 'y' && ans[0] != 'Y'))
			return 0;
	}
	struct kiln_err err = {0};
	size_t removed = 0;
	struct kiln_strv chains = {0};
	if (kiln_cache_prune(kiln_global.root, all, &removed, &chains, &err) < 0) {
		kiln_err_print(&err);
		kiln_strv_free(&chains);
		return KILN_EXIT_FAIL;
	}
	if (all) {
		char *mounts = kiln_xasprintf("%s/cache/mounts", kiln_global.root);
		kiln_rm_rf(mounts, &err);
		free(mounts);
		char *ctx = kiln_xasprintf("%s/cache/context", kiln_global.root);
		kiln_rm_rf(ctx, &err);
		free(ctx);
	}
	/* snapshots no longer named by a record nor an image go with gc of the store;
	 * drop the committed snapshots of removed records when nothing builds on them */
	if (kiln_snap_open && kiln_snap_remove && chains.n) {
		struct kiln_snapshotter *sn = NULL;
		char *sd = kiln_xasprintf("%s/snapshots", kiln_global.root);
		if (kiln_snap_open(sd, kiln_global.storage_driver, &sn, &err) == 0) {
			for (size_t pass = 0; pass < 8; pass++) {
				bool progress = false;
				for (size_t i = chains.n; i-- > 0;) {
					if (!chains.v[i][0])
						continue;
					struct kiln_err e;
					if (kiln_snap_remove(sn, chains.v[i], &e) == 0 || e.errnum == ENOENT) {
						chains.v[i][0] = 0;
						progress = true;
					}
				}
				if (!progress)
					break;
			}
			kiln_snap_close(sn);
		}
		free(sd);
	}
	kiln_strv_free(&chains);
	int64_t freed = 0;
	if (kiln_store_open && kiln_store_gc) {
		struct kiln_store *s = NULL;
		if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) == 0) {
			struct kiln_gc_stats st = {0};
			if (kiln_store_gc(s, NULL, NULL, &st, &err) == 0)
				freed = st.bytes_removed;
			kiln_store_close(s);
		}
	}
	printf("Deleted build cache records: %zu\nTotal reclaimed space: %lld bytes\n", removed, (long long)freed);
	return 0;
}

int kiln_cmd_builder(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? KILN_EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "prune"))
		return prune(argc - 1, argv + 1);
	fprintf(stderr, "kiln: unknown builder command \"%s\" (prune)\n", argv[1]);
	return KILN_EXIT_USAGE;
}
