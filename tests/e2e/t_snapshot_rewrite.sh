#!/bin/bash
# e2e: a RUN that rewrites a file and leaves its size, mode, owner and mtime
# as they were (groupadd rewriting /etc/group-, post-install scripts on bases
# with clamped mtimes) must not lose the change, on any storage driver
# (btrfs on a loop device made here, overlay, vfs):
#   - the image has the new content, read back from its layers alone
#     (saved, loaded into an empty store, run there),
#   - later RUN steps of the same build read the new content,
#   - a chmod-only step and an in-place same-size rewrite (same inode) with the
#     mtime put back give their layers too,
#   - every driver gives the same image id, and a cached rebuild the same again.
set -eu
: "${KILN:?KILN must point to the kiln binary}"
: "${KILN_SRC:?KILN_SRC must point to the source tree}"
[ "$(id -u)" = 0 ] || { echo "t_snapshot_rewrite: needs root (mounts)"; exit 77; }

W=$(mktemp -d /tmp/kiln-e2e-rewrite.XXXXXX)
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
if command -v mkfs.btrfs >/dev/null && truncate -s 300M "$W/btrfs.img" &&
	mkfs.btrfs -q -f "$W/btrfs.img" >/dev/null 2>&1 && mkdir -p "$BT" &&
	mount -t btrfs -o loop "$W/btrfs.img" "$BT"; then
	drivers="btrfs $drivers"
else
	echo "note: no loop-mounted btrfs here, testing overlay and vfs only"
fi

mkdir -p "$W/ctx"
# Step 2 changes nothing but /f's bytes: its diff must not come out empty.
cat > "$W/ctx/Dockerfile" <<'EOF'
FROM busybox:latest
RUN echo aaaa > /f && echo keep > /g && chmod 644 /f /g && touch -d @1600000000 /f /g
RUN echo bbbb > /f && touch -d @1600000000 /f
RUN cat /f > /seen1
RUN chmod 600 /g && touch -d @1600000000 /g
RUN printf cccc | dd of=/f conv=notrunc 2>/dev/null && touch -d @1600000000 /f
RUN cat /f > /seen2 && stat -c '%s %Y %a %u:%g' /f >> /seen2
EOF
want=$(printf 'cccc\nbbbb\ncccc\n5 1600000000 644 0:0\n600')
check='cat /f /seen1 /seen2; stat -c %a /g'

export SOURCE_DATE_EPOCH=1700000000
declare -A ID
failures=""
for d in $drivers; do
	root=$W/root-$d
	[ "$d" = btrfs ] && root=$BT/root
	export KILN_ROOT=$root
	"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
	out=$(timeout 300 "$KILN" --storage-driver "$d" build -q -t rewrite:1 "$W/ctx" 2>&1) ||
		fail "$d: build failed: $out"
	ID[$d]=$(echo "$out" | tail -n 1)
	nl=$("$KILN" inspect rewrite:1 | jq '.[0].RootFS.Layers | length')
	base=$("$KILN" inspect busybox:latest | jq '.[0].RootFS.Layers | length')
	echo "$d: ${ID[$d]} $nl layers"
	# every RUN changed something: six layers on top of the base
	[ "$nl" = $((base + 6)) ] || failures="$failures $d(layers:$nl)"

	got=$(timeout 60 "$KILN" --storage-driver "$d" run --rm rewrite:1 sh -c "$check" 2>&1) ||
		got="kiln run failed: $got"
	if [ "$got" != "$want" ]; then
		echo "FAIL: $d: container view:
$got
--- want
$want" >&2
		failures="$failures $d(run)"
	fi

	# the layers alone: save, load into an empty store, run there
	"$KILN" save -o "$W/img-$d.tar" rewrite:1
	export KILN_ROOT=$W/fresh-$d
	[ "$d" = btrfs ] && export KILN_ROOT=$BT/fresh
	"$KILN" --storage-driver "$d" load -i "$W/img-$d.tar" >/dev/null
	got=$(timeout 60 "$KILN" --storage-driver "$d" run --rm rewrite:1 sh -c "$check" 2>&1) ||
		got="kiln run failed: $got"
	if [ "$got" != "$want" ]; then
		echo "FAIL: $d: the image's layers give:
$got
--- want
$want" >&2
		failures="$failures $d(layers)"
	fi

	# a cached rebuild is the same image
	export KILN_ROOT=$root
	again=$(timeout 300 "$KILN" --storage-driver "$d" build -q -t rewrite:2 "$W/ctx" 2>&1 | tail -n 1)
	[ "$again" = "${ID[$d]}" ] || failures="$failures $d(rebuild:$again)"
	left=$(ls "$root/snapshots/$d/active")
	[ -z "$left" ] || fail "$d: snapshots left prepared: $left"
done
[ -z "$failures" ] || fail "wrong results on:$failures"

ref=""
for d in $drivers; do
	if [ -z "$ref" ]; then ref=$d; continue; fi
	[ "${ID[$d]}" = "${ID[$ref]}" ] || fail "image ids differ: $ref ${ID[$ref]} vs $d ${ID[$d]}"
done
echo "identical on: $drivers"
echo ok
