#!/bin/bash
# Crash safety: kill -9 during import, save and load at several moments; the
# store must stay consistent (kiln fsck clean), the next command must work,
# no half-written archive may appear under the target name.  Also two writers
# at once and readers during a write.
set -eu
: "${KILN:?}" "${KILN_SRC:?}"
work=$(mktemp -d)
export KILN_ROOT=$work/root SOURCE_DATE_EPOCH=1700000000
pids=""
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
# a tarball that takes a moment to import (incompressible data)
mkdir -p "$work/tree/data"
head -c 48M /dev/urandom >"$work/tree/data/blob"
cp /bin/busybox "$work/tree/data/bb"
tar -C "$work/tree" -cf "$work/big.tar" .

check_store() {
	"$KILN" fsck >"$work/fsck" 2>&1 || { cat "$work/fsck"; fail "fsck after $1"; }
	[ -z "$(ls -A "$KILN_ROOT/tmp")" ] || fail "tmp/ not cleaned after $1"
	"$KILN" images >/dev/null || fail "images after $1"
}

for delay in 0.05 0.3 0.8 1.5; do
	"$KILN" import "$work/big.tar" crash:import >/dev/null 2>&1 &
	p=$!; pids="$pids $p"
	sleep "$delay"
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	check_store "kill -9 of import after ${delay}s"
done
"$KILN" import "$work/big.tar" crash:import >/dev/null || fail "import after the crashes"
check_store "a complete import"

for delay in 0.02 0.08 0.15; do
	rm -f "$work/out.tar"
	"$KILN" save -o "$work/out.tar" crash:import busybox &
	p=$!; pids="$pids $p"
	sleep "$delay"
	kill -9 "$p" 2>/dev/null || true
	if wait "$p" 2>/dev/null; then
		tar -tf "$work/out.tar" >/dev/null || fail "a finished save is not a tar"
	else
		[ ! -e "$work/out.tar" ] || fail "a killed save left a file under the target name"
	fi
	check_store "kill -9 of save after ${delay}s"
done
"$KILN" save -o "$work/out.tar" crash:import busybox || fail "save after the crashes"

export KILN_ROOT=$work/root2
for delay in 0.02 0.08 0.15; do
	"$KILN" load -i "$work/out.tar" >/dev/null 2>&1 &
	p=$!; pids="$pids $p"
	sleep "$delay"
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	check_store "kill -9 of load after ${delay}s"
done
"$KILN" load -i "$work/out.tar" | grep -q "Loaded image: crash:import" || fail "load after the crashes"
check_store "a complete load"

# two writers at once, and a reader while they write
export KILN_ROOT=$work/root SOURCE_DATE_EPOCH=1700000000
"$KILN" import "$work/big.tar" two:a >"$work/a.out" 2>&1 &
pa=$!
"$KILN" import "$KILN_ROOT/../big.tar" two:b >"$work/b.out" 2>&1 &
pb=$!
pids="$pids $pa $pb"
sleep 0.3
"$KILN" images >/dev/null || fail "images during imports"
wait "$pa" || { cat "$work/a.out"; fail "concurrent import a"; }
wait "$pb" || { cat "$work/b.out"; fail "concurrent import b"; }
[ "$(cat "$work/a.out")" = "$(cat "$work/b.out")" ] || fail "concurrent imports of one tarball gave different ids"
"$KILN" images | grep -q "^two  *a " && "$KILN" images | grep -q "^two  *b " || fail "both tags present"
check_store "concurrent imports"
# many index writers at once lose no update (index.lock)
tpids=""
for i in $(seq 1 12); do "$KILN" tag busybox "many:$i" & tpids="$tpids $!"; done
pids="$pids $tpids"
for p in $tpids; do wait "$p" || fail "a concurrent tag failed"; done
[ "$("$KILN" images --format '{{.Repository}}' | grep -c '^many$')" = 12 ] || fail "concurrent tags were lost"
for i in $(seq 1 12); do "$KILN" rmi "many:$i" >/dev/null & tpids="$tpids $!"; done
wait
[ "$("$KILN" images --format '{{.Repository}}' | grep -c '^many$')" = 0 ] || fail "concurrent untags were lost"
"$KILN" images | grep -q "^busybox " || fail "busybox lost in concurrent rmi"
"$KILN" rmi two:a two:b crash:import >/dev/null
"$KILN" image prune -f >/dev/null
check_store "prune"
echo "store crash ok"
