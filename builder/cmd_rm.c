/* kiln rm — remove containers (their state, log and writable snapshot). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "common/util.h"
#include "layers/snapshot.h"
#include "runtime/container.h"

int kiln_cmd_rm(int argc, char **argv)
{
	bool force = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln rm [-f] CONTAINER [CONTAINER...]\n\nRemove containers.\n\n"
			       "  -f, --force   kill a running container first\n");
			return 0;
		}
		if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
			force = true;
		} else {
			fprintf(stderr, "kiln: unknown flag: %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "kiln: \"kiln rm\" requires at least 1 argument\n");
		return KILN_EXIT_USAGE;
	}
	int rc = 0;
	for (; i < argc; i++) {
		struct kiln_err err = {0};
		struct kiln_container_state st;
		if (kiln_container_find(kiln_global.root, argv[i], &st, &err) < 0) {
			kiln_err_print(&err);
			rc = KILN_EXIT_FAIL;
			continue;
		}
		if (kiln_container_running(&st)) {
			if (!force) {
				fprintf(stderr, "kiln: cannot remove container %s: the container is running: stop the "
					"container before removing it or use -f\n", argv[i]);
				rc = KILN_EXIT_FAIL;
				continue;
			}
			kiln_container_signal(&st, SIGKILL, NULL);
			if (!kiln_container_wait_stopped(kiln_global.root, &st, 10000)) {
				fprintf(stderr, "kiln: container %s did not stop\n", argv[i]);
				rc = KILN_EXIT_FAIL;
				continue;
			}
		}
		/* the writable snapshot of an image-based container */
		char *snapdir = kiln_xasprintf("%s/snapshots", kiln_global.root);
		struct kiln_snapshotter *sn = NULL;
		if (access(snapdir, F_OK) == 0 &&
		    kiln_snap_open(snapdir, kiln_global.storage_driver, &sn, NULL) == 0) {
			char key[80];
			snprintf(key, sizeof(key), "ctr-%.64s", st.id);
			kiln_snap_remove(sn, key, NULL);
			kiln_snap_close(sn);
		}
		free(snapdir);
		char *dir = kiln_container_dir(kiln_global.root, st.id);
		if (kiln_rm_rf(dir, &err) < 0) {
			kiln_err_print(&err);
			rc = KILN_EXIT_FAIL;
		} else {
			printf("%s\n", argv[i]);
		}
		free(dir);
	}
	return rc;
}
