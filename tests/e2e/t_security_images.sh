#!/bin/bash
# Hostile IMAGES from the store (kiln import), run by `kiln run IMAGE` and used
# as the base of a build RUN: the paths the other tests check with --rootfs
# go through the image/snapshot code here.
#  1  CVE-2019-5736   #!/proc/self/exe in a build RUN; a container holding
#                     /proc/<pid>/exe open read-only and reopening it writable
#                     through /proc/self/fd while kiln exec joins; the kiln
#                     binary's sha256 is unchanged
#  5  CVE-2019-14271  a trojan libnss_files.so.2: kiln run -u alice / exec -u
#  7  CVE-2019-16884  /proc a symlink, a file, or a VOLUME: run and RUN fail
#  8  CVE-2025-31133  /dev/null a symlink to core_pattern: masks are 1:3 and
#                     the host core_pattern is unchanged, in run and RUN
#  9  /dev a symlink to a host directory with a decoy: unchanged (run, RUN)
#  6  /etc, /etc/hosts, hostname, resolv.conf symlinks to host files: unchanged
# 16  capability and group hygiene in a build RUN with USER 1000
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
tag=$$-$RANDOM
marker=/tmp/kiln-nss-marker-$tag
hostdir=/tmp/kiln-decoy-$tag
cid=
cleanup() {
	[ -z "$cid" ] || "$KILN" rm -f "$cid" >/dev/null 2>&1 || true
	rm -rf "$KILN_ROOT" "$work" "$marker" "$hostdir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkroot() { # mkroot DIR
	mkdir -p "$1"/bin "$1"/proc "$1"/sys "$1"/dev "$1"/tmp "$1"/etc "$1"/root
	cp "$BB" "$1"/bin/busybox
	for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$1/bin/$a"; done
	echo 'root:x:0:0:root:/root:/bin/sh' > "$1"/etc/passwd
	echo 'root:x:0:' > "$1"/etc/group
	chmod 1777 "$1"/tmp
}
import() { # import DIR TAG [--change ...]
	local d=$1 t=$2
	shift 2
	tar --numeric-owner -C "$d" -cf "$work/$t.tar" .
	"$KILN" import --compression none "$@" "$work/$t.tar" "$t" >/dev/null || fail "import $t"
}
run() { "$KILN" run --rm --network none "$@"; }
ctx=$work/ctx
mkdir -p "$ctx"
build() { # build TAG DOCKERFILE-TEXT
	printf '%b' "$2" > "$ctx/Dockerfile"
	"$KILN" build --progress plain -t "$1" "$ctx" > "$work/log" 2>&1
}

R=$work/base
mkroot "$R"
import "$R" base:1

# --- 1: CVE-2019-5736
sum() { sha256sum "$KILN" | cut -d' ' -f1; }
before=$(sum)
E=$work/exe
mkroot "$E"
printf '#!/proc/self/exe\n' > "$E"/bin/evil
printf '#!/bin/evil\n' > "$E"/bin/evil2
chmod 755 "$E"/bin/evil "$E"/bin/evil2
import "$E" exe:1
build sec-exe1 'FROM exe:1\nRUN /bin/evil\n' && fail "RUN of a #!/proc/self/exe script succeeded"
build sec-exe2 'FROM exe:1\nRUN ["/bin/evil2"]\n' && fail "RUN of a #!/bin/evil (-> /proc/self/exe) script succeeded"
# a build RUN writing to every /proc/<pid>/exe it can see, directly and by
# reopening a read-only handle through /proc/self/fd
attack='for p in /proc/[0-9]*; do echo pwned >> $p/exe 2>/dev/null && echo WROTE $p >> /wrote; (exec 3<$p/exe && echo pwned >> /proc/self/fd/3) 2>/dev/null && echo REOPENED $p >> /wrote; done; true'
build sec-exe3 "FROM exe:1\nRUN $attack\n" || { cat "$work/log"; fail "the /proc/*/exe build"; }
out=$(run sec-exe3 sh -c 'cat /wrote 2>/dev/null; true')
[ -z "$out" ] || fail "a build RUN wrote through /proc/*/exe: $out"
# a detached container keeps reopening every exe it sees while kiln exec
# processes join it (they show up in its pid namespace while setting up)
cid=$("$KILN" run -d --network none exe:1 sh -c "while true; do $attack; done")
for i in $(seq 10); do "$KILN" exec "$cid" true >/dev/null 2>&1 || true; done
out=$("$KILN" exec "$cid" sh -c 'cat /wrote 2>/dev/null; true')
"$KILN" rm -f "$cid" >/dev/null
cid=
[ -z "$out" ] || fail "a container wrote through /proc/*/exe while exec joined: $out"
[ "$(sum)" = "$before" ] || fail "the kiln binary changed"

