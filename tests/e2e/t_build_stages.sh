#!/bin/bash
# kiln build: multi-stage builds (COPY --from by name and index, FROM a
# previous stage, --target, only the stages the target needs), global ARGs in
# FROM, and failures: nothing tagged, the Dockerfile line and exit code named,
# no writable snapshot or container left behind.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
# vfs: kiln run on overlay cannot mount more than a few lower layers yet
export KILN_STORAGE_DRIVER=${KILN_STORAGE_DRIVER:-vfs}
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

# an interrupted build (SIGINT while RUN sleeps) tags nothing and cleans up
nap=$((3000 + RANDOM % 1000))
printf 'FROM busybox\nRUN sleep %s\n' "$nap" > "$ctx/Dockerfile"
"$KILN" build -t interrupted "$ctx" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "RUN sleep" "$work/log" && break; sleep 0.1; done
sleep 0.5
kill -INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" != 0 ] || fail "interrupted build succeeded"
"$KILN" inspect interrupted >/dev/null 2>&1 && fail "an interrupted build tagged an image"
for d in "$KILN_ROOT"/snapshots/*/active; do
	[ -d "$d" ] || continue
	[ -z "$(ls -A "$d")" ] || fail "writable snapshots left after SIGINT: $(ls "$d")"
done
for _ in $(seq 20); do pgrep -fx "sleep $nap" >/dev/null || break; sleep 0.1; done
if pgrep -fx "sleep $nap" >/dev/null; then fail "the RUN process survived the interrupt"; fi
echo "build stages ok"
