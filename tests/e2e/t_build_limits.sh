#!/bin/bash
# Resource limits of build RUN steps (hostile review, issue 11 finding 3: a
# fork bomb in a Dockerfile must not take the host down).
#  - every RUN step has a process limit: 8192 by default, seen in the step's
#    own cgroup while it runs, with -m and --cpus beside it
#  - a step that forks beyond --pids-limit 20 (50 background sleeps) fails
#    cleanly with the shell's "can't fork", having started fewer than 50
#  - bad values are usage errors (exit 2)
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (cgroups)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
bpid=
cleanup() {
	[ -z "$bpid" ] || kill "$bpid" 2>/dev/null || true
	[ -z "$bpid" ] || wait "$bpid" 2>/dev/null || true
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd
tar --numeric-owner -C "$R" -cf "$work/img.tar" .
"$KILN" import --compression none "$work/img.tar" base >/dev/null || fail "import"
mkdir -p "$work/ctx"

# --- the default limit (and -m, --cpus) in the cgroup of a running step.
# The step sleeps for a duration no other process on this machine has; the
# test finds that process, reads its cgroup, then ends the sleep.
nap=$((3000000 + $$ % 100000))$RANDOM
printf 'FROM base\nRUN sleep %s || true; echo released\n' "$nap" > "$work/ctx/Dockerfile"
"$KILN" build --no-cache --progress plain -m 64m --cpus 0.5 "$work/ctx" > "$work/log" 2>&1 &
bpid=$!
sp=
for i in $(seq 600); do
	sp=$(pgrep -f "^sleep $nap\$" | head -n 1) && [ -n "$sp" ] && break
	kill -0 "$bpid" 2>/dev/null || fail "build ended early: $(tail -5 "$work/log")"
	sleep 0.1
done
[ -n "$sp" ] || fail "the step's process never appeared"
line() { # line CONTROLLER ("" = cgroup2): the step's cgroup path in it
	if [ -z "$1" ]; then sed -n 's/^0:://p' "/proc/$sp/cgroup"
	else awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' "/proc/$sp/cgroup"; fi
}
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
	d=/sys/fs/cgroup$(line "")
	case $d in */kiln-*) ;; *) fail "the step is not in a kiln cgroup: $d";; esac
	if [ -f "$d/pids.max" ]; then
		[ "$(cat "$d/pids.max")" = 8192 ] || fail "default pids.max: $(cat "$d/pids.max")"
	else
		echo "note: the parent cgroup does not delegate pids; the default limit is left out there"
	fi
	[ "$(cat "$d/memory.max")" = $((64 << 20)) ] || fail "memory.max"
	[ "$(cat "$d/cpu.max")" = "50000 100000" ] || fail "cpu.max"
else
	p=/sys/fs/cgroup/pids$(line pids)
	case $p in */kiln-*) ;; *) fail "the step is not in a kiln pids cgroup: $p";; esac
	[ "$(cat "$p/pids.max")" = 8192 ] || fail "default pids.max: $(cat "$p/pids.max")"
	m=/sys/fs/cgroup/memory$(line memory)
	[ "$(cat "$m/memory.limit_in_bytes")" = $((64 << 20)) ] || fail "memory.limit_in_bytes"
	c=/sys/fs/cgroup/cpu$(line cpu)
	[ "$(cat "$c/cpu.cfs_quota_us")" = 50000 ] || fail "cpu.cfs_quota_us"
fi
kill "$sp"
wait "$bpid" || fail "build with limits: $(tail -5 "$work/log")"
bpid=
grep -q released "$work/log" || fail "the step did not finish"
if [ -n "${p:-}" ]; then
	[ ! -d "$p" ] || fail "the step's cgroup $p was left behind"
else
	[ ! -d "$d" ] || fail "the step's cgroup $d was left behind"
fi

# --- a fork bomb, bounded: 50 background sleeps against --pids-limit 20
printf 'FROM base\nRUN for i in $(seq 1 50); do sleep 60 & echo "started $i"; done; wait\n' > "$work/ctx/Dockerfile"
set +e
timeout 300 "$KILN" build --no-cache --progress plain --pids-limit 20 "$work/ctx" > "$work/log" 2>&1; rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "fork bomb: exit $rc: $(tail -5 "$work/log")"
grep -q "can't fork" "$work/log" || fail "fork bomb: no fork failure: $(tail -5 "$work/log")"
n=$(grep -c 'started [0-9]' "$work/log" || true)
[ "$n" -ge 5 ] && [ "$n" -lt 20 ] || fail "fork bomb: $n processes started under --pids-limit 20"
grep -q 'did not complete successfully' "$work/log" || fail "fork bomb: the step did not fail cleanly"

# --- bad values
for bad in "--pids-limit 0" "--pids-limit x" "--pids-limit -2" "--cpus 0" "--cpus abc"; do
	set +e
	# shellcheck disable=SC2086
	"$KILN" build $bad "$work/ctx" > "$work/out" 2>&1; rc=$?
	set -e
	[ $rc = 2 ] && grep -q -- "${bad%% *}" "$work/out" || fail "build $bad: exit $rc ($(cat "$work/out"))"
done
echo "build limits ok"
