#!/bin/bash
# Layers through the real tools.  `kiln import` applies a tar with the safe
# extractor and writes it again with the layer writer; umoci (which checks
# diff_ids) must unpack the result to the same tree (modes, owners, hard links,
# symlinks, xattrs incl. security.capability, UTF-8 and long names), skopeo
# must copy it, oci-image-tool must validate it, and the same input must give
# the same image id twice.  Hostile tars given to `kiln import` must not write
# outside the store.
set -eu
KILN=${KILN:?set KILN to the kiln binary}
for t in umoci skopeo oci-image-tool python3 tar sha256sum; do
	command -v "$t" >/dev/null 2>&1 || { echo "skip: $t is not installed"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "skip: needs root (owners, devices, security.capability)"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$KILN_ROOT" "$work"' EXIT INT TERM
export SOURCE_DATE_EPOCH=1700000000

fail() { echo "FAIL: $*" >&2; exit 1; }

# ---- a rootfs with every kind of entry
R=$work/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/var/empty"
printf '#!/bin/sh\necho hi\n' >"$R/bin/tool"; chmod 0755 "$R/bin/tool"
printf 'suid\n' >"$R/bin/suid"; chmod 4755 "$R/bin/suid"
printf 'shared\n' >"$R/bin/a"; ln "$R/bin/a" "$R/bin/b"; ln "$R/bin/a" "$R/etc/c"
ln -s tool "$R/bin/sym"; ln -s /etc/hosts "$R/bin/abs"
mkfifo -m 0640 "$R/bin/fifo"
printf 'owned\n' >"$R/etc/owned"; chown 1234:5678 "$R/etc/owned"
printf 'utf8\n' >"$R/etc/$(printf 'caf\303\251')"
long=$(printf 'n%.0s' $(seq 1 200))
mkdir -p "$R/deep/$long/$long"; printf 'deep\n' >"$R/deep/$long/$long/file"
printf 'caps\n' >"$R/bin/caps"
python3 - "$R/bin/caps" <<'EOF'
import os, sys
os.setxattr(sys.argv[1], "user.kiln", b"hello")
# VFS_CAP_REVISION_2, cap_net_bind_service in permitted, effective bit set
os.setxattr(sys.argv[1], "security.capability",
            bytes([1, 0, 0, 2, 0, 4, 0, 0] + [0] * 12))
EOF
chmod 0700 "$R/var/empty"
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tar --xattrs --xattrs-include='*' --numeric-owner -C "$R" -cf "$work/rootfs.tar" .

"$KILN" import "$work/rootfs.tar" layertest:1 >"$work/id1"
"$KILN" import "$work/rootfs.tar" layertest:2 >"$work/id2"
cmp -s "$work/id1" "$work/id2" || fail "the same tar gave two image ids: $(cat "$work/id1") $(cat "$work/id2")"

# ---- umoci unpacks it (diff_ids verified) to the same tree
umoci unpack --image "$KILN_ROOT:docker.io/library/layertest:1" "$work/bundle" >/dev/null \
	|| fail "umoci unpack"
U=$work/bundle/rootfs
python3 - "$R" "$U" <<'EOF' || exit 1
import os, stat, sys
src, dst = sys.argv[1], sys.argv[2]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out
a, b = walk(src), walk(dst)
if set(a) != set(b):
    sys.exit("FAIL: path sets differ: only in source %s, only in layer %s" %
             (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]))
for rel, sa in a.items():
    sb = b[rel]
    for f in ("st_mode", "st_uid", "st_gid"):
        if getattr(sa, f) != getattr(sb, f):
            sys.exit("FAIL: %s: %s %o != %o" % (rel, f, getattr(sa, f), getattr(sb, f)))
    if int(sa.st_mtime) != int(sb.st_mtime):
        sys.exit("FAIL: %s: mtime %d != %d" % (rel, sa.st_mtime, sb.st_mtime))
    pa, pb = os.path.join(src, rel), os.path.join(dst, rel)
    if stat.S_ISREG(sa.st_mode) and open(pa, "rb").read() != open(pb, "rb").read():
        sys.exit("FAIL: %s: content differs" % rel)
    if stat.S_ISLNK(sa.st_mode) and os.readlink(pa) != os.readlink(pb):
        sys.exit("FAIL: %s: symlink target differs" % rel)
ino = {os.lstat(os.path.join(dst, p)).st_ino for p in ("bin/a", "bin/b", "etc/c")}
if len(ino) != 1 or os.lstat(os.path.join(dst, "bin/a")).st_nlink != 3:
    sys.exit("FAIL: hard links were not kept")
