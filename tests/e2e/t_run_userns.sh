#!/bin/bash
# --uidmap: a user namespace of its own with an idmapped rootfs (the door to
# rootless): root inside is an unprivileged id outside, image files owned by
# 0 are root's inside and stay 0 on disk, /dev nodes are bound from the host.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, idmapped mounts)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() {
	for c in $("$KILN" ps -aq 2>/dev/null); do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc "$R"/root
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd
echo 'root:x:0:' > "$R"/etc/group
chmod 1777 "$R"/tmp

run() { "$KILN" run --rm --network none --uidmap 0:300000:65536 --rootfs "$R" "$@"; }
if ! run true 2>"$work/err"; then
	grep -q "support idmapped" "$work/err" && { echo "the filesystem of $R has no idmapped mounts: $(cat "$work/err")"; exit 77; }
	fail "run with --uidmap: $(cat "$work/err")"
fi
[ "$(run id -u)" = 0 ] || fail "root inside"
run cat /proc/self/uid_map | grep -Eq '^ +0 +300000 +65536$' || fail "uid_map: $(run cat /proc/self/uid_map)"
run grep -q '^CapEff:.00000000a80425fb' /proc/self/status || fail "default caps inside the userns"
[ "$(run stat -c %u /bin/busybox)" = 0 ] || fail "image files are not root's inside"
run touch /tmp/made-inside
[ "$(stat -c %u "$R/tmp/made-inside")" = 0 ] || fail "a file made inside is not owned by 0 on disk"
run sh -c 'echo x > /dev/null && test -c /dev/zero && head -c 4 /dev/urandom | wc -c' | grep -qx 4 || fail "/dev nodes"
run mount -t tmpfs none /tmp 2>/dev/null && fail "mount allowed inside"
[ "$(run sh -c 'echo $$')" = 1 ] || fail "PID 1"
# outside, the container's process runs as the mapped id
id=$("$KILN" run -d --network none --uidmap 0:300000:65536 --rootfs "$R" sleep 30)
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$KILN_ROOT/containers/$id/state.json")
# (until it execs, the process is not dumpable and /proc shows it as root's)
for i in $(seq 50); do [ "$(stat -c %u /proc/$pid)" = 300000 ] && break; sleep 0.1; done
[ "$(stat -c %u /proc/$pid)" = 300000 ] || fail "host uid of the container process: $(stat -c %u /proc/$pid)"
[ "$("$KILN" exec "$id" id -u)" = 0 ] || fail "exec joins the user namespace"
"$KILN" rm -f "$id" >/dev/null
set +e
"$KILN" run --rm --network none --uidmap 1:2:3 --rootfs "$R" true 2>/dev/null; rc=$?
set -e
[ $rc -eq 125 ] || fail "invalid --uidmap accepted (exit $rc, want the usage error 125)"
echo "run userns ok"
