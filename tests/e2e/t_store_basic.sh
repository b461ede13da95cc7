#!/bin/bash
# The store and the image commands: make-base → images, inspect, history, tag,
# rmi, image prune, fsck; the kiln root is an OCI layout that skopeo, umoci
# and oci-image-tool read directly; every JSON file validates against the OCI schemas.
set -eu
: "${KILN:?}" "${KILN_SRC:?}" "${KILN_TESTDATA:?}"
export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >"$work/base.out"
id=$(tail -n 1 "$work/base.out")
[[ "$id" == sha256:* ]] || fail "make-base printed '$id', not an image id"
# idempotent
"$KILN_SRC/samples/make-base.sh" "$KILN" | grep -q "already present" || fail "make-base not idempotent"

# store layout
[ "$(stat -c %a "$KILN_ROOT")" = 700 ] || fail "root is not 0700"
[ "$(cat "$KILN_ROOT/oci-layout")" = '{"imageLayoutVersion":"1.0.0"}' ] || fail "bad oci-layout"
for d in blobs/sha256 tmp snapshots cache containers; do [ -d "$KILN_ROOT/$d" ] || fail "no $d"; done

# images
out=$("$KILN" images)
echo "$out"
head -n 1 <<<"$out" | grep -Eq '^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE$' || fail "images header"
grep -Eq "^busybox +latest +${id:7:12} " <<<"$out" || fail "busybox:latest not listed with id ${id:7:12}"
[ "$("$KILN" images -q)" = "${id:7:12}" ] || fail "images -q"
"$KILN" images --no-trunc | grep -q "$id" || fail "images --no-trunc lacks the full id"
"$KILN" images --digests | head -n 1 | grep -q DIGEST || fail "images --digests header"
[ "$("$KILN" images --format '{{.Repository}}:{{.Tag}} {{.ID}}')" = "busybox:latest ${id:7:12}" ] || fail "images --format"

# inspect
"$KILN" inspect busybox >"$work/inspect.json"
[ "$(jq -r '.[0].Id' "$work/inspect.json")" = "$id" ] || fail "inspect Id"
[ "$(jq -r '.[0].RepoTags[0]' "$work/inspect.json")" = "busybox:latest" ] || fail "inspect RepoTags"
[ "$(jq -c '.[0].Config.Cmd' "$work/inspect.json")" = '["sh"]' ] || fail "inspect Cmd"
[ "$(jq -r '.[0].Os' "$work/inspect.json")" = linux ] || fail "inspect Os"
[ "$(jq -r '.[0].RootFS.Layers | length' "$work/inspect.json")" = 1 ] || fail "inspect RootFS"
[ "$("$KILN" inspect -f '{{.Config.Cmd}} {{json .Config.Cmd}} {{.Os}}' busybox)" = '[sh] ["sh"] linux' ] || fail "inspect -f"
[ "$("$KILN" inspect -f '{{index .RepoTags 0}} {{index .Config.Cmd 0}}' busybox)" = 'busybox:latest sh' ] || fail "inspect -f index"
"$KILN" image inspect "${id:7:12}" | jq -e '.[0].Id' >/dev/null || fail "image inspect by short id"
set +e
"$KILN" inspect no-such-thing >/dev/null 2>"$work/err"; rc=$?
set -e
[ $rc -ne 0 ] || fail "inspect of a missing name succeeded"
grep -qi "no such" "$work/err" || fail "inspect error: $(cat "$work/err")"

# history
"$KILN" history busybox | tee "$work/hist"
head -n 1 "$work/hist" | grep -Eq '^IMAGE +CREATED +CREATED BY +SIZE +COMMENT$' || fail "history header"
grep -q "^${id:7:12} " "$work/hist" || fail "history lacks the image id"
grep -q "kiln base: busybox" "$work/hist" || fail "history comment"

# tag, rmi
"$KILN" tag busybox me/bb:1
"$KILN" tag busybox localhost:5000/bb:2
"$KILN" images | grep -Eq "^me/bb +1 +${id:7:12}" || fail "tag me/bb:1"
"$KILN" images | grep -Eq "^localhost:5000/bb +2 +${id:7:12}" || fail "tag localhost:5000/bb:2"
set +e
"$KILN" rmi "${id:7:12}" 2>"$work/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "must be forced" "$work/err" || fail "rmi of a multiply tagged id must need -f"
[ "$("$KILN" rmi me/bb:1)" = "Untagged: me/bb:1" ] || fail "rmi of one tag"
"$KILN" rmi localhost:5000/bb:2 >/dev/null
"$KILN" images | grep -q "^busybox " || fail "busybox vanished"

