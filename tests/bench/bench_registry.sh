#!/bin/bash
# Registry transfer speed: pull and push of a 500 MiB image of 10 layers
# (50 MiB of random data each, uncompressed tar layers) between a loopback
# docker-registry and kiln, against `skopeo copy` doing the same transfer
# (registry → fresh OCI layout, and OCI layout → a fresh repository).
# Median of $RUNS (default 3) runs each, in one session.
# Usage: tests/bench/bench_registry.sh KILN_BINARY
# BENCH_WRITE=1 also replaces the "Registry" section of tests/bench/RESULTS.md.
set -eu
KILN=${1:-${KILN:?usage: bench_registry.sh KILN_BINARY}}
KILN=$(readlink -f "$KILN")
RUNS=${RUNS:-3}
LAYERS=${LAYERS:-10}
LAYER_MIB=${LAYER_MIB:-50}
here=$(cd "$(dirname "$0")" && pwd)
for t in docker-registry skopeo python3 jq; do
	command -v $t >/dev/null || { echo "bench_registry: $t is not installed"; exit 77; }
done
. "$here/../e2e/lib/registry.sh"

W=$(mktemp -d)
export KILN_ROOT=$W/seed
trap 'reg_cleanup; rm -rf "$W"' EXIT
reg_start "$W/reg"

# An OCI layout with LAYERS uncompressed layers of random bytes.
python3 - "$W/layout" "$LAYERS" "$LAYER_MIB" <<'PY'
import hashlib, io, json, os, sys, tarfile
root, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root + "/blobs/sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open("%s/blobs/sha256/%s" % (root, d), "wb").write(data)
    return "sha256:" + d, len(data)
layers, diff_ids = [], []
for i in range(n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        payload = os.urandom(mib << 20)
        ti = tarfile.TarInfo("layer%02d.bin" % i)
        ti.size, ti.mtime, ti.mode = len(payload), 1700000000, 0o644
        t.addfile(ti, io.BytesIO(payload))
    d, s = put(buf.getvalue())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
    diff_ids.append(d)
cfg = {"architecture": "amd64", "os": "linux", "config": {},
       "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
cd, cs = put(json.dumps(cfg, sort_keys=True).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
       "layers": layers}
md, ms = put(json.dumps(man).encode())
json.dump({"imageLayoutVersion": "1.0.0"}, open(root + "/oci-layout", "w"))
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": man["mediaType"], "digest": md, "size": ms,
          "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, open(root + "/index.json", "w"))
PY
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:bench" "docker://$REG_ADDR/bench/src:1"
# the image in a kiln store, to push from (both tools push from this layout)
"$KILN" pull -q "$REG_ADDR/bench/src:1" >/dev/null
REF="$REG_ADDR/bench/src:1"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_ms CMD... → milliseconds of one run
time_ms() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1 || { echo "bench_registry: failed: $*" >&2; return 1; }
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}
kiln_pull() { rm -rf "$W/kp"; KILN_ROOT=$W/kp "$KILN" pull -q "$REF"; }
skopeo_pull() { rm -rf "$W/sp"; skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$W/sp:bench"; }
kiln_push() { "$KILN" push -q "$REF" "$REG_ADDR/bench/dst:1"; }
skopeo_push() { skopeo copy -q --dest-tls-verify=false "oci:$KILN_ROOT:$REF" "docker://$REG_ADDR/bench/dst:1"; }
# Before each push: an empty registry on the same port (not timed), so that
# every blob is really uploaded (no mounts, no "already exists").
fresh_registry() {
	local port=$REG_PORT
	reg_stop
	rm -rf "$W/reg"
	REG_PORT=$port reg_start "$W/reg"
}
declare -A RES
for op in kiln_pull skopeo_pull kiln_push skopeo_push; do
	ts=()
	for i in $(seq "$RUNS"); do
		case $op in *push) fresh_registry;; esac
		ts+=("$(time_ms $op)")
	done
	RES[$op]=$(printf '%s\n' "${ts[@]}" | median)
	echo "$op: ${ts[*]} ms (median ${RES[$op]})"
done
MIB=$((LAYERS * LAYER_MIB))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
rate() { awk -v m="$MIB" -v t="$1" 'BEGIN {printf "%.0f", m / (t / 1000)}'; }
table=$(cat <<EOF
## Registry

\`tests/bench/bench_registry.sh\`: a ${MIB} MiB image of ${LAYERS} uncompressed layers (random data) between a
loopback \`docker-registry\` (distribution 2.8, filesystem storage) and the client; median of ${RUNS} runs;
pull = registry → empty store (kiln) / empty OCI layout (\`skopeo copy\`), push = store → an empty registry.
Ratio = skopeo time / kiln time (> 1: kiln is faster). $(date -u +%Y-%m-%d), $(nproc) vCPU, load $(cut -d" " -f1-3 /proc/loadavg).

| operation | kiln | skopeo copy | ratio |
| --- | --- | --- | --- |
| pull | ${RES[kiln_pull]} ms ($(rate "${RES[kiln_pull]}") MiB/s) | ${RES[skopeo_pull]} ms ($(rate "${RES[skopeo_pull]}") MiB/s) | $(ratio "${RES[skopeo_pull]}" "${RES[kiln_pull]}") |
| push | ${RES[kiln_push]} ms ($(rate "${RES[kiln_push]}") MiB/s) | ${RES[skopeo_push]} ms ($(rate "${RES[skopeo_push]}") MiB/s) | $(ratio "${RES[skopeo_push]}" "${RES[kiln_push]}") |
EOF
)
echo
echo "$table"
if [ -n "${BENCH_WRITE:-}" ]; then
	f=$here/RESULTS.md
	[ -f "$f" ] || printf '# Benchmarks\n' >"$f"
	python3 - "$f" "$table" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].strip() + "\n"
text = open(path).read()
m = re.search(r"^## Registry\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
if m:
    text = text[:m.start()] + section + ("\n" if text[m.end():] else "") + text[m.end():]
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
fi
