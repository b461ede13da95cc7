#!/bin/bash
# Faults: a blob whose digest does not match or that is longer than the
# manifest says, a manifest that is also an index (all rejected, store left clean), a
# 500 on one request (retried), a transfer broken half-way (resumed with
# Range), and a registry killed in the middle of a push or a pull and
# restarted (the transfer completes, nothing is corrupt).
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
for t in docker-registry jq python3 skopeo; do
	command -v $t >/dev/null || { echo "$t is not installed"; exit 77; }
done
W=$(mktemp -d)
export KILN_ROOT=$W/root
trap 'reg_cleanup; rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# the fake registry serves busybox as kiln stores it
mdg=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="docker.io/library/busybox:latest") | .digest' "$KILN_ROOT/index.json")
F=$W/fake
mkdir -p "$F/blobs"
cp "$KILN_ROOT/blobs/sha256/${mdg#sha256:}" "$F/manifest.json"
for d in $(jq -r '.config.digest, .layers[].digest' "$F/manifest.json"); do
	cp "$KILN_ROOT/blobs/sha256/${d#sha256:}" "$F/blobs/$d"
done
layer=$(jq -r '.layers[0].digest' "$F/manifest.json")

store_is_clean() { # ROOT: no blobs of the image, no tag, nothing in tmp/
	local r=$1
	[ ! -e "$r/blobs/sha256/${layer#sha256:}" ] || fail "the rejected layer is in the store"
	[ ! -e "$r/blobs/sha256/${mdg#sha256:}" ] || fail "the manifest of a failed pull is in the store"
	if [ -f "$r/index.json" ]; then
		[ "$(jq '.manifests | length' "$r/index.json")" = 0 ] || fail "a failed pull left a tag"
	fi
	[ -z "$(ls -A "$r/tmp" 2>/dev/null)" ] || fail "a failed pull left files in tmp/"
	KILN_ROOT=$r "$KILN" fsck >/dev/null || fail "fsck after a failed pull"
}

