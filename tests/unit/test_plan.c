/* Unit tests: parser/plan — Dockerfiles through kiln_parse, then the plan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "parser/parser.h"
#include "parser/plan.h"

/* Parse + plan; on failure returns NULL and copies the message to msg. */
static struct kiln_plan *mkplan_args(const char *text, const struct kiln_env *args, const char *target,
				     char *msg, size_t msglen)
{
	struct kiln_df *df = NULL;
	struct kiln_err err = {0};
	if (kiln_parse(text, strlen(text), "Dockerfile", &df, &err) < 0) {
		snprintf(msg, msglen, "PARSE:%s", err.msg);
		return NULL;
	}
	struct kiln_plan *plan = NULL;
	int r = kiln_plan_build(df, args, target, &plan, &err);
	kiln_df_free(df);
	if (r < 0) {
		assert_null(plan);
		snprintf(msg, msglen, "%s", err.msg);
		return NULL;
	}
	return plan;
}

static struct kiln_plan *mkplan(const char *text)
{
	char msg[KILN_ERR_MSG_MAX];
	struct kiln_plan *p = mkplan_args(text, NULL, NULL, msg, sizeof(msg));
	if (!p) {
		print_error("plan failed: %s\n", msg);
		fail();
	}
	return p;
}

/* Expect a failure whose message contains want (and starts with file:line). */
static void expect_error(const char *text, const char *target, const char *want, int line)
{
	char msg[KILN_ERR_MSG_MAX];
	struct kiln_plan *p = mkplan_args(text, NULL, target, msg, sizeof(msg));
	if (p) {
		print_error("expected an error containing [%s] for:\n%s\n", want, text);
		kiln_plan_free(p);
		fail();
	}
	if (!strstr(msg, want)) {
		print_error("error [%s] does not contain [%s]\n", msg, want);
		fail();
	}
	if (line > 0) {
		char pre[64];
		snprintf(pre, sizeof(pre), "Dockerfile:%d: ", line);
		if (strncmp(msg, pre, strlen(pre)) != 0) {
			print_error("error [%s] does not start with [%s]\n", msg, pre);
			fail();
		}
	}
}

static void test_stages_and_bases(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan("ARG BASE=busybox\n"
				     "ARG TAG\n"
				     "FROM ${BASE}:${TAG:-latest} AS Build\n"
				     "RUN echo hi\n"
				     "FROM scratch\n"
				     "COPY --from=build /x /y\n"
				     "FROM build AS final\n"
				     "COPY --from=1 /a /b\n");
	assert_int_equal(p->n_stages, 3);
	assert_int_equal(p->target, 2);
	assert_int_equal(p->n_global_args, 2);
	assert_string_equal(p->global_args[0].key, "BASE");
	assert_string_equal(p->global_args[0].value, "busybox");
	assert_true(p->global_args[0].has_value);
	assert_false(p->global_args[1].has_value);

	const struct kiln_stage *s0 = &p->stages[0];
	assert_string_equal(s0->name, "build"); /* lower-cased */
	assert_string_equal(s0->base_raw, "${BASE}:${TAG:-latest}");
	assert_string_equal(s0->base, "busybox:latest");
	assert_int_equal(s0->base_stage, -1);
	assert_false(s0->scratch);
	assert_int_equal(s0->line, 3);
	assert_int_equal(s0->n_steps, 1);
	assert_int_equal(s0->n_deps, 0);

	const struct kiln_stage *s1 = &p->stages[1];
	assert_null(s1->name);
	assert_true(s1->scratch);
	assert_int_equal(s1->n_deps, 1);
	assert_int_equal(s1->deps[0], 0);
	assert_int_equal(s1->steps[0].copy.from_stage, 0);

	const struct kiln_stage *s2 = &p->stages[2];
	assert_int_equal(s2->base_stage, 0);
	assert_int_equal(s2->n_deps, 2);
	assert_int_equal(s2->deps[0], 0);
	assert_int_equal(s2->deps[1], 1);

	assert_ptr_equal(kiln_plan_find_stage(p, "BUILD"), s0);
	assert_ptr_equal(kiln_plan_find_stage(p, "1"), s1);
	assert_null(kiln_plan_find_stage(p, "nope"));
	assert_null(kiln_plan_find_stage(p, "7"));
	kiln_plan_free(p);
}

