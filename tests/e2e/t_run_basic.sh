#!/bin/bash
# kiln run --rootfs on a busybox tree: isolation (pid/uts/mount/ipc/net),
# /proc masks, capabilities, users and groups from the image's own files,
# environment, working directory, volumes, tmpfs, --read-only, exit codes
# and signals.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT

# a busybox rootfs with a user "alice" in two extra groups
R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc "$R"/root "$R"/home/alice
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
cat > "$R"/etc/passwd <<'P'
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$R"/etc/group <<'G'
root:x:0:
alice:x:1000:
staff:x:50:alice,bob
audio:x:63:bob
video:x:44:alice
nogroup:x:65534:
G
chmod 1777 "$R"/tmp

fail() { echo "FAIL: $*"; exit 1; }
run() { "$KILN" run --rm --network none --rootfs "$R" "$@"; }
expect() { # expect WANT GOT WHAT
	[ "$1" = "$2" ] || fail "$3: want '$1', got '$2'"
}

# --- namespaces
expect 1 "$(run sh -c 'echo $$')" "PID 1 inside"
expect box "$(run -h box hostname)" "--hostname"
h=$(run hostname)
[[ "$h" =~ ^[0-9a-f]{12}$ ]] || fail "default hostname is not a 12-hex id: $h"
[ "$(hostname)" != box ] || fail "host name changed"
n=$(run ps -o pid | wc -l)
[ "$n" -le 3 ] || fail "host processes visible: $n lines"
run mount -t tmpfs none /tmp 2>/dev/null && fail "mount succeeded inside the container"
run sh -c 'ip link' | grep -q eth0 && fail "--network none has an eth0"
run sh -c 'ip link' | grep -q 'lo:.*UP' || fail "loopback not up with --network none"
run ping -c1 -W1 127.0.0.1 >/dev/null || fail "loopback does not answer"
expect "0 1 2" "$(run sh -c 'ls /proc/$$/fd; true' | tr '\n' ' ' | sed 's/ $//')" "fds of the container process"
expect / "$(run readlink /proc/self/cwd)" "cwd"

# --- /proc and /sys
expect "character special file" "$(run stat -c %F /proc/keys)" "/proc/keys masked with /dev/null"
expect 0 "$(run sh -c 'wc -c < /proc/timer_list')" "/proc/timer_list masked"
run sh -c 'echo 1 > /proc/sys/vm/drop_caches' 2>/dev/null && fail "/proc/sys writable"
run sh -c 'touch /sys/x' 2>/dev/null && fail "/sys writable"
run sh -c 'grep -q " /proc proc " /proc/mounts' || fail "no procfs at /proc"
run sh -c 'test -c /dev/null && test -c /dev/zero && test -c /dev/urandom && test -c /dev/tty && test -L /dev/ptmx && test -d /dev/pts && test -d /dev/shm' || fail "/dev incomplete"
expect 1:3 "$(run stat -c %t:%T /dev/null)" "/dev/null device numbers"

# --- capabilities, seccomp, no_new_privs
st=$(run cat /proc/self/status)
grep -q '^CapEff:.00000000a80425fb' <<<"$st" || fail "default CapEff: $(grep CapEff <<<"$st")"
grep -q '^CapBnd:.00000000a80425fb' <<<"$st" || fail "default CapBnd"
grep -q '^CapInh:.0000000000000000' <<<"$st" || fail "CapInh not empty"
grep -q '^CapAmb:.0000000000000000' <<<"$st" || fail "CapAmb not empty"
grep -q '^Seccomp:.2' <<<"$st" || fail "no seccomp filter by default"
grep -q '^NoNewPrivs:.0' <<<"$st" || fail "no_new_privs set without being asked"
run --security-opt no-new-privileges grep -q '^NoNewPrivs:.1' /proc/self/status || fail "no-new-privileges ignored"
run --security-opt seccomp=unconfined grep -q '^Seccomp:.0' /proc/self/status || fail "seccomp=unconfined ignored"
run --cap-drop ALL grep -q '^CapEff:.0000000000000000' /proc/self/status || fail "--cap-drop ALL"
run --cap-drop ALL --cap-add NET_ADMIN grep -q '^CapEff:.0000000000001000' /proc/self/status || fail "--cap-add NET_ADMIN"
run --cap-drop chown grep -q '^CapEff:.00000000a80425fa' /proc/self/status || fail "--cap-drop chown"
run unshare -U true 2>/dev/null && fail "unshare of a user namespace allowed by the default profile"
run --privileged sh -c 'grep -q "^Seccomp:.0" /proc/self/status && mount -t tmpfs none /tmp' || fail "--privileged"

