#!/bin/bash
# kiln build: multi-stage builds (COPY --from by name and index, FROM a
# previous stage, --target, only the stages the target needs, forward
# references to later stages), global ARGs in FROM, plan errors (cycles,
# unknown instructions) before anything runs or is pulled, and failures: nothing tagged, the Dockerfile line and exit code named,
# no writable snapshot or container left behind.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
ctx=$work/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<'DF'
ARG BASE=busybox
FROM ${BASE} AS builder
RUN mkdir -p /out && echo built > /out/artifact && chmod 751 /out/artifact && chown 12:34 /out/artifact

FROM builder AS tester
RUN echo tested > /out/tested

FROM busybox AS unused
RUN exit 42

FROM scratch AS final
COPY --from=builder /out/ /app/
COPY --from=0 /bin/busybox /bin/busybox
CMD ["/bin/busybox", "cat", "/app/artifact"]
DF

"$KILN" build --progress plain -t stages "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "multi-stage build"; }
grep -q "\[unused" "$work/log" && fail "the unused stage was built"
grep -q "\[tester" "$work/log" && fail "the tester stage is not needed by the target"
[ "$("$KILN" run --rm --network none stages)" = built ] || fail "COPY --from=builder"
[ "$("$KILN" run --rm --network none stages /bin/busybox stat -c '%a %u %g' /app/artifact)" = "751 12 34" ] \
	|| fail "COPY --from keeps mode and owner: $("$KILN" run --rm --network none stages /bin/busybox stat -c '%a %u %g' /app/artifact)"
[ "$("$KILN" inspect stages | jq '.[0].RootFS.Layers | length')" = 2 ] || fail "scratch + 2 COPY = 2 layers"

"$KILN" build -q --target tester -t stages-tester "$ctx" >/dev/null || fail "--target tester"
[ "$("$KILN" run --rm --network none stages-tester cat /out/tested /out/artifact | tr '\n' ' ')" = "tested built " ] \
	|| fail "--target tester content"
"$KILN" build -q --target nosuch -t x "$ctx" 2>"$work/err" >/dev/null && fail "unknown --target accepted"
grep -q nosuch "$work/err" || fail "unknown target not named"

