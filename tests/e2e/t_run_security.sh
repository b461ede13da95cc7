#!/bin/bash
# The runtime items of security.md: hostile images must not reach the host.
#  1  CVE-2019-5736   the kiln binary is never writable from a container
#  2  CVE-2016-9962   the init/setup process is not dumpable (no /proc/1/fd)
#  3  CVE-2024-21626  WORKDIR /proc/self/fd/N stays inside (or is refused)
#  6  CVE-2021-30465  a bind target that is a symlink lands inside the rootfs
#  7  CVE-2019-16884  /proc as a symlink or a file in the image: run fails
#  8  CVE-2025-31133  the image's /dev/null replaced: masks still use the real one
#  9  /dev as a symlink to a host directory: the decoy is unchanged
# 19  the state directories are 0700
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkroot() { # mkroot DIR
	mkdir -p "$1"/bin "$1"/proc "$1"/sys "$1"/dev "$1"/tmp "$1"/etc "$1"/root
	cp "$BB" "$1"/bin/busybox
	for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$1/bin/$a"; done
	echo 'root:x:0:0:root:/root:/bin/sh' > "$1"/etc/passwd
	echo 'root:x:0:' > "$1"/etc/group
}
R=$work/rootfs
mkroot "$R"
run() { local r=$1; shift; "$KILN" run --rm --network none --rootfs "$r" "$@"; }

# --- 1: CVE-2019-5736
sum() { sha256sum "$KILN" | cut -d' ' -f1; }
before=$(sum)
printf '#!/proc/self/exe\n' > "$R"/bin/evil
chmod 755 "$R"/bin/evil
set +e
run "$R" /bin/evil 2>"$work/err"; rc=$?
set -e
[ $rc -eq 126 ] || fail "#!/proc/self/exe: exit $rc, want 126 ($(cat "$work/err"))"
grep -q 'kiln runtime binary' "$work/err" || fail "#!/proc/self/exe message: $(cat "$work/err")"
# nested: a script whose interpreter is the evil script
printf '#!/bin/evil\n' > "$R"/bin/evil2
chmod 755 "$R"/bin/evil2
set +e
run "$R" /bin/evil2 2>/dev/null; rc=$?
set -e
[ $rc -eq 126 ] || fail "nested #! chain to /proc/self/exe: exit $rc"
# every /proc/<pid>/exe the container can see, written in a loop (also the
# kiln init with --init)
attack='for i in 1 2 3; do for p in /proc/[0-9]*; do echo pwned >> $p/exe 2>/dev/null && echo WROTE $p; done; done; true'
out=$(run "$R" sh -c "$attack")
[ -z "$out" ] || fail "container wrote through /proc/*/exe: $out"
out=$(run "$R" --init sh -c "$attack; readlink /proc/1/fd/0 >/dev/null 2>&1 && echo FDS; true")
[ -z "$out" ] || fail "with --init: $out"
[ "$(sum)" = "$before" ] || fail "the kiln binary changed"

# --- 2: the kiln init (PID 1 with --init) is not dumpable
out=$(run "$R" --init sh -c 'cat /proc/1/environ >/dev/null 2>&1 && echo ENVIRON; readlink /proc/1/exe 2>/dev/null; readlink /proc/1/fd/1 2>/dev/null; readlink /proc/1/cwd 2>/dev/null; true')
[ -z "$out" ] || fail "/proc/1 of the kiln init is accessible: $out"