# --- users and groups (the image's /etc/passwd and /etc/group only)
st=$(run -u alice cat /proc/self/status)
grep -q '^Uid:.1000.1000.1000.1000' <<<"$st" || fail "-u alice uid"
grep -q '^Gid:.1000' <<<"$st" || fail "-u alice gid"
groups=$(grep '^Groups:' <<<"$st" | cut -f2 | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
expect "44 50 1000 " "$groups" "supplementary groups of alice"
grep -q '^CapEff:.0000000000000000' <<<"$st" || fail "non-root CapEff"
grep -q '^CapInh:.0000000000000000' <<<"$st" || fail "non-root CapInh"
grep -q '^CapAmb:.0000000000000000' <<<"$st" || fail "non-root CapAmb"
expect /home/alice "$(run -u alice sh -c 'echo $HOME')" "HOME from passwd"
expect "1234:0" "$(run -u 1234 sh -c 'echo $(id -u):$(id -g)')" "numeric user without entry"
expect "1000:63" "$(run -u alice:audio sh -c 'echo $(id -u):$(id -g)')" "user:group by name"
run -u mallory true 2>"$work/err" && fail "unknown user accepted"
grep -q "unable to find user mallory" "$work/err" || fail "unknown user message: $(cat "$work/err")"

# --- environment and working directory
env=$(run -e FOO=bar -e EMPTY= env)
grep -qx 'FOO=bar' <<<"$env" || fail "-e FOO=bar"
grep -qx 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' <<<"$env" || fail "default PATH"
grep -qx 'HOME=/root' <<<"$env" || fail "HOME for root"
grep -q '^HOSTNAME=' <<<"$env" || fail "HOSTNAME"
printf 'A=1\n# comment\nB=two words\n' > "$work/envfile"
env=$(run --env-file "$work/envfile" env)
grep -qx 'A=1' <<<"$env" && grep -qx 'B=two words' <<<"$env" || fail "--env-file"
expect /new/dir "$(run -w /new/dir pwd)" "-w creates the directory"
[ ! -e /new/dir ] || fail "-w created a host directory"
run cat /etc/hosts | grep -q localhost || fail "/etc/hosts"
expect myhost "$(run -h myhost cat /etc/hostname)" "/etc/hostname"

# --- volumes, tmpfs, read-only
mkdir -p "$work/vol"
echo from-host > "$work/vol/in"
expect from-host "$(run -v "$work/vol:/data" cat /data/in)" "-v read"
run -v "$work/vol:/data" sh -c 'echo from-ctr > /data/out'
expect from-ctr "$(cat "$work/vol/out")" "-v write reaches the host"
run -v "$work/vol:/data:ro" sh -c 'echo x > /data/out2' 2>/dev/null && fail "-v :ro writable"
[ ! -e "$work/vol/out2" ] || fail ":ro volume written"
run -v "$work/made/by/v:/m" touch /m/x
[ -f "$work/made/by/v/x" ] || fail "-v of a missing host directory does not create it"
run --tmpfs /scratch grep -q ' /scratch tmpfs ' /proc/mounts || fail "--tmpfs"
run --read-only touch /x 2>/dev/null && fail "--read-only rootfs writable"
[ ! -e "$R/x" ] || fail "--read-only wrote to the rootfs"
run --read-only touch /dev/shm/ok || fail "--read-only: /dev/shm must stay writable"
run --read-only --tmpfs /tmp touch /tmp/ok || fail "--read-only with --tmpfs /tmp"

# --- exit codes and signals
set +e
run sh -c 'exit 3'; rc=$?
expect 3 $rc "exit status"
run no-such-command 2>"$work/err"; rc=$?
expect 127 $rc "command not found"
grep -q 'executable file not found' "$work/err" || fail "not-found message: $(cat "$work/err")"
run /etc/passwd 2>/dev/null; rc=$?
expect 126 $rc "not executable"
run --init sh -c 'kill -TERM $$'; rc=$?
expect 143 $rc "killed by SIGTERM (with --init)"
"$KILN" run --rm --network none --init --rootfs "$R" sleep 30 & p=$!; pids="$pids $p"
sleep 0.5
kill -TERM $p
wait $p; rc=$?
expect 143 $rc "SIGTERM forwarded through kiln and the init"
"$KILN" run --rm --network none --rootfs "$R" --bogus true 2>/dev/null; rc=$?
expect 125 $rc "an unknown flag of run is exit 125, as docker run's"
"$KILN" run --rm --network none --rootfs "$work/missing" true 2>"$work/err"; rc=$?
expect 125 $rc "missing rootfs is a setup failure"
grep -q 'rootfs' "$work/err" || fail "missing rootfs message names the step: $(cat "$work/err")"
set -e

# the path taken when the caller has other threads (parallel build steps):
# fork, unshare, clone as our child
[ "$(KILN_SANDBOX_FORK=1 run sh -c 'echo $$')" = 1 ] || fail "fork path: PID 1"
set +e
KILN_SANDBOX_FORK=1 run sh -c 'exit 9'; rc=$?
set -e
expect 9 $rc "fork path: exit status"
KILN_SANDBOX_FORK=1 run grep -q '^CapEff:.00000000a80425fb' /proc/self/status || fail "fork path: caps"

# a seccomp profile file (Docker's JSON format): mkdir denied with EPERM
cat > "$work/profile.json" <<'J'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
J
run --security-opt "seccomp=$work/profile.json" mkdir /tmp/d 2>"$work/err" && fail "seccomp file not applied"
grep -qi 'not permitted' "$work/err" || fail "seccomp file: $(cat "$work/err")"
echo "run basic ok"
