/* kiln fsck — verify every blob's digest and every reference of the store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder/cli.h"
#include "common/util.h"
#include "layers/snapshot.h"
#include "layers/store.h"

/* The snapshot areas present under ROOT/snapshots (one per storage driver). */
static void check_snapshots(struct kiln_fsck_report *r)
{
	static const char *const drivers[] = {"btrfs", "overlay", "vfs"};
	for (size_t d = 0; d < sizeof(drivers) / sizeof(drivers[0]); d++) {
		char *dir = kiln_xasprintf("%s/snapshots/%s", kiln_global.root, drivers[d]);
		struct stat st;
		bool present = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
		free(dir);
		if (!present)
			continue;
		char *sd = kiln_xasprintf("%s/snapshots", kiln_global.root);
		struct kiln_snapshotter *sn = NULL;
		struct kiln_err e = {0};
		if (kiln_snap_open(sd, drivers[d], &sn, &e) < 0 || kiln_snap_check(sn, &r->problems, &e) < 0)
			kiln_strv_push_owned(&r->problems, kiln_xasprintf("snapshots/%s: %s", drivers[d], e.msg));
		kiln_snap_close(sn);
		free(sd);
	}
}

int kiln_cmd_fsck(int argc, char **argv)
{
	if (kiln_cli_wants_help(argc, argv)) {
		printf("Usage: kiln fsck\n\n"
		       "Verify the store: re-digest every blob and check that every image's\n"
		       "manifest, config and layers are present and consistent, and that every\n"
		       "unpacked snapshot has its parent (and, on overlay, its links).  Exit 1 on any problem.\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "kiln: \"fsck\" accepts no arguments\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	struct kiln_fsck_report r;
	int rc = KILN_EXIT_FAIL;
	if (kiln_store_fsck(s, &r, &err) < 0) {
		kiln_err_print(&err);
	} else {
		check_snapshots(&r);
		for (size_t i = 0; i < r.problems.n; i++)
			printf("problem: %s\n", r.problems.v[i]);
		printf("checked %zu blobs and %zu images: %zu problem%s\n", r.blobs_checked, r.images_checked,
		       r.problems.n, r.problems.n == 1 ? "" : "s");
		rc = r.problems.n ? KILN_EXIT_FAIL : 0;
	}
	kiln_fsck_report_free(&r);
	kiln_store_close(s);
	return rc;
}