static void test_build_args_and_platform(void **state)
{
	(void)state;
	struct kiln_env args = {0};
	kiln_env_set(&args, "TAG", "1.36");
	kiln_env_set(&args, "UNDECLARED", "x");
	char msg[KILN_ERR_MSG_MAX];
	struct kiln_plan *p = mkplan_args("ARG TAG=old\nARG IMG=busybox:${TAG}\n"
					  "FROM --platform=$BUILDPLATFORM ${IMG} AS a\n"
					  "FROM ${UNDECLARED:-alpine}\n",
					  &args, NULL, msg, sizeof(msg));
	if (!p)
		print_error("%s\n", msg);
	assert_non_null(p);
	/* the build arg wins over the default and feeds the next default */
	assert_string_equal(p->global_args[0].value, "1.36");
	assert_string_equal(p->stages[0].base, "busybox:1.36");
	assert_non_null(p->stages[0].platform);
	assert_true(kiln_str_has_prefix(p->stages[0].platform, "linux/"));
	/* a build arg not declared before FROM is not visible to FROM */
	assert_string_equal(p->stages[1].base, "alpine");
	assert_string_equal(kiln_env_get(&p->global_env, "TAG"), "1.36");
	assert_non_null(kiln_env_get(&p->global_env, "TARGETARCH"));
	kiln_plan_free(p);

	/* a global ARG naming a platform arg gets its automatic value */
	p = mkplan("ARG TARGETARCH\nFROM busybox:$TARGETARCH\n");
	assert_true(p->global_args[0].has_value);
	assert_string_equal(p->global_args[0].value, kiln_env_get(&p->global_env, "TARGETARCH"));
	assert_true(kiln_str_has_prefix(p->stages[0].base, "busybox:"));
	assert_true(strlen(p->stages[0].base) > strlen("busybox:"));
	kiln_plan_free(p);
	kiln_env_free(&args);

	struct kiln_env pa = {0};
	kiln_plan_platform_args(&pa, "linux/arm/v7");
	assert_string_equal(kiln_env_get(&pa, "TARGETOS"), "linux");
	assert_string_equal(kiln_env_get(&pa, "TARGETARCH"), "arm");
	assert_string_equal(kiln_env_get(&pa, "TARGETVARIANT"), "v7");
	assert_string_equal(kiln_env_get(&pa, "TARGETPLATFORM"), "linux/arm/v7");
	kiln_env_free(&pa);
}

