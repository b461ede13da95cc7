/* kiln image prune [-a] [-f], and the aliases image ls|rm|inspect|tag|history|import|save|load. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/reclaim.h"
#include "layers/image.h"
#include "layers/store.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln image COMMAND\n\n"
		   "Manage images\n\n"
		   "Commands:\n"
		   "  history     Show the history of an image\n"
		   "  import      Import the contents from a tarball to create a filesystem image\n"
		   "  inspect     Display detailed information on one or more images\n"
		   "  load        Load an image from a tar archive or STDIN\n"
		   "  ls          List images\n"
		   "  prune       Remove unused images\n"
		   "  rm          Remove one or more images\n"
		   "  save        Save one or more images to a tar archive\n"
		   "  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE\n");
}

static int prune(int argc, char **argv)
{
	bool all = false, force = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("Usage: kiln image prune [OPTIONS]\n\n"
			       "Remove unused images\n\n"
			       "Options:\n"
			       "  -a, --all     Remove all unused images, not just dangling ones\n"
			       "  -f, --force   Do not prompt for confirmation\n");
			return 0;
		} else if (!strcmp(a, "-a") || !strcmp(a, "--all")) {
			all = true;
		} else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
			force = true;
		} else if (!strcmp(a, "-af") || !strcmp(a, "-fa")) {
			all = force = true;
		} else {
			fprintf(stderr, "kiln: image prune: unknown argument %s\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (!force) {
		printf("WARNING! This will remove all %s.\nAre you sure you want to continue? [y/N] ",
		       all ? "images without at least one container associated to them" : "dangling images");
		if (!kiln_cli_confirm())
			return 0;
	}
	struct kiln_err err = {0};
	struct kiln_store *s = NULL;
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_FAIL;
	}
	int rc = KILN_EXIT_FAIL;
	bool header = false;
	struct kiln_reclaim_stats st;
	if (kiln_reclaim_images(s, all, &header, &err) < 0 || kiln_reclaim_gc(s, true, &st, &err) < 0)
		goto out;
	char sz[32];
	kiln_human_size(kiln_reclaim_bytes(&st), sz);
	if (header)
		printf("\n");
	printf("Total reclaimed space: %s\n", sz);
	rc = 0;
out:
	if (rc)
		kiln_err_print(&err);
	kiln_store_close(s);
	return rc;
}

int kiln_cmd_image(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? KILN_EXIT_USAGE : 0;
	}
	const char *sub = argv[1];
	int sargc = argc - 1;
	char **sargv = argv + 1;
	if (!strcmp(sub, "prune"))
		return prune(sargc, sargv);
	struct {
		const char *name;
		kiln_cmd_fn fn;
	} alias[] = {
		{"ls", kiln_cmd_images}, {"list", kiln_cmd_images}, {"rm", kiln_cmd_rmi}, {"remove", kiln_cmd_rmi},
		{"tag", kiln_cmd_tag}, {"history", kiln_cmd_history}, {"import", kiln_cmd_import},
		{"save", kiln_cmd_save}, {"load", kiln_cmd_load}, {"inspect", NULL},
	};
	if (!strcmp(sub, "inspect")) {
		if (!kiln_cmd_inspect)
			goto missing;
		/* image inspect = inspect --type image */
		char **v = kiln_xcalloc((size_t)sargc + 3, sizeof(char *));
		v[0] = sargv[0];
		v[1] = (char *)"--type";
		v[2] = (char *)"image";
		for (int i = 1; i < sargc; i++)
			v[i + 2] = sargv[i];
		int rc = kiln_cmd_inspect(sargc + 2, v);
		free(v);
		return rc;
	}
	for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
		if (strcmp(alias[i].name, sub))
			continue;
		if (!alias[i].fn)
			goto missing;
		return alias[i].fn(sargc, sargv);
	}
	fprintf(stderr, "kiln: 'image %s' is not a kiln command (see 'kiln image --help')\n", sub);
	return KILN_EXIT_USAGE;
missing:
	fprintf(stderr, "kiln: 'image %s' is not available in this build\n", sub);
	return KILN_EXIT_USAGE;
}