# --- 7: /proc a symlink, a file, a VOLUME
P=$work/procsym
mkroot "$P"
rmdir "$P"/proc
ln -s /tmp "$P"/proc
import "$P" procsym:1
set +e
run procsym:1 true 2>"$work/err"; rc=$?
set -e
[ $rc -eq 125 ] || fail "image with /proc -> /tmp: run exit $rc, want 125 ($(cat "$work/err"))"
build sec-proc1 'FROM procsym:1\nRUN true\n' && fail "RUN on an image with /proc -> /tmp succeeded"
rm "$P"/proc
echo file > "$P"/proc
import "$P" procfile:1
set +e
run procfile:1 true 2>/dev/null; rc=$?
set -e
[ $rc -eq 125 ] || fail "image with /proc a file: run exit $rc, want 125"
build sec-proc2 'FROM procfile:1\nRUN true\n' && fail "RUN on an image with /proc a file succeeded"
# VOLUME /proc: either refused, or procfs is mounted over it (never a volume)
import "$R" procvol:1 --change 'VOLUME /proc'
if out=$(run procvol:1 stat -f -c %T /proc 2>/dev/null); then
	[ "$out" = proc ] || fail "VOLUME /proc: /proc is '$out', not procfs"
fi
if build sec-proc3 'FROM procvol:1\nRUN stat -f -c %T /proc > /fstype\n'; then
	[ "$(run sec-proc3 cat /fstype)" = proc ] || fail "VOLUME /proc in RUN: not procfs"
fi

# --- 8: /dev/null -> /proc/sys/kernel/core_pattern, and a regular file
cp_before=$(cat /proc/sys/kernel/core_pattern)
D=$work/devnull
mkroot "$D"
ln -s /proc/sys/kernel/core_pattern "$D"/dev/null
import "$D" devnull:1
[ "$(run devnull:1 stat -c %F:%t:%T /proc/keys)" = "character special file:1:3" ] || fail "run: the mask source is not /dev/null 1:3"
run devnull:1 sh -c 'echo "|/tmp/pwn-$$" > /proc/sys/kernel/core_pattern' 2>/dev/null && fail "run: core_pattern writable"
build sec-devnull 'FROM devnull:1\nRUN stat -c %F:%t:%T /proc/keys /dev/null > /masks; echo "|/tmp/pwn" > /proc/sys/kernel/core_pattern 2>/dev/null && echo WROTE >> /masks; true\n' ||
	{ cat "$work/log"; fail "build on an image with /dev/null -> core_pattern"; }
