#!/bin/bash
# security.md item 3 (CVE-2024-21626, "Leaky Vessels"): no host fd reaches a
# container, whichever way it starts (run, run -d, exec, build RUN), even when
# kiln itself was started with extra fds open (a leaky parent); and
# WORKDIR /proc/self/fd/N (N = 3..64) never puts the cwd outside the rootfs.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cid=
cleanup() {
	[ -z "$cid" ] || "$KILN" rm -f "$cid" >/dev/null 2>&1 || true
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# A leaky parent: kiln starts with fds 5, 7 (a directory, like runc's
# /sys/fs/cgroup O_PATH), 9 (writable) and 42 open and not close-on-exec.
leaky() { "$@" 5</etc/hostname 7</sys/fs/cgroup 9>>"$work/leak-w" 42</ ; }

# The command itself (no shell: a shell's pipelines hold pipe fds) lists
# its own fds: exactly 0 1 2 and 3, ls's own directory handle.
check() { # check WHAT OUTPUT-of-ls-l
	local names
	names=$(awk 'NR>1 {print $9}' <<<"$2" | sort -n | tr '\n' ' ')
	[ "$names" = "0 1 2 3 " ] || fail "$1: the process holds fds '$names': $2"
	grep -q 'cgroup\|hostname\|leak-w\| -> /$' <<<"$2" && fail "$1: host fds visible: $2"
	true
}
check "kiln run" "$(leaky "$KILN" run --rm --network none busybox ls -l /proc/self/fd 2>/dev/null)"
check "kiln run --init" "$(leaky "$KILN" run --rm --network none --init busybox ls -l /proc/self/fd 2>/dev/null)"
check "kiln run -u nobody" "$(leaky "$KILN" run --rm --network none -u nobody busybox ls -l /proc/self/fd 2>/dev/null)"

# detached: the monitor keeps state fds, the container must not see them
cid=$(leaky "$KILN" run -d --network none busybox sleep 60)
check "kiln exec" "$(leaky "$KILN" exec "$cid" ls -l /proc/self/fd 2>/dev/null)"
out=$("$KILN" exec "$cid" ls /proc/1/fd | sort -n | tr '\n' ' ')
[ "$out" = "0 1 2 " ] || fail "kiln run -d: PID 1 of the container holds fds '$out'"
# kiln exec -w /proc/self/fd/N from a leaky parent: refused or inside
for n in 3 4 5 6 7 8 9 10 42; do
	if out=$(leaky "$KILN" exec -w "/proc/self/fd/$n" "$cid" readlink /proc/self/cwd 2>/dev/null); then
		[ "$out" = "/proc/self/fd/$n" ] || fail "exec -w /proc/self/fd/$n: cwd '$out'"
	fi
done
[ "$(leaky "$KILN" exec -w /tmp "$cid" readlink /proc/self/cwd)" = /tmp ] || fail "control exec -w"
"$KILN" rm -f "$cid" >/dev/null
cid=

# build RUN, started by a leaky parent
ctx=$work/ctx
mkdir -p "$ctx"
printf 'FROM busybox\nRUN ls -l /proc/self/fd > /fds\n' > "$ctx/Dockerfile"
leaky "$KILN" build --progress plain -t sec-fds "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "fd build"; }
check "build RUN" "$("$KILN" run --rm --network none sec-fds cat /fds 2>/dev/null)"

# WORKDIR /proc/self/fd/N for every N in 3..64 in one build: each step
# records its cwd; a step may fail (refused), but never see the host.
for n in $(seq 3 64); do
	printf 'FROM busybox\nWORKDIR /proc/self/fd/%s\nRUN c=$(readlink /proc/self/cwd); echo \"$c\" > /cwd; [ \"$(stat -c %%d:%%i .)\" = \"$(stat -c %%d:%%i \"$c\" 2>/dev/null)\" ] && echo in > /inside || echo out > /inside\n' "$n" > "$ctx/Dockerfile.$n"
done
# control: the same step under an ordinary WORKDIR builds and reports "in"
sed 's|/proc/self/fd/3|/plain/dir|' "$ctx/Dockerfile.3" > "$ctx/Dockerfile.ok"
"$KILN" build --progress plain -f "$ctx/Dockerfile.ok" -t sec-wd:ok "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "control WORKDIR build"; }
[ "$("$KILN" run --rm --network none sec-wd:ok cat /inside /cwd)" = "in
/plain/dir" ] || fail "control WORKDIR: the probe does not work"
escaped=
for n in $(seq 3 64); do
	if leaky "$KILN" build --progress plain -f "$ctx/Dockerfile.$n" -t "sec-wd:$n" "$ctx" > "$work/log" 2>&1; then
		cwd=$("$KILN" run --rm --network none "sec-wd:$n" cat /cwd)
		inside=$("$KILN" run --rm --network none "sec-wd:$n" cat /inside)
		case $cwd in "(unreachable)"*|"") inside=out;; esac
		[ "$inside" = in ] || escaped="$escaped $n:$cwd"
		"$KILN" rmi "sec-wd:$n" >/dev/null 2>&1 || true
	fi
done
[ -z "$escaped" ] || fail "WORKDIR /proc/self/fd/N put the cwd outside the rootfs:$escaped"

# kiln run -w /proc/self/fd/N with a leaky parent (fd 7 is a host directory)
[ "$(leaky "$KILN" run --rm --network none -w /tmp busybox readlink /proc/self/cwd)" = /tmp ] || fail "control run -w"
for n in 3 4 5 6 7 8 9 10 42; do
	if out=$(leaky "$KILN" run --rm --network none -w "/proc/self/fd/$n" busybox readlink /proc/self/cwd 2>/dev/null); then
		[ "$out" = "/proc/self/fd/$n" ] || fail "run -w /proc/self/fd/$n: cwd '$out'"
	fi
done
echo "security fds ok"
