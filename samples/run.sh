#!/bin/sh
# The main job (make run): make the offline busybox base, build the echo
# sample, run it detached with port 50000 published, do an echo round trip
# with busybox nc on 127.0.0.1, then stop and remove the container.
# Usage: samples/run.sh KILN_BINARY   (store: $KILN_ROOT, else kiln's default /var/lib/kiln)
set -eu
KILN=${1:?usage: samples/run.sh KILN_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
PORT=${ECHO_PORT:-50000}

"$here/make-base.sh" "$KILN"
echo "== kiln build -t echo samples/echo"
"$KILN" build -t echo "$here/echo"

echo "== kiln run -d -p $PORT:50000 echo"
cid=$("$KILN" run -d -p "$PORT:50000" echo)
cleanup() {
	"$KILN" stop -t 2 "$cid" >/dev/null 2>&1 || true
	"$KILN" rm -f "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
echo "container $cid"

BB=$(command -v busybox || echo /bin/busybox)
msg="hello from kiln $$"
reply=""
i=0
while [ $i -lt 50 ]; do
	reply=$(printf '%s\n' "$msg" | timeout 3 "$BB" nc -w 1 127.0.0.1 "$PORT" 2>/dev/null || true)
	[ -n "$reply" ] && break
	i=$((i + 1))
	sleep 0.1
done
echo "sent:     $msg"
echo "received: $reply"
if [ "$reply" != "$msg" ]; then
	echo "echo round trip FAILED" >&2
	"$KILN" logs "$cid" >&2 || true
	exit 1
fi
echo "echo round trip ok"
