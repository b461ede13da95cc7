#!/bin/bash
# Snapshot and diff benchmark (run manually, as root; not part of make test).
#
#   tests/bench/bench_snapshot.sh [--write]
#
# Measures, per driver (btrfs on a loop-mounted image made here, overlay and
# vfs on the ext4 /tmp):
#   - kiln_snap_prepare time for trees of 1k, 10k, 100k files (median),
#   - kiln_snap_diff time for 1, 100, 10000 changed files in a 100k-file tree,
# and from the same run, as references: `cp -a` of the same trees, the btrfs
# CLI snapshot, and `buildah from` (overlay, vfs) of an image holding the
# 10k-file tree.  With --write the table replaces the "Snapshots and diffs"
# section of tests/bench/RESULTS.md.
# Environment: SIZES (default "1000 10000 100000"), DIFF_FILES (100000),
# CHANGES ("1 100 10000"), BUILDAH=0 to skip buildah.
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
WRITE=0
[ "${1:-}" = --write ] && WRITE=1
[ "$(id -u)" = 0 ] || { echo "bench_snapshot: needs root (mounts)"; exit 77; }
SIZES=${SIZES:-"1000 10000 100000"}
DIFF_FILES=${DIFF_FILES:-100000}
CHANGES=${CHANGES:-"1 100 10000"}
BUILDAH=${BUILDAH:-1}

W=$(mktemp -d /tmp/kiln-bench-snap.XXXXXX)
BT=$W/btrfs
cleanup() {
	set +e
	grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
	losetup -j "$W/btrfs.img" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l"; done
	rm -rf "$W"
}
trap cleanup EXIT

echo "== building the helper"
PKGS="libarchive libcrypto jansson libcurl libcap libbtrfsutil libseccomp libmnl"
# shellcheck disable=SC2046
cc -std=gnu11 -O2 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I"$SRC" -o "$W/bench_snapshot" \
	"$SRC/tests/bench/bench_snapshot.c" "$SRC/common/err.c" "$SRC/common/util.c" \
	"$SRC/layers/layer.c" "$SRC/layers/snapshot.c" "$SRC"/layers/snap_*.c \
	$(pkg-config --cflags --libs $PKGS) -lpthread
H=$W/bench_snapshot

echo "== btrfs on a loop device"
truncate -s 6G "$W/btrfs.img"
mkfs.btrfs -q -f "$W/btrfs.img" >/dev/null
mkdir -p "$BT"
mount -t btrfs -o loop "$W/btrfs.img" "$BT"   # autoclear: the loop goes with the mount

dir_for() { case $1 in btrfs) echo "$BT/snaps";; *) echo "$W/$1";; esac; }
ms_of() { sed -n 's/.* ms=\([0-9.]*\).*/\1/p'; }
now_ns() { date +%s%N; }
declare -A R

for drv in btrfs overlay vfs; do
	reps=9
	[ "$drv" = vfs ] && reps=3
	cp=0
	[ "$drv" = vfs ] && cp=1
	# shellcheck disable=SC2086
	BENCH_CP=$cp "$H" prepare "$drv" "$(dir_for $drv)" "$reps" $SIZES | tee "$W/prep-$drv"
	for n in $SIZES; do
		R[prep,$drv,$n]=$(grep " files=$n " "$W/prep-$drv" | ms_of)
		[ "$cp" = 1 ] && R[cp,$n]=$(grep " files=$n " "$W/prep-$drv" | sed -n 's/.* cp_ms=\([0-9.]*\).*/\1/p')
	done
	for k in $CHANGES; do
		line=$("$H" diff "$drv" "$(dir_for $drv)" "$DIFF_FILES" "$k")
		echo "$line"
		R[diff,$drv,$k]=$(echo "$line" | ms_of)
	done
	# the driver's data is not needed any more: free the space and the page cache
	[ "$drv" = btrfs ] || rm -rf "$(dir_for $drv)"
done

echo "== reference: the btrfs CLI"
for n in $SIZES; do
	"$H" tree "$W/tree-$n" "$n"
	btrfs subvolume create "$BT/cli-$n" >/dev/null
	cp -a "$W/tree-$n/." "$BT/cli-$n/"
	sync
	ts=""
	for _ in 1 2 3 4 5; do
		sync
		t0=$(now_ns); btrfs subvolume snapshot "$BT/cli-$n" "$BT/cli-$n-snap" >/dev/null; t1=$(now_ns)
		btrfs subvolume delete "$BT/cli-$n-snap" >/dev/null
		ts="$ts $(( (t1 - t0) / 1000 ))"
	done
	R[cli,$n]=$(echo "$ts" | tr ' ' '\n' | grep . | sort -n | sed -n 3p | awk '{printf "%.3f", $1/1000}')
	echo "btrfs subvolume snapshot $n files: ${R[cli,$n]} ms (median of 5, includes the CLI start)"
	btrfs subvolume delete "$BT/cli-$n" >/dev/null
done

