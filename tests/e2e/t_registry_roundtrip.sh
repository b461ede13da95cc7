#!/bin/bash
# kiln push / pull against a real docker-registry (distribution 2.8) on
# 127.0.0.1: exact bytes both ways, skip of existing blobs, cross-repository
# mount, chunked uploads, pull by digest, platform selection from an index
# (attestations skipped), registry errors shown as they are.
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
command -v docker-registry >/dev/null || { echo "docker-registry is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }
W=$(mktemp -d)
export KILN_ROOT=$W/root
trap 'reg_cleanup; rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

REG_ACCESSLOG_OFF=false reg_start "$W/reg"
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
tagged_digest() { # ROOT REF → manifest digest the store's tag points at
	jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$r) | .digest' "$1/index.json"
}
local_dg=$(tagged_digest "$KILN_ROOT" docker.io/library/busybox:latest)
[ -n "$local_dg" ] || fail "no busybox in the store"

# --- push: blobs then the manifest; the registry holds our exact manifest bytes
out=$("$KILN" push busybox:latest "$REG_ADDR/e2e/busybox:1")
echo "$out"
echo "$out" | grep -q ": Pushed" || fail "no layer was pushed"
dg=$(echo "$out" | sed -n 's/^1: digest: \(sha256:[0-9a-f]\{64\}\) size: [0-9]*$/\1/p')
[ "$dg" = "$local_dg" ] || fail "pushed digest '$dg' is not the stored manifest $local_dg"
served=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG_ADDR/v2/e2e/busybox/manifests/1" | sha256sum | cut -d' ' -f1)
[ "sha256:$served" = "$dg" ] || fail "the registry serves different manifest bytes"
cmp <(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG_ADDR/v2/e2e/busybox/manifests/1") \
	"$KILN_ROOT/blobs/sha256/${dg#sha256:}" || fail "manifest bytes differ"

# --- a second push finds every blob there (HEAD first)
out=$("$KILN" push busybox:latest "$REG_ADDR/e2e/busybox:1")
echo "$out" | grep -q "Layer already exists" || fail "existing layer pushed again: $out"
echo "$out" | grep -q ": Pushed" && fail "existing layer pushed again: $out"
# -q prints nothing
[ -z "$("$KILN" push -q busybox:latest "$REG_ADDR/e2e/busybox:2")" ] || fail "push -q printed something"

# --- pull into an empty store: same digests, exact bytes, full reference tagged
out=$(KILN_ROOT=$W/root2 "$KILN" pull "$REG_ADDR/e2e/busybox:1")
echo "$out"
[ "$(echo "$out" | tail -n 1)" = "$REG_ADDR/e2e/busybox:1" ] || fail "pull did not print the full reference last"
echo "$out" | grep -q "^Digest: $dg$" || fail "pull did not report the digest"
echo "$out" | grep -q "Status: Downloaded newer image" || fail "no status line"
[ "$(tagged_digest "$W/root2" "$REG_ADDR/e2e/busybox:1")" = "$dg" ] || fail "pulled image not tagged with the full reference"
for b in "$KILN_ROOT"/blobs/sha256/*; do
	h=$(basename "$b")
	if [ -e "$W/root2/blobs/sha256/$h" ]; then cmp "$b" "$W/root2/blobs/sha256/$h" || fail "blob $h differs"; fi
done
n1=$(jq '.layers | length' "$W/root2/blobs/sha256/${dg#sha256:}")
[ "$n1" -ge 1 ] || fail "manifest without layers"
KILN_ROOT=$W/root2 "$KILN" fsck || fail "fsck after pull"
out=$(KILN_ROOT=$W/root2 "$KILN" pull "$REG_ADDR/e2e/busybox:1")
echo "$out" | grep -q "Already exists" || fail "second pull downloaded again"
echo "$out" | grep -q "Image is up to date" || fail "second pull: no up-to-date status"
[ "$(KILN_ROOT=$W/root2 "$KILN" pull -q "$REG_ADDR/e2e/busybox:1")" = "$REG_ADDR/e2e/busybox:1" ] || fail "pull -q"

# --- by digest
out=$(KILN_ROOT=$W/root3 "$KILN" pull -q "$REG_ADDR/e2e/busybox@$dg")
[ "$out" = "$REG_ADDR/e2e/busybox@$dg" ] || fail "pull by digest printed '$out'"
KILN_ROOT=$W/root3 "$KILN" fsck >/dev/null || fail "fsck after pull by digest"

# --- cross-repository mount: root2 knows the image came from e2e/busybox
out=$(KILN_ROOT=$W/root2 "$KILN" push "$REG_ADDR/e2e/busybox:1" "$REG_ADDR/e2e/copy:1")
echo "$out"
echo "$out" | grep -q "Mounted from e2e/busybox" || fail "no cross-repository mount"
grep -q 'POST /v2/e2e/copy/blobs/uploads/?mount=sha256' "$W/reg/registry.log" || fail "registry saw no mount request"

# --- chunked upload (PATCH with Content-Range), then read back
before=$(grep -c '"PATCH /v2/e2e/chunked/' "$W/reg/registry.log" || true)
KILN_REGISTRY_CHUNK_SIZE=128k "$KILN" push -q busybox:latest "$REG_ADDR/e2e/chunked:1"
patches=$(grep -c '"PATCH /v2/e2e/chunked/' "$W/reg/registry.log" || true)
[ $((patches - before)) -ge 5 ] || fail "chunked push made $((patches - before)) PATCH requests"
out=$(KILN_ROOT=$W/root4 "$KILN" pull -q "$REG_ADDR/e2e/chunked:1")
KILN_ROOT=$W/root4 "$KILN" fsck >/dev/null || fail "fsck after pulling the chunked push"
[ "$(tagged_digest "$W/root4" "$REG_ADDR/e2e/chunked:1")" = "$dg" ] || fail "chunked push changed the image"

# --- an index: platform selection, attestation manifests skipped
mkdir -p "$W/tiny" && echo tiny >"$W/tiny/file" && tar -C "$W/tiny" -cf "$W/tiny.tar" file
"$KILN" import "$W/tiny.tar" tiny:1 >/dev/null
"$KILN" push -q busybox:latest "$REG_ADDR/e2e/multi:amd"
"$KILN" push -q tiny:1 "$REG_ADDR/e2e/multi:arm"
dg_tiny=$(tagged_digest "$KILN_ROOT" docker.io/library/tiny:1)
sz() { stat -c %s "$KILN_ROOT/blobs/sha256/${1#sha256:}"; }
cat >"$W/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$dg_tiny","size":$(sz "$dg_tiny"),
  "platform":{"os":"unknown","architecture":"unknown"},
  "annotations":{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"$dg"}},
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$dg_tiny","size":$(sz "$dg_tiny"),
  "platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$dg","size":$(sz "$dg"),
  "platform":{"os":"linux","architecture":"amd64"}}]}
JSON
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary @"$W/index.json" \
	"http://$REG_ADDR/v2/e2e/multi/manifests/idx" >/dev/null
idx_dg=sha256:$(sha256sum <"$W/index.json" | cut -d' ' -f1)
out=$(KILN_ROOT=$W/root5 "$KILN" pull --platform linux/amd64 "$REG_ADDR/e2e/multi:idx")
echo "$out" | grep -q "^Digest: $idx_dg$" || fail "pull of an index did not report the index digest"
[ "$(tagged_digest "$W/root5" "$REG_ADDR/e2e/multi:idx")" = "$dg" ] || fail "linux/amd64 not selected"
[ -e "$W/root5/blobs/sha256/${idx_dg#sha256:}" ] || fail "the index bytes were not stored"
KILN_ROOT=$W/root6 "$KILN" pull -q --platform linux/arm64 "$REG_ADDR/e2e/multi:idx" >/dev/null
[ "$(tagged_digest "$W/root6" "$REG_ADDR/e2e/multi:idx")" = "$dg_tiny" ] || fail "linux/arm64 not selected"
set +e
err=$(KILN_ROOT=$W/root7 "$KILN" pull -q --platform linux/s390x "$REG_ADDR/e2e/multi:idx" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "missing platform: exit $rc"
echo "$err" | grep -q "no matching manifest for linux/s390x" || fail "missing platform message: $err"

# --- registry errors as the registry words them; usage errors
set +e
err=$(KILN_ROOT=$W/root2 "$KILN" pull "$REG_ADDR/e2e/busybox:nope" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "pull of a missing tag: exit $rc"
echo "$err" | grep -q "^kiln: .*manifest unknown" || fail "missing tag message: $err"
set +e
"$KILN" pull >/dev/null 2>&1; rc=$?
set -e
[ "$rc" = 2 ] || fail "pull without a name: exit $rc"
port=$(reg_free_port)
set +e
err=$(KILN_ROOT=$W/root2 "$KILN" pull "127.0.0.1:$port/x:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "pull from a closed port: exit $rc"
echo "$err" | grep -qi "connect" || fail "closed port message: $err"
# --- kiln build pulls a FROM image it lacks, and its result pushes and pulls back
if "$KILN" build --help >/dev/null 2>&1; then
	mkdir -p "$W/ctx"
	printf 'FROM %s/e2e/busybox:1\nLABEL org.example.built=yes\n' "$REG_ADDR" >"$W/ctx/Dockerfile"
	KILN_ROOT=$W/root8 "$KILN" build -q -t built:1 "$W/ctx" >/dev/null 2>&1 || fail "build FROM a registry image"
	[ "$(tagged_digest "$W/root8" "$REG_ADDR/e2e/busybox:1")" = "$dg" ] || fail "build did not pull its base"
	KILN_ROOT=$W/root8 "$KILN" push -q built:1 "$REG_ADDR/e2e/built:1"
	KILN_ROOT=$W/root9 "$KILN" pull -q "$REG_ADDR/e2e/built:1" >/dev/null
	bdg=$(tagged_digest "$W/root8" docker.io/library/built:1)
	[ "$(tagged_digest "$W/root9" "$REG_ADDR/e2e/built:1")" = "$bdg" ] || fail "built image changed on the way"
	KILN_ROOT=$W/root9 "$KILN" fsck >/dev/null || fail "fsck after pulling the built image"
fi
"$KILN" fsck >/dev/null || fail "fsck of the pushing store"
echo "registry round trip ok"