# an image a container uses is kept (rmi needs -f, prune -a keeps it)
mkdir -p "$KILN_ROOT/containers/fake"
echo '{"id":"fake","image":"busybox"}' >"$KILN_ROOT/containers/fake/state.json"
set +e
"$KILN" rmi busybox 2>"$work/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "container is using" "$work/err" || fail "rmi of an image in use: exit $rc $(cat "$work/err")"
"$KILN" image prune -a -f >/dev/null
"$KILN" images | grep -q "^busybox " || fail "prune -a removed an image in use"
rm -rf "$KILN_ROOT/containers/fake"

# the root is an OCI layout others can read
skopeo inspect "oci:$KILN_ROOT:docker.io/library/busybox:latest" >"$work/skopeo.json" || fail "skopeo inspect"
[ "$(jq -r .Os "$work/skopeo.json")" = linux ] || fail "skopeo sees no linux image"
umoci unpack --image "$KILN_ROOT:docker.io/library/busybox:latest" "$work/bundle" >/dev/null || fail "umoci unpack"
[ -x "$work/bundle/rootfs/bin/busybox" ] || fail "unpacked rootfs lacks bin/busybox"
[ "$(stat -c %a "$work/bundle/rootfs/tmp")" = 1777 ] || fail "tmp is not 1777"
[ -L "$work/bundle/rootfs/bin/sh" ] || fail "bin/sh is not a symlink"
oci-image-tool validate --type image --ref name=docker.io/library/busybox:latest "$KILN_ROOT" || fail "oci-image-tool validate"

# every JSON in the store validates against the OCI schemas
cat >"$work/v.py" <<'PY'
import json, os, sys
sys.path.insert(0, os.path.join(os.environ['KILN_SRC'], 'tests/lib'))
import ocischema
sd, root = sys.argv[1], sys.argv[2]
def load(p):
    with open(p) as f: return json.load(f)
def check(schema, doc, what):
    errs = ocischema.errors(sd, schema, doc)
    for e in errs: print(what, schema, e)
    return len(errs)
bad = check('image-layout-schema.json', load(os.path.join(root, 'oci-layout')), 'oci-layout')
idx = load(os.path.join(root, 'index.json'))
bad += check('image-index-schema.json', idx, 'index.json')
n = 0
for m in idx['manifests']:
    man = load(os.path.join(root, 'blobs/sha256', m['digest'][7:]))
    bad += check('image-manifest-schema.json', man, m['digest'])
    bad += check('config-schema.json', load(os.path.join(root, 'blobs/sha256', man['config']['digest'][7:])), man['config']['digest'])
    n += 1
print('validated', n, 'images')
sys.exit(1 if bad or not n else 0)
PY
KILN_SRC=$KILN_SRC python3 "$work/v.py" "$KILN_TESTDATA/oci-schemas" "$KILN_ROOT" || fail "schema validation"

# fsck clean, then detects a corrupted blob
"$KILN" fsck | tail -n 1 | grep -q " 0 problems" || fail "fsck of a clean store"
layer=$(jq -r '.layers[0].digest' "$KILN_ROOT/blobs/sha256/$(jq -r '.manifests[0].digest' "$KILN_ROOT/index.json" | cut -c8-)")
cp "$KILN_ROOT/blobs/sha256/${layer:7}" "$work/layer.bak"
chmod u+w "$KILN_ROOT/blobs/sha256/${layer:7}"
printf 'X' | dd of="$KILN_ROOT/blobs/sha256/${layer:7}" bs=1 seek=100 conv=notrunc status=none
set +e
"$KILN" fsck >"$work/fsck" 2>&1; rc=$?
set -e
[ $rc -eq 1 ] || fail "fsck exit $rc on a corrupt blob"
grep -q "${layer:7}.*corrupt" "$work/fsck" || fail "fsck did not name the corrupt blob: $(cat "$work/fsck")"
cp "$work/layer.bak" "$KILN_ROOT/blobs/sha256/${layer:7}"
"$KILN" fsck >/dev/null || fail "fsck after repair"

# dangling images and prune
"$KILN" import --change 'CMD ["true"]' "$work/layer.bak" other:1 >/dev/null
"$KILN" import --change 'CMD ["false"]' "$work/layer.bak" other:1 >/dev/null   # the old other:1 dangles
"$KILN" images | grep -q '^<none> ' || fail "no dangling image after the tag moved"
nblobs=$(ls "$KILN_ROOT/blobs/sha256" | wc -l)
"$KILN" image prune -f | tee "$work/prune"
grep -q "^deleted: sha256:" "$work/prune" || fail "prune deleted nothing"
grep -q "Total reclaimed space" "$work/prune" || fail "prune summary"
! "$KILN" images | grep -q '^<none> ' || fail "dangling image survived prune"
[ "$(ls "$KILN_ROOT/blobs/sha256" | wc -l)" -lt "$nblobs" ] || fail "prune removed no blobs"
"$KILN" rmi other:1 | grep -q "^Deleted: sha256:" || fail "rmi of the last tag deletes"
"$KILN" image ls | grep -q "^busybox " || fail "image ls"
"$KILN" fsck >/dev/null || fail "fsck after prune"
echo "store basic ok"
