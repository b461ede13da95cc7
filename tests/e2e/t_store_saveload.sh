#!/bin/bash
# save/load/import: the saved tar is an OCI layout (oci-image-tool, umoci) with
# docker's manifest.json (podman load + run); save is deterministic; load round
# trips ids and verifies digests; docker-archive input (from skopeo) loads;
# import of the same tarball (any compression) gives the same id in two roots.
set -eu
: "${KILN:?}" "${KILN_SRC:?}"
. "$KILN_SRC/tests/e2e/lib/cgroup.sh"
. "$KILN_SRC/tests/e2e/lib/dockerd.sh"
work=$(mktemp -d)
export KILN_ROOT=$work/a
P=$work/podman
cleanup() {
	if [ -d "$P" ]; then
		podman --root "$P/root" --runroot "$P/run" --storage-driver vfs rm -a -f >/dev/null 2>&1 || true
		grep -o " $P/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	dockerd_stop
	cg_parent_cleanup
	rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
REF=docker.io/library/busybox:latest

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
id=$("$KILN" inspect -f '{{.Id}}' busybox)

# save: one tar, OCI layout + manifest.json
"$KILN" save -o "$work/bb.tar" busybox
tar -tf "$work/bb.tar" >"$work/list"
for f in oci-layout index.json manifest.json; do grep -qx "$f" "$work/list" || fail "save lacks $f"; done
mkdir "$work/x" && tar -xf "$work/bb.tar" -C "$work/x"
[ "$(jq -r '.[0].RepoTags[0]' "$work/x/manifest.json")" = busybox:latest ] || fail "manifest.json RepoTags"
[ "$(jq -r '.[0].Config' "$work/x/manifest.json")" = "blobs/sha256/${id:7}" ] || fail "manifest.json Config"
[ -f "$work/x/$(jq -r '.[0].Layers[0]' "$work/x/manifest.json")" ] || fail "manifest.json layer path"
oci-image-tool validate --type image --ref "name=$REF" "$work/x" || fail "oci-image-tool validate of the saved tar"
umoci unpack --image "$work/x:$REF" "$work/b1" >/dev/null || fail "umoci unpack of the saved tar"
[ -x "$work/b1/rootfs/bin/busybox" ] || fail "unpacked rootfs lacks busybox"
# the same tar read the docker way (manifest.json), as docker load does
skopeo inspect "docker-archive:$work/bb.tar" >/dev/null || fail "skopeo cannot read the tar as a docker-archive"
skopeo copy -q "docker-archive:$work/bb.tar" "oci:$work/viadocker:x" || fail "skopeo copy from docker-archive"
umoci unpack --image "$work/viadocker:x" "$work/b0" >/dev/null || fail "umoci unpack of the docker-archive copy"
skopeo inspect "oci-archive:$work/bb.tar:$REF" >/dev/null || fail "skopeo cannot read the tar as an oci-archive"
# deterministic
"$KILN" save -o "$work/bb2.tar" busybox
cmp -s "$work/bb.tar" "$work/bb2.tar" || fail "two saves differ"
# one name given twice is saved once
"$KILN" save -o "$work/dup.tar" busybox busybox:latest
[ "$(tar -xOf "$work/dup.tar" manifest.json | jq -c '.[0].RepoTags')" = '["busybox:latest"]' ] || fail "duplicate names in manifest.json"
[ "$(tar -xOf "$work/dup.tar" index.json | jq '.manifests | length')" = 1 ] || fail "duplicate index.json entries"
# oci-dir
"$KILN" save --format oci-dir -o "$work/od" busybox
umoci unpack --image "$work/od:$REF" "$work/b2" >/dev/null || fail "umoci unpack of the oci-dir"
# stdout
"$KILN" save busybox >"$work/bb3.tar"
cmp -s "$work/bb.tar" "$work/bb3.tar" || fail "save to stdout differs"

# load round trip into another root
out=$(KILN_ROOT=$work/b "$KILN" load -i "$work/bb.tar")
[ "$out" = "Loaded image: busybox:latest" ] || fail "load said: $out"
[ "$(KILN_ROOT=$work/b "$KILN" inspect -f '{{.Id}}' busybox)" = "$id" ] || fail "loaded id differs"
KILN_ROOT=$work/b "$KILN" fsck >/dev/null || fail "fsck after load"
# from stdin, compressed
gzip -c "$work/bb.tar" >"$work/bb.tar.gz"
KILN_ROOT=$work/c "$KILN" load <"$work/bb.tar.gz" | grep -q "Loaded image: busybox:latest" || fail "load of a gz archive from stdin"

# a tampered blob is refused and tags nothing
cp -r "$work/x" "$work/t"
cfg=$work/t/blobs/sha256/${id:7}
chmod u+w "$cfg"
sed -i 's/"sh"/"id"/' "$cfg"
tar -C "$work/t" -cf "$work/tampered.tar" .
set +e
KILN_ROOT=$work/d "$KILN" load -i "$work/tampered.tar" 2>"$work/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "load of a tampered archive: exit $rc"
grep -q "digest mismatch" "$work/err" || fail "tampered load error: $(cat "$work/err")"
[ -z "$(KILN_ROOT=$work/d "$KILN" images -q)" ] || fail "a tampered load tagged something"

# docker-archive input (written by skopeo)
skopeo copy -q "oci:$KILN_ROOT:$REF" "docker-archive:$work/docker.tar:busybox:dock" || fail "skopeo copy to docker-archive"
KILN_ROOT=$work/b "$KILN" load -i "$work/docker.tar" | grep -q "Loaded image: busybox:dock" || fail "load of a docker-archive"
[ "$(KILN_ROOT=$work/b "$KILN" inspect -f '{{json .RootFS.Layers}}' busybox:dock)" = \
  "$("$KILN" inspect -f '{{json .RootFS.Layers}}' busybox)" ] || fail "docker-archive diff_ids differ"
KILN_ROOT=$work/b "$KILN" fsck >/dev/null || fail "fsck after docker-archive load"

# import: the same tarball in any compression, in two roots, gives one id
mkdir -p "$work/tree/etc" "$work/tree/bin"
echo hello >"$work/tree/etc/greeting"
cp /bin/busybox "$work/tree/bin/busybox"
ln -s busybox "$work/tree/bin/sh"
ln "$work/tree/etc/greeting" "$work/tree/etc/hardlink"
find "$work/tree" -exec touch -h -d @1700000000 {} +
tar -C "$work/tree" -cf "$work/tree.tar" .
gzip -k "$work/tree.tar"; xz -k "$work/tree.tar"; zstd -q -k "$work/tree.tar"
export SOURCE_DATE_EPOCH=1600000000
i1=$(KILN_ROOT=$work/i1 "$KILN" import -m tree "$work/tree.tar" t:1)
i2=$(KILN_ROOT=$work/i2 "$KILN" import -m tree "$work/tree.tar.gz" t:1)
i3=$(KILN_ROOT=$work/i2 "$KILN" import -m tree "$work/tree.tar.xz" t:2)
i4=$(KILN_ROOT=$work/i2 "$KILN" import -m tree - t:3 <"$work/tree.tar.zst")
[ "$i1" = "$i2" ] && [ "$i2" = "$i3" ] && [ "$i3" = "$i4" ] || fail "import ids differ: $i1 $i2 $i3 $i4"
find "$work/tree" -exec touch -h -d @1800000000 {} +   # newer mtimes: clamped to SOURCE_DATE_EPOCH
tar -C "$work/tree" -cf "$work/tree2.tar" .
i5=$(KILN_ROOT=$work/i1 "$KILN" import -m tree "$work/tree2.tar" t:5)
[ "$i5" = "$i1" ] || fail "mtimes after SOURCE_DATE_EPOCH were not clamped"
i6=$(KILN_ROOT=$work/i1 "$KILN" import -c 'ENTRYPOINT ["/bin/sh"]' -c 'ENV A=1 B=2' -c 'WORKDIR /etc' -c 'EXPOSE 80' -m msg "$work/tree.tar" t:6)
[ "$i6" != "$i1" ] || fail "--change did not change the config"
[ "$(KILN_ROOT=$work/i1 "$KILN" inspect -f '{{json .Config.Entrypoint}} {{json .Config.Env}} {{.Config.WorkingDir}} {{.Comment}}' t:6)" = \
  '["/bin/sh"] ["A=1","B=2"] /etc msg' ] || fail "import --change result"
unset SOURCE_DATE_EPOCH
umoci unpack --image "$work/i1:docker.io/library/t:1" "$work/b3" >/dev/null || fail "umoci unpack of an imported image"
[ "$(cat "$work/b3/rootfs/etc/hardlink")" = hello ] || fail "imported content"
[ "$(stat -c %i "$work/b3/rootfs/etc/hardlink")" = "$(stat -c %i "$work/b3/rootfs/etc/greeting")" ] || fail "hard link lost"

# podman loads the saved archive and runs it
cg_parent_init "kiln_e2e_store_$$" || CG_PARENT=
if command -v podman >/dev/null && command -v runc >/dev/null && [ -n "$CG_PARENT" ]; then
	mkdir -p "$P"
	cat >"$P/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
	export CONTAINERS_CONF=$P/containers.conf
	PD="podman --root $P/root --runroot $P/run --tmpdir $P/tmp --storage-driver vfs"
	$PD load -i "$work/bb.tar" 2>&1 | grep -q "Loaded image: docker.io/library/busybox:latest" || fail "podman load"
	out=$($PD run --rm --runtime runc --cgroup-parent="$CG_PARENT" --network none busybox:latest sh -c 'echo hi; id -u')
	[ "$out" = "$(printf 'hi\n0')" ] || fail "podman run said: $out"
else
	echo "podman/runc missing or no cgroup parent beneath ours: podman part not run"
fi
# docker load of the same tar, and the other way: docker save -> kiln load -> kiln run
# (only where docker.io is installed: a private dockerd, vfs, no bridge/iptables)
if dockerd_start "$work/docker"; then
	$DOCKER load -i "$work/bb.tar" | grep -qx "Loaded image: busybox:latest" || fail "docker load"
	[ "$($DOCKER image inspect -f '{{.Id}}' busybox:latest)" = "$id" ] || fail "docker load gives another image id"
	out=$($DOCKER run --rm --network none busybox:latest sh -c 'echo hi; id -u') || fail "docker run"
	[ "$out" = "$(printf 'hi\n0')" ] || fail "docker run said: $out"
	printf 'FROM busybox:latest\nRUN echo from-docker > /d.txt\nCMD ["cat", "/d.txt"]\n' >"$work/Dockerfile.d"
	DOCKER_BUILDKIT=0 $DOCKER build -q --network none -t dk/made:1 -f "$work/Dockerfile.d" "$work/x" >/dev/null || fail "docker build"
	$DOCKER save -o "$work/dk.tar" dk/made:1 || fail "docker save"
	out=$(KILN_ROOT=$work/c "$KILN" load -i "$work/dk.tar") || fail "kiln load of docker save output"
	[ "$out" = "Loaded image: docker.io/dk/made:1" ] || [ "$out" = "Loaded image: dk/made:1" ] || fail "kiln load of docker's tar said: $out"
	[ "$(KILN_ROOT=$work/c "$KILN" run --rm --network none dk/made:1)" = from-docker ] || fail "kiln run of docker's image"
	dockerd_stop
else
	echo "docker part not run"
fi
echo "store save/load ok"
