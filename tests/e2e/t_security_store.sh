#!/bin/bash
# security.md item 19 (CVE-2021-41091, CVE-2021-21284, CVE-2020-15257):
# a store root kiln creates is 0700 and root-owned, and so are the state
# directories; while detached containers run (bridge with -p, and host
# network), no socket held by kiln or by the container's processes is an
# abstract unix socket, and a named control socket lives in a directory
# nobody else can enter.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }

base=$(mktemp -d)
export KILN_ROOT=$base/store     # does not exist yet: kiln creates it
cids=
cleanup() {
	for c in $cids; do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	rm -rf "$base"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

umask 022
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
[ "$(stat -c '%a %u %g' "$KILN_ROOT")" = "700 0 0" ] || fail "store root: $(stat -c '%a %u %g' "$KILN_ROOT"), want 700 0 0"

# a setuid binary in an image is not reachable through the store by others:
# every path from / to a container's rootfs crosses a 0700 directory
# (CVE-2021-41091). Checked on the files of a running container.
. "$KILN_SRC/tests/e2e/lib/ports.sh"
port=$(free_port)
c1=$("$KILN" run -d -p "127.0.0.1:$port:80" busybox sh -c 'cp /bin/busybox /suid; chmod 4755 /suid; httpd -f -p 80 -h /')
cids="$c1"
c2=$("$KILN" run -d --network host busybox sleep 60)
cids="$cids $c2"
sleep 1
found=
while read -r f; do
	found=1
	d=$f ok=
	while [ "$d" != / ]; do
		d=$(dirname "$d")
		[ $(( 0$(stat -c %a "$d") & 01 )) -eq 0 ] && { ok=1; break; }
	done
	[ -n "$ok" ] || fail "$f is reachable by other users: no directory on its path is closed to others"
done < <(find "$KILN_ROOT" /run/kiln -name suid -perm -4000 2>/dev/null)
[ -n "$found" ] || fail "the container's setuid copy was not found under the store (test broken?)"
for d in "$KILN_ROOT"/containers "$KILN_ROOT"/snapshots /run/kiln; do
	[ -d "$d" ] || continue
	[ $(( 0$(stat -c %a "$d") & 077 )) -eq 0 ] || fail "$d is $(stat -c %a "$d"), not 0700"
done

# the processes: every kiln process started by this test and all their
# descendants (the containers' processes)
KR=$(realpath "$KILN")
pids=
for p in /proc/[0-9]*; do
	[ "$(readlink "$p/exe" 2>/dev/null)" = "$KR" ] && pids="$pids ${p#/proc/}"
done
[ -n "$pids" ] || fail "no kiln process is running for the detached containers"
all=$pids
for i in 1 2 3 4; do
	for p in /proc/[0-9]*; do
		pp=$(awk '{print $4}' "$p/stat" 2>/dev/null) || continue
		case " $all " in *" $pp "*) case " $all " in *" ${p#/proc/} "*) ;; *) all="$all ${p#/proc/}";; esac;; esac
	done
done
nsock=0
for p in $all; do
	for fd in /proc/$p/fd/*; do
		l=$(readlink "$fd" 2>/dev/null) || continue
		case $l in socket:\[*\]) ;; *) continue;; esac
		ino=${l#socket:[}; ino=${ino%]}
		# the unix socket table of the process's own network namespace
		line=$(awk -v i="$ino" '$7 == i' "/proc/$p/net/unix" 2>/dev/null) || true
		[ -n "$line" ] || continue
		nsock=$((nsock + 1))
		path=$(awk '{print $8}' <<<"$line")
		case $path in
		@*) fail "process $p ($(cat /proc/$p/comm)) holds an abstract unix socket $path";;
		"") ;;
		*)
			dir=$(dirname "$path")
			[ $(( 0$(stat -c %a "$dir") & 077 )) -eq 0 ] || fail "control socket $path is in $dir with mode $(stat -c %a "$dir")";;
		esac
	done
done
# the host network namespace: no abstract socket of these processes is
# listed (a --network host container sees exactly this table)
"$KILN" exec "$c2" cat /proc/net/unix > "$base/unix-host"
for p in $all; do
	for fd in /proc/$p/fd/*; do
		l=$(readlink "$fd" 2>/dev/null) || continue
		case $l in socket:\[*\]) ino=${l#socket:[}; ino=${ino%]};; *) continue;; esac
		awk -v i="$ino" '$7 == i && $8 ~ /^@/ {print; bad=1} END {exit bad}' "$base/unix-host" ||
			fail "a --network host container sees kiln's abstract socket (inode $ino)"
	done
done
echo "security store ok ($nsock unix sockets of $(wc -w <<<"$all") processes checked)"
