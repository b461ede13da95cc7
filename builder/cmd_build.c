/* kiln build — docker build's command line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/build.h"
#include "builder/cli.h"
#include "builder/remote_cache.h"
#include "common/units.h"
#include "layers/image.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln build [OPTIONS] PATH | -\n\n"
		"Build an image from a Dockerfile.\n\n"
		"Options:\n"
		"  -t, --tag NAME[:TAG]       name the image (repeatable)\n"
		"  -f, --file FILE            the Dockerfile (default PATH/Dockerfile; - for stdin)\n"
		"      --build-arg K[=V]      set a build-time variable (repeatable)\n"
		"      --target STAGE         build up to this stage\n"
		"      --no-cache             do not use the build cache\n"
		"      --pull                 always pull the base images\n"
		"      --network MODE         network of RUN steps: default (own namespace, outbound NAT), none or host\n"
		"      --allow ENTITLEMENT    network.host: let RUN --network=host use the host's network\n"
		"  -m, --memory BYTES         memory limit of RUN steps\n"
		"      --cpus N               CPU quota of RUN steps (e.g. 1.5)\n"
		"      --pids-limit N         process limit of each RUN step (default 8192, -1 unlimited)\n"
		"      --label K=V            add a label to the image (repeatable)\n"
		"      --platform P           linux/amd64 only\n"
		"  -q, --quiet                print only the image id\n"
		"      --iidfile FILE         write the image id to FILE\n"
		"      --progress MODE        auto, plain, tty or quiet\n"
		"  -o, --output SPEC          also export: type=local,dest=DIR\n"
		"      --secret id=ID,src=F   a secret for RUN --mount=type=secret\n"
		"      --compression ALG      layer compression: gzip (default), zstd, none\n"
		"      --cache-to SPEC        export the build cache: type=registry,ref=R[,mode=min|max]\n"
		"      --cache-from SPEC      import a build cache: type=registry,ref=R (or just R)\n");
}

/* "--name=value" / "--name value" / "-x value" / "-xvalue" */
static const char *optval(int argc, char **argv, int *i, const char *s, const char *l, bool *bad)
{
	const char *a = argv[*i];
	size_t ll = l ? strlen(l) : 0;
	if (l && !strncmp(a, l, ll) && a[ll] == '=')
		return a + ll + 1;
	if ((l && !strcmp(a, l)) || (s && !strcmp(a, s))) {
		if (*i + 1 >= argc) {
			fprintf(stderr, "kiln: option %s needs a value\n", a);
			*bad = true;
			return NULL;
		}
		return argv[++*i];
	}
	if (s && !strncmp(a, s, 2) && a[2] && s[1] != '-')
		return a + 2;
	return NULL;
}

