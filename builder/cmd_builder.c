/* kiln builder prune — remove build cache records (and let gc free blobs). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/reclaim.h"
#include "common/util.h"
#include "layers/image.h"
#include "layers/store.h"

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
		if (!kiln_cli_confirm())
			return 0;
	}
	struct kiln_err err = {0};
	size_t removed = 0;
	int64_t bytes = 0;
	if (kiln_reclaim_cache(kiln_global.root, all, &removed, &bytes, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	/* the snapshots and blobs only the removed records kept go now */
	struct kiln_store *s = NULL;
	struct kiln_reclaim_stats st = {0};
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0 ||
	    kiln_reclaim_gc(s, true, &st, &err) < 0) {
		kiln_err_print(&err);
		kiln_store_close(s);
		return KILN_EXIT_FAIL;
	}
	kiln_store_close(s);
	char sz[32];
	kiln_human_size(bytes + kiln_reclaim_bytes(&st), sz);
	printf("Deleted build cache records: %zu\nTotal reclaimed space: %s\n", removed, sz);
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
