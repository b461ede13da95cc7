#!/bin/bash
# kiln build: the cache key of RUN --mount=type=bind covers what the mount
# exposes: the content of a context file or directory (.dockerignore
# honoured, mtimes not), the result of a from=<stage>, and a from=<image>;
# a changed source re-runs the step and the image holds the new output, an
# unchanged or only touched one is CACHED.  type=cache is not in the key.
# Also what a bind mount shows: no .dockerignore'd files, rw writes discarded;
# and cache mount sharing=locked|shared|private between concurrent builds.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
ctx=$work/ctx
mkdir -p "$ctx/dir/sub"
echo one > "$ctx/data.txt"
echo x1 > "$ctx/dir/x"
echo y1 > "$ctx/dir/sub/y"
echo ign1 > "$ctx/dir/ignored.txt"
echo g1 > "$ctx/gen.txt"
printf 'dir/ignored.txt\n' > "$ctx/.dockerignore"
cat > "$ctx/Dockerfile" <<'DF'
FROM busybox AS gen
COPY gen.txt /gen.txt
RUN cp /gen.txt /made

FROM busybox
RUN --mount=type=bind,source=data.txt,target=/d cat /d > /out
RUN --mount=type=bind,source=dir,target=/dd cat /dd/x /dd/sub/y > /outdir
RUN --mount=type=bind,from=gen,source=/made,target=/m cat /m > /outstage
RUN --mount=type=bind,from=busybox,source=/bin,target=/bb test -e /bb/busybox && echo img > /outimg
RUN --mount=type=cache,target=/cache echo cached-mount > /outcache && date +%s%N >> /cache/stamp
DF

build() { "$KILN" build --progress plain -t mk "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "build $*"; }; }
# whether the step whose text contains $1 was CACHED
step_cached() {
	local n
	n=$(grep -F "$1" "$work/log" | grep '^#[0-9]* \[' | head -1 | sed 's/^#\([0-9]*\) .*/\1/')
	[ -n "$n" ] || { cat "$work/log"; fail "no step \"$1\" in the log"; }
	grep -q "^#$n CACHED" "$work/log"
}
ncached() { grep -c '^#[0-9]* CACHED' "$work/log" || true; }
out() { "$KILN" run --rm --network none mk cat "$1"; }

build
[ "$(ncached)" = 0 ] || fail "first build had cache hits"
[ "$(out /out)" = one ] || fail "/out after the first build: $(out /out)"
[ "$(out /outdir | tr '\n' ' ')" = "x1 y1 " ] || fail "/outdir after the first build"
[ "$(out /outstage)" = g1 ] || fail "/outstage after the first build"
[ "$(out /outimg)" = img ] || fail "/outimg after the first build"

# unchanged: every step cached, same image
id1=$("$KILN" inspect mk | jq -r '.[0].Id')
build
[ "$(ncached)" = 7 ] || { cat "$work/log"; fail "no-change rebuild: $(ncached) of 7 steps cached"; }
[ "$("$KILN" inspect mk | jq -r '.[0].Id')" = "$id1" ] || fail "no-change rebuild changed the image id"

# mtime only (file, directory entries) and an ignored file: still cached
touch -d '2001-01-01' "$ctx/data.txt" "$ctx/dir/x" "$ctx/dir/sub/y" "$ctx/dir" "$ctx/gen.txt"
echo ign2 > "$ctx/dir/ignored.txt"
build
[ "$(ncached)" = 7 ] || { cat "$work/log"; fail "mtime-only / ignored change: $(ncached) of 7 steps cached"; }

# the bind-mounted file changes: that step re-runs, the image has the new content
echo two > "$ctx/data.txt"
build
step_cached "cat /d > /out" && fail "data.txt changed but its RUN was CACHED"
[ "$(out /out)" = two ] || fail "/out after data.txt changed: $(out /out)"

# a file deep in the bind-mounted directory changes
build
step_cached "cat /d > /out" || fail "unchanged data.txt: RUN not cached"
echo y2 > "$ctx/dir/sub/y"
build
step_cached "cat /d > /out" || fail "only dir/ changed, but the data.txt RUN re-ran"
step_cached "cat /dd/x" && fail "dir/sub/y changed but the directory-mount RUN was CACHED"
[ "$(out /outdir | tr '\n' ' ')" = "x1 y2 " ] || fail "/outdir after dir/sub/y changed: $(out /outdir)"

# a new file in the directory changes the key too
echo new > "$ctx/dir/new"
build
step_cached "cat /dd/x" && fail "a file added to dir/ but the directory-mount RUN was CACHED"

# the source stage's content changes
echo g2 > "$ctx/gen.txt"
build
step_cached "cat /dd/x" || fail "only gen.txt changed, but the directory-mount RUN re-ran"
step_cached "cat /m > /outstage" && fail "stage gen changed but the from=gen RUN was CACHED"
[ "$(out /outstage)" = g2 ] || fail "/outstage after gen.txt changed: $(out /outstage)"
step_cached "echo cached-mount" && fail "steps after a re-run step must re-run"

# the cache mount (written by the re-run above) is not part of the key
build
[ "$(ncached)" = 7 ] || { cat "$work/log"; fail "rebuild after changes: $(ncached) of 7 steps cached"; }

# what .dockerignore excludes is not in a bind mount of the context either
# (as in BuildKit, where the context a build sees lacks those files): the
# whole context, a directory of it, and an excluded file named as the source
mkdir -p "$work/ig/sub"
echo s > "$work/ig/secret.env"; echo k > "$work/ig/keep.txt"
echo h > "$work/ig/sub/id.key"; echo v > "$work/ig/sub/visible"
printf 'secret.env\n**/*.key\n' > "$work/ig/.dockerignore"
cat > "$work/ig/Dockerfile" <<'DF'
FROM busybox
RUN --mount=type=bind,target=/ctx find /ctx | sort > /whole
RUN --mount=type=bind,source=sub,target=/s find /s | sort > /sub
RUN --mount=type=bind,source=keep.txt,target=/k.txt cat /k.txt > /file
DF
"$KILN" build -q -t ignored "$work/ig" >/dev/null || fail "build with bind mounts of a context with .dockerignore"
whole=$("$KILN" run --rm --network none ignored cat /whole)
sub=$("$KILN" run --rm --network none ignored cat /sub)
case "$whole$sub" in *secret.env*|*id.key*) fail "an ignored file was visible in a bind mount: $whole $sub";; esac
echo "$whole" | grep -qx /ctx/keep.txt || fail "the context mount lacks keep.txt: $whole"
echo "$sub" | grep -qx /s/visible || fail "the sub mount lacks visible: $sub"
[ "$("$KILN" run --rm --network none ignored cat /file)" = k ] || fail "a file bind mount"
printf 'FROM busybox\nRUN --mount=type=bind,source=secret.env,target=/x cat /x\n' > "$work/ig/Dockerfile"
if "$KILN" build -q "$work/ig" > "$work/log" 2>&1; then fail "an ignored file could be bind mounted"; fi
grep -q "Dockerfile:2: .*secret.env is excluded by .dockerignore" "$work/log" || { cat "$work/log"; fail "no clear error for an ignored bind source"; }
[ -z "$(ls -A "$KILN_ROOT/tmp")" ] || fail "filtered context copies left in the root's tmp: $(ls "$KILN_ROOT/tmp")"

