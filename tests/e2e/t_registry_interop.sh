#!/bin/bash
# Interop with other registry clients on the same docker-registry:
#   skopeo pushes (Docker schema2 and OCI) → kiln pulls and runs it;
#   kiln pushes → skopeo inspect/copy read it back (oci-image-tool validates,
#   umoci unpacks), podman pulls and runs it with runc.
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
. "$KILN_SRC/tests/e2e/lib/cgroup.sh"
for t in docker-registry skopeo jq; do
	command -v $t >/dev/null || { echo "$t is not installed"; exit 77; }
done
W=$(mktemp -d)
export KILN_ROOT=$W/root
PR=$W/podman
CGP=kiln_e2e_registry_$$
cleanup() {
	if [ -n "${PODMAN:-}" ]; then
		$PODMAN rm -af >/dev/null 2>&1 || true
		$PODMAN rmi -af >/dev/null 2>&1 || true
	fi
	cg_parent_cleanup
	grep -o " $W/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	reg_cleanup
	rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
reg_start "$W/reg"
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
can_run=false
if "$KILN" run --rm --network none busybox:latest true >/dev/null 2>&1; then can_run=true; fi

# --- skopeo → registry → kiln (Docker schema2, then OCI)
for fmt in v2s2 oci; do
	skopeo copy -q --format $fmt --dest-tls-verify=false \
		"oci:$KILN_ROOT:docker.io/library/busybox:latest" "docker://$REG_ADDR/interop/$fmt:1"
	want=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG_ADDR/interop/$fmt:1")
	out=$(KILN_ROOT=$W/r-$fmt "$KILN" pull "$REG_ADDR/interop/$fmt:1")
	echo "$out" | grep -q "^Digest: $want$" || fail "$fmt: kiln pulled another digest than skopeo pushed: $out"
	mt=$(jq -r .mediaType "$W/r-$fmt/blobs/sha256/${want#sha256:}")
	case $fmt in
	v2s2) [ "$mt" = application/vnd.docker.distribution.manifest.v2+json ] || fail "v2s2 media type $mt";;
	oci) [ "$mt" = application/vnd.oci.image.manifest.v1+json ] || fail "oci media type $mt";;
	esac
	KILN_ROOT=$W/r-$fmt "$KILN" fsck >/dev/null || fail "$fmt: fsck"
	if $can_run; then
		got=$(KILN_ROOT=$W/r-$fmt "$KILN" run --rm --network none "$REG_ADDR/interop/$fmt:1" echo "hello from $fmt")
		[ "$got" = "hello from $fmt" ] || fail "$fmt: kiln run printed '$got'"
	else
		KILN_ROOT=$W/r-$fmt "$KILN" image inspect "$REG_ADDR/interop/$fmt:1" >/dev/null || fail "$fmt: inspect"
	fi
done

# --- kiln → registry → skopeo, oci-image-tool, umoci
out=$("$KILN" push busybox:latest "$REG_ADDR/interop/kiln:1")
dg=$(echo "$out" | sed -n 's/^1: digest: \(sha256:[0-9a-f]*\) .*/\1/p')
[ "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG_ADDR/interop/kiln:1")" = "$dg" ] ||
	fail "skopeo sees another digest"
skopeo copy -q --src-tls-verify=false "docker://$REG_ADDR/interop/kiln:1" "oci:$W/oci:kiln"
[ "$(jq -r '.manifests[0].digest' "$W/oci/index.json")" = "$dg" ] || fail "skopeo copy changed the manifest"
if command -v oci-image-tool >/dev/null; then
	oci-image-tool validate --type image "$W/oci" >/dev/null || fail "oci-image-tool rejects what kiln pushed"
fi
if command -v umoci >/dev/null; then
	umoci unpack --image "$W/oci:kiln" "$W/bundle" >/dev/null || fail "umoci unpack"
	[ -x "$W/bundle/rootfs/bin/busybox" ] || fail "umoci unpacked no busybox"
fi

# --- kiln → registry → podman pull + run (runc)
if command -v podman >/dev/null && command -v runc >/dev/null && cg_parent_init "$CGP"; then
	mkdir -p "$PR"
	cat >"$PR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
	export CONTAINERS_CONF=$PR/containers.conf
	PODMAN="podman --root $PR/root --runroot $PR/run --tmpdir $PR/tmp --storage-driver vfs"
	$PODMAN pull -q --tls-verify=false "$REG_ADDR/interop/kiln:1" >/dev/null || fail "podman pull"
	got=$($PODMAN run --rm --runtime runc --network none --cgroup-parent="$CG_PARENT" \
		"$REG_ADDR/interop/kiln:1" echo hello-podman) || fail "podman run"
	[ "$got" = hello-podman ] || fail "podman run printed '$got'"
	pd=$($PODMAN image inspect --format '{{.Digest}}' "$REG_ADDR/interop/kiln:1")
	[ "$pd" = "$dg" ] || fail "podman digest $pd, want $dg"
	$PODMAN rmi -af >/dev/null 2>&1 || true
else
	echo "podman/runc missing or no cgroup parent beneath ours: podman part not run"
fi
echo "registry interop ok"
