/* kiln — the builder's view of the build plan (parser/plan.h).
 *
 * parser/plan.h and runtime/sandbox.h both define struct kiln_mount and the
 * KILN_NET_* / KILN_MOUNT_* names, so builder/build.c (which runs steps in
 * the sandbox) cannot include plan.h; it uses the plan through these few
 * functions with struct kiln_plan kept opaque.  Each one is the plan.h
 * function of the same suffix (see there for the semantics). */
#ifndef KILN_BUILDER_BUILD_PLAN_H
#define KILN_BUILDER_BUILD_PLAN_H

#include <stddef.h>

#include "common/err.h"
#include "parser/expand.h"
#include "parser/parser.h"

struct kiln_plan;

/* kiln_plan_build: every plan error is "<file>:<line>: ...". */
int kiln_build_plan_new(const struct kiln_df *df, const struct kiln_env *build_args, const char *target,
			struct kiln_plan **out, struct kiln_err *err);
void kiln_build_plan_free(struct kiln_plan *plan);
size_t kiln_build_plan_n_stages(const struct kiln_plan *plan);
/* The index of the target stage. */
int kiln_build_plan_target(const struct kiln_plan *plan);
/* kiln_plan_needed_stages for the target: dependencies first, target last. */
int kiln_build_plan_order(const struct kiln_plan *plan, int **out, size_t *n, struct kiln_err *err);
/* kiln_plan_resolve_from: *out = stage index, or -1 for an image. */
int kiln_build_plan_resolve_from(const struct kiln_plan *plan, int stage, const char *ref, int *out,
				 struct kiln_err *err);

#endif