BN=10000
if [ "$BUILDAH" = 1 ] && command -v buildah >/dev/null; then
	echo "== references: buildah from (image with $BN files)"
	[ -d "$W/tree-$BN" ] || "$H" tree "$W/tree-$BN" "$BN"
	for sd in overlay vfs; do
		B="buildah --root $W/buildah-$sd/root --runroot $W/buildah-$sd/run --storage-driver $sd"
		if ! { c=$($B from scratch) && $B copy -q "$c" "$W/tree-$BN" / >/dev/null &&
			$B commit -q "$c" bench-img >/dev/null && $B rm "$c" >/dev/null; } 2>"$W/buildah.err"; then
			echo "buildah ($sd) unavailable: $(tail -1 "$W/buildah.err")"
			continue
		fi
		ts=""
		for _ in 1 2 3 4 5; do
			t0=$(now_ns); c=$($B from --pull-never bench-img); t1=$(now_ns)
			$B rm "$c" >/dev/null
			ts="$ts $(( (t1 - t0) / 1000 ))"
		done
		R[buildah,$sd]=$(echo "$ts" | tr ' ' '\n' | grep . | sort -n | sed -n 3p | awk '{printf "%.3f", $1/1000}')
		echo "buildah from ($sd, $BN files): ${R[buildah,$sd]} ms (median of 5)"
		$B rmi -a -f >/dev/null 2>&1 || true
	done
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
table() {
	local first=${SIZES%% *} last=${SIZES##* }
	echo "Measured $(date -u +%F) on this machine (2 shared vCPUs, ext4 /tmp, btrfs on a loop file; noisy)"
	echo "by \`tests/bench/bench_snapshot.sh\`."
	echo
	echo "Snapshot (kiln_snap_prepare of a child of a committed tree of small files; median, ms; sizes interleaved,"
	echo 'each timing on a synced filesystem; `cp -a` of the same tree interleaved with the vfs runs):'
	echo
	printf '| files |'; for d in btrfs overlay vfs; do printf ' %s |' "$d"; done; echo ' cp -a | btrfs CLI |'
	echo '| ---: | ---: | ---: | ---: | ---: | ---: |'
	for n in $SIZES; do
		printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "${R[prep,btrfs,$n]}" "${R[prep,overlay,$n]}" \
			"${R[prep,vfs,$n]}" "${R[cp,$n]}" "${R[cli,$n]}"
	done
	echo
	echo "- btrfs ${last} vs ${first} files: $(ratio "${R[prep,btrfs,$last]}" "${R[prep,btrfs,$first]}")x (goal: within 2x);" \
		"overlay: $(ratio "${R[prep,overlay,$last]}" "${R[prep,overlay,$first]}")x."
	echo "- vfs vs cp -a at ${last} files: $(ratio "${R[prep,vfs,$last]}" "${R[cp,$last]}")x" \
		"(vfs keeps xattrs and ns times, reflinks on btrfs)."
	if [ -n "${R[buildah,overlay]:-}${R[buildah,vfs]:-}" ]; then
		echo "- \`buildah from\` (median of 5) of a ${BN}-file image: overlay ${R[buildah,overlay]:--} ms, vfs ${R[buildah,vfs]:--} ms;" \
			"kiln overlay/buildah overlay = $(ratio "${R[prep,overlay,$BN]:-0}" "${R[buildah,overlay]:-0}")," \
			"kiln vfs/buildah vfs = $(ratio "${R[prep,vfs,$BN]:-0}" "${R[buildah,vfs]:-0}") (buildah's time includes its CLI start and locking)."
	fi
	echo
	echo "Diff (kiln_snap_diff, ${DIFF_FILES}-file tree, ms):"
	echo
	printf '| changed files |'; for d in btrfs overlay vfs; do printf ' %s |' "$d"; done; echo
	echo '| ---: | ---: | ---: | ---: |'
	for k in $CHANGES; do
		printf '| %s | %s | %s | %s |\n' "$k" "${R[diff,btrfs,$k]}" "${R[diff,overlay,$k]}" "${R[diff,vfs,$k]}"
	done
	local kf=${CHANGES%% *} kl=${CHANGES##* }
	echo
	echo "- btrfs: a sync (commits delayed inodes; also writes the changed files' data back), a tree search for inodes" \
		"newer than the snapshot, then only the directories above them are read;" \
		"${kl} vs ${kf} changes: $(ratio "${R[diff,btrfs,$kl]}" "${R[diff,btrfs,$kf]}")x."
	echo "- overlay: walks the upper directory only; ${kl} vs ${kf}: $(ratio "${R[diff,overlay,$kl]}" "${R[diff,overlay,$kf]}")x."
	echo "- vfs: compares the whole trees (cost follows tree size); vfs/btrfs at ${kf} change: $(ratio "${R[diff,vfs,$kf]}" "${R[diff,btrfs,$kf]}")x."
}

echo
table | tee "$W/table.md"

if [ "$WRITE" = 1 ]; then
	RES="$SRC/tests/bench/RESULTS.md"
	python3 - "$RES" "$W/table.md" <<'EOF'
import sys, os, re
res, tab = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(res).read() if os.path.exists(res) else "# Benchmark results\n"
section = "## Snapshots and diffs\n\n" + tab + "\n"
m = re.search(r"^## Snapshots and diffs\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
if m:
    text = text[:m.start()] + section + ("\n" if text[m.end():] else "") + text[m.end():]
else:
    text = text.rstrip("\n") + "\n\n" + section
open(res, "w").write(text)
EOF
	echo "wrote the section to $RES"
fi
