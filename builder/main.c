/* kiln — entry point: global options, then dispatch to a command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "runtime/cgroup_gc.h"

struct command {
	const char *name;
	kiln_cmd_fn fn;     /* NULL when this build lacks the command */
	const char *summary;
};

static const struct command commands[] = {
	{"build", kiln_cmd_build, "Build an image from a Dockerfile"},
	{"run", kiln_cmd_run, "Run a command in a new container"},
	{"exec", kiln_cmd_exec, "Run a command in a running container"},
	{"ps", kiln_cmd_ps, "List containers"},
	{"logs", kiln_cmd_logs, "Fetch the logs of a container"},
	{"stop", kiln_cmd_stop, "Stop running containers"},
	{"kill", kiln_cmd_kill, "Send a signal to running containers"},
	{"rm", kiln_cmd_rm, "Remove containers"},
	{"images", kiln_cmd_images, "List images"},
	{"inspect", kiln_cmd_inspect, "Show low-level information on images or containers"},
	{"tag", kiln_cmd_tag, "Create a tag that refers to an image"},
	{"rmi", kiln_cmd_rmi, "Remove images"},
	{"history", kiln_cmd_history, "Show the history of an image"},
	{"image", kiln_cmd_image, "Manage images (image prune)"},
	{"import", kiln_cmd_import, "Create an image from a rootfs tarball"},
	{"save", kiln_cmd_save, "Save images to a tar archive or OCI directory"},
	{"load", kiln_cmd_load, "Load images from a tar archive"},
	{"fsck", kiln_cmd_fsck, "Verify the store: every blob's digest and every reference"},
	{"pull", kiln_cmd_pull, "Pull an image from a registry"},
	{"push", kiln_cmd_push, "Push an image to a registry"},
	{"login", kiln_cmd_login, "Log in to a registry"},
	{"logout", kiln_cmd_logout, "Log out from a registry"},
	{"builder", kiln_cmd_builder, "Manage the build cache (builder prune)"},
	{"system", kiln_cmd_system, "Disk usage and pruning (system df, system prune)"},
	{"parse", kiln_cmd_parse, "Parse a Dockerfile and print its tree or plan"},
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: kiln [OPTIONS] COMMAND [ARG...]\n\n"
		   "A Dockerfile-compatible image builder and container runtime.\n\n"
		   "Options:\n"
		   "  --root DIR              store root (default %s, env KILN_ROOT)\n"
		   "  --storage-driver NAME   btrfs, overlay or vfs (default: chosen from the root's filesystem)\n"
		   "  --debug                 verbose diagnostics\n"
		   "  -h, --help              show this help\n\n"
		   "Commands:\n", KILN_DEFAULT_ROOT);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].fn)
			fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "  %-9s %s\n", "version", "Show the kiln version");
	fprintf(f, "\nRun 'kiln COMMAND --help' for more information on a command.\n");
}

int main(int argc, char **argv)
{
	kiln_global.root = getenv("KILN_ROOT");
	kiln_global.storage_driver = getenv("KILN_STORAGE_DRIVER");
	kiln_global.debug = getenv("KILN_DEBUG") != NULL;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--version")) {
			printf("kiln version %s\n", KILN_VERSION);
			return 0;
		} else if (!strcmp(a, "--debug") || !strcmp(a, "-D")) {
			kiln_global.debug = true;
		} else if (!strcmp(a, "--root") || !strcmp(a, "--storage-driver")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "kiln: option %s needs a value\n", a);
				return KILN_EXIT_USAGE;
			}
			if (a[2] == 'r')
				kiln_global.root = argv[++i];
			else
				kiln_global.storage_driver = argv[++i];
		} else if (!strncmp(a, "--root=", 7)) {
			kiln_global.root = a + 7;
		} else if (!strncmp(a, "--storage-driver=", 17)) {
			kiln_global.storage_driver = a + 17;
		} else {
			fprintf(stderr, "kiln: unknown option %s (see 'kiln --help')\n", a);
			return KILN_EXIT_USAGE;
		}
	}
	if (!kiln_global.root || !kiln_global.root[0])
		kiln_global.root = KILN_DEFAULT_ROOT;
	if (i >= argc) {
		usage(stderr);
		return KILN_EXIT_USAGE;
	}
	const char *name = argv[i];
	if (!strcmp(name, "version")) {
		printf("kiln version %s\n", KILN_VERSION);
		return 0;
	}
	if (!strcmp(name, "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(commands[c].name, name))
			continue;
		if (!commands[c].fn)
			break;
		/* cgroups left by a supervisor or build that was killed */
		kiln_cgroup_gc_sweep();
		return commands[c].fn(argc - i, argv + i);
	}
	fprintf(stderr, "kiln: '%s' is not a kiln command (see 'kiln --help')\n", name);
	return KILN_EXIT_USAGE;
}
