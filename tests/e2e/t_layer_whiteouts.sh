#!/bin/bash
# Deletions in a build become whiteouts that real tools honour: a three-layer
# image built by kiln (files deleted, a directory replaced, a hard link added)
# is unpacked by umoci (which checks diff_ids and applies whiteouts), the last
# layer's tar is checked entry by entry (whiteouts, parent headers, order),
# and a --no-cache rebuild with SOURCE_DATE_EPOCH gives the same image id.
set -eu
KILN=${KILN:?set KILN to the kiln binary}
KILN_SRC=${KILN_SRC:?set KILN_SRC to the repository}
for t in umoci python3 busybox; do
	command -v "$t" >/dev/null 2>&1 || { echo "skip: $t is not installed"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "skip: needs root to build"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$KILN_ROOT" "$work"' EXIT INT TERM
export SOURCE_DATE_EPOCH=1700000000
fail() { echo "FAIL: $*" >&2; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
mkdir "$work/ctx"
cat >"$work/ctx/Dockerfile" <<'EOF'
FROM busybox:latest
RUN mkdir -p /o/sub /keep && echo lower >/o/sub/lower && echo x >/keep/x && echo gone >/gone
RUN rm -rf /o /gone /bin/ls && mkdir -p /o && echo new >/o/new && ln /keep/x /keep/y && echo z >/o/z1 && ln /o/z1 /o/z2
EOF
id1=$("$KILN" build -q -t wh:1 "$work/ctx") || fail "kiln build"
id2=$("$KILN" build -q --no-cache -t wh:2 "$work/ctx") || fail "kiln build --no-cache"
[ "$id1" = "$id2" ] || fail "rebuild is not reproducible: $id1 vs $id2"

umoci unpack --image "$KILN_ROOT:docker.io/library/wh:1" "$work/bundle" >/dev/null || fail "umoci unpack"
R=$work/bundle/rootfs
[ ! -e "$R/gone" ] || fail "/gone survived its whiteout"
[ ! -e "$R/bin/ls" ] && [ ! -L "$R/bin/ls" ] || fail "/bin/ls survived its whiteout"
[ -x "$R/bin/sh" ] || fail "/bin/sh is missing"
[ "$(ls -A "$R/o" | tr '\n' ' ')" = "new z1 z2 " ] || fail "/o should hold new z1 z2, has: $(ls -A "$R/o" | tr '\n' ' ')"
# a link made in one layer stays a link; a link to a lower layer's file is a copy (as in Docker)
[ "$(stat -c %i "$R/o/z1")" = "$(stat -c %i "$R/o/z2")" ] || fail "/o/z2 is not a hard link of /o/z1"
[ "$(cat "$R/keep/y")" = x ] || fail "/keep/y lost its content"

# the last layer, entry by entry
python3 - "$KILN_ROOT" <<'EOF' || exit 1
import gzip, hashlib, io, json, sys, tarfile
root = sys.argv[1]
blob = lambda d: open("%s/blobs/sha256/%s" % (root, d.split(":")[1]), "rb").read()
idx = json.load(open(root + "/index.json"))
man = [m for m in idx["manifests"]
       if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "docker.io/library/wh:1"][0]
m = json.loads(blob(man["digest"]))
cfg = json.loads(blob(m["config"]["digest"]))
if len(m["layers"]) != 3:
    sys.exit("FAIL: expected 3 layers, got %d" % len(m["layers"]))
for i, l in enumerate(m["layers"]):
    raw = gzip.decompress(blob(l["digest"]))
    if "sha256:" + hashlib.sha256(raw).hexdigest() != cfg["rootfs"]["diff_ids"][i]:
        sys.exit("FAIL: layer %d diff_id" % i)
raw = gzip.decompress(blob(m["layers"][2]["digest"]))
names = [t.name.rstrip("/") for t in tarfile.open(fileobj=io.BytesIO(raw))]
for want in (".wh.gone", "bin/.wh.ls", "o/new", "keep/y", "o/z1", "o/z2"):
    if want not in names:
        sys.exit("FAIL: %s not in the last layer: %s" % (want, names))
if "o/.wh..wh..opq" not in names and "o/.wh.sub" not in names:
    sys.exit("FAIL: the replaced /o has neither an opaque marker nor a whiteout for sub: %s" % names)
seen = set()
for n in names:
    parent = n.rsplit("/", 1)[0] if "/" in n else ""
    if parent and parent not in seen:
        sys.exit("FAIL: %s comes before its parent directory header" % n)
    seen.add(n)
key = lambda n: [c.encode() for c in n.split("/")]
opq = lambda n: n.endswith("/.wh..wh..opq")
plain = [n for n in names if not opq(n)]
if plain != sorted(plain, key=key):
    sys.exit("FAIL: entries are not sorted: %s" % names)
print("last layer:", names)
EOF
echo ok