int kiln_cmd_build(int argc, char **argv)
{
	struct kiln_build_opts o = {0};
	o.root = kiln_global.root;
	o.storage_driver = kiln_global.storage_driver;
	o.network = "default";
	const char *path = NULL;
	int rc = KILN_EXIT_OK;
	bool bad = false;
	struct kiln_err err = {0};
	KILN_REMOTE_CACHE_LIST_AUTO struct kiln_remote_cache_list cache_to = {0}, cache_from = {0};
	for (int i = 1; i < argc && !bad; i++) {
		const char *a = argv[i];
		const char *v;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			kiln_build_opts_free(&o);
			return 0;
		}
		if (a[0] != '-' || !strcmp(a, "-")) {
			if (path) {
				fprintf(stderr, "kiln: build takes exactly one PATH argument\n");
				bad = true;
				break;
			}
			path = a;
			continue;
		}
		if (!strcmp(a, "--no-cache") || !strcmp(a, "--no-cache=true")) {
			o.no_cache = true;
		} else if (!strcmp(a, "--pull") || !strcmp(a, "--pull=true")) {
			o.pull = true;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			o.quiet = true;
		} else if (!strcmp(a, "--rm") || !strcmp(a, "--force-rm") || !strcmp(a, "--link")) {
			/* accepted; kiln never leaves intermediate containers */
		} else if ((v = optval(argc, argv, &i, "-t", "--tag", &bad))) {
			struct kiln_err e;
			char *n = kiln_ref_normalize(v, &e);
			if (!n) {
				fprintf(stderr, "kiln: invalid tag \"%s\": %s\n", v, e.msg);
				bad = true;
			}
			free(n);
			kiln_strv_push(&o.tags, v);
		} else if ((v = optval(argc, argv, &i, "-f", "--file", &bad))) {
			o.dockerfile = v;
		} else if ((v = optval(argc, argv, &i, NULL, "--build-arg", &bad))) {
			kiln_strv_push(&o.build_args, v);
		} else if ((v = optval(argc, argv, &i, NULL, "--label", &bad))) {
			kiln_strv_push(&o.labels, v);
		} else if ((v = optval(argc, argv, &i, NULL, "--target", &bad))) {
			o.target = v;
		} else if ((v = optval(argc, argv, &i, NULL, "--network", &bad))) {
			if (strcmp(v, "host") && strcmp(v, "none") && strcmp(v, "default")) {
				fprintf(stderr, "kiln: --network %s: only default, none or host are supported\n", v);
				bad = true;
			}
			o.network = v;
		} else if ((v = optval(argc, argv, &i, NULL, "--allow", &bad))) {
			/* BuildKit's entitlements, comma-separated as buildx takes
			 * them; kiln grants RUN no other extra */
			if (!*v) {
				fprintf(stderr, "kiln: --allow needs an entitlement (network.host)\n");
				bad = true;
			}
			for (const char *e = v; *e && !bad; e += strcspn(e, ","), e += *e == ',') {
				size_t len = strcspn(e, ",");
				if (len == 12 && !strncmp(e, "network.host", 12)) {
					o.allow_net_host = true;
				} else {
					fprintf(stderr, "kiln: --allow %.*s: unknown or unsupported entitlement "
						"(kiln knows network.host)\n", (int)len, e);
					bad = true;
				}
			}
		} else if ((v = optval(argc, argv, &i, "-m", "--memory", &bad))) {
			if (kiln_units_parse_memory(v, &o.memory, &err) < 0) {
				kiln_units_flag_error(&err, "-m, --memory", v);
				kiln_err_print(&err);
				bad = true;
			}
		} else if ((v = optval(argc, argv, &i, NULL, "--pids-limit", &bad))) {
			char *end;
			errno = 0;
			long long n = strtoll(v, &end, 10);
			if (errno || !*v || *end || n < -1 || n == 0) {
				fprintf(stderr, "kiln: --pids-limit: invalid value \"%s\" (a positive number, or -1 "
					"for no limit)\n", v);
				bad = true;
			}
			o.pids = n;
		} else if ((v = optval(argc, argv, &i, NULL, "--cpus", &bad))) {
			char *end;
			errno = 0;
			double d = strtod(v, &end);
			if (errno || !*v || *end || !(d > 0) || d > 1024) {
				fprintf(stderr, "kiln: --cpus: invalid value \"%s\" (a number of CPUs, e.g. 1.5)\n", v);
				bad = true;
			}
			o.nano_cpus = (int64_t)(d * 1e9 + 0.5);
		} else if ((v = optval(argc, argv, &i, NULL, "--platform", &bad))) {
			o.platform = v;
		} else if ((v = optval(argc, argv, &i, NULL, "--iidfile", &bad))) {
			o.iidfile = v;
		} else if ((v = optval(argc, argv, &i, NULL, "--progress", &bad))) {
			if (kiln_progress_parse(v, &o.progress, &err) < 0) {
				fprintf(stderr, "kiln: %s\n", err.msg);
				bad = true;
			}
		} else if ((v = optval(argc, argv, &i, "-o", "--output", &bad))) {
			kiln_strv_push(&o.outputs, v);
		} else if ((v = optval(argc, argv, &i, NULL, "--cache-to", &bad)) ||
			   (v = optval(argc, argv, &i, NULL, "--cache-from", &bad))) {
			if (kiln_remote_cache_list_add(strstr(a, "--cache-to") ? &cache_to : &cache_from, v,
						       strstr(a, "--cache-to") != NULL, &err) < 0) {
				kiln_err_print(&err);
				bad = true;
			}
		} else if ((v = optval(argc, argv, &i, NULL, "--secret", &bad))) {
			kiln_strv_push(&o.secrets, v);
		} else if ((v = optval(argc, argv, &i, NULL, "--compression", &bad))) {
			if (kiln_compression_parse(v, &o.compression, &err) < 0) {
				fprintf(stderr, "kiln: --compression: %s\n", err.msg);
				bad = true;
			}
		} else if (!bad) {
			fprintf(stderr, "kiln: unknown build option %s (see 'kiln build --help')\n", a);
			bad = true;
		}
	}
	if (!bad && !path) {
		fprintf(stderr, "kiln: build requires exactly one PATH argument (a directory or -)\n");
		bad = true;
	}
	if (bad) {
		kiln_build_opts_free(&o);
		return KILN_EXIT_USAGE;
	}
	if (o.platform && strcmp(o.platform, "linux/amd64") && strcmp(o.platform, "linux/x86_64") &&
	    strcmp(o.platform, "amd64")) {
		fprintf(stderr, "kiln: --platform %s is not supported: kiln builds linux/amd64 only\n", o.platform);
		kiln_build_opts_free(&o);
		return KILN_EXIT_USAGE;
	}
	o.context = path;
	char id[KILN_DIGEST_MAX];
	FILE *cache_progress = o.quiet || o.progress == KILN_PROGRESS_QUIET ? NULL : stderr;
	kiln_remote_cache_import_all(o.root, &cache_from, o.no_cache, cache_progress);
	if (kiln_build(&o, id, &err) < 0 ||
	    kiln_remote_cache_export_all(o.root, &cache_to, cache_progress, &err) < 0) {
		kiln_err_print(&err);
		rc = err.exit_code ? err.exit_code : KILN_EXIT_FAIL;
	} else if (o.quiet) {
		printf("%s\n", id);
	}
	kiln_build_opts_free(&o);
	return rc;
}