# --- 2: CVE-2016-9962: a `kiln exec` paused after joining the container
# (test hook) cannot be read or entered by the container's processes
cid=$("$KILN" run -d --network none --rootfs "$R" sleep 60)
KILN_TEST_SETUP_PAUSE_MS=3000 "$KILN" exec "$cid" true &
execpid=$!
sleep 1
out=$("$KILN" exec "$cid" sh -c 'for p in /proc/[0-9]*; do
	[ "$(cat $p/comm 2>/dev/null)" = kiln ] || continue
	echo "found $p"
	readlink $p/exe 2>/dev/null && echo "EXE-READABLE"
	for f in $p/fd/*; do readlink $f 2>/dev/null && echo "FD-READABLE $f"; cat $f >/dev/null 2>&1 && echo "FD-OPENABLE $f"; done
	head -c1 $p/environ >/dev/null 2>&1 && echo ENVIRON-READABLE
	head -c1 $p/mem >/dev/null 2>&1 && echo MEM-READABLE
	ls $p/root/ >/dev/null 2>&1 && echo ROOT-READABLE
	true
done')
wait $execpid || true
"$KILN" rm -f "$cid" >/dev/null
grep -q '^found' <<<"$out" || fail "the paused exec process was not visible to the test: $out"
grep -q 'READABLE\|OPENABLE' <<<"$out" && fail "the joining exec process is accessible from inside: $out"

# --- 3: CVE-2024-21626
for n in $(seq 3 64); do
	set +e
	out=$(run "$R" -w "/proc/self/fd/$n" sh -c 'readlink /proc/self/cwd' 2>/dev/null); rc=$?
	set -e
	if [ $rc -eq 0 ]; then
		case "$out" in
		"(unreachable)"*|"") fail "WORKDIR /proc/self/fd/$n escaped: '$out'";;
		esac
		[ -d "$R$out" ] || fail "WORKDIR /proc/self/fd/$n resolved outside the rootfs: $out"
	fi
done

# --- 6: bind mount target is a symlink to /etc
marker=kiln-e2e-marker-$$
mkdir -p "$work/vol" "$R"/mnt
touch "$work/vol/$marker"
ln -s /etc "$R"/mnt/x
run "$R" -v "$work/vol:/mnt/x" ls /etc/ > "$work/ls"
grep -q "$marker" "$work/ls" || fail "the bind did not land at rootfs/etc: $(cat "$work/ls")"
[ ! -e "/etc/$marker" ] || fail "the bind reached the host /etc"
grep -q "$marker" /proc/self/mountinfo && fail "a container mount leaked into the host namespace"
ln -s ../../../../../../../../etc "$R"/mnt/rel
run "$R" -v "$work/vol:/mnt/rel" ls /etc/ | grep -q "$marker" || fail "relative symlink target"
[ ! -e "/etc/$marker" ] || fail "relative symlink: the bind reached the host /etc"

# --- 6, raced: a second container flips the mount target (inside a shared
# volume) between a directory and a symlink to /etc while mounts are made
mkdir -p "$work/shared" "$work/src"
touch "$work/src/$marker-race"
flipper=$("$KILN" run -d --network none -v "$work/shared:/data" --rootfs "$R" \
	sh -c 'while true; do rm -rf /data/x; ln -s /etc /data/x; rm -f /data/x; mkdir /data/x; done')
for i in $(seq 25); do
	"$KILN" run --rm --network none -v "$work/shared:/data" -v "$work/src:/data/x" --rootfs "$R" \
		true >/dev/null 2>&1 || true
done
"$KILN" rm -f "$flipper" >/dev/null
[ ! -e "/etc/$marker-race" ] || fail "the raced bind reached the host /etc"
grep -q "$marker" /proc/self/mountinfo && fail "a raced container mount leaked into the host namespace"
[ ! -e "$R/etc/$marker-race" ] || fail "the raced bind created files in the image's /etc"

# --- 7: /proc a symlink or a file
P=$work/procsym
mkroot "$P"
rmdir "$P"/proc
ln -s /tmp "$P"/proc
set +e
run "$P" true 2>"$work/err"; rc=$?
set -e
[ $rc -eq 125 ] || fail "/proc symlink: exit $rc, want 125"
grep -q '/proc must be a directory' "$work/err" || fail "/proc symlink message: $(cat "$work/err")"
rm "$P"/proc
echo file > "$P"/proc
set +e
run "$P" true 2>/dev/null; rc=$?
set -e
[ $rc -eq 125 ] || fail "/proc file: exit $rc, want 125"

# --- 8: the image's /dev/null is a symlink to core_pattern / a regular file
cp_before=$(cat /proc/sys/kernel/core_pattern)
D=$work/devnull
mkroot "$D"
ln -s /proc/sys/kernel/core_pattern "$D"/dev/null
[ "$(run "$D" stat -c %F /proc/keys)" = "character special file" ] || fail "mask source is not a char device"
[ "$(run "$D" stat -c %t:%T /dev/null)" = "1:3" ] || fail "/dev/null inside is not 1:3"
run "$D" sh -c 'echo "|/tmp/pwn" > /proc/sys/kernel/core_pattern' 2>/dev/null && fail "core_pattern writable"
[ "$(cat /proc/sys/kernel/core_pattern)" = "$cp_before" ] || fail "host core_pattern changed"
rm "$D"/dev/null
echo regular > "$D"/dev/null
[ "$(run "$D" stat -c %F /proc/keys)" = "character special file" ] || fail "mask with a regular /dev/null"
[ "$(cat "$D"/dev/null)" = regular ] || fail "the image's /dev/null was modified"

# --- 9: /dev is a symlink to a host directory with a decoy
V=$work/devsym
mkroot "$V"
mkdir -p "$work/hostdir"
echo decoy > "$work/hostdir/ptmx"
rmdir "$V"/dev
ln -s "$work/hostdir" "$V"/dev
set +e
run "$V" true 2>/dev/null
set -e
[ "$(cat "$work/hostdir/ptmx")" = decoy ] || fail "decoy ptmx changed"
[ "$(ls "$work/hostdir")" = ptmx ] || fail "files created in the host directory: $(ls "$work/hostdir")"

# --- 19: state directories
"$KILN" run --network none --name keep --rootfs "$R" true
[ "$(stat -c %a "$KILN_ROOT/containers")" = 700 ] || fail "containers/ is not 0700"
[ "$(stat -c %a /run/kiln)" = 700 ] || fail "/run/kiln is not 0700"
"$KILN" rm keep >/dev/null

# --- sysctls are not settable (no --sysctl flag: item 17 cannot be reached)
set +e
"$KILN" run --rm --network none --sysctl kernel.core_pattern=x --rootfs "$R" true 2>/dev/null; rc=$?
set -e
[ $rc -eq 125 ] || fail "--sysctl accepted (exit $rc, want the usage error 125)"
echo "run security ok"
