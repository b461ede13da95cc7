#!/bin/bash
# Detached containers: run -d, ps, logs (-f, --tail, -t), exec, kill, stop,
# rm, inspect, --rm, names; -p with a busybox echo server on the bridge.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, bridge)"; exit 77; }
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

# --- lifecycle
id=$("$KILN" run -d --network none --name ticker --rootfs "$R" sh -c 'echo started; echo oops >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done')
[[ "$id" =~ ^[0-9a-f]{64}$ ]] || fail "run -d did not print an id: $id"
"$KILN" ps | grep -q "ticker" || fail "ps does not list the running container"
"$KILN" ps -q | grep -qx "${id:0:12}" || fail "ps -q"
"$KILN" ps | grep -q "Up " || fail "ps status"
sleep 1
"$KILN" logs ticker > "$work/out" 2> "$work/err"
grep -qx started "$work/out" || fail "logs stdout: $(cat "$work/out")"
grep -qx oops "$work/err" || fail "logs stderr: $(cat "$work/err")"
grep -qx "tick 2" "$work/out" || fail "logs: no tick 2"
[ "$("$KILN" logs --tail 1 ticker 2>/dev/null | wc -l)" = 1 ] || fail "logs --tail 1"
"$KILN" logs -t --tail 1 ticker | grep -Eq '^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z tick' || fail "logs -t"
timeout 2 "$KILN" logs -f ticker > "$work/follow" 2>/dev/null || true
n1=$(grep -c tick "$work/follow")
[ "$n1" -gt "$(grep -c tick "$work/out")" ] || fail "logs -f does not follow"
"$KILN" inspect ticker | grep -q '"Running": true' || fail "inspect: not running"

# --- exec: same namespaces, its own status
[ "$("$KILN" exec ticker hostname)" = "${id:0:12}" ] || fail "exec hostname"
"$KILN" exec ticker sh -c 'ps -o pid,args' | grep -q 'sh -c echo started' || fail "exec does not see the container's processes"
set +e
"$KILN" exec ticker sh -c 'exit 7'; rc=$?
set -e
[ $rc -eq 7 ] || fail "exec exit status $rc"
"$KILN" exec -e X=1 ticker sh -c 'echo $X' | grep -qx 1 || fail "exec -e"
"$KILN" exec ticker grep -q '^CapEff:.00000000a80425fb' /proc/self/status || fail "exec caps"

# --- name in use
set +e
"$KILN" run -d --network none --name ticker --rootfs "$R" true 2>"$work/err"; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "already in use" "$work/err" || fail "duplicate name accepted"

# --- kill -s, stop, rm
"$KILN" kill -s USR1 ticker >/dev/null   # sh as PID 1 ignores it: still running
sleep 0.3
"$KILN" ps | grep -q ticker || fail "USR1 stopped the container"
set +e
"$KILN" rm ticker 2>/dev/null; rc=$?
set -e
[ $rc -ne 0 ] || fail "rm of a running container without -f"
start=$(date +%s)
"$KILN" stop -t 1 ticker >/dev/null
[ $(( $(date +%s) - start )) -le 5 ] || fail "stop took too long"
"$KILN" ps | grep -q ticker && fail "stopped container still listed by ps"
"$KILN" ps -a | grep ticker | grep -q "Exited (137)" || fail "ps -a status: $("$KILN" ps -a)"
"$KILN" inspect ticker | grep -q '"ExitCode": 137' || fail "inspect exit code"
"$KILN" rm ticker >/dev/null
"$KILN" ps -a | grep -q ticker && fail "rm left the container"
[ ! -d "$KILN_ROOT/containers/$id" ] || fail "rm left the state directory"

# --- stop with an init: SIGTERM reaches the program -> 143
id2=$("$KILN" run -d --network none --init --rootfs "$R" sleep 60)
"$KILN" stop -t 5 "${id2:0:12}" >/dev/null
"$KILN" inspect "$id2" | grep -q '"ExitCode": 143' || fail "stop with --init: $("$KILN" inspect "$id2" | grep ExitCode)"
"$KILN" rm "$id2" >/dev/null

# --- --rm removes a detached container when it exits
id3=$("$KILN" run -d --rm --network none --rootfs "$R" true)
for i in $(seq 50); do [ -d "$KILN_ROOT/containers/$id3" ] || break; sleep 0.1; done
[ ! -d "$KILN_ROOT/containers/$id3" ] || fail "--rm detached container not removed"

# --- an attached (foreground) container is logged too
out=$("$KILN" run --network none --name attached --rootfs "$R" sh -c 'echo to-out; echo to-err >&2' 2>"$work/err")
[ "$out" = to-out ] && grep -qx to-err "$work/err" || fail "attached output: '$out' / $(cat "$work/err")"
[ "$("$KILN" logs attached 2>/dev/null)" = to-out ] || fail "logs of an attached container"
[ "$("$KILN" logs attached 2>&1 >/dev/null)" = to-err ] || fail "logs stderr of an attached container"
"$KILN" rm attached >/dev/null

# --- a detached start that fails reports it like a foreground one
set +e
"$KILN" run -d --network none --rootfs "$R" no-such-program 2>"$work/err"; rc=$?
set -e
[ $rc -eq 127 ] || fail "run -d of a missing program: exit $rc"
grep -q 'executable file not found' "$work/err" || fail "run -d failure message: $(cat "$work/err")"
n_before=$(ls "$KILN_ROOT/containers" | wc -l)
set +e
"$KILN" run -d --rm --network none --rootfs "$R" no-such-program 2>/dev/null; rc=$?
set -e
[ $rc -eq 127 ] || fail "run -d --rm of a missing program: exit $rc"
[ "$(ls "$KILN_ROOT/containers" | wc -l)" = "$n_before" ] || fail "run -d --rm left a failed container behind"

# --- -p: an echo server published on the host
. "$KILN_SRC/tests/e2e/lib/ports.sh"
port=$(free_port)
"$KILN" run -d --name echo -p 127.0.0.1:$port:50000 --rootfs "$R" nc -ll -p 50000 -e cat >/dev/null
"$KILN" ps | grep echo | grep -q "127.0.0.1:$port->50000/tcp" || fail "ps PORTS"
got=""
for i in $(seq 30); do
	got=$(echo foo | timeout 3 "$BB" nc 127.0.0.1 $port 2>/dev/null || true)
	[ "$got" = foo ] && break
	sleep 0.2
done
[ "$got" = foo ] || fail "echo server via -p: got '$got'"
got=$(echo bar | timeout 3 "$BB" nc 127.0.0.1 $port 2>/dev/null || true)
[ "$got" = bar ] || fail "second connection: got '$got'"
ip=$("$KILN" exec echo ip -4 addr show eth0 | sed -n 's/.*inet \(10\.213\.37\.[0-9]*\).*/\1/p')
[ -n "$ip" ] || fail "bridge address"
"$KILN" inspect echo | grep -q "\"IPAddress\": \"$ip\"" || fail "inspect IPAddress"
got=$(echo direct | timeout 3 "$BB" nc "$ip" 50000 2>/dev/null || true)
[ "$got" = direct ] || fail "the container's address is not reachable from the host: '$got'"
"$KILN" rm -f echo >/dev/null
sleep 0.3
"$BB" nc -z 127.0.0.1 $port 2>/dev/null && fail "port still published after rm -f"
echo "run detach ok"
