#!/bin/bash
# security.md item 10 (CVE-2024-23651) and 8(c): two builds run at the same
# time and share a cache mount.  One keeps flipping the subdirectory `sub` of
# the cache between a directory and symlinks to / and to a host directory;
# the other mounts `source=sub` in many RUN steps.  The mounted source is
# resolved inside the cache directory: the reader never sees a host file, no
# host file changes, and the host's core_pattern is unchanged.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
tag=$$-$RANDOM
C=/tmp/kiln-cache-canary-$tag
flip=
cleanup() {
	[ -z "$flip" ] || kill "$flip" 2>/dev/null || true
	[ -z "$flip" ] || wait "$flip" 2>/dev/null || true
	rm -rf "$KILN_ROOT" "$work" "$C"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
mkdir -p "$C"
echo "host-secret-$tag" > "$C/secret"
cp_before=$(cat /proc/sys/kernel/core_pattern)

mkdir -p "$work/flip" "$work/read"
cat > "$work/flip/Dockerfile" <<EOF
FROM busybox
RUN --mount=type=cache,id=shared-x,target=/c sh -c 'end=\$((\$(date +%s) + 25)); mkdir -p /c/sub; echo cache-file > /c/sub/in-cache; while [ \$(date +%s) -lt \$end ]; do rm -rf /c/sub; ln -s / /c/sub; rm -f /c/sub; ln -s $C /c/sub; rm -f /c/sub; ln -s ../../../../../../../../$C /c/sub; rm -f /c/sub; mkdir /c/sub; echo cache-file > /c/sub/in-cache; usleep 3000; done'
EOF
reader() { # reader I: one build, one step (a step may be refused while the
	# source is missing or a symlink; a refusal is fine, an escape is not)
	local i=$1
	printf 'FROM busybox\nRUN --mount=type=cache,id=shared-x,source=sub,target=/m sh -c %s\n' \
		"'echo step $i >> /seen; ls -a /m >> /seen 2>&1; cat /m$C/secret /m/secret >> /seen 2>/dev/null; test -w /m/proc/sys/kernel/core_pattern && echo CORE-PATTERN-WRITABLE >> /seen; touch /m$C/pwned-$i 2>/dev/null; true'" \
		> "$work/read/Dockerfile"
	if "$KILN" build --progress plain --no-cache -t sec-read "$work/read" > "$work/read.log" 2>&1; then
		"$KILN" run --rm --network none sec-read cat /seen >> "$work/seen"
		ok=$((ok + 1))
	else
		grep -q 'cache mount source\|bind mount /m: ' "$work/read.log" || { tail -5 "$work/read.log"; fail "reader $i failed for another reason"; }
		refused=$((refused + 1))
	fi
}
"$KILN" build --progress plain --no-cache -t sec-flip "$work/flip" > "$work/flip.log" 2>&1 &
flip=$!
sleep 2
ok=0 refused=0
: > "$work/seen"
for i in $(seq 30); do
	reader "$i"
	kill -0 "$flip" 2>/dev/null || break
done
wait "$flip" || { tail -20 "$work/flip.log"; flip=; fail "the flipping build failed"; }
flip=
[ $ok -ge 1 ] || fail "every reading step was refused ($refused): the test did not race"
seen=$(cat "$work/seen")
escaped=
grep -q "host-secret-$tag" <<<"$seen" && escaped="a step read a host file through the cache mount source=sub"
grep -q "CORE-PATTERN-WRITABLE" <<<"$seen" && escaped="$escaped; the host's core_pattern was writable from a step"
grep -qx 'pyenv-installer\|lost+found\|boot' <<<"$seen" && escaped="$escaped; a step listed the host's /"
[ "$(ls -A "$C")" = secret ] || escaped="$escaped; files were created in the host directory: $(ls -A "$C" | tr '\n' ' ')"
[ "$(cat /proc/sys/kernel/core_pattern)" = "$cp_before" ] || fail "the host core_pattern changed"
# The source is resolved with RESOLVE_IN_ROOT into an fd (builder/build.c
# build_mounts) and the sandbox clones the mount from that fd in the parent
# (runtime/sandbox.c clone_sources): nothing re-resolves it by path, so an
# escape here is a regression.
[ -z "$escaped" ] || fail "${escaped#; }"
# the race was real: at least one step saw the cache directory's content
grep -q 'in-cache\|^sub$' <<<"$seen" || fail "no step saw the cache directory (test did not race): $(head -20 <<<"$seen")"
echo "security cache ok ($ok steps mounted the raced source, $refused refused)"
