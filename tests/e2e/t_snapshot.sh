#!/bin/bash
# e2e: the same Dockerfile built on every storage driver (btrfs on a loop
# device made here, overlay, vfs) gives the same image: identical layer
# diff_ids and image id.  The layers carry plain whiteouts (never an opaque
# marker), containers see the right trees, and nothing stays mounted or
# prepared afterwards.
set -eu
: "${KILN:?KILN must point to the kiln binary}"
: "${KILN_SRC:?KILN_SRC must point to the source tree}"
[ "$(id -u)" = 0 ] || { echo "t_snapshot: needs root (mounts)"; exit 77; }

W=$(mktemp -d /tmp/kiln-e2e-snap.XXXXXX)
BT=$W/btrfs
cleanup() {
	set +e
	grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
	losetup -j "$W/btrfs.img" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l"; done
	rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

drivers="overlay vfs"
if command -v mkfs.btrfs >/dev/null && truncate -s 400M "$W/btrfs.img" &&
	mkfs.btrfs -q -f "$W/btrfs.img" >/dev/null 2>&1 && mkdir -p "$BT" &&
	mount -t btrfs -o loop "$W/btrfs.img" "$BT"; then
	drivers="btrfs $drivers"
else
	echo "note: no loop-mounted btrfs here, comparing overlay and vfs only"
fi

mkdir -p "$W/ctx/files/conf"
echo "from the context" > "$W/ctx/files/hello.txt"
echo "k=v" > "$W/ctx/files/conf/app.conf"
cat > "$W/ctx/Dockerfile" <<'EOF'
FROM busybox:latest
COPY files/ /app/
RUN set -e; mkdir -p /app/data/sub /opq/y; echo hello > /app/data/a; echo b > /app/data/b; \
    echo c > /app/data/sub/c; ln -s a /app/data/link; ln /app/data/a /app/data/hard; \
    echo x > /opq/x; echo z > /opq/y/z; echo f > /f2d; mkdir /d2f; echo i > /d2f/inner
RUN set -e; rm /app/data/b; chmod 0700 /app/data; rm -rf /opq; mkdir /opq; echo new > /opq/x; \
    rm /f2d; mkdir /f2d; echo in > /f2d/in; rm -rf /d2f; echo file > /d2f; \
    mv /app/data/sub /app/sub2; echo more >> /app/data/a; rm -rf /etc/network 2>/dev/null || true; \
    touch /app/conf/app.conf.new
RUN true
COPY files/hello.txt /app/data/
EOF

export SOURCE_DATE_EPOCH=1700000000
declare -A ID LAYERS
failures=""
for d in $drivers; do
	root=$W/root-$d
	[ "$d" = btrfs ] && root=$BT/root
	export KILN_ROOT=$root
	"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
	out=$(timeout 300 "$KILN" --storage-driver "$d" build -q -t snaptest:1 "$W/ctx") ||
		fail "$d: build failed: $out"
	ID[$d]=$(echo "$out" | tail -n 1)
	LAYERS[$d]=$("$KILN" inspect snaptest:1 | jq -c '.[0].RootFS.Layers')
	echo "$d: ${ID[$d]} $(echo "${LAYERS[$d]}" | jq length) layers"
	[ -d "$root/snapshots/$d/snaps" ] || fail "$d: no $d snapshots under $root/snapshots"

	# what a container sees (all drivers are checked before failing)
	got=$(timeout 60 "$KILN" --storage-driver "$d" run --rm snaptest:1 sh -c \
		'cat /opq/x; ls /opq | tr "\n" " "; cat /d2f; ls /f2d; ls /app/data | tr "\n" " "; ls /app/sub2; stat -c %a /app/data' 2>&1) ||
		got="kiln run failed: $got"
	want=$(printf 'new\nx file\nin\na hard hello.txt link c\n700')
	if [ "$got" != "$want" ]; then
		echo "FAIL: $d: container view:
$got
--- want
$want" >&2
		failures="$failures $d"
	fi

	# nothing left prepared or mounted by the build or the run
	left=$(ls "$root/snapshots/$d/active")
	[ -z "$left" ] || fail "$d: snapshots left prepared: $left"
	if grep -q " $root/snapshots" /proc/self/mounts; then
		fail "$d: still mounted: $(grep " $root/snapshots" /proc/self/mounts)"
	fi
done

ref=""
for d in $drivers; do
	if [ -z "$ref" ]; then ref=$d; continue; fi
	[ "${LAYERS[$d]}" = "${LAYERS[$ref]}" ] || fail "layers differ: $ref ${LAYERS[$ref]} vs $d ${LAYERS[$d]}"
	[ "${ID[$d]}" = "${ID[$ref]}" ] || fail "image ids differ: $ref ${ID[$ref]} vs $d ${ID[$d]}"
done
echo "identical on: $drivers"

# The second RUN's layer: explicit whiteouts, no opaque marker, no overlay xattrs.
root=$W/root-vfs
man=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] | test("snaptest")) | .digest' \
	"$root/index.json" | head -n 1)
[ -n "$man" ] || fail "snaptest manifest not in $root/index.json"
layer=$(jq -r '.layers[3].digest' "$root/blobs/sha256/${man#sha256:}")
list=$(tar -tzf "$root/blobs/sha256/${layer#sha256:}" 2>/dev/null || tar -tf "$root/blobs/sha256/${layer#sha256:}")
for want in app/data/.wh.b opq/.wh.y app/data/.wh.sub app/sub2/c f2d/in d2f; do
	echo "$list" | sed 's,^\./,,; s,/$,,' | grep -qx "$want" || fail "RUN layer lacks $want:
$list"
done
if echo "$list" | grep -q '\.wh\.\.wh\.\.opq'; then fail "RUN layer has an opaque whiteout"; fi
[ -z "$failures" ] || fail "containers saw the wrong tree on:$failures"
echo ok
