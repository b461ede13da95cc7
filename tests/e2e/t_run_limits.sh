#!/bin/bash
# cgroup limits: a memory hog is OOM-killed with a clear message, a fork bomb
# stops at --pids-limit, --cpus/--cpu-shares reach the cgroup, and kiln's
# cgroups live beneath its own and are removed afterwards.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (cgroups)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }
[ -d /sys/fs/cgroup ] || { echo "no cgroup filesystem"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cids=""
cleanup() {
	for c in $cids; do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd
run() { "$KILN" run --rm --network none --rootfs "$R" "$@"; }

# where kiln's cgroups must appear: beneath our own, per controller
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
	memdir=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
else
	memdir=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
fi
memdir=${memdir%/}
[ -d "$memdir" ] || { echo "memory cgroup $memdir not found"; exit 77; }

# --- memory: OOM kill with a clear message, exit 137
set +e
timeout 60 "$KILN" run --rm --network none -m 32m --memory-swap 32m --rootfs "$R" \
	sh -c 'x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done' 2>"$work/err"; rc=$?
set -e
[ $rc -eq 137 ] || fail "memory hog: exit $rc, want 137 ($(cat "$work/err"))"
grep -q 'killed: out of memory (limit 32MiB)' "$work/err" || fail "OOM message: $(cat "$work/err")"
ls -d "$memdir"/kiln-* 2>/dev/null && fail "memory cgroup left behind"

# --- pids: a fork bomb stops at the limit (bounded: each child sleeps)
rm -f "$R/tmp/n"
set +e
timeout 60 "$KILN" run --rm --network none --pids-limit 16 --rootfs "$R" \
	sh -c 'for i in $(seq 1 64); do sleep 30 & echo $i > /tmp/n; done' 2>"$work/err"; rc=$?
set -e
n=$(cat "$R/tmp/n" 2>/dev/null || echo 0)
[ $rc -ne 0 ] && [ "$n" -lt 64 ] && [ "$n" -ge 8 ] || fail "pids limit: exit $rc, $n processes started"
grep -q "can't fork" "$work/err" || fail "pids limit: no fork failure ($(cat "$work/err"))"

# --- the cgroup of a running container: beneath ours, with the limits
cid=$("$KILN" run -d --network none -m 48m --cpus 0.5 --cpu-shares 512 --pids-limit 40 --rootfs "$R" sleep 60)
cids="$cids $cid"
cg="$memdir/kiln-$cid"
for i in $(seq 50); do [ -d "$cg" ] && break; sleep 0.1; done
[ -d "$cg" ] || fail "no cgroup $cg beneath kiln's own"
if [ -f "$cg/memory.limit_in_bytes" ]; then
	[ "$(cat "$cg/memory.limit_in_bytes")" = $((48*1024*1024)) ] || fail "memory.limit_in_bytes"
	cpu=/sys/fs/cgroup/cpu$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
	cpu=${cpu%/}/kiln-$cid
	[ "$(cat "$cpu/cpu.cfs_quota_us")" = 50000 ] || fail "cpu quota"
	[ "$(cat "$cpu/cpu.shares")" = 512 ] || fail "cpu shares"
	pids=/sys/fs/cgroup/pids$(awk -F: '$2 ~ /(^|,)pids(,|$)/ {print $3}' /proc/self/cgroup)
	[ "$(cat "${pids%/}/kiln-$cid/pids.max")" = 40 ] || fail "pids.max"
else
	[ "$(cat "$cg/memory.max")" = $((48*1024*1024)) ] || fail "memory.max"
	[ "$(cat "$cg/cpu.max")" = "50000 100000" ] || fail "cpu.max"
fi
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$KILN_ROOT/containers/$cid/state.json")
grep -q "kiln-$cid" /proc/$pid/cgroup || fail "container process is not in its cgroup"
"$KILN" rm -f "$cid" >/dev/null
for i in $(seq 50); do [ -d "$cg" ] || break; sleep 0.1; done
[ ! -d "$cg" ] || fail "cgroup $cg not removed"
echo "run limits ok"
