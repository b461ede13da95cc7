/* kiln — the command line: global options and one entry point per command.
 *
 * Each command lives in builder/cmd_<name>.c and is declared here.  A command
 * returns the process exit code (0 ok, 1 failure, 2 usage, 125 runtime setup
 * failure, or a container's own status for `run`).  argv[0] is the command
 * name; options are parsed by the command itself.
 */
#ifndef KILN_BUILDER_CLI_H
#define KILN_BUILDER_CLI_H

#include <stdbool.h>

#define KILN_VERSION "0.1.0"
#define KILN_DEFAULT_ROOT "/var/lib/kiln"

#define KILN_EXIT_OK 0
#define KILN_EXIT_FAIL 1
#define KILN_EXIT_USAGE 2
#define KILN_EXIT_SETUP 125

struct kiln_global {
	const char *root;            /* --root, KILN_ROOT, or KILN_DEFAULT_ROOT */
	const char *storage_driver;  /* --storage-driver, KILN_STORAGE_DRIVER, or NULL = auto */
	bool debug;                  /* --debug / KILN_DEBUG */
};

/* Filled by main() before the command runs. */
extern struct kiln_global kiln_global;

typedef int (*kiln_cmd_fn)(int argc, char **argv);

/* Commands (weak: a build without a command's file reports it as missing). */
#define KILN_CMD(name) int kiln_cmd_##name(int argc, char **argv) __attribute__((weak))
KILN_CMD(parse);
KILN_CMD(build);
KILN_CMD(run);
KILN_CMD(exec);
KILN_CMD(ps);
KILN_CMD(logs);
KILN_CMD(stop);
KILN_CMD(kill);
KILN_CMD(rm);
KILN_CMD(images);
KILN_CMD(inspect);
KILN_CMD(tag);
KILN_CMD(rmi);
KILN_CMD(history);
KILN_CMD(image);
KILN_CMD(import);
KILN_CMD(save);
KILN_CMD(load);
KILN_CMD(fsck);
KILN_CMD(pull);
KILN_CMD(push);
KILN_CMD(login);
KILN_CMD(logout);
KILN_CMD(builder);
KILN_CMD(system);
#undef KILN_CMD

/* True when argv holds -h or --help (before a lone "--"). */
bool kiln_cli_wants_help(int argc, char **argv);

/* Read the answer to a "[y/N]" question the caller has printed: true only
 * for a line starting with y or Y (end of input is no). */
bool kiln_cli_confirm(void);

#endif