static void test_target_and_needed(void **state)
{
	(void)state;
	const char *df = "FROM busybox AS base\n"
			 "FROM base AS dev\n"
			 "FROM busybox AS other\n"
			 "RUN --mount=type=bind,from=dev,target=/d true\n"
			 "FROM busybox AS unrelated\n"
			 "FROM other AS final\n";
	char msg[KILN_ERR_MSG_MAX];
	struct kiln_plan *p = mkplan_args(df, NULL, NULL, msg, sizeof(msg));
	assert_non_null(p);
	assert_int_equal(p->target, 4);
	int *need = NULL;
	size_t n = 0;
	struct kiln_err err = {0};
	assert_int_equal(kiln_plan_needed_stages(p, -1, &need, &n, &err), 0);
	/* final ← other ← (mount) dev ← base; "unrelated" is not needed */
	assert_int_equal(n, 4);
	assert_int_equal(need[0], 0);
	assert_int_equal(need[1], 1);
	assert_int_equal(need[2], 2);
	assert_int_equal(need[3], 4);
	free(need);
	assert_int_equal(p->stages[2].steps[0].run.mounts[0].from_stage, 1);
	assert_int_equal(kiln_plan_needed_stages(p, 3, &need, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(need[0], 3);
	free(need);
	assert_int_equal(kiln_plan_needed_stages(p, 9, &need, &n, &err), -1);
	kiln_plan_free(p);

	p = mkplan_args(df, NULL, "Dev", msg, sizeof(msg));
	assert_non_null(p);
	assert_int_equal(p->target, 1);
	assert_int_equal(kiln_plan_needed_stages(p, -1, &need, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(need[1], 1);
	free(need);
	kiln_plan_free(p);

	expect_error(df, "missing", "target stage \"missing\" could not be found", 0);
}

static void test_run(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan(
		"FROM busybox\n"
		"RUN echo \"$HOME\" && ls\n"
		"RUN [\"/bin/sh\", \"-c\", \"echo hi\"]\n"
		"RUN --network=none --security=insecure \\\n"
		"    --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1000,gid=1000 \\\n"
		"    --mount=type=secret,id=tok,required=true \\\n"
		"    --mount=type=tmpfs,target=/tmp,size=64m \\\n"
		"    --mount=type=bind,source=src,target=/src,rw \\\n"
		"    --mount=type=ssh \\\n"
		"    make\n"
		"RUN <<EOF\n"
		"echo one\n"
		"echo two\n"
		"EOF\n"
		"RUN cat <<A >/a\n"
		"x\n"
		"A\n");
	const struct kiln_stage *st = &p->stages[0];
	assert_int_equal(st->n_steps, 5);
	const struct kiln_step *r = &st->steps[0];
	assert_int_equal(r->kind, KILN_STEP_RUN);
	assert_false(r->run.exec);
	assert_int_equal(r->run.args.n, 1);
	assert_string_equal(r->run.args.v[0], "echo \"$HOME\" && ls"); /* unexpanded */
	assert_int_equal(r->line, 2);
	assert_int_equal(r->run.network_set, false);

	r = &st->steps[1];
	assert_true(r->run.exec);
	assert_int_equal(r->run.args.n, 3);
	assert_string_equal(r->run.args.v[2], "echo hi");

	r = &st->steps[2];
	assert_int_equal(r->line, 4);
	assert_true(r->run.network_set);
	assert_int_equal(r->run.network, KILN_PLAN_NET_NONE);
	assert_int_equal(r->run.security, KILN_PLAN_SECURITY_INSECURE);
	assert_int_equal(r->run.n_mounts, 5);
	const struct kiln_plan_mount *m = &r->run.mounts[0];
	assert_int_equal(m->type, KILN_PLAN_MOUNT_CACHE);
	assert_string_equal(m->target, "/root/.cache");
	assert_string_equal(m->id, "pip");
	assert_true(m->sharing_set);
	assert_int_equal(m->sharing, KILN_PLAN_SHARING_LOCKED);
	assert_int_equal(m->mode, 0755);
	assert_int_equal(m->uid, 1000);
	assert_int_equal(m->gid, 1000);
	assert_false(m->readonly);
	m = &r->run.mounts[1];
	assert_int_equal(m->type, KILN_PLAN_MOUNT_SECRET);
	assert_true(m->required);
	assert_true(m->readonly);
	assert_null(m->target);
	m = &r->run.mounts[2];
	assert_int_equal(m->type, KILN_PLAN_MOUNT_TMPFS);
	assert_int_equal(m->size, 64 * 1024 * 1024);
	m = &r->run.mounts[3];
	assert_int_equal(m->type, KILN_PLAN_MOUNT_BIND);
	assert_false(m->readonly);
	assert_string_equal(m->source, "src");
	assert_null(m->from);
	assert_int_equal(m->from_stage, -1);
	m = &r->run.mounts[4];
	assert_int_equal(m->type, KILN_PLAN_MOUNT_SSH);
	assert_true(m->readonly);

	r = &st->steps[3];
	assert_int_equal(r->run.n_heredocs, 1);
	assert_true(r->run.script_heredoc);
	assert_string_equal(r->run.heredocs[0].name, "EOF");
	assert_string_equal(r->run.heredocs[0].content, "echo one\necho two\n");
	assert_true(r->run.heredocs[0].expand);

	r = &st->steps[4];
	assert_int_equal(r->run.n_heredocs, 1);
	assert_false(r->run.script_heredoc);
	kiln_plan_free(p);
}

static void test_copy_add(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan(
		"FROM busybox AS b\n"
		"FROM busybox\n"
		"COPY --from=b --chown=1:2 --chmod=0644 --link a b* /dst/\n"
		"COPY [\"with space\", \"/d\"]\n"
		"COPY --exclude=*.tmp --exclude=cache --parents x /y\n"
		"ADD --checksum=sha256:abc --keep-git-dir https://example.com/x.tar /z\n"
		"COPY <<EOF /etc/conf\n"
		"k=v\n"
		"EOF\n"
		"COPY --from=nginx:latest /etc/nginx /n\n");
	const struct kiln_stage *st = &p->stages[1];
	assert_int_equal(st->n_steps, 6);
	const struct kiln_step *c = &st->steps[0];
	assert_int_equal(c->kind, KILN_STEP_COPY);
	assert_string_equal(c->copy.from, "b");
	assert_int_equal(c->copy.from_stage, 0);
	assert_string_equal(c->copy.chown, "1:2");
	assert_string_equal(c->copy.chmod, "0644");
	assert_true(c->copy.link);
	assert_int_equal(c->copy.sources.n, 2);
	assert_string_equal(c->copy.sources.v[1], "b*");
	assert_string_equal(c->copy.dest, "/dst/");

	c = &st->steps[1];
	assert_true(c->copy.exec);
	assert_string_equal(c->copy.sources.v[0], "with space");
	assert_null(c->copy.from);

	c = &st->steps[2];
	assert_int_equal(c->copy.excludes.n, 2);
	assert_string_equal(c->copy.excludes.v[0], "*.tmp");
	assert_string_equal(c->copy.excludes.v[1], "cache");
	assert_true(c->copy.parents);

	c = &st->steps[3];
	assert_int_equal(c->kind, KILN_STEP_ADD);
	assert_string_equal(c->copy.checksum, "sha256:abc");
	assert_true(c->copy.keep_git_dir);
	assert_string_equal(c->copy.sources.v[0], "https://example.com/x.tar");

	c = &st->steps[4];
	assert_int_equal(c->copy.sources.n, 0);
	assert_int_equal(c->copy.n_heredocs, 1);
	assert_string_equal(c->copy.heredocs[0].name, "EOF");
	assert_string_equal(c->copy.heredocs[0].content, "k=v\n");
	assert_string_equal(c->copy.dest, "/etc/conf");

	c = &st->steps[5];
	assert_string_equal(c->copy.from, "nginx:latest");
	assert_int_equal(c->copy.from_stage, -1); /* an image */
	assert_int_equal(st->n_deps, 1);          /* only stage b */
	kiln_plan_free(p);

	/* --from with a global ARG resolves to the stage it names */
	p = mkplan("ARG SRC=b\nFROM busybox AS b\nFROM busybox\nCOPY --from=${SRC} /a /b\n");
	assert_string_equal(p->stages[1].steps[0].copy.from, "${SRC}");
	assert_int_equal(p->stages[1].steps[0].copy.from_stage, 0);
	assert_int_equal(p->stages[1].n_deps, 1);
	kiln_plan_free(p);
}

static void test_metadata_steps(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan(
		"FROM busybox\n"
		"ENV A=1 B=\"two words\"\n"
		"ENV OLD rest of line\n"
		"LABEL org.x=y\n"
		"ARG V=1 W\n"
		"EXPOSE 8080/tcp 80 ${PORT}\n"
		"VOLUME [\"/data\", \"/logs\"]\n"
		"VOLUME /a /b\n"
		"USER 1000:1000\n"
		"WORKDIR /app\n"
		"ENTRYPOINT [\"/bin/app\"]\n"
		"CMD serve --port 80\n"
		"SHELL [\"/bin/sh\", \"-ec\"]\n"
		"HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=100ms --retries=3 CMD wget -q localhost\n"
		"HEALTHCHECK NONE\n"
		"HEALTHCHECK CMD [\"true\"]\n"
		"STOPSIGNAL SIGTERM\n"
		"MAINTAINER someone\n"
		"ONBUILD RUN echo triggered\n"
		"ONBUILD NOTYET x\n");
	const struct kiln_stage *st = &p->stages[0];
	assert_int_equal(st->n_steps, 19);
	const struct kiln_step *s = st->steps;
	assert_int_equal(s[0].kind, KILN_STEP_ENV);
	assert_int_equal(s[0].n_kvs, 2);
	assert_string_equal(s[0].kvs[0].key, "A");
	assert_string_equal(s[0].kvs[0].value, "1");
	assert_string_equal(s[0].kvs[1].value, "\"two words\""); /* quotes kept: expanded later */
	assert_string_equal(s[1].kvs[0].key, "OLD");
	assert_string_equal(s[1].kvs[0].value, "rest of line");
	assert_int_equal(s[2].kind, KILN_STEP_LABEL);
	assert_string_equal(s[2].kvs[0].key, "org.x");
	assert_int_equal(s[3].kind, KILN_STEP_ARG);
	assert_int_equal(s[3].n_kvs, 2);
	assert_true(s[3].kvs[0].has_value);
	assert_false(s[3].kvs[1].has_value);
	assert_null(s[3].kvs[1].value);
	assert_int_equal(s[4].kind, KILN_STEP_EXPOSE);
	assert_int_equal(s[4].words.n, 3);
	assert_string_equal(s[4].words.v[0], "${PORT}"); /* sorted, as Docker */
	assert_string_equal(s[4].words.v[1], "80");
	assert_string_equal(s[4].words.v[2], "8080/tcp");
	assert_int_equal(s[5].words.n, 2);
	assert_string_equal(s[5].words.v[1], "/logs");
	assert_int_equal(s[6].words.n, 2);
	assert_string_equal(s[7].value, "1000:1000");
	assert_string_equal(s[8].value, "/app");
	assert_int_equal(s[9].kind, KILN_STEP_ENTRYPOINT);
	assert_true(s[9].exec);
	assert_string_equal(s[9].words.v[0], "/bin/app");
	assert_int_equal(s[10].kind, KILN_STEP_CMD);
	assert_false(s[10].exec);
	assert_string_equal(s[10].words.v[0], "serve --port 80");
	assert_int_equal(s[11].kind, KILN_STEP_SHELL);
	assert_int_equal(s[11].words.n, 2);
	const struct kiln_step_healthcheck *h = &s[12].health;
	assert_false(h->none);
	assert_false(h->exec);
	assert_int_equal(h->interval_ns, 30000000000LL);
	assert_int_equal(h->timeout_ns, 90000000000LL);
	assert_int_equal(h->start_period_ns, 5000000000LL);
	assert_int_equal(h->start_interval_ns, 100000000LL);
	assert_int_equal(h->retries, 3);
	assert_string_equal(h->cmd.v[0], "wget -q localhost");
	assert_true(s[13].health.none);
	assert_true(s[14].health.exec);
	assert_string_equal(s[14].health.cmd.v[0], "true");
	assert_string_equal(s[15].value, "SIGTERM");
	assert_int_equal(s[16].kind, KILN_STEP_MAINTAINER);
	assert_string_equal(s[16].value, "someone");
	assert_int_equal(s[17].kind, KILN_STEP_ONBUILD);
	assert_string_equal(s[17].value, "RUN echo triggered");
	assert_int_equal(s[17].line, 19);
	assert_string_equal(s[18].value, "NOTYET x"); /* checked when it fires */
	kiln_plan_free(p);
}

static void test_json(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan("ARG X=1\nFROM busybox AS a\nRUN --mount=type=cache,target=/c true\n"
				     "FROM scratch\nCOPY --from=a /x /y\nHEALTHCHECK CMD true\n");
	json_t *j = kiln_plan_to_json(p);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "target")), 1);
	json_t *stages = json_object_get(j, "stages");
	assert_int_equal(json_array_size(stages), 2);
	json_t *s0 = json_array_get(stages, 0);
	assert_string_equal(json_string_value(json_object_get(s0, "name")), "a");
	json_t *run = json_array_get(json_object_get(s0, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(run, "instruction")), "RUN");
	json_t *mnt = json_array_get(json_object_get(run, "mounts"), 0);
	assert_string_equal(json_string_value(json_object_get(mnt, "type")), "cache");
	json_t *s1 = json_array_get(stages, 1);
	assert_true(json_is_true(json_object_get(s1, "scratch")));
	assert_int_equal(json_integer_value(json_array_get(json_object_get(s1, "deps"), 0)), 0);
	json_t *hc = json_array_get(json_object_get(s1, "steps"), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "test"), 0)), "CMD-SHELL");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "global_args"), 0), "value")),
			    "1");
	char *dump = json_dumps(j, JSON_COMPACT);
	assert_non_null(dump);
	free(dump);
	json_decref(j);
	kiln_plan_free(p);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("FROM busybox\nFOO bar\n", NULL, "unknown instruction: FOO", 2);
	expect_error("RUN echo\nFROM busybox\n", NULL, "no build stage in current context", 1);
	expect_error("ARG A\nENV B=1\nFROM busybox\n", NULL, "no build stage in current context", 2);
	expect_error("FROM busybox AS 1abc\n", NULL, "invalid name for build stage", 1);
	expect_error("FROM busybox AS a$b\n", NULL, "invalid name for build stage", 1);
	expect_error("FROM busybox AS a\nFROM busybox AS A\n", NULL, "duplicate stage name \"a\"", 2);
	expect_error("FROM busybox AS a b\n", NULL, "FROM requires either one or three arguments", 1);
	expect_error("FROM busybox\nCOPY --from=0 /a /b\n", NULL, "circular dependency detected on stage: stage-0", 2);
	expect_error("FROM busybox AS a\nCOPY --from=A /a /b\n", NULL, "circular dependency detected on stage: a", 2);
	expect_error("FROM busybox\nCOPY --from=5 /a /b\n", NULL, "index out of bounds", 2);
	expect_error("FROM busybox AS a\nRUN --mount=from=a,target=/x true\n", NULL, "circular dependency", 2);
	expect_error("FROM busybox\nCOPY --bogus /a /b\n", NULL, "unknown flag", 2);
	expect_error("FROM busybox\nENV --x=1 A=1\n", NULL, "unknown flag", 2);
	expect_error("FROM busybox\nRUN --network=bridge true\n", NULL, "unsupported network mode", 2);
	expect_error("FROM busybox\nRUN --security=open true\n", NULL, "unsupported security mode", 2);
	expect_error("FROM busybox\nRUN --mount=type=nfs,target=/x true\n", NULL, "unsupported mount type", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,color=red true\n", NULL,
		     "unexpected key 'color'", 2);
	expect_error("FROM busybox\nRUN --mount=type=bind,target=/x,mode=0755 true\n", NULL,
		     "mode not allowed for \"bind\" type mounts", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,sharing=sometimes true\n", NULL,
		     "unsupported sharing value", 2);
	expect_error("FROM busybox\nRUN --mount=type=bind,target=/x,sharing=locked true\n", NULL,
		     "invalid cache sharing set for bind mount", 2);
	expect_error("FROM busybox\nRUN --mount=type=secret true\n", NULL, "one of source, target required", 2);
	expect_error("FROM busybox\nRUN --mount=type=secret,id=a,source=b true\n", NULL, "both source and id", 2);
	expect_error("FROM busybox\nRUN --mount=type=secret,id=a,from=x true\n", NULL, "should not have a from", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,id=../../etc true\n", NULL,
		     "must not contain \"..\"", 2);
	expect_error("FROM busybox\nRUN --mount=type=secret,src=../x,target=/t true\n", NULL,
		     "must not contain \"..\"", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,uid=-1 true\n", NULL, "invalid value -1 for uid", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,mode=999 true\n", NULL, "invalid value 999 for mode", 2);
	expect_error("FROM busybox\nRUN --mount=type=tmpfs,target=/x,size=lots true\n", NULL, "invalid value for size", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,size=1m true\n", NULL,
		     "unexpected key 'size' for mount type 'cache'", 2);
	expect_error("FROM busybox\nRUN --mount=target=/x,required true\n", NULL, "unexpected key 'required'", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,target=/x,foo true\n", NULL, "must be a key=value pair", 2);
	expect_error("FROM busybox\nRUN --mount=type=cache,ro=maybe,target=/x true\n", NULL, "invalid value for ro", 2);
	expect_error("FROM busybox\nRUN --mount=from=$X,target=/x true\n", NULL, "doesn't support variable expansion", 2);
	expect_error("FROM busybox\nHEALTHCHECK --interval=1us CMD true\n", NULL, "cannot be less than", 2);
	expect_error("FROM busybox\nHEALTHCHECK --retries=-1 CMD true\n", NULL, "cannot be negative", 2);
	expect_error("FROM busybox\nHEALTHCHECK BOGUS true\n", NULL, "HEALTHCHECK", 2);
	expect_error("FROM busybox\nHEALTHCHECK NONE extra\n", NULL, "HEALTHCHECK NONE takes no arguments", 2);
	expect_error("FROM busybox\nONBUILD ONBUILD RUN x\n", NULL, "Chaining ONBUILD", 2);
	expect_error("FROM busybox\nONBUILD FROM x\n", NULL, "isn't allowed as an ONBUILD trigger", 2);
	expect_error("FROM busybox\nSHELL /bin/sh -c\n", NULL, "JSON", 2);
	expect_error("FROM busybox\nCOPY onlyone\n", NULL, "requires at least two arguments", 2);
	expect_error("FROM busybox\nCOPY a <<EOF\nx\nEOF\n", NULL, "heredoc as a destination", 2);
	expect_error("ARG X\nFROM ${X}\n", NULL, "should not be blank", 2);
	expect_error("FROM ${X:?nobase}\n", NULL, "X: nobase", 1);
	expect_error("ARG A\n", NULL, "no stages", 0);
}