# failures: exit code and line named, nothing tagged, nothing left
set +e
"$KILN" build --target unused -t must-not-exist "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "failed RUN: exit $rc, want 1"
grep -q "Dockerfile:9" "$work/log" || { cat "$work/log"; fail "the failing line is not named"; }
grep -q "exit code: 42" "$work/log" || fail "the exit code is not named"
grep -q "RUN exit 42" "$work/log" || fail "the instruction is not named"
"$KILN" inspect must-not-exist >/dev/null 2>&1 && fail "a failed build tagged an image"
for d in "$KILN_ROOT"/snapshots/*/active; do
	[ -d "$d" ] || continue
	[ -z "$(ls -A "$d")" ] || fail "writable snapshots left behind: $(ls "$d")"
done
if grep -q " $KILN_ROOT/" /proc/self/mountinfo; then fail "mounts left behind"; fi

# forward references (BuildKit allows them): COPY --from and RUN --mount
# from= a later stage build that stage first instead of pulling an image
cat > "$ctx/Dockerfile" <<'DF'
FROM busybox AS final
COPY --from=later /out/x /x
RUN --mount=from=Later2,target=/m cat /m/out/y > /y
FROM busybox AS later
RUN mkdir -p /out && echo forward > /out/x
FROM busybox AS later2
RUN mkdir -p /out && echo mounted > /out/y
FROM busybox AS unused2
RUN exit 43
DF
"$KILN" build --progress plain --target final -t fwd "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "forward --from reference"; }
grep -q "\[unused2" "$work/log" && fail "a stage the target does not need was built"
grep -qi "pull" "$work/log" && { cat "$work/log"; fail "a forward stage reference was pulled as an image"; }
[ "$("$KILN" run --rm --network none fwd cat /x /y | tr '\n' ' ')" = "forward mounted " ] \
	|| fail "forward COPY --from / RUN --mount from= content"

# a cycle fails with file:line before any step runs
printf 'FROM busybox AS a\nRUN touch /ran\nFROM busybox AS b\nCOPY --from=c /x /x\nFROM busybox AS c\nCOPY --from=b /y /y\n' > "$ctx/Dockerfile"
set +e
"$KILN" build --progress plain --target a -t cyc "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || { cat "$work/log"; fail "a --from cycle (in a stage the target does not need): exit $rc"; }
grep -q "Dockerfile:[46]:.*circular" "$work/log" || { cat "$work/log"; fail "the cycle is not named with file:line"; }
grep -q "RUN touch" "$work/log" && fail "a step ran before the cycle was reported"
printf 'FROM busybox AS self\nRUN touch /ran\nCOPY --from=self /bin/sh /sh2\n' > "$ctx/Dockerfile"
set +e
"$KILN" build --progress plain -t cyc "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "COPY --from=<own stage>: exit $rc"
grep -q "Dockerfile:3:.*circular" "$work/log" || { cat "$work/log"; fail "the self reference is not named with file:line"; }
grep -q "RUN touch" "$work/log" && fail "a step ran before the self reference was reported"
"$KILN" inspect cyc >/dev/null 2>&1 && fail "a cyclic Dockerfile tagged an image"

# an unknown instruction fails before the FROM image is pulled (the registry
# at 127.0.0.1:1 would refuse the connection)
printf 'FROM 127.0.0.1:1/nothing:1\nRUN true\nFROBNICATE now\n' > "$ctx/Dockerfile"
set +e
"$KILN" build --progress plain --pull -t unk "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || { cat "$work/log"; fail "unknown instruction: exit $rc"; }
grep -q "Dockerfile:3:.*FROBNICATE" "$work/log" || { cat "$work/log"; fail "the unknown instruction is not named with file:line"; }
grep -q "127.0.0.1:1" "$work/log" && { cat "$work/log"; fail "the base image was looked up before the Dockerfile was validated"; }
# and the same error as kiln parse --check
"$KILN" parse --check "$ctx/Dockerfile" >/dev/null 2>"$work/err" && fail "parse --check accepted FROBNICATE"
[ "$(grep -o 'Dockerfile:3:.*' "$work/err")" = "$(grep -o 'Dockerfile:3:.*' "$work/log")" ] \
	|| fail "kiln build and kiln parse --check disagree: $(cat "$work/err") / $(cat "$work/log")"

# a bad mount spec (a plan error) too
printf 'FROM 127.0.0.1:1/nothing:1\nRUN true\nRUN --mount=type=cache,target=/c,sharing=bogus true\n' > "$ctx/Dockerfile"
set +e
"$KILN" build --progress plain --pull -t unk "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || { cat "$work/log"; fail "bad mount spec: exit $rc"; }
grep -q "Dockerfile:3:.*sharing" "$work/log" || { cat "$work/log"; fail "the bad mount spec is not named with file:line"; }
grep -q "127.0.0.1:1" "$work/log" && { cat "$work/log"; fail "the base image was looked up before the mount spec was validated"; }

# a RUN killed by the memory limit says so
printf 'FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=200M count=1\n' > "$ctx/Dockerfile"
set +e
"$KILN" build -m 32m -t oom "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "OOM-killed RUN: exit $rc"
grep -q "killed: out of memory" "$work/log" || { cat "$work/log"; fail "OOM kill not named"; }

printf 'FROM no-such-image:1\n' > "$ctx/Dockerfile"
set +e
"$KILN" build -t x "$ctx" > "$work/log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "missing base: exit $rc"
grep -qi "not found" "$work/log" || { cat "$work/log"; fail "missing base: no clear message"; }

printf 'RUN true\n' > "$ctx/Dockerfile"
"$KILN" build -t x "$ctx" >/dev/null 2>&1 && fail "a Dockerfile without FROM was accepted"
"$KILN" build --platform linux/arm64 -t x "$ctx" >/dev/null 2>"$work/err" && fail "--platform linux/arm64 accepted"
grep -q "linux/amd64" "$work/err" || fail "--platform refusal does not say what is supported"
set +e
"$KILN" build --bogus "$ctx" >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "unknown flag: exit $rc, not a usage error (2)"

# an interrupted build (^C, or the SIGTERM a CI runner sends when it cancels a
# job, while RUN sleeps) stops at once, says so, exits 128+signal, tags nothing
# and cleans up
for sig in INT TERM; do
	nap=$((3000 + RANDOM % 1000))
	printf 'FROM busybox\nRUN sleep %s\n' "$nap" > "$ctx/Dockerfile"
	"$KILN" build --progress plain -t interrupted "$ctx" > "$work/log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do grep -q "RUN sleep" "$work/log" && break; sleep 0.1; done
	sleep 0.5
	kill -"$sig" "$pid"
	set +e
	wait "$pid"
	rc=$?
	set -e
	want=130; [ "$sig" = TERM ] && want=143
	[ "$rc" = "$want" ] || { cat "$work/log"; fail "SIG$sig: exit $rc, want $want"; }
	grep -q "kiln: build interrupted by SIG$sig" "$work/log" || { cat "$work/log"; fail "SIG$sig: no 'build interrupted' message"; }
	"$KILN" inspect interrupted >/dev/null 2>&1 && fail "a build interrupted by SIG$sig tagged an image"
	for d in "$KILN_ROOT"/snapshots/*/active; do
		[ -d "$d" ] || continue
		[ -z "$(ls -A "$d")" ] || fail "writable snapshots left after SIG$sig: $(ls "$d")"
	done
	for _ in $(seq 20); do pgrep -fx "sleep $nap" >/dev/null || break; sleep 0.1; done
	if pgrep -fx "sleep $nap" >/dev/null; then fail "the RUN process survived SIG$sig"; fi
done
"$KILN" fsck >/dev/null || fail "fsck after the interrupted builds"
echo "build stages ok"
