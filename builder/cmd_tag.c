/* kiln tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG] */
#include <stdio.h>
#include <string.h>

#include "builder/cli.h"
#include "layers/image.h"
#include "layers/store.h"

int kiln_cmd_tag(int argc, char **argv)
{
	if (kiln_cli_wants_help(argc, argv)) {
		printf("Usage: kiln tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]\n\n"
		       "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE\n");
		return 0;
	}
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "kiln: tag: unknown option %s (see 'kiln tag --help')\n", argv[i]);
			return KILN_EXIT_USAGE;
		}
	if (argc != 3) {
		fprintf(stderr, "kiln: \"tag\" requires exactly 2 arguments (see 'kiln tag --help')\n");
		return KILN_EXIT_USAGE;
	}
	struct kiln_err err = {0};
	struct kiln_ref dst;
	if (kiln_ref_parse(argv[2], &dst, &err) < 0) {
		kiln_err_print(&err);
		return KILN_EXIT_USAGE;
	}
	if (dst.digest) {
		kiln_ref_free(&dst);
		fprintf(stderr, "kiln: refusing to create a tag with a digest reference: %s\n", argv[2]);
		return KILN_EXIT_USAGE;
	}
	kiln_ref_free(&dst);
	struct kiln_store *s = NULL;
	int rc = KILN_EXIT_FAIL;
	struct kiln_desc md;
	char id[KILN_DIGEST_MAX];
	if (kiln_store_open(kiln_global.root, KILN_STORE_RDWR, &s, &err) < 0 ||
	    kiln_image_resolve(s, argv[1], &md, id, &err) < 0 || kiln_store_tag_set(s, argv[2], &md, &err) < 0)
		kiln_err_print(&err);
	else
		rc = 0;
	kiln_store_close(s);
	return rc;
}
