#!/bin/bash
# Issue 11, finding 8: an output file named on the command line (save -o,
# build --iidfile, build -o type=tar|oci,dest=) that exists and is not a
# regular file — a device, a fifo, a link to /proc/self/fd/1 — is written in
# place, never replaced by a regular file (a temp file renamed over /dev/full
# once turned it into a regular file).  `-o -` is stdout.  A regular file or a
# new path is still written atomically.  Device nodes are scratch nodes made
# here (c 1:3 and 1:7, the numbers of /dev/null and /dev/full); the host's
# /dev is never touched.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (mknod)"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
readers=()
cleanup() {
	for p in "${readers[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
mknod "$work/null" c 1 3
mknod "$work/full" c 1 7
mkfifo "$work/fifo"
ln -s /proc/self/fd/1 "$work/stdout"
mkdir -p "$work/ctx"
printf 'FROM busybox\nRUN echo hi > /hi\n' > "$work/ctx/Dockerfile"
isnode() { # isnode PATH MAJOR:MINOR
	[ "$(stat -c '%F %t:%T' "$1")" = "character special file $(printf '%x:%x' "${2%:*}" "${2#*:}")" ] ||
		fail "$1 is no longer the char device $2: $(stat -c '%F %t:%T %s' "$1")"
}
isfifo() { [ -p "$work/fifo" ] || fail "the fifo was replaced: $(stat -c '%F %s' "$work/fifo")"; }
# read the fifo in the background into FILE (the writer blocks until then)
readfifo() { cat "$work/fifo" > "$1" & readers+=($!); }

# save -o
"$KILN" save -o "$work/null" busybox || fail "save -o a null device"
isnode "$work/null" 1:3
out=$("$KILN" save -o "$work/full" busybox 2>&1) && fail "save -o a full device succeeded"
isnode "$work/full" 1:7
grep -q "^kiln: writing $work/full: .*No space left on device" <<<"$out" || fail "save -o full: unclear error: $out"
readfifo "$work/fifo.out"
"$KILN" save -o "$work/fifo" busybox || fail "save -o a fifo"
wait "${readers[-1]}"
isfifo
tar -tf "$work/fifo.out" | grep -qx manifest.json || fail "save -o fifo: no archive came through the fifo"
"$KILN" save -o - busybox | tar -t > "$work/list" || fail "save -o - | tar -t"
grep -qx index.json "$work/list" || fail "save -o -: not an archive on stdout"
"$KILN" save -o "$work/stdout" busybox | tar -t > "$work/list" || fail "save -o link-to-stdout | tar -t"
grep -qx index.json "$work/list" && [ -L "$work/stdout" ] || fail "save -o a link to /proc/self/fd/1: replaced or empty"
# a regular file is replaced atomically, a new path created; no temporary left
echo old > "$work/reg.tar"
"$KILN" save -o "$work/reg.tar" busybox && tar -tf "$work/reg.tar" | grep -qx manifest.json || fail "save -o over a regular file"
"$KILN" save -o "$work/new.tar" busybox && tar -tf "$work/new.tar" | grep -qx manifest.json || fail "save -o a new file"
ls -a "$work" | grep -q kiln-tmp && fail "a temporary file was left: $(ls -a "$work")"

# build --iidfile
"$KILN" build -q -t out1 --iidfile "$work/null" "$work/ctx" >/dev/null || fail "build --iidfile null device"
isnode "$work/null" 1:3
"$KILN" build -q --iidfile "$work/full" "$work/ctx" >/dev/null 2>&1 && fail "build --iidfile full device succeeded"
isnode "$work/full" 1:7
readfifo "$work/fifo.iid"
"$KILN" build -q --iidfile "$work/fifo" "$work/ctx" >/dev/null || fail "build --iidfile fifo"
wait "${readers[-1]}"
isfifo
grep -q '^sha256:[0-9a-f]\{64\}$' "$work/fifo.iid" || fail "build --iidfile fifo: $(cat "$work/fifo.iid")"
"$KILN" build -q --iidfile "$work/stdout" "$work/ctx" > "$work/iid.out" || fail "build --iidfile link-to-stdout"
[ -L "$work/stdout" ] || fail "build --iidfile replaced the link to stdout"
grep -q "^$(cat "$work/fifo.iid")\$" "$work/iid.out" || fail "build --iidfile link-to-stdout: the id did not reach stdout"
"$KILN" build -q --iidfile "$work/iid" "$work/ctx" >/dev/null && cmp -s "$work/iid" "$work/fifo.iid" ||
	fail "build --iidfile a new file"

# build -o type=tar and type=oci
"$KILN" build -q -o "type=tar,dest=$work/null" "$work/ctx" >/dev/null || fail "build -o type=tar,dest=null device"
isnode "$work/null" 1:3
out=$("$KILN" build -q -o "type=tar,dest=$work/full" "$work/ctx" 2>&1) && fail "build -o type=tar,dest=full succeeded"
isnode "$work/full" 1:7
grep -q "No space left on device" <<<"$out" || fail "build -o type=tar,dest=full: unclear error: $out"
readfifo "$work/fifo.tar"
"$KILN" build -q -o "type=tar,dest=$work/fifo" "$work/ctx" >/dev/null || fail "build -o type=tar,dest=fifo"
wait "${readers[-1]}"
isfifo
tar -tf "$work/fifo.tar" | grep -qx hi || fail "build -o type=tar,dest=fifo: no rootfs came through"
"$KILN" build -q -o "type=oci,dest=$work/null" "$work/ctx" >/dev/null || fail "build -o type=oci,dest=null device"
isnode "$work/null" 1:3
"$KILN" build -q -o "type=oci,dest=$work/full" "$work/ctx" >/dev/null 2>&1 && fail "build -o type=oci,dest=full succeeded"
isnode "$work/full" 1:7
ls -a "$work" | grep -q kiln-tmp && fail "a temporary file was left: $(ls -a "$work")"
echo "security outputs ok"
