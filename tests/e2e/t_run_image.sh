#!/bin/bash
# kiln run IMAGE: the offline busybox base from the store, a writable
# snapshot per container (discarded by --rm and by rm), the image config
# (Cmd, Entrypoint, Env, WorkingDir, User) applied and overridable.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
[ -x "$KILN_SRC/samples/make-base.sh" ] || { echo "samples/make-base.sh missing"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() {
	for c in $("$KILN" ps -aq 2>/dev/null); do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

[ "$("$KILN" run --rm --network none busybox echo hello)" = hello ] || fail "run busybox echo"
[ "$("$KILN" run --rm --network none busybox sh -c 'echo $$')" = 1 ] || fail "PID 1"

# the writable layer: private per container, gone with --rm
"$KILN" run --rm --network none busybox sh -c 'echo x > /leak'
"$KILN" run --rm --network none busybox test -e /leak && fail "a --rm container's write is visible to the next"
"$KILN" run --network none --name keep busybox sh -c 'echo kept > /data'
"$KILN" ps -a | grep -q keep || fail "ps -a lacks the exited container"
ls "$KILN_ROOT"/snapshots/*/active/ | grep -q ctr- || fail "no writable snapshot kept for a stopped container"
"$KILN" rm keep >/dev/null
ls "$KILN_ROOT"/snapshots/*/active/ 2>/dev/null | grep -q ctr- && fail "rm left the writable snapshot"

# the image's Cmd runs when no command is given ("sh" reading /dev/null)
"$KILN" run --rm --network none busybox || fail "the image's Cmd"

# an image with a full config, imported with --change
R=$work/rootfs
mkdir -p "$R"/bin "$R"/etc "$R"/srv "$R"/proc "$R"/sys "$R"/dev "$R"/tmp
BB=$(command -v busybox || echo /bin/busybox)
cp "$BB" "$R"/bin/busybox
for a in sh echo id pwd env cat; do ln -s busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$R"/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R"/etc/group
tar -C "$R" -cf "$work/root.tar" .
"$KILN" import -c 'ENV FOO=bar' -c 'WORKDIR /srv' -c 'USER nobody' \
	-c 'ENTRYPOINT ["/bin/sh", "-c", "echo $FOO $(pwd) $(id -u) \"$0\" \"$@\""]' -c 'CMD ["c1", "c2"]' \
	"$work/root.tar" cfg:1 >/dev/null
out=$("$KILN" run --rm --network none cfg:1)
[ "$out" = "bar /srv 65534 c1 c2" ] || fail "image config (Env, WorkingDir, User, Entrypoint, Cmd): '$out'"
out=$("$KILN" run --rm --network none cfg:1 x y)
[ "$out" = "bar /srv 65534 x y" ] || fail "args replace Cmd, keep Entrypoint: '$out'"
out=$("$KILN" run --rm --network none -u 0 -w / -e FOO=baz cfg:1 z)
[ "$out" = "baz / 0 z" ] || fail "flags override the config: '$out'"
[ "$("$KILN" run --rm --network none --entrypoint '' cfg:1 echo plain)" = plain ] || fail "--entrypoint ''"

# override Cmd/Entrypoint/Workdir/User from the command line
[ "$("$KILN" run --rm --network none -w /tmp busybox pwd)" = /tmp ] || fail "-w"
[ "$("$KILN" run --rm --network none --entrypoint /bin/echo busybox a b)" = "a b" ] || fail "--entrypoint"
[ "$("$KILN" run --rm --network none -u 65534 busybox id -u)" = 65534 ] || fail "-u"
"$KILN" run --rm --network none -e K=v busybox env | grep -qx 'K=v' || fail "-e"

# detached from an image, then removed
id=$("$KILN" run -d --network none busybox sleep 30)
"$KILN" exec "$id" sh -c 'echo in > /inside'
[ "$("$KILN" exec "$id" cat /inside)" = in ] || fail "exec sees the writable layer"
"$KILN" rm -f "$id" >/dev/null
ls "$KILN_ROOT"/snapshots/*/active/ 2>/dev/null | grep -q ctr- && fail "rm -f left the writable snapshot"

set +e
"$KILN" run --rm --network none no-such-image:1 true 2>"$work/err"; rc=$?
set -e
[ $rc -eq 125 ] || fail "missing image: exit $rc"
grep -q "Unable to find image" "$work/err" || fail "missing image message: $(cat "$work/err")"
echo "run image ok"
