#!/bin/bash
# kiln build against the attacks of security.md that touch the builder:
# item 3 (WORKDIR /proc/self/fd/N), 4 (COPY through symlinks that leave the
# rootfs), 5 (no NSS from the image for --chown/USER), 10/13 (cache and bind
# mount sources resolved inside their own root, ".." refused), 11 (mount
# stubs removed without following symlinks), bind-propagation refused.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
tag=$$-$RANDOM
canary=/tmp/kiln-canary-$tag
escape=/tmp/kiln-escape-$tag
marker=/tmp/kiln-nss-marker-$tag
cleanup() { rm -rf "$KILN_ROOT" "$work" "$canary" "$escape" "$marker"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
kb() { "$KILN" build --progress plain "$@" > "$work/log" 2>&1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
ctx=$work/ctx
mkdir -p "$ctx"
echo payload > "$ctx/f.txt"

# item 4: a destination through a symlink to / stays inside the rootfs
printf 'FROM busybox\nRUN ln -s / /escape\nCOPY f.txt /escape%s\nRUN cat %s > /copied\n' "$escape" "$escape" > "$ctx/Dockerfile"
kb -t sec-copy "$ctx" || { cat "$work/log"; fail "COPY through a symlink build"; }
[ -e "$escape" ] && fail "COPY wrote to the host through /escape -> /"
[ "$("$KILN" run --rm --network none sec-copy cat /copied)" = payload ] || fail "COPY through the symlink did not land in the rootfs"

# item 3: WORKDIR /proc/self/fd/N must not put the cwd outside the container
for n in 3 5 7; do
	printf 'FROM busybox\nWORKDIR /proc/self/fd/%s\nRUN readlink /proc/self/cwd > /cwd; ls /proc/self/fd > /fds\n' "$n" > "$ctx/Dockerfile"
	if kb -t sec-wd "$ctx"; then
		cwd=$("$KILN" run --rm --network none sec-wd cat /cwd)
		case $cwd in "(unreachable)"*|*/work/*|*/tmp/*) fail "WORKDIR /proc/self/fd/$n: cwd $cwd is outside the container";; esac
	fi
done
printf 'FROM busybox\nRUN ls /proc/self/fd | tr "\\n" " " > /fds\n' > "$ctx/Dockerfile"
kb -t sec-fds "$ctx" || { cat "$work/log"; fail "fd listing build"; }
fds=$("$KILN" run --rm --network none sec-fds cat /fds)
[ "$fds" = "0 1 2 3 " ] || fail "RUN sees extra fds: $fds (want 0 1 2 and ls's own 3)"

# item 5: a trojan NSS module in the image is never loaded by kiln
if command -v gcc >/dev/null; then
	cat > "$work/nss.c" <<EOF
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void trojan(void)
{
	int fd = open("$marker", O_WRONLY | O_CREAT, 0644);
	if (fd >= 0) close(fd);
}
EOF
	gcc -shared -fPIC -o "$ctx/libnss_files.so.2" "$work/nss.c"
	cat > "$ctx/Dockerfile" <<'DF'
FROM busybox
COPY libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_files.so.2
COPY libnss_files.so.2 /lib/libnss_files.so.2
COPY libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_files.so.2
RUN echo 'passwd: files' > /etc/nsswitch.conf && echo 'group: files' >> /etc/nsswitch.conf && \
    echo 'alice:x:1234:2345::/home/alice:/bin/sh' >> /etc/passwd && echo 'alicegrp:x:2345:' >> /etc/group
COPY --chown=alice:alicegrp f.txt /owned
USER alice
RUN id -u > /tmp/uid
DF
	kb -t sec-nss "$ctx" || { cat "$work/log"; fail "NSS trojan build"; }
	[ -e "$marker" ] && fail "kiln loaded the image's libnss_files.so.2"
	[ "$("$KILN" run --rm --network none sec-nss stat -c '%u %g' /owned)" = "1234 2345" ] || fail "--chown=alice from the image's passwd"
	[ "$("$KILN" run --rm --network none sec-nss cat /tmp/uid)" = 1234 ] || fail "USER alice"
	rm -f "$ctx/libnss_files.so.2"
fi

# item 13: a bind source that is a symlink to / resolves inside the source image
printf 'FROM busybox\nRUN ln -s / /evil && echo image-root > /evil-marker\n' > "$ctx/Dockerfile"
kb -t sec-evil "$ctx" || { cat "$work/log"; fail "evil image build"; }
printf 'FROM busybox\nRUN --mount=type=bind,from=sec-evil,source=evil,target=/m ls /m > /listing\n' > "$ctx/Dockerfile"
kb -t sec-bind "$ctx" || { cat "$work/log"; fail "bind from=evil build"; }
"$KILN" run --rm --network none sec-bind grep -qx evil-marker /listing || fail "bind source=evil did not list the image root"
"$KILN" run --rm --network none sec-bind grep -qx work /listing && fail "bind source=evil listed the host root"
if [ -d /work ]; then :; fi

# ".." in source=, target=; unknown bind-propagation
for m in "type=cache,target=/c,source=../../../.." "type=bind,source=../../..,target=/m" \
	"type=cache,target=/../../x" "type=bind,source=f.txt,target=/m,bind-propagation=rshared,foo"; do
	printf 'FROM busybox\nRUN --mount=%s true\n' "$m" > "$ctx/Dockerfile"
	kb -t sec-dots "$ctx" && fail "--mount=$m was accepted"
done
# bind-propagation is not a BuildKit mount key: the plan refuses it up front
# (file:line, as kiln parse --check does), so no value reaches a mount
printf 'FROM busybox\nRUN --mount=type=bind,source=f.txt,target=/m,bind-propagation=shared,rw=false true\n' > "$ctx/Dockerfile"
kb -t sec-prop-ok "$ctx" && fail "bind-propagation accepted by kiln build"
grep -q "Dockerfile:2:.*unexpected key 'bind-propagation'" "$work/log" || { cat "$work/log"; fail "bind-propagation refusal unclear"; }
"$KILN" parse --check "$ctx/Dockerfile" >/dev/null 2>&1 && fail "bind-propagation accepted by kiln parse --check"
for m in "bind-propagation=shared,upperdir=/x" "bind-propagation=shared:upperdir=/"; do
	printf 'FROM busybox\nRUN --mount=type=bind,source=f.txt,target=/m,%s true\n' "$m" > "$ctx/Dockerfile"
	kb -t sec-prop "$ctx" && fail "an injected bind-propagation value was accepted: $m"
done
# a cache id with .. is refused by the plan (or, in an ONBUILD trigger the
# plan does not see, only a name): it cannot reach the host's /etc
printf 'FROM busybox\nRUN --mount=type=cache,id=../../../../../../etc,target=/c ls /c > /cache-listing\n' > "$ctx/Dockerfile"
kb -t sec-cacheid "$ctx" && fail "cache id=../../etc accepted"
grep -q 'Dockerfile:2:.*invalid mount id' "$work/log" || { cat "$work/log"; fail "cache id refusal unclear"; }
printf 'FROM busybox\nONBUILD RUN --mount=type=cache,id=../../../../../../etc,target=/c ls /c > /cache-listing\n' > "$ctx/Dockerfile"
kb -t sec-cacheid-base "$ctx" || { cat "$work/log"; fail "ONBUILD base build"; }
printf 'FROM sec-cacheid-base\n' > "$ctx/Dockerfile"
if kb -t sec-cacheid "$ctx"; then
	"$KILN" run --rm --network none sec-cacheid grep -q passwd /cache-listing && fail "cache id=../../etc mounted the host /etc"
else
	grep -q 'invalid mount id' "$work/log" || { cat "$work/log"; fail "ONBUILD cache id build"; }
fi

# item 11: mount stubs are removed without following a symlink the step planted
mkdir -p "$canary/y/z"
printf 'FROM busybox\nRUN --mount=type=tmpfs,target=/x/y/z rm -rf /x 2>/dev/null; ln -s %s /x\n' "$canary" > "$ctx/Dockerfile"
kb -t sec-stub "$ctx" || true
[ -d "$canary/y/z" ] || fail "the stub cleaner removed the host canary through a symlink"
# stubs of mounts never reach the image
printf 'FROM busybox\nRUN --mount=type=tmpfs,target=/stub/deep true\n' > "$ctx/Dockerfile"
kb -t sec-stub2 "$ctx" || { cat "$work/log"; fail "tmpfs mount build"; }
"$KILN" run --rm --network none sec-stub2 test -e /stub && fail "mount stub /stub left in the image"
echo "build security ok"