caps = os.path.join(dst, "bin/caps")
if os.getxattr(caps, "user.kiln") != b"hello":
    sys.exit("FAIL: user xattr lost")
if os.getxattr(caps, "security.capability")[:8] != bytes([1, 0, 0, 2, 0, 4, 0, 0]):
    sys.exit("FAIL: file capability lost")
print("umoci tree matches")
EOF

# ---- skopeo copies it, oci-image-tool validates the layout
skopeo copy --quiet "oci:$KILN_ROOT:docker.io/library/layertest:1" "oci:$work/copy:t" >/dev/null \
	|| fail "skopeo copy"
oci-image-tool validate --type image --ref name=docker.io/library/layertest:1 "$KILN_ROOT" >/dev/null \
	|| fail "oci-image-tool validate"

# every layer blob: its digest is its sha256, and gunzip | sha256 is a diff_id of the config
manifest=$(python3 - "$KILN_ROOT" <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "docker.io/library/layertest:1":
        print(m["digest"].split(":")[1])
EOF
)
[ -n "$manifest" ] || fail "layertest:1 not in index.json"
python3 - "$KILN_ROOT" "$manifest" <<'EOF' || exit 1
import gzip, hashlib, json, sys
root, man = sys.argv[1], sys.argv[2]
blob = lambda d: open("%s/blobs/sha256/%s" % (root, d.split(":")[1]), "rb").read()
m = json.loads(blob("sha256:" + man))
cfg = json.loads(blob(m["config"]["digest"]))
for i, l in enumerate(m["layers"]):
    data = blob(l["digest"])
    if "sha256:" + hashlib.sha256(data).hexdigest() != l["digest"] or len(data) != l["size"]:
        sys.exit("FAIL: layer %d digest/size mismatch" % i)
    raw = gzip.decompress(data) if l["mediaType"].endswith("+gzip") else data
    if "sha256:" + hashlib.sha256(raw).hexdigest() != cfg["rootfs"]["diff_ids"][i]:
        sys.exit("FAIL: layer %d diff_id mismatch" % i)
    if data[:2] == b"\x1f\x8b" and data[4:8] != b"\0\0\0\0":
        sys.exit("FAIL: gzip header carries a timestamp")
    if len(raw) % 512 or raw[-1024:] != b"\0" * 1024:
        sys.exit("FAIL: tar does not end with two zero blocks")
print("digests ok")
EOF

# ---- hostile tars: nothing lands outside the store
canary=$work/canary
echo canary >"$canary"
python3 - "$work" "$canary" <<'EOF'
import io, sys, tarfile
work, canary = sys.argv[1], sys.argv[2]
def mk(name, ents):
    with tarfile.open("%s/%s" % (work, name), "w", format=tarfile.PAX_FORMAT) as t:
        for kind, n, arg in ents:
            ti = tarfile.TarInfo(n)
            data = None
            if kind == "f":
                data = arg.encode(); ti.size = len(data); data = io.BytesIO(data)
            elif kind == "l":
                ti.type = tarfile.SYMTYPE; ti.linkname = arg
            elif kind == "h":
                ti.type = tarfile.LNKTYPE; ti.linkname = arg
            elif kind == "d":
                ti.type = tarfile.DIRTYPE; ti.mode = 0o700
            t.addfile(ti, data)
mk("dotdot.tar", [("f", "../../../../../../.." + canary, "evil")])
mk("symlink.tar", [("l", "a", work), ("f", "a/canary", "evil"), ("l", "b", "../../../../../../.."),
                   ("f", "b" + canary, "evil")])
mk("hardlink.tar", [("h", "h", canary)])
mk("dirswap.tar", [("d", "d", None), ("l", "d", work), ("d", "d", None), ("f", "d/canary", "evil")])
EOF
for t in dotdot symlink hardlink dirswap; do
	"$KILN" import "$work/$t.tar" "evil:$t" >/dev/null 2>&1 || true
	[ "$(cat "$canary")" = canary ] || fail "$t.tar changed the canary"
	[ "$(stat -c %h "$canary")" = 1 ] || fail "$t.tar hard-linked the canary"
	[ "$(stat -c %a "$work")" = 700 ] || fail "$t.tar chmodded the work directory"
	[ ! -e "$work/a" ] && [ ! -e "$work/d" ] || fail "$t.tar created files outside"
done
echo "ok"
