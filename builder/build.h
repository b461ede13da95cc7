/* kiln — the builder: run a Dockerfile into an image in the store.
 *
 * kiln_build() opens the context, parses the Dockerfile, builds the plan
 * (parser/plan.h: every plan error, with file:line, before anything is pulled
 * or run), builds the stages the target needs in the plan's order
 * (dependencies first; COPY --from / RUN --mount from= may name a later
 * stage, as in BuildKit), runs every step with the cache
 * (builder/cache.h), commits the final image with its tags and prints
 * BuildKit-like progress.  A failed or interrupted build tags nothing and
 * leaves no writable snapshot behind.
 *
 * RUN steps run in runtime/sandbox.h with origin BUILD, each in a network
 * namespace of its own on the kiln0 bridge with outbound NAT (BuildKit's
 * "default" network); --network none|host (or RUN --network=) choose
 * otherwise, and a Dockerfile's RUN --network=host needs the network.host
 * entitlement (--allow network.host, or --network host on the command line,
 * as buildx grants it).
 *
 * Known limits: COPY --link is a normal copy; COPY does not copy xattrs;
 * RUN --mount=type=bind,rw is refused; cache mounts ignore sharing= (always
 * shared); ADD takes one URL per instruction and no git URLs; --output
 * supports local, tar, oci, docker and image; --platform linux/amd64 only.
 * RUN steps run under a small init (PID 1 is not the step's shell).
 */
#ifndef KILN_BUILDER_BUILD_H
#define KILN_BUILDER_BUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "builder/progress.h"
#include "common/err.h"
#include "common/util.h"
#include "layers/layer.h"

struct kiln_build_opts {
	const char *root;              /* store root */
	const char *storage_driver;    /* NULL = auto */
	const char *context;           /* directory or "-" */
	const char *dockerfile;        /* -f: path, "-" or NULL */
	struct kiln_strv tags;         /* -t (as given) */
	struct kiln_strv build_args;   /* --build-arg "K=V" or "K" (value from the environment) */
	struct kiln_strv labels;       /* --label "K=V" */
	struct kiln_strv outputs;      /* --output specs */
	struct kiln_strv secrets;      /* --secret "id=ID,src=FILE" */
	const char *target;            /* --target stage name, or NULL = last stage */
	const char *network;           /* --network: "default" (NULL = the same), "none", "host" */
	bool allow_net_host;           /* --allow network.host: RUN --network=host is permitted */
	const char *platform;          /* --platform: only linux/amd64 (the host) */
	const char *iidfile;           /* --iidfile */
	int64_t memory;                /* --memory bytes, 0 = unlimited */
	int64_t pids;                  /* --pids-limit per RUN step: 0 = the default
	                                  (KILN_BUILD_PIDS_DEFAULT), -1 = unlimited */
	int64_t nano_cpus;             /* --cpus * 1e9 per RUN step, 0 = unlimited */
	bool no_cache;
	bool pull;
	bool quiet;                    /* -q: print only the image id (stdout) */
	enum kiln_progress_mode progress;
	enum kiln_compression compression;
};

/* The process limit of a RUN step unless --pids-limit says otherwise: far
 * above what a build needs (a parallel make -j64 stays in the hundreds),
 * far below what takes a host down. */
#define KILN_BUILD_PIDS_DEFAULT 8192

/* Build.  On success id_out (may be NULL) holds the image id
 * ("sha256:<hex>").  Errors name the Dockerfile file:line, the instruction and
 * the exit code of a failed RUN; err->exit_code is set for usage errors (2). */
int kiln_build(const struct kiln_build_opts *opts, char id_out[KILN_DIGEST_MAX], struct kiln_err *err);

void kiln_build_opts_free(struct kiln_build_opts *opts);

#endif
