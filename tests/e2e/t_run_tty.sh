#!/bin/bash
# -it through a real pty (script(1) provides the outer terminal): the
# container gets a pty from its own devpts, input reaches it, the window size
# is passed and SIGWINCH forwarded, the exit status comes back.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }
command -v script >/dev/null || { echo "script(1) (util-linux) is not installed"; exit 77; }

# script(1) runs its command with $SHELL -c; dash (the usual /bin/sh) dies of
# the ^C itself instead of waiting for kiln, so pin bash for every case here
export SHELL=$(command -v bash)
export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc "$R"/root
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd

# interactive shell: typed input, a pty inside, exit status
set +e
printf 'echo hi-$((1+2))\ntty\nexit 5\n' | timeout 30 script -qec \
	"$KILN run -it --rm --network none --rootfs $R sh" /dev/null > "$work/out"; rc=$?
set -e
[ $rc -eq 5 ] || fail "exit status through the pty: $rc"
grep -q 'hi-3' "$work/out" || fail "input did not reach the shell: $(cat "$work/out")"
grep -q '/dev/pts/0' "$work/out" || fail "no pty from the container's devpts: $(cat "$work/out")"

# -t alone: output through the pty, TERM set
timeout 30 script -qec "$KILN run -t --rm --network none --rootfs $R sh -c 'tty; echo \$TERM; test -t 0 && echo STDIN-TTY'" \
	/dev/null < /dev/null > "$work/out"
grep -q '/dev/pts/0' "$work/out" || fail "-t: no pty"
grep -q 'xterm' "$work/out" || fail "-t: TERM"

# --privileged: host devices, but a pts instance of its own
timeout 30 script -qec "$KILN run -t --rm --privileged --network none --rootfs $R sh -c 'tty; echo n=\$(ls -1 /dev/pts | wc -l)'" \
	/dev/null < /dev/null > "$work/out"
grep -q '/dev/pts/0' "$work/out" || fail "--privileged -t: $(cat "$work/out")"
grep -q 'n=2' "$work/out" || fail "--privileged: other ptys visible in /dev/pts: $(cat "$work/out")"

# window size at start and after a resize (SIGWINCH forwarded)
timeout 30 script -qec "stty rows 30 cols 100; (sleep 1; stty rows 40 cols 120 </dev/tty) & $KILN run -it --rm --network none --rootfs $R sh -c 'stty size; sleep 2.5; stty size'" \
	/dev/null < /dev/null > "$work/out"
grep -q '30 100' "$work/out" || fail "initial window size: $(cat "$work/out")"
grep -q '40 120' "$work/out" || fail "SIGWINCH not forwarded: $(cat "$work/out")"

# ^C on the user's terminal (no -t): kiln forwards SIGINT once, the init
# passes it to the program -> 130
out=$( (sleep 1.5; printf '\003') | timeout 30 script -qec \
	"$KILN run --rm --init --network none --rootfs $R sleep 20; echo rc=\$?" /dev/null)
grep -q 'rc=130' <<<"$out" || fail "^C did not stop the container: $out"

# the terminal is restored afterwards (raw mode undone)
timeout 30 script -qec "stty -a > $work/before; printf 'exit\n' | true; $KILN run -it --rm --network none --rootfs $R true; stty -a > $work/after" \
	/dev/null < /dev/null > /dev/null
cmp -s "$work/before" "$work/after" || fail "terminal settings not restored: $(diff "$work/before" "$work/after")"
echo "run tty ok"
