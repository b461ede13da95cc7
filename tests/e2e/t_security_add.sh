#!/bin/bash
# security.md item 14: hostile tars through the real paths — `ADD evil.tar /`
# in a build (local archives are extracted) and `kiln import` + `kiln run`
# (the layer is extracted into a snapshot). One trick per archive, so a
# refusal of one cannot hide another. Either the archive is refused or it is
# extracted inside the rootfs; the host canary directory never changes.
#   ../ and absolute names, a symlink to a host dir then a file through it
#   (absolute and relative), hardlinks to host files (absolute and ../),
#   a directory replaced by a symlink (the libarchive fixup trick, CVE-2021-31566)
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
tag=$$-$RANDOM
C=/tmp/kiln-add-canary-$tag
cleanup() { rm -rf "$KILN_ROOT" "$work" "$C" /tmp/kiln-add-escape-"$tag"*; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
mkdir -p "$C/sub"
echo secret > "$C/secret"
chmod 0700 "$C/sub"
chmod 0600 "$C/secret"
state() { (cd "$C" && find . -printf '%p %m %n %s %u\n' | sort; cat secret); }
before=$(state)

ctx=$work/ctx
mkdir -p "$ctx"
python3 - "$ctx" "$C" "$tag" <<'EOF'
import io, sys, tarfile
ctx, canary, tag = sys.argv[1], sys.argv[2], sys.argv[3]
up = "../" * 12

def reg(name, data=b"pwned\n", mode=0o644):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = mode
    return ti, io.BytesIO(data)
def sym(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target
    return ti, None
def hard(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.LNKTYPE; ti.linkname = target
    return ti, None
def dir_(name, mode=0o777):
    ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = mode
    return ti, None

cases = {
    "dotdot":   [reg("ok.txt"), reg(up + "tmp/kiln-add-escape-" + tag)],
    "absolute": [reg("ok.txt"), reg("/tmp/kiln-add-escape-" + tag + "-abs")],
    "symabs":   [reg("ok.txt"), sym("a", canary), reg("a/pwned")],
    "symrel":   [reg("ok.txt"), sym("r", up + canary.lstrip("/")), reg("r/pwned")],
    "symdeep":  [reg("ok.txt"), dir_("x"), sym("x/y", canary + "/sub"), reg("x/y/pwned")],
    "hardabs":  [reg("ok.txt"), hard("h", canary + "/secret")],
    "hardrel":  [reg("ok.txt"), hard("h", up + canary.lstrip("/") + "/secret")],
    "hardsym":  [reg("ok.txt"), sym("s", canary), hard("h", "s/secret")],
    "fixup":    [reg("ok.txt"), dir_("d", 0o777), sym("d", canary + "/sub"), reg("d/pwned")],
    # targets that exist both in the image and on the host: the entry must
    # land in the image (checked below), never on the host
    "symtmp":   [reg("ok.txt"), dir_("tmp/", 0o1777), sym("a", "/tmp"), reg("a/kiln-add-escape-" + tag + "-sym")],
    "hardetc":  [reg("ok.txt"), hard("h", "/etc/hostname")],
    "fixup2":   [reg("ok.txt"), dir_("e/", 0o777), reg("e/f"), sym("e", canary)],
}
for name, entries in cases.items():
    with tarfile.open(f"{ctx}/{name}.tar", "w", format=tarfile.GNU_FORMAT) as t:
        for ti, f in entries:
            t.addfile(ti, f)
EOF

checkhost() { # checkhost CASE HOW
	[ "$(state)" = "$before" ] || fail "$2 $1: the host canary changed:
$(state)"
	if ls /tmp/kiln-add-escape-"$tag"* >/dev/null 2>&1; then fail "$2 $1: a file escaped to the host /tmp"; fi
	true
}
extracted=0
hostname_links=$(stat -c %h /etc/hostname)
all="dotdot absolute symabs symrel symdeep hardabs hardrel hardsym fixup fixup2 symtmp hardetc"
for c in $all; do
	printf 'FROM busybox\nADD %s.tar /\nRUN cat /ok.txt; if [ -e /h ]; then cat /h > /h-content; fi; true\n' "$c" > "$ctx/Dockerfile"
	if "$KILN" build --progress plain -t "sec-add-$c" "$ctx" > "$work/log" 2>&1; then
		extracted=$((extracted + 1))
		[ "$("$KILN" run --rm --network none "sec-add-$c" cat /ok.txt)" = pwned ] || fail "ADD $c: ok.txt missing"
		"$KILN" run --rm --network none "sec-add-$c" sh -c 'cat /h-content 2>/dev/null; true' | grep -q secret &&
			fail "ADD $c: the image got the content of the host file through a hardlink"
	fi
	checkhost "$c" "ADD"
	[ "$(stat -c %h /etc/hostname)" = "$hostname_links" ] || fail "ADD $c: a hardlink to the host /etc/hostname was made"
	# the same archive as an image layer (extracted when the container starts)
	if "$KILN" import --compression none "$ctx/$c.tar" "sec-imp-$c" >/dev/null 2>&1; then
		# the import has no shell to run: a build FROM it prepares its snapshot
		printf 'FROM sec-imp-%s\n' "$c" > "$ctx/Dockerfile"
		"$KILN" build --progress plain -t "sec-imp2-$c" "$ctx" >/dev/null 2>&1 || true
	fi
	checkhost "$c" "import"
done
# the two whose targets exist inside the image are extracted inside it
"$KILN" run --rm --network none sec-add-symtmp test -f "/tmp/kiln-add-escape-$tag-sym" ||
	fail "ADD symtmp: the entry through a -> /tmp did not land in the image's /tmp"
[ "$("$KILN" run --rm --network none sec-add-hardetc stat -c %h /h)" = 2 ] ||
	fail "ADD hardetc: h is not a hardlink to the image's /etc/hostname"
# kiln load: an archive's manifest.json / index.json may only name entries of
# the archive itself (never ../ or absolute host paths, never through a symlink)
# (the host-side targets are a valid layer and config, so following such a
# name would make the load succeed)
python3 - "$work/load" "$work/hostside" <<'PYEOF'
import hashlib, io, json, os, sys, tarfile
out, hs = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
os.makedirs(hs, exist_ok=True)
def add(t, name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
lb = io.BytesIO()
with tarfile.open(fileobj=lb, mode="w") as lt:
    add(lt, "ok.txt", b"hi\n")
layer = lb.getvalue()
diff = "sha256:" + hashlib.sha256(layer).hexdigest()
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
up = "../" * 12
open(hs + "/l.tar", "wb").write(layer)
open(hs + "/cfg.json", "wb").write(cfg)
docker = {
    "layerdotdot": {"Config": "cfg.json", "Layers": [up + hs.lstrip("/") + "/l.tar"]},
    "layerabs": {"Config": "cfg.json", "Layers": [hs + "/l.tar"]},
    "cfgdotdot": {"Config": up + hs.lstrip("/") + "/cfg.json", "Layers": ["l.tar"]},
    "cfgabs": {"Config": hs + "/cfg.json", "Layers": ["l.tar"]},
}
for n, m in docker.items():
    m["RepoTags"] = ["sec-load-%s:latest" % n]
    with tarfile.open(f"{out}/{n}.tar", "w") as t:
        add(t, "manifest.json", json.dumps([m]).encode())
        add(t, "cfg.json", cfg)
        add(t, "l.tar", layer)
with tarfile.open(f"{out}/cfgsymlink.tar", "w") as t:
    add(t, "manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["sec-load-cfgsymlink:latest"], "Layers": ["l.tar"]}]).encode())
    ti = tarfile.TarInfo("cfg.json"); ti.type = tarfile.SYMTYPE; ti.linkname = hs + "/cfg.json"; t.addfile(ti)
    add(t, "l.tar", layer)
# OCI layout whose index names a digest that is a path
with tarfile.open(f"{out}/ocidigest.tar", "w") as t:
    add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add(t, "index.json", json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + up + hs.lstrip("/") + "/cfg.json", "size": len(cfg),
        "annotations": {"org.opencontainers.image.ref.name": "sec-load-ocidigest:latest"}}]}).encode())
PYEOF
# control: the same archive with honest names loads
python3 - "$work/load" <<'PYEOF'
import io, json, sys, tarfile
out = sys.argv[1]
with tarfile.open(f"{out}/layerabs.tar") as src, tarfile.open(f"{out}/honest.tar", "w") as t:
    for m in src.getmembers():
        data = src.extractfile(m).read()
        if m.name == "manifest.json":
            data = json.dumps([{"Config": "cfg.json", "RepoTags": ["sec-load-honest:latest"], "Layers": ["l.tar"]}]).encode()
            m.size = len(data)
        t.addfile(m, io.BytesIO(data))
PYEOF
"$KILN" load -i "$work/load/honest.tar" > "$work/log" 2>&1 || { cat "$work/log"; fail "kiln load of the honest control archive"; }
"$KILN" image inspect sec-load-honest >/dev/null || fail "the honest control archive did not create its image"
for c in layerdotdot layerabs cfgdotdot cfgabs cfgsymlink ocidigest; do
	"$KILN" load -i "$work/load/$c.tar" > "$work/log" 2>&1 && fail "kiln load accepted the hostile archive $c"
	"$KILN" image inspect "sec-load-$c" >/dev/null 2>&1 && fail "kiln load $c created an image"
	checkhost "$c" "load"
done
# not everything may be refused: then this test would prove nothing
[ $extracted -ge 4 ] || fail "only $extracted of the archives were extracted at all ($(tail -3 "$work/log"))"
echo "security add ok ($extracted of $(wc -w <<<"$all") archives extracted inside, the rest refused)"