# --- a blob whose bytes do not match its digest
reg_fake_start "$F" baddigest
set +e
err=$(KILN_ROOT=$W/r1 "$KILN" pull "$FAKE_ADDR/fault/bb:latest" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "a corrupt blob was accepted (exit $rc)"
echo "$err" | grep -q "digest mismatch" || fail "corrupt blob message: $err"
store_is_clean "$W/r1"
reg_fake_stop

# --- more bytes than the manifest says: stopped, store clean
reg_fake_start "$F" bigblob
set +e
err=$(KILN_ROOT=$W/r1b "$KILN" pull "$FAKE_ADDR/fault/bb:latest" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && echo "$err" | grep -q "more than the" || fail "an oversized blob was accepted: $rc $err"
store_is_clean "$W/r1b"
reg_fake_stop

# --- a manifest that is also an index (CVE-2021-41190): rejected
reg_fake_start "$F" ambiguous
set +e
err=$(KILN_ROOT=$W/r1c "$KILN" pull "$FAKE_ADDR/fault/bb:latest" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && echo "$err" | grep -q "ambiguous" || fail "an ambiguous manifest was accepted: $rc $err"
store_is_clean "$W/r1c"
reg_fake_stop

# --- one 500: retried, then fine
reg_fake_start "$F" fail500
KILN_ROOT=$W/r2 "$KILN" pull -q "$FAKE_ADDR/fault/bb:latest" >/dev/null || fail "a single 500 was not retried"
[ "$(grep -c 'GET /v2/fault/bb/manifests/latest' "$F/requests.log")" = 2 ] || fail "expected exactly one retry: $(cat "$F/requests.log")"
KILN_ROOT=$W/r2 "$KILN" fsck >/dev/null || fail "fsck after a retried pull"
# with retries switched off the 500 is reported as the registry words it
reg_fake_stop
reg_fake_start "$F" fail500
set +e
err=$(KILN_REGISTRY_RETRIES=0 KILN_ROOT=$W/r2b "$KILN" pull -q "$FAKE_ADDR/fault/bb:latest" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && echo "$err" | grep -q "unknown: injected failure" || fail "500 without retries: $rc $err"
reg_fake_stop

# --- a transfer broken half-way: resumed with Range
reg_fake_start "$F" break
KILN_ROOT=$W/r3 "$KILN" pull -q "$FAKE_ADDR/fault/bb:latest" >/dev/null || fail "a broken transfer was not resumed"
grep -q "GET /v2/fault/bb/blobs/$layer range=bytes=[1-9][0-9]*-" "$F/requests.log" ||
	fail "no Range request after the break: $(cat "$F/requests.log")"
cmp "$W/r3/blobs/sha256/${layer#sha256:}" "$KILN_ROOT/blobs/sha256/${layer#sha256:}" || fail "resumed layer differs"
KILN_ROOT=$W/r3 "$KILN" fsck >/dev/null || fail "fsck after a resumed pull"
reg_fake_stop

# --- the registry dies in the middle of a push and comes back
mkdir -p "$W/big"
head -c $((24 << 20)) /dev/urandom >"$W/big/random.bin"
tar -C "$W/big" -cf "$W/big.tar" random.bin
"$KILN" import "$W/big.tar" big:1 >/dev/null
reg_start "$W/reg"
port=$REG_PORT
for mode in chunked monolithic; do
	chunk=0
	[ $mode = chunked ] && chunk=2m
	KILN_REGISTRY_CHUNK_SIZE=$chunk KILN_REGISTRY_LIMIT_RATE=6m \
		"$KILN" push -q big:1 "$REG_ADDR/fault/big-$mode:1" >"$W/push.out" 2>&1 &
	push_pid=$!
	sleep 1.5
	kill -0 $push_pid 2>/dev/null || { cat "$W/push.out"; fail "$mode push ended before the registry was killed"; }
	reg_kill
	sleep 1
	REG_PORT=$port reg_start "$W/reg"
	set +e
	wait $push_pid; rc=$?
	set -e
	[ "$rc" = 0 ] || { cat "$W/push.out"; fail "$mode push did not survive a registry restart (exit $rc)"; }
	want=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="docker.io/library/big:1") | .digest' "$KILN_ROOT/index.json")
	got=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG_ADDR/fault/big-$mode:1")
	[ "$got" = "$want" ] || fail "$mode: registry has $got, want $want"
	KILN_ROOT=$W/r-$mode "$KILN" pull -q "$REG_ADDR/fault/big-$mode:1" >/dev/null || fail "$mode: pull back"
	KILN_ROOT=$W/r-$mode "$KILN" fsck >/dev/null || fail "$mode: fsck of the pulled copy"
done
# --- the registry dies in the middle of a pull and comes back: resumed
KILN_DEBUG=1 KILN_REGISTRY_LIMIT_RATE=6m KILN_ROOT=$W/r-pullkill \
	"$KILN" pull -q "$REG_ADDR/fault/big-chunked:1" >"$W/pull.out" 2>&1 &
pull_pid=$!
sleep 1.5
kill -0 $pull_pid 2>/dev/null || { cat "$W/pull.out"; fail "pull ended before the registry was killed"; }
reg_kill
sleep 1
REG_PORT=$port reg_start "$W/reg"
set +e
wait $pull_pid; rc=$?
set -e
[ "$rc" = 0 ] || { cat "$W/pull.out"; fail "pull did not survive a registry restart (exit $rc)"; }
grep -q "retrying" "$W/pull.out" || { cat "$W/pull.out"; fail "the pull was never interrupted"; }
KILN_ROOT=$W/r-pullkill "$KILN" fsck >/dev/null || fail "fsck after a pull across a registry restart"
"$KILN" fsck >/dev/null || fail "fsck of the pushing store"
echo "registry faults ok"