# rw: the step may write into a bind mount (from the context or a stage); the
# writes are its own and vanish afterwards, the source is untouched; without
# rw the mount is read-only
cat > "$work/ig/Dockerfile" <<'DF'
FROM busybox AS s
RUN echo a > /f
FROM busybox
RUN --mount=type=bind,rw,target=/c sh -c 'echo x > /c/new && cat /c/keep.txt' > /ctx-out
RUN --mount=type=bind,from=s,source=/f,target=/m.txt,rw sh -c 'echo b >> /m.txt && cat /m.txt' > /rw-out
RUN --mount=type=bind,from=s,target=/m cat /m/f > /after
RUN --mount=type=bind,target=/c sh -c 'if echo y > /c/new2 2>/dev/null; then echo writable; else echo readonly; fi' > /ro-out
DF
"$KILN" build -q -t rwmounts "$work/ig" >/dev/null || fail "build with rw bind mounts"
r() { "$KILN" run --rm --network none rwmounts cat "$1" | tr '\n' ' '; }
[ "$(r /ctx-out)" = "k " ] || fail "rw context mount: $(r /ctx-out)"
[ "$(r /rw-out)" = "a b " ] || fail "rw stage mount: $(r /rw-out)"
[ "$(r /after)" = "a " ] || fail "a write through an rw mount reached the stage: $(r /after)"
[ "$(r /ro-out)" = "readonly " ] || fail "a bind mount without rw was writable"
[ ! -e "$work/ig/new" ] && [ ! -e "$work/ig/new2" ] || fail "a RUN step wrote into the build context"
[ -z "$(ls -A "$KILN_ROOT/tmp")" ] || fail "rw mount copies left in the root's tmp: $(ls "$KILN_ROOT/tmp")"

# cache mount sharing, between two builds running at once: locked takes
# turns, shared lets both in, private gives the second an empty cache
mkdir -p "$work/sh"
for sharing in locked shared private; do
	cat > "$work/sh/Dockerfile" <<DF
FROM busybox
ARG N=0
RUN --mount=type=cache,target=/c,sharing=$sharing,id=sh-$sharing sh -c 'echo start-\$N >> /c/log; sleep 2; echo end-\$N >> /c/log; cat /c/log' > /out
DF
	"$KILN" build -q --no-cache --build-arg N=1 -t sh1 "$work/sh" > "$work/sh1.log" 2>&1 & p1=$!
	"$KILN" build -q --no-cache --build-arg N=2 -t sh2 "$work/sh" > "$work/sh2.log" 2>&1 & p2=$!
	wait $p1 || { cat "$work/sh1.log"; fail "sharing=$sharing: first build"; }
	wait $p2 || { cat "$work/sh2.log"; fail "sharing=$sharing: second build"; }
	o1=$("$KILN" run --rm --network none sh1 cat /out | tr '\n' ' ')
	o2=$("$KILN" run --rm --network none sh2 cat /out | tr '\n' ' ')
	case $sharing in
	locked)  # the one that ran second saw the whole first run before its own start
		case "$o1$o2" in
		*"start-1 end-1 start-2 end-2"*|*"start-2 end-2 start-1 end-1"*) ;;
		*) fail "sharing=locked: the steps overlapped: '$o1' '$o2'";; esac;;
	shared)
		case "$o1$o2" in
		*"start-1 start-2"*|*"start-2 start-1"*) ;;
		*) fail "sharing=shared: the steps did not run at once: '$o1' '$o2'";; esac;;
	private)
		[ "$(echo "$o1" | wc -w)" = 2 ] && [ "$(echo "$o2" | wc -w)" = 2 ] ||
			fail "sharing=private: a step saw the other's cache: '$o1' '$o2'";;
	esac
done
[ -z "$(ls -A "$KILN_ROOT/tmp")" ] || fail "private cache instances left in the root's tmp: $(ls "$KILN_ROOT/tmp")"
echo ok
