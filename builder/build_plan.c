/* kiln — the builder's view of the build plan (see build_plan.h). */
#include "builder/build_plan.h"
#include "parser/plan.h"

int kiln_build_plan_new(const struct kiln_df *df, const struct kiln_env *build_args, const char *target,
			struct kiln_plan **out, struct kiln_err *err)
{
	return kiln_plan_build(df, build_args, target, out, err);
}

void kiln_build_plan_free(struct kiln_plan *plan)
{
	kiln_plan_free(plan);
}

size_t kiln_build_plan_n_stages(const struct kiln_plan *plan)
{
	return plan->n_stages;
}

int kiln_build_plan_target(const struct kiln_plan *plan)
{
	return plan->target;
}

int kiln_build_plan_order(const struct kiln_plan *plan, int **out, size_t *n, struct kiln_err *err)
{
	return kiln_plan_needed_stages(plan, -1, out, n, err);
}

int kiln_build_plan_resolve_from(const struct kiln_plan *plan, int stage, const char *ref, int *out,
				 struct kiln_err *err)
{
	return kiln_plan_resolve_from(plan, stage, ref, out, err);
}