[ "$(run sec-devnull cat /masks)" = "character special file:1:3
character special file:1:3" ] || fail "build RUN: masks/devices: $(run sec-devnull cat /masks)"
[ "$(cat /proc/sys/kernel/core_pattern)" = "$cp_before" ] || fail "host core_pattern changed"
rm "$D"/dev/null
echo regular > "$D"/dev/null
import "$D" devnull:2
[ "$(run devnull:2 stat -c %F:%t:%T /proc/keys)" = "character special file:1:3" ] || fail "run: mask with a regular /dev/null"

# --- 9: /dev -> a host directory with a decoy
mkdir -p "$hostdir"
echo decoy > "$hostdir/ptmx"
V=$work/devsym
mkroot "$V"
rmdir "$V"/dev
ln -s "$hostdir" "$V"/dev
import "$V" devsym:1
run devsym:1 true >/dev/null 2>&1 || true
build sec-devsym 'FROM devsym:1\nRUN true\n' || true
[ "$(cat "$hostdir/ptmx")" = decoy ] || fail "decoy ptmx changed"
[ "$(ls -A "$hostdir")" = ptmx ] || fail "files created in the host directory: $(ls -A "$hostdir")"

# --- 6/9: the files kiln mounts itself (/etc/hosts, hostname, resolv.conf)
# when the image's /etc, or those files, are symlinks to host paths
# (absolute, ../, into /proc): the host files stay as they are
for f in hosts hostname resolv.conf; do echo decoy > "$hostdir/$f"; done
S=$work/etcsym
mkroot "$S"
rm -rf "$S"/etc
ln -s "$hostdir" "$S"/etc
import "$S" etcsym:1
run etcsym:1 true >/dev/null 2>&1 || true
"$KILN" run --rm --rootfs "$S" true >/dev/null 2>&1 || true   # bridge network: resolv.conf, hosts
rm "$S"/etc
mkdir "$S"/etc
echo 'root:x:0:0:root:/root:/bin/sh' > "$S"/etc/passwd
ln -s /proc/sys/kernel/core_pattern "$S"/etc/hosts
ln -s "$hostdir/hostname" "$S"/etc/hostname
ln -s "../../../../../../..$hostdir/resolv.conf" "$S"/etc/resolv.conf
import "$S" etcsym:2
run etcsym:2 true >/dev/null 2>&1 || true
"$KILN" run --rm --rootfs "$S" true >/dev/null 2>&1 || true
for f in hosts hostname resolv.conf; do
	[ "$(cat "$hostdir/$f")" = decoy ] || fail "the host file $hostdir/$f behind the image's /etc changed: $(cat "$hostdir/$f")"
done
[ "$(cat /proc/sys/kernel/core_pattern)" = "$cp_before" ] || fail "host core_pattern changed through /etc/hosts"

# --- 6 in a build: RUN --mount targets behind symlinks to a host directory
# (absolute and ../) made by an earlier step: refused or inside the rootfs
T=$hostdir/target
mkdir -p "$T/sub"
echo payload > "$ctx/p.txt"
build sec-tgt "FROM base:1\nRUN ln -s $T /m && ln -s ../../../../../../..$T /r\nRUN --mount=type=bind,source=.,target=/m --mount=type=tmpfs,target=/r/sub --mount=type=cache,target=/m/c touch /m/written /r/sub/written 2>/dev/null; ls /m > /lm; true\n" || true
[ "$(ls -A "$T")" = sub ] && [ -z "$(ls -A "$T/sub")" ] || fail "RUN --mount through a symlink wrote to the host: $(ls -AR "$T")"
grep -q "$T" /proc/self/mountinfo && fail "a RUN mount landed on the host directory"
rm -rf "$T"

# --- 16: USER 1000 in a build RUN: no inheritable/ambient caps, groups only
# from the image's /etc/group (the host's groups of uid 1000 do not count)
G=$work/groups
mkroot "$G"
echo 'alice:x:1000:1000::/home/alice:/bin/sh' >> "$G"/etc/passwd
printf 'alice:x:1000:\naudio:x:63:alice\nstaff:x:50:bob,alice\nother:x:70:bob\n' >> "$G"/etc/group
import "$G" groups:1
build sec-user 'FROM groups:1\nUSER 1000\nRUN cat /proc/self/status > /tmp/status\n' || { cat "$work/log"; fail "USER 1000 build"; }
st=$(run sec-user cat /tmp/status)
grep -q '^Uid:.1000.1000.1000.1000' <<<"$st" || fail "USER 1000: $(grep Uid <<<"$st")"
grep -q '^CapInh:.0000000000000000' <<<"$st" || fail "USER 1000 RUN: CapInh not empty"
grep -q '^CapAmb:.0000000000000000' <<<"$st" || fail "USER 1000 RUN: CapAmb not empty"
grep -q '^CapEff:.0000000000000000' <<<"$st" || fail "USER 1000 RUN: CapEff not empty"
groups=$(grep '^Groups:' <<<"$st" | cut -f2 | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ' || true)
[ "$groups" = "50 63 1000 " ] || fail "USER 1000 RUN: supplementary groups '$groups', want '50 63 1000 '"
build sec-user2 'FROM groups:1\nUSER 1000:70\nRUN cat /proc/self/status > /tmp/status\n' || { cat "$work/log"; fail "USER 1000:70 build"; }
st=$(run sec-user2 cat /tmp/status)
grep -q '^Gid:.70.70.70.70' <<<"$st" || fail "USER 1000:70: $(grep Gid <<<"$st")"

# --- 5: a trojan NSS module: kiln run -u alice / kiln exec -u alice
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
	N=$work/nss
	mkroot "$N"
	for d in lib lib64 lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
		mkdir -p "$N/$d"
		gcc -shared -fPIC -o "$N/$d/libnss_files.so.2" "$work/nss.c"
	done
	printf 'passwd: files\ngroup: files\n' > "$N"/etc/nsswitch.conf
	echo 'alice:x:1234:2345::/:/bin/sh' >> "$N"/etc/passwd
	echo 'alicegrp:x:2345:' >> "$N"/etc/group
	import "$N" nss:1 --change 'USER alice'
	[ "$(run nss:1 id -u)" = 1234 ] || fail "image USER alice"
	[ "$(run -u alice:alicegrp nss:1 id -g)" = 2345 ] || fail "run -u alice:alicegrp"
	cid=$("$KILN" run -d --network none nss:1 sleep 60)
	[ "$("$KILN" exec -u alice "$cid" id -u)" = 1234 ] || fail "exec -u alice"
	"$KILN" rm -f "$cid" >/dev/null
	cid=
	build sec-nss 'FROM nss:1\nUSER alice:alicegrp\nRUN id -u > /tmp/uid\n' || { cat "$work/log"; fail "USER alice build"; }
	[ ! -e "$marker" ] || fail "kiln loaded the image's libnss_files.so.2"
fi
echo "security images ok"
