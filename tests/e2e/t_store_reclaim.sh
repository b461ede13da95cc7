#!/bin/bash
# Disk space is given back (issue 11, finding 12): the snapshots a run
# unpacks go with rmi, image prune -a, builder prune -a and system prune -a
# once nothing needs them; a container (stopped, or running after rmi -f)
# keeps its image's snapshots until it is removed; system df counts what is
# there; a prune killed with -9 half way leaves a store fsck finds clean, and
# the next prune finishes the job.  Images are imported (no registry).
set -eu
: "${KILN:?}" "${KILN_SRC:?}"
[ "$(id -u)" = 0 ] || { echo "t_store_reclaim: needs root (kiln run)"; exit 77; }
work=$(mktemp -d /tmp/kiln-e2e-reclaim.XXXXXX)
export KILN_ROOT=$work/root SOURCE_DATE_EPOCH=1700000000
pids=""
cleanup() {
	set +e
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	for c in $("$KILN" ps -aq 2>/dev/null); do "$KILN" rm -f "$c" >/dev/null 2>&1; done
	grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
	rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; ls -la "$KILN_ROOT"/snapshots/*/tmp >&2; exit 1; }

# committed (unpacked) snapshots, over every driver directory
nsnaps() { ls -A "$KILN_ROOT"/snapshots/*/snaps 2>/dev/null | grep -Ec '^[0-9a-f]{64}$' || true; }
ntmp() { ls -A "$KILN_ROOT"/snapshots/*/tmp 2>/dev/null | grep -Evc '^$|:$' || true; }
fsck_clean() { "$KILN" fsck >"$work/fsck" 2>&1 || { cat "$work/fsck"; fail "fsck after $1"; }; }
df_field() { "$KILN" system df --format '{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}' | awk -F'|' -v t="$1" -v f="$2" '$1 == t { print $f }'; }

# mkimg NAME [NFILES]: an image of busybox plus a marker (and NFILES small files)
mkimg() {
	local r=$work/rootfs-$1 i
	rm -rf "$r"; mkdir -p "$r/bin" "$r/tmp" "$r/etc" "$r/data"
	cp /bin/busybox "$r/bin/busybox"
	ln -s busybox "$r/bin/sh"; ln -s busybox "$r/bin/cat"; ln -s busybox "$r/bin/sleep"; ln -s busybox "$r/bin/true"
	echo "$1" >"$r/marker"
	for i in $(seq 1 "${2:-0}"); do echo "$1 $i" >"$r/data/f$i"; done
	tar --numeric-owner -C "$r" -cf "$work/$1.tar" .
	rm -rf "$r"
	"$KILN" import --change 'CMD ["sh"]' "$work/$1.tar" "$1:latest" >/dev/null || fail "import $1"
}

mkimg one
base=$(nsnaps)
[ "$base" = 0 ] || fail "import unpacked $base snapshots"
[ "$(df_field Images 2)" = 1 ] || fail "system df: Images TOTAL is not 1: $("$KILN" system df)"

# --- rmi drops the snapshot a run unpacked
"$KILN" run --rm one cat /marker | grep -qx one || fail "run one"
[ "$(nsnaps)" -gt "$base" ] || fail "run unpacked no snapshot"
"$KILN" rmi one >/dev/null
[ "$(nsnaps)" = "$base" ] || fail "rmi left $(nsnaps) snapshots (had $base before the run)"
[ "$(df_field Images 2)" = 0 ] || fail "system df: Images TOTAL after rmi: $("$KILN" system df)"
fsck_clean "rmi"

# --- image prune -a
mkimg two
"$KILN" run --rm two true
[ "$(nsnaps)" -gt "$base" ] || fail "run two unpacked nothing"
"$KILN" image prune -a -f >"$work/out"
grep -q '^deleted: sha256:' "$work/out" || fail "image prune -a deleted nothing: $(cat "$work/out")"
grep -q '^Total reclaimed space: ' "$work/out" || fail "image prune summary"
grep -q '^Total reclaimed space: 0B$' "$work/out" && fail "image prune reclaimed 0B with a snapshot to drop"
[ "$(nsnaps)" = "$base" ] || fail "image prune -a left $(nsnaps) snapshots"
fsck_clean "image prune -a"

# --- a stopped container keeps its image's snapshots after rmi -f, until it is removed
mkimg three
"$KILN" run --name keep three sh -c 'echo written > /tmp/w' || fail "run keep"
set +e
"$KILN" rmi three 2>"$work/err"; rc=$?
set -e
[ $rc = 1 ] && grep -q "container is using" "$work/err" || fail "rmi of an image a container uses: $rc $(cat "$work/err")"
"$KILN" rmi -f three >/dev/null || fail "rmi -f three"
"$KILN" image prune -a -f >/dev/null
"$KILN" builder prune -a -f >/dev/null
[ "$(nsnaps)" -gt "$base" ] || fail "prunes removed the snapshot a stopped container stands on"
"$KILN" ps -a | grep -q keep || fail "container keep vanished"
[ "$(df_field Containers 2)" = 1 ] || fail "system df: Containers TOTAL: $("$KILN" system df)"
fsck_clean "rmi -f with a stopped container"
"$KILN" rm keep >/dev/null
"$KILN" image prune -f >/dev/null
[ "$(nsnaps)" = "$base" ] || fail "after rm + prune $(nsnaps) snapshots remain"

# --- a running container works on after rmi -f and prunes
mkimg four
"$KILN" run -d --name live four sleep 600 >/dev/null || fail "run -d four"
"$KILN" rmi -f four >/dev/null
"$KILN" image prune -a -f >/dev/null
"$KILN" system prune -f >/dev/null
[ "$(df_field Containers 3)" = 1 ] || fail "system df: Containers ACTIVE is not 1: $("$KILN" system df)"
"$KILN" exec live cat /marker | grep -qx four || fail "exec in the running container after rmi -f + prune"
"$KILN" rm -f live >/dev/null
"$KILN" image prune -f >/dev/null
[ "$(nsnaps)" = "$base" ] || fail "after rm -f live + prune $(nsnaps) snapshots remain"
fsck_clean "running container"

# --- a kill -9 of a foreground run --rm leaves nothing that keeps its image
mkimg killed
"$KILN" run --rm killed sleep 600 >/dev/null 2>&1 &
p=$!; pids="$pids $p"
until ls "$KILN_ROOT"/snapshots/*/active 2>/dev/null | grep -q "^run-$p-"; do
	kill -0 "$p" 2>/dev/null || fail "run --rm sleep ended early"
done
kill -9 "$p"; wait "$p" 2>/dev/null || true
"$KILN" rmi killed >/dev/null
[ "$(nsnaps)" = "$base" ] || fail "a killed run --rm kept $(nsnaps) snapshots"
[ -z "$(ls -A "$KILN_ROOT"/snapshots/*/active)" ] || fail "a killed run --rm left $(ls "$KILN_ROOT"/snapshots/*/active)"

# --- a build in progress holds the store: prunes leave its snapshots alone
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
. "$KILN_SRC/tests/e2e/lib/ports.sh"
port=$(free_port)
mkdir -p "$work/slow"
# the step waits for a loopback service of the host: RUN steps have their own
# network, so the build says --network host
printf 'FROM busybox\nRUN echo step > /step\nRUN until echo | nc 127.0.0.1 %s; do sleep 0.2; done\n' "$port" >"$work/slow/Dockerfile"
"$KILN" build -q --network host -t slow "$work/slow" >"$work/slow.out" 2>&1 &
b=$!; pids="$pids $b"
# in the second RUN: the base and the first step committed, a step prepared
until [ "$(nsnaps)" -ge 2 ] && ls "$KILN_ROOT"/snapshots/*/active 2>/dev/null | grep -q "^build-$b-"; do
	kill -0 "$b" 2>/dev/null || fail "the build ended early: $(cat "$work/slow.out")"
done
during=$(nsnaps)
"$KILN" rmi busybox >/dev/null || fail "rmi during a build"
set +e
"$KILN" image prune -a -f >"$work/out" 2>&1; rc=$?
set -e
[ $rc = 1 ] && grep -q "in use by another kiln process" "$work/out" || fail "image prune during a build: $rc $(cat "$work/out")"
[ "$(nsnaps)" = "$during" ] || fail "prunes during a build removed snapshots ($during before, $(nsnaps) after)"
timeout 120 busybox nc -l -p "$port" </dev/null >/dev/null 2>&1 &
pids="$pids $!"
wait "$b" || fail "the build failed: $(cat "$work/slow.out")"
"$KILN" run --rm slow cat /step | grep -qx step || fail "the image built during the prunes"
"$KILN" rmi slow >/dev/null
"$KILN" builder prune -a -f >/dev/null
[ "$(nsnaps)" = "$base" ] || fail "after the build and prunes $(nsnaps) snapshots remain"
fsck_clean "prunes during a build"

# --- builder prune -a drops the snapshots only cache records kept
mkimg five
mkdir -p "$work/ctx"
printf 'FROM five\nRUN echo built > /built\n' >"$work/ctx/Dockerfile"
"$KILN" build -q -t built "$work/ctx" >/dev/null || fail "build"
"$KILN" rmi built five >/dev/null
[ "$(nsnaps)" -gt "$base" ] || fail "the cache records keep no snapshot"
[ "$(df_field 'Build Cache' 2)" -ge 1 ] || fail "system df: no build cache records: $("$KILN" system df)"
"$KILN" builder prune -a -f >"$work/out"
grep -q "Total reclaimed space: " "$work/out" || fail "builder prune summary: $(cat "$work/out")"
[ "$(nsnaps)" = "$base" ] || fail "builder prune -a left $(nsnaps) snapshots"
fsck_clean "builder prune -a"

# --- system df and system prune -a
mkimg six
"$KILN" run --name stopped six true
out=$("$KILN" system df)
echo "$out"
head -n 1 <<<"$out" | grep -Eq '^TYPE +TOTAL +ACTIVE +SIZE +RECLAIMABLE$' || fail "system df header"
grep -Eq '^Images +1 +1 ' <<<"$out" || fail "system df: Images 1 1"
grep -Eq '^Containers +1 +0 ' <<<"$out" || fail "system df: Containers 1 0"
grep -Eq '^Local Volumes +0 +0 +0B +0B' <<<"$out" || fail "system df: Local Volumes"
grep -q '^Build Cache ' <<<"$out" || fail "system df: Build Cache row"
"$KILN" system df -v | grep -Eq "^six +latest " || fail "system df -v lists no image six"
# no -f: asks, and "n" keeps everything
out=$(echo n | "$KILN" system prune -a)
grep -q 'Are you sure you want to continue? \[y/N\]' <<<"$out" || fail "system prune did not ask: $out"
"$KILN" ps -a | grep -q stopped || fail "system prune answered n removed a container"
out=$("$KILN" system prune -a -f)
echo "$out"
grep -q '^Deleted Containers:' <<<"$out" || fail "system prune: no Deleted Containers"
grep -q '^Deleted Images:' <<<"$out" || fail "system prune: no Deleted Images"
grep -Eq '^Total reclaimed space: [0-9.]+[kMG]?B$' <<<"$out" || fail "system prune summary"
[ "$(df_field Images 2)" = 0 ] || fail "Images TOTAL after system prune -a"
[ "$(df_field Containers 2)" = 0 ] || fail "Containers TOTAL after system prune -a"
[ "$(nsnaps)" = "$base" ] || fail "system prune -a left $(nsnaps) snapshots"
fsck_clean "system prune -a"

# --- kill -9 during a prune of many snapshots, then fsck and the next prune
n=6
for i in $(seq 1 $n); do
	mkimg "many$i" 1000
	"$KILN" run --rm "many$i" true || fail "run many$i"
done
total=$(nsnaps)
[ "$total" -ge $n ] || fail "only $total snapshots for $n images"
for i in $(seq 1 $n); do "$KILN" rmi --no-prune "many$i" >/dev/null; done
[ "$(nsnaps)" = "$total" ] || fail "rmi --no-prune removed snapshots"
"$KILN" image prune -f >/dev/null 2>&1 &
p=$!; pids="$pids $p"
# kill as soon as the prune is removing (a snapshot gone or one in tmp/)
while kill -0 "$p" 2>/dev/null && [ "$(nsnaps)" = "$total" ] && [ "$(ntmp)" = 0 ]; do :; done
kill -9 "$p" 2>/dev/null || true
wait "$p" 2>/dev/null || true
left=$(nsnaps)
echo "killed the prune with $left of $total snapshots left"
[ "$left" -gt 0 ] && [ "$left" -lt "$total" ] || echo "note: the kill landed at the edge ($left left)"
fsck_clean "kill -9 of a prune"
[ "$(ntmp)" = 0 ] || fail "removals in progress of a dead prune were not cleaned"
"$KILN" image prune -f >/dev/null || fail "prune after the kill"
[ "$(nsnaps)" = "$base" ] || fail "the prune after the kill left $(nsnaps) snapshots"
fsck_clean "the prune after the kill"

# fsck sees a broken snapshot (so the checks above can fail)
drv=$(ls "$KILN_ROOT/snapshots" | head -n 1)
h=$(printf 'x%.0s' {1..64} | tr x a)
mkdir -p "$KILN_ROOT/snapshots/$drv/snaps/$h/fs"
echo "sha256:$(printf 'b%.0s' {1..64})" >"$KILN_ROOT/snapshots/$drv/snaps/$h/parent"
"$KILN" fsck >"$work/fsck" 2>&1 && fail "fsck missed a snapshot without its parent"
grep -q "parent" "$work/fsck" || fail "fsck message: $(cat "$work/fsck")"
"$KILN" image prune -f >/dev/null
"$KILN" fsck >/dev/null 2>&1 || fail "prune did not remove the orphan snapshot"
echo "reclaim ok"
