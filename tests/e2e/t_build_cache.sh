#!/bin/bash
# kiln build cache: a no-change rebuild hits every step and gives the same
# image id; a context change re-runs only the steps that depend on it; a
# .dockerignore'd change hits; --no-cache re-runs everything; equal layers
# with different configs never share a record; builder prune empties it.
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
echo one > "$ctx/a.txt"
echo two > "$ctx/b.txt"
echo ignored > "$ctx/ignored.txt"
printf 'ignored.txt\n' > "$ctx/.dockerignore"
cat > "$ctx/Dockerfile" <<'DF'
FROM busybox
RUN echo base > /base
COPY a.txt /a.txt
RUN cat /a.txt > /from-a
COPY b.txt /b.txt
CMD ["cat", "/a.txt"]
DF

build() { "$KILN" build --progress plain "$@" -t cache-test "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "build $*"; }; }
cached() { grep -c '^#[0-9]* CACHED' "$work/log" || true; }
ran() { grep -c '^#[0-9]* DONE' "$work/log" || true; }
step_cached() { # the step whose text is $1 was CACHED
	local n
	n=$(grep -F "] $1" "$work/log" | head -1 | sed 's/^#\([0-9]*\) .*/\1/')
	[ -n "$n" ] && grep -q "^#$n CACHED" "$work/log"
}

build
id1=$("$KILN" inspect cache-test | jq -r '.[0].Id')
[ "$(cached)" = 0 ] || fail "first build had cache hits"

build
id2=$("$KILN" inspect cache-test | jq -r '.[0].Id')
[ "$(cached)" = 5 ] || { cat "$work/log"; fail "no-change rebuild: $(cached) of 5 steps cached"; }
[ "$id1" = "$id2" ] || fail "no-change rebuild changed the image id ($id1 → $id2)"

# an ignored file changes: still every step cached
echo changed > "$ctx/ignored.txt"
build
[ "$(cached)" = 5 ] || fail ".dockerignore'd change invalidated the cache"

# mtime only: content digests, not times, decide
touch -d '2001-01-01' "$ctx/a.txt"
build
[ "$(cached)" = 5 ] || fail "an mtime change invalidated the cache"

# b.txt changes: only COPY b.txt and what follows re-run
echo TWO > "$ctx/b.txt"
build
step_cached "RUN echo base" || fail "RUN echo base re-ran"
step_cached "COPY a.txt" || fail "COPY a.txt re-ran"
step_cached "RUN cat /a.txt" || fail "RUN cat re-ran"
step_cached "COPY b.txt" && fail "COPY b.txt was cached after b.txt changed"
[ "$("$KILN" run --rm --network none cache-test cat /b.txt)" = TWO ] || fail "new b.txt not in the image"

# a.txt changes: COPY a.txt and everything after re-run, RUN echo base still cached
echo ONE > "$ctx/a.txt"
build
step_cached "RUN echo base" || fail "RUN echo base re-ran after a.txt changed"
step_cached "RUN cat /a.txt" && fail "RUN cat /a.txt cached after a.txt changed"
[ "$("$KILN" run --rm --network none cache-test cat /from-a)" = ONE ] || fail "stale RUN result"

# --no-cache: nothing cached
build --no-cache
[ "$(cached)" = 0 ] || fail "--no-cache had hits"

# a build arg used by RUN changes its key
printf 'FROM busybox\nARG V=1\nRUN echo $V > /v\n' > "$ctx/Dockerfile"
build --build-arg V=1
build --build-arg V=2
step_cached "RUN echo" && fail "RUN cached across a changed build arg"
[ "$("$KILN" run --rm --network none cache-test cat /v)" = 2 ] || fail "build arg value"

# security.md item 18: equal layers, different configs (HEALTHCHECK, ONBUILD)
printf 'FROM busybox\nHEALTHCHECK CMD true\nRUN echo same > /same\n' > "$ctx/Dockerfile"
build
printf 'FROM busybox\nHEALTHCHECK NONE\nRUN echo same > /same\n' > "$ctx/Dockerfile"
build
step_cached "RUN echo same" && fail "RUN hit a record made under a different HEALTHCHECK"
[ "$("$KILN" inspect cache-test | jq -c '.[0].Config.Healthcheck.Test')" = '["NONE"]' ] || fail "healthcheck of the second build"
printf 'FROM busybox\nONBUILD RUN true\nRUN echo same > /same\n' > "$ctx/Dockerfile"
build
step_cached "RUN echo same" && fail "RUN hit a record made without ONBUILD"

# prune: all records gone, next build runs again
"$KILN" builder prune -a -f > "$work/prune" || fail "builder prune"
grep -q "Deleted build cache records" "$work/prune" || fail "prune output"
[ -z "$(ls -A "$KILN_ROOT/cache/records" 2>/dev/null)" ] || fail "records left after prune -a"
build
[ "$(cached)" = 0 ] || fail "hits after prune"
"$KILN" fsck >/dev/null 2>&1 || fail "store inconsistent after prune + rebuild"
echo "build cache ok"
