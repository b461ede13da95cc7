/* libFuzzer target: the shell-word expander (and, when the first byte's bit 1
 * is set, the Dockerfile parser followed by the build plan; bit 2, the
 * .dockerignore matcher).
 *
 * Input: byte 0 = mode (bit 0: escape '`' instead of '\\'; bit 1: plan mode;
 * bit 2: ignore mode), the rest = the word (or the Dockerfile, or a path line
 * followed by .dockerignore text).  Invariants: expanding as one word
 * and as split words succeed or fail together; listing the references never
 * fails when expansion succeeds; error messages are never empty. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "parser/expand.h"
#include "parser/ignore.h"
#include "parser/parser.h"
#include "parser/plan.h"

static void fuzz_plan(const char *text, size_t len)
{
	struct kiln_df *df = NULL;
	struct kiln_err err = {0};
	if (kiln_parse(text, len, "Dockerfile", &df, &err) < 0)
		return;
	struct kiln_env args = {0};
	kiln_env_set(&args, "A", "x");
	struct kiln_plan *plan = NULL;
	if (kiln_plan_build(df, &args, NULL, &plan, &err) == 0) {
		if (!plan || plan->n_stages == 0 || plan->target < 0 || (size_t)plan->target >= plan->n_stages)
			__builtin_trap();
		int *need = NULL;
		size_t n = 0;
		if (kiln_plan_needed_stages(plan, -1, &need, &n, &err) < 0)
			__builtin_trap();
		/* build order: each stage once, after every stage it needs,
		 * the target last */
		if (n == 0 || n > plan->n_stages || need[n - 1] != plan->target)
			__builtin_trap();
		for (size_t i = 0; i < n; i++) {
			const struct kiln_stage *st = &plan->stages[need[i]];
			for (size_t d = 0; d < st->n_deps; d++) {
				size_t j = 0;
				while (j < i && need[j] != st->deps[d])
					j++;
				if (j == i)
					__builtin_trap();
			}
		}
		free(need);
		json_t *j = kiln_plan_to_json(plan);
		if (!j)
			__builtin_trap();
		json_decref(j);
		/* the builder's re-resolution agrees with the plan for every
		 * --from without variables (the plan has no cycle) */
		for (size_t i = 0; i < plan->n_stages; i++) {
			const struct kiln_stage *st = &plan->stages[i];
			for (size_t k = 0; k < st->n_steps; k++) {
				const struct kiln_step *s = &st->steps[k];
				if ((s->kind != KILN_STEP_COPY && s->kind != KILN_STEP_ADD) || !s->copy.from ||
				    strchr(s->copy.from, '$'))
					continue;
				int idx = -2;
				if (kiln_plan_resolve_from(plan, (int)i, s->copy.from, &idx, &err) < 0 ||
				    idx != s->copy.from_stage)
					__builtin_trap();
			}
		}
		kiln_plan_free(plan);
	} else if (!err.msg[0] || plan) {
		__builtin_trap();
	}
	kiln_env_free(&args);
	kiln_df_free(df);
}

/* Invariant: a directory that is excluded and cannot re-include anything
 * has every child excluded. */
static void fuzz_ignore(const char *text)
{
	const char *nl = strchr(text, '\n');
	if (!nl)
		return;
	char *dir = kiln_xstrndup(text, (size_t)(nl - text));
	struct kiln_ignore *ig = NULL;
	struct kiln_err err = {0};
	if (kiln_ignore_parse(nl + 1, strlen(nl + 1), &ig, &err) == 0) {
		if (kiln_ignore_match(ig, dir) && !kiln_ignore_dir_may_include(ig, dir)) {
			static const char *kids[] = {"a", "keep", "x/y", ".z", "a.txt", "keep/me"};
			for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
				char *p = kiln_xasprintf("%s/%s", dir, kids[i]);
				if (!kiln_ignore_match(ig, p))
					__builtin_trap();
				free(p);
			}
		}
		kiln_ignore_free(ig);
	} else if (!err.msg[0]) {
		__builtin_trap();
	}
	free(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 64 * 1024)
		return 0;
	uint8_t mode = data[0];
	char *text = kiln_xstrndup((const char *)data + 1, size - 1);
	if (mode & 4) {
		fuzz_ignore(text);
		free(text);
		return 0;
	}
	if (mode & 2) {
		fuzz_plan((const char *)data + 1, size - 1);
		free(text);
		return 0;
	}
	char esc = (mode & 1) ? '`' : '\\';
	struct kiln_env env = {0};
	kiln_env_set(&env, "PWD", "/home");
	kiln_env_set(&env, "EMPTY", "");
	kiln_env_set(&env, "SP", " a  b ");
	kiln_env_set(&env, "GLOB", "*?\\x/y}");
	kiln_env_set(&env, "K", "\xed\x95\x9c\xea\xb5\xad");

	struct kiln_err e1 = {0}, e2 = {0}, e3 = {0};
	char *word = NULL;
	struct kiln_strv words = {0}, refs = {0};
	int r1 = kiln_expand_word(text, &env, esc, &word, &e1);
	int r2 = kiln_expand_words(text, &env, esc, &words, &e2);
	int r3 = kiln_expand_refs(text, esc, &refs, &e3);
	if (r1 != r2)
		__builtin_trap();
	if (r1 == 0 && r3 != 0)
		__builtin_trap();
	if (r1 < 0 && (!e1.msg[0] || strcmp(e1.msg, e2.msg) != 0))
		__builtin_trap();
	if (r1 == 0) {
		/* no split word is empty or contains an unquoted blank from the text */
		for (size_t i = 0; i < words.n; i++)
			if (!words.v[i][0])
				__builtin_trap();
	}
	free(word);
	kiln_strv_free(&words);
	kiln_strv_free(&refs);
	kiln_env_free(&env);
	free(text);
	return 0;
}
