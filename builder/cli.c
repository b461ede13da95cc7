/* kiln — command-line state and helpers shared by every command. */
#include <stdio.h>
#include <string.h>

#include "builder/cli.h"

struct kiln_global kiln_global;

bool kiln_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	}
	return false;
}

bool kiln_cli_confirm(void)
{
	fflush(stdout);
	fflush(stderr);
	char line[16] = "";
	return fgets(line, sizeof(line), stdin) && (line[0] == 'y' || line[0] == 'Y');
}