/* BuildKit's stage graph: COPY --from / RUN --mount from= may name a later
 * stage; only a loop (a stage needing itself, directly or through others)
 * and a stage index past the end are errors. */
static void test_forward_refs_and_cycles(void **state)
{
	(void)state;
	char msg[KILN_ERR_MSG_MAX];
	struct kiln_err err = {0};
	/* stage 0 (the target) takes files from the later "tools", which is
	 * built on "base" (stage 2, later too) */
	struct kiln_plan *p = mkplan_args("FROM alpine AS out\n"
					  "COPY --from=tools /bin/t /t\n"
					  "RUN --mount=from=2,target=/b true\n"
					  "FROM base AS tools\n"
					  "FROM busybox AS base\n"
					  "FROM busybox AS spare\n",
					  NULL, "out", msg, sizeof(msg));
	assert_non_null(p);
	assert_int_equal(p->stages[0].steps[0].copy.from_stage, 1);
	assert_int_equal(p->stages[0].steps[1].run.mounts[0].from_stage, 2);
	/* FROM names only earlier stages: "base" here is an image */
	assert_int_equal(p->stages[1].base_stage, -1);
	int *need = NULL;
	size_t n = 0;
	assert_int_equal(kiln_plan_needed_stages(p, -1, &need, &n, &err), 0);
	/* every stage after what it needs, the target last, "spare" not needed */
	assert_int_equal(n, 3);
	assert_int_equal(need[0], 1);
	assert_int_equal(need[1], 2);
	assert_int_equal(need[2], 0);
	free(need);

	/* the builder's second look at a --from it expanded itself */
	int idx = -7;
	assert_int_equal(kiln_plan_resolve_from(p, 1, "BASE", &idx, &err), 0);
	assert_int_equal(idx, 2);
	assert_int_equal(kiln_plan_resolve_from(p, 1, "docker.io/library/alpine", &idx, &err), 0);
	assert_int_equal(idx, -1);
	/* tools -> out would close out -> tools -> out */
	assert_int_equal(kiln_plan_resolve_from(p, 1, "out", &idx, &err), -1);
	assert_non_null(strstr(err.msg, "circular dependency detected on stage: out"));
	assert_non_null(strstr(err.msg, "Dockerfile:4: "));
	assert_int_equal(kiln_plan_resolve_from(p, 3, "3", &idx, &err), -1);
	assert_int_equal(kiln_plan_resolve_from(p, 3, "9", &idx, &err), -1);
	assert_non_null(strstr(err.msg, "index out of bounds"));
	/* spare -> tools is fine: tools does not need spare */
	assert_int_equal(kiln_plan_resolve_from(p, 3, "tools", &idx, &err), 0);
	assert_int_equal(idx, 1);
	kiln_plan_free(p);

	/* loops of two and three stages, through COPY and RUN --mount */
	expect_error("FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\nCOPY --from=a /x /y\n", NULL,
		     "circular dependency detected on stage: a (stage b needs a", 4);
	expect_error("FROM busybox AS a\nRUN --mount=from=c,target=/m true\n"
		     "FROM busybox AS b\nCOPY --from=a /x /y\n"
		     "FROM busybox AS c\nCOPY --from=1 /x /y\n",
		     NULL, "circular dependency detected on stage: a (stage b needs a, which already needs b", 4);
	/* a stage based on an earlier one that copies from a later one: no loop */
	p = mkplan_args("FROM busybox AS a\nCOPY --from=c /x /y\nFROM a AS b\nFROM busybox AS c\n", NULL, NULL, msg,
			sizeof(msg));
	assert_non_null(p);
	assert_int_equal(kiln_plan_needed_stages(p, 1, &need, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(need[0], 2);
	assert_int_equal(need[1], 0);
	assert_int_equal(need[2], 1);
	free(need);
	kiln_plan_free(p);
}

/* Heredoc words are recognised by one rule for the parser and the plan:
 * a file-descriptor prefix and a blank after the operator are allowed. */
static void test_heredoc_words(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan("FROM busybox\n"
				     "COPY 3<<A <<B <<-'C' /dst/\n"
				     "a\n"
				     "A\n"
				     "b $X\n"
				     "B\n"
				     "\tc\n"
				     "C\n"
				     "RUN 3<<EOF\n"
				     "echo fd\n"
				     "EOF\n"
				     "RUN << EOF\n"
				     "echo spaced\n"
				     "EOF\n"
				     "RUN <<EOF cat\n"
				     "x\n"
				     "EOF\n");
	assert_non_null(p);
	const struct kiln_step *c = &p->stages[0].steps[0];
	assert_int_equal(c->copy.sources.n, 0);
	assert_int_equal(c->copy.n_heredocs, 3);
	assert_string_equal(c->copy.heredocs[0].name, "A");
	assert_string_equal(c->copy.heredocs[0].content, "a\n");
	assert_int_equal(c->copy.heredocs[0].fd, 3);
	assert_string_equal(c->copy.heredocs[1].name, "B");
	assert_string_equal(c->copy.heredocs[1].content, "b $X\n");
	assert_true(c->copy.heredocs[1].expand);
	assert_string_equal(c->copy.heredocs[2].name, "C");
	assert_string_equal(c->copy.heredocs[2].content, "c\n");
	assert_false(c->copy.heredocs[2].expand);
	assert_true(p->stages[0].steps[1].run.script_heredoc);
	assert_string_equal(p->stages[0].steps[1].run.heredocs[0].content, "echo fd\n");
	assert_true(p->stages[0].steps[2].run.script_heredoc);
	assert_string_equal(p->stages[0].steps[2].run.heredocs[0].content, "echo spaced\n");
	assert_false(p->stages[0].steps[3].run.script_heredoc);
	kiln_plan_free(p);
	/* COPY arguments are cut on blanks, so "<< B" there is two source
	 * paths (as in BuildKit), though the body is still consumed */
	p = mkplan("FROM busybox\nCOPY << B /dst/\nb\nB\n");
	assert_non_null(p);
	assert_int_equal(p->stages[0].steps[0].copy.sources.n, 2);
	assert_int_equal(p->stages[0].steps[0].copy.n_heredocs, 0);
	kiln_plan_free(p);
	/* a heredoc destination is refused in either form */
	expect_error("FROM busybox\nCOPY a 2<<EOF\nx\nEOF\n", NULL, "heredoc as a destination", 2);
	expect_error("FROM busybox\nCOPY [\"a\", \"<<EOF\"]\n", NULL, "heredoc as a destination", 2);
}

static void test_step_refs(void **state)
{
	(void)state;
	struct kiln_plan *p = mkplan("FROM busybox\n"
				     "COPY --chown=$U:${G} src/$A* /dst/${B:-x}\n"
				     "ENV K=$V\n"
				     "ARG X=${Y}\n"
				     "WORKDIR /w/$W\n"
				     "EXPOSE $PORT\n"
				     "RUN --mount=type=cache,target=/c,id=$CID echo $NOT_A_WORD\n"
				     "CMD echo $NOT_EXPANDED\n"
				     "COPY <<EOF /f\n"
				     "'$H'\n"
				     "EOF\n");
	const struct kiln_stage *st = &p->stages[0];
	struct kiln_err err = {0};
	const char *want[][5] = {
		{"U", "G", "A", "B", NULL}, {"V", NULL}, {"Y", NULL}, {"W", NULL}, {"PORT", NULL},
		{"CID", NULL}, {NULL}, {"H", NULL},
	};
	assert_int_equal(st->n_steps, 8);
	for (size_t i = 0; i < st->n_steps; i++) {
		struct kiln_strv names = {0};
		assert_int_equal(kiln_plan_step_refs(&st->steps[i], p->escape, &names, &err), 0);
		/* order: as looked up; compare as sets */
		size_t nw = 0;
		while (want[i][nw])
			nw++;
		if (names.n != nw)
			print_error("step %zu: %zu refs, want %zu\n", i, names.n, nw);
		assert_int_equal(names.n, nw);
		for (size_t k = 0; k < nw; k++) {
			bool found = false;
			for (size_t j = 0; j < names.n; j++)
				found |= !strcmp(names.v[j], want[i][k]);
			assert_true(found);
		}
		kiln_strv_free(&names);
	}
	kiln_plan_free(p);
}

static void test_mount_parse_api(void **state)
{
	(void)state;
	struct kiln_plan_mount m;
	struct kiln_err err = {0};
	/* quoted csv fields, key aliases and case */
	assert_int_equal(kiln_plan_parse_mount("TYPE=bind,\"src=a,b\",dst=/t,readonly=false", &m, &err), 0);
	assert_string_equal(m.source, "a,b");
	assert_string_equal(m.target, "/t");
	assert_false(m.readonly);
	assert_string_equal(m.raw, "TYPE=bind,\"src=a,b\",dst=/t,readonly=false");
	kiln_plan_mount_free(&m);
	/* variables are not validated before expansion */
	assert_int_equal(kiln_plan_parse_mount("type=cache,target=$T,uid=$U", &m, &err), 0);
	assert_string_equal(m.target, "$T");
	kiln_plan_mount_free(&m);
	assert_int_equal(kiln_plan_parse_mount("", &m, &err), -1);
	/* no target: the working directory (the builder decides) */
	assert_int_equal(kiln_plan_parse_mount("type=cache", &m, &err), 0);
	assert_null(m.target);
	kiln_plan_mount_free(&m);
	/* with the stage environment */
	struct kiln_env env = {0};
	kiln_env_set(&env, "T", "/cache");
	kiln_env_set(&env, "U", "1000");
	assert_int_equal(kiln_plan_expand_mount("type=cache,target=$T,uid=$U,id=c-${T#/}", &env, '\\', &m, &err), 0);
	assert_string_equal(m.target, "/cache");
	assert_int_equal(m.uid, 1000);
	assert_string_equal(m.id, "c-cache");
	kiln_plan_mount_free(&m);
	kiln_env_set(&env, "U", "nobody");
	assert_int_equal(kiln_plan_expand_mount("type=cache,target=$T,uid=$U", &env, '\\', &m, &err), -1);
	assert_non_null(strstr(err.msg, "invalid value nobody for uid"));
	kiln_env_set(&env, "ID", "../../x");
	assert_int_equal(kiln_plan_expand_mount("type=cache,target=/c,id=$ID", &env, '\\', &m, &err), -1);
	kiln_env_free(&env);
	assert_int_equal(kiln_plan_parse_mount("\"type=cache,target=/x", &m, &err), -1);
	assert_non_null(strstr(err.msg, "csv"));
	assert_int_equal(kiln_plan_parse_mount("type=cache,tar\"get=/x", &m, &err), -1);
	assert_non_null(strstr(err.msg, "bare \""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stages_and_bases),
		cmocka_unit_test(test_build_args_and_platform),
		cmocka_unit_test(test_target_and_needed),
		cmocka_unit_test(test_run),
		cmocka_unit_test(test_copy_add),
		cmocka_unit_test(test_metadata_steps),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_forward_refs_and_cycles),
		cmocka_unit_test(test_heredoc_words),
		cmocka_unit_test(test_step_refs),
		cmocka_unit_test(test_mount_parse_api),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
