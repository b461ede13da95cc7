#!/bin/bash
# Host devices (hostile review, issue 11 finding 1).  Root in a container holds
# CAP_MKNOD, so it can make a node for any device; images can ship nodes too.
# Docker's rule, which kiln enforces through a device cgroup (v1 devices
# controller, or a cgroup2 BPF device program): making nodes is allowed,
# opening anything but null zero full random urandom tty console ptmx pts/*
# tun is not.  Attacked through `kiln run` (--rootfs and an image), a build
# RUN step and `kiln exec` into a detached container, on the v1 path and on
# the cgroup2 BPF path (KILN_TEST_DEVICES_BPF=1 on a hybrid machine):
#  - a loop device attached to a host file holding a canary: not readable
#    (canary not seen), not writable (the host file's sha256 unchanged)
#  - /dev/kmsg (c 1:11): not writable (the marker never reaches dmesg)
#  - kvm 10:232, fuse 10:229, loop-control 10:237, btrfs-control 10:234: EPERM
#  - control: a node for c 1:3 made with mknod opens
#  - an image shipping 0666 nodes for the loop device and kmsg, run with
#    -u 65534 --cap-drop ALL: EPERM
#  - --device grants exactly the named device with the named access;
#    --privileged has the host's devices
#  - exec refuses to join a container that is not in its device cgroup
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, cgroups)"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
[ -x "$BB" ] || { echo "busybox-static is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
tag=kiln-devtest-$$-$RANDOM
loopdev=
cids=""
cleanup() {
	for c in $cids; do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	[ -z "$loopdev" ] || losetup -d "$loopdev" 2>/dev/null || true
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# a host file with a canary, behind a loop device
canary="CANARY-$tag"
hostimg=$work/host.img
head -c 1048576 /dev/zero > "$hostimg"
printf '%s' "$canary" | dd of="$hostimg" conv=notrunc 2>/dev/null
sum0=$(sha256sum < "$hostimg")
loopdev=$(losetup -f --show "$hostimg" 2>/dev/null) || loopdev=
if [ -n "$loopdev" ]; then
	lmaj=$((16#$(stat -c %t "$loopdev"))) lmin=$((16#$(stat -c %T "$loopdev")))
else
	echo "note: no loop device available; the loop probes use b 7 0 without a canary"
	lmaj=7 lmin=0
fi
omin=$((lmin + 1))   # another loop device, never granted

# the probe: one line per device, "NAME OPENED", "NAME EPERM" or "NAME OTHER <msg>"
probe='
p() { # p NAME r|w PATH
	if [ "$2" = r ]; then out=$( (exec 3<"$3") 2>&1 ) && { echo "$1 OPENED"; return; }
	else out=$( (exec 3>"$3") 2>&1 ) && { echo "$1 OPENED"; return; }; fi
	case $out in *"not permitted"*) echo "$1 EPERM";; *) echo "$1 OTHER $out";; esac
}
d=$(mktemp -d /tmp/probe.XXXXXX) && cd "$d" || exit 9
mknod kmsg c 1 11 && p kmsg w kmsg
echo "$2" > kmsg 2>/dev/null
mknod loop b '$lmaj' "$1" && p loop r loop && p loopw w loop
head -c 64 loop 2>/dev/null | tr -d '\000'; echo
dd if=/dev/zero of=loop bs=512 count=1 conv=notrunc 2>/dev/null
mknod kvm c 10 232 && p kvm r kvm
mknod fuse c 10 229 && p fuse r fuse
mknod loopctl c 10 237 && p loopctl r loopctl
mknod btrfsctl c 10 234 && p btrfsctl r btrfsctl
mknod null c 1 3 && p null w null
mknod zero c 1 5 && p zero r zero
cd / && rm -rf "$d"
'

R=$work/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc "$R"/devs
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$R"/etc/passwd
echo 'root:x:0:' > "$R"/etc/group
chmod 1777 "$R"/tmp
printf '%s\n' "$probe" > "$R"/probe.sh
# nodes the image ships, open to everyone by their mode
mknod -m 0666 "$R"/devs/loop b "$lmaj" "$lmin"
mknod -m 0666 "$R"/devs/kmsg c 1 11
tar --numeric-owner -C "$R" -cf "$work/img.tar" .
"$KILN" import --compression none "$work/img.tar" devimg >/dev/null || fail "import"
rm -f "$R"/devs/loop "$R"/devs/kmsg

# check OUTPUT-FILE WHAT MARK: every host device refused, the controls open
check() {
	local f=$1 what=$2 mark=$3 n
	for n in kmsg loop loopw kvm fuse loopctl btrfsctl; do
		grep -q "^$n EPERM" "$f" || fail "$what: $n not refused: $(grep "^$n " "$f" || echo 'no line'); output: $(cat "$f")"
	done
	grep -q '^null OPENED' "$f" || fail "$what: a c 1:3 node made with mknod does not open: $(cat "$f")"
	grep -q '^zero OPENED' "$f" || fail "$what: a c 1:5 node made with mknod does not open: $(cat "$f")"
	grep -q "$canary" "$f" && fail "$what: the canary behind the loop device was read"
	[ "$(sha256sum < "$hostimg")" = "$sum0" ] || fail "$what: the host file behind the loop device changed"
	if dmesg >/dev/null 2>&1; then
		dmesg | grep -q "$mark" && fail "$what: the container wrote to the host's kernel log"
	fi
	return 0
}

paths="v1"
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
	paths="v2"   # the BPF program is the only path
elif [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
	paths="v1 v2"
	[ -d /sys/fs/cgroup/devices ] || paths="v2"
fi
own() { # own CONTROLLER ("" = cgroup2): our cgroup path, no trailing /
	local p
	if [ -z "$1" ]; then p=$(sed -n 's/^0:://p' /proc/self/cgroup)
	else p=$(awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' /proc/self/cgroup); fi
	echo "${p%/}"
}

for path in $paths; do
	echo "--- $path"
	if [ "$path" = v2 ] && [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
		export KILN_TEST_DEVICES_BPF=1
		cgdir=/sys/fs/cgroup/unified$(own "")
		other=/sys/fs/cgroup/devices$(own devices)
	elif [ "$path" = v2 ]; then
		unset KILN_TEST_DEVICES_BPF
		cgdir=/sys/fs/cgroup$(own "")
		other=
	else
		unset KILN_TEST_DEVICES_BPF
		cgdir=/sys/fs/cgroup/devices$(own devices)
		other=/sys/fs/cgroup/unified$(own "")
	fi

	# kiln run --rootfs
	"$KILN" run --rm --network none --rootfs "$R" sh /probe.sh "$lmin" "$tag-run-rootfs-$path" > "$work/out" 2>&1 ||
		fail "run --rootfs: exit $? ($(cat "$work/out"))"
	check "$work/out" "run --rootfs ($path)" "$tag-run-rootfs-$path"

	# kiln run IMAGE
	"$KILN" run --rm --network none devimg sh /probe.sh "$lmin" "$tag-run-image-$path" > "$work/out" 2>&1 ||
		fail "run IMAGE: exit $? ($(cat "$work/out"))"
	check "$work/out" "run IMAGE ($path)" "$tag-run-image-$path"

	# the image's own nodes, as nobody without capabilities
	"$KILN" run --rm --network none -u 65534 --cap-drop ALL devimg sh -c '
		for n in loop kmsg; do
			if out=$( (exec 3<>/devs/$n) 2>&1 ); then echo "$n OPENED"; else echo "$n $out"; fi
		done; head -c 64 /devs/loop 2>/dev/null | tr -d "\\000"; echo "$0" > /devs/kmsg 2>/dev/null; true' "$tag-nobody-$path" \
		> "$work/out" 2>&1 || fail "run -u 65534: exit $? ($(cat "$work/out"))"
	grep -q '^loop .*not permitted' "$work/out" || fail "image node b $lmaj:$lmin opened by nobody ($path): $(cat "$work/out")"
	grep -q '^kmsg .*not permitted' "$work/out" || fail "image node kmsg opened by nobody ($path): $(cat "$work/out")"
	grep -q "$canary" "$work/out" && fail "nobody read the canary through the image's node ($path)"
	dmesg 2>/dev/null | grep -q "$tag-nobody-$path" && fail "nobody wrote the kernel log ($path)"

	# a build RUN step (docker build's default network: host)
	mkdir -p "$work/ctx"
	printf 'FROM devimg\nRUN sh /probe.sh %s %s\n' "$lmin" "$tag-build-$path" > "$work/ctx/Dockerfile"
	"$KILN" build --no-cache --progress plain -t built "$work/ctx" > "$work/blog" 2>&1 ||
		fail "build: $(tail -5 "$work/blog")"
	sed -n 's/^#[0-9]* [0-9.]* //p' "$work/blog" > "$work/out"
	check "$work/out" "build RUN ($path)" "$tag-build-$path"

	# kiln exec into a detached container, which sits in a cgroup of its own
	cid=$("$KILN" run -d --network none devimg sleep 300)
	cids="$cids $cid"
	pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$KILN_ROOT/containers/$cid/state.json")
	[ -d "$cgdir/kiln-$cid" ] || fail "exec ($path): no cgroup $cgdir/kiln-$cid"
	grep -q "kiln-$cid" /proc/$pid/cgroup || fail "exec ($path): the container is not in its cgroup"
	if [ -n "$other" ] && [ -d "$other/kiln-$cid" ]; then
		fail "exec ($path): a cgroup in $other too (one hierarchy carries the filter)"
	fi
	"$KILN" exec "$cid" sh /probe.sh "$lmin" "$tag-exec-$path" > "$work/out" 2>&1 || fail "exec: exit $? ($(cat "$work/out"))"
	check "$work/out" "exec ($path)" "$tag-exec-$path"
	"$KILN" exec --privileged "$cid" sh /probe.sh "$lmin" "$tag-execp-$path" > "$work/out" 2>&1 ||
		fail "exec --privileged: exit $? ($(cat "$work/out"))"
	check "$work/out" "exec --privileged into an unprivileged container ($path)" "$tag-execp-$path"
	# moved out of its device cgroup: exec refuses instead of running unfiltered
	echo "$pid" > "$cgdir/cgroup.procs"
	set +e
	"$KILN" exec "$cid" true > "$work/out" 2>&1; rc=$?
	set -e
	[ $rc -ne 0 ] && grep -q "device" "$work/out" || fail "exec into a container outside its device cgroup: exit $rc ($(cat "$work/out"))"
	"$KILN" rm -f "$cid" >/dev/null
	for i in $(seq 100); do [ -d "$cgdir/kiln-$cid" ] || break; sleep 0.1; done
	[ ! -d "$cgdir/kiln-$cid" ] || fail "cgroup $cgdir/kiln-$cid left behind"
done
unset KILN_TEST_DEVICES_BPF

echo "--- --device and --privileged"
if [ -n "$loopdev" ]; then
	"$KILN" run --rm --network none --device "$loopdev:/dev/xvda:r" devimg sh -c '
		head -c 64 /dev/xvda | tr -d "\\000"; echo
		if out=$( (exec 3>/dev/xvda) 2>&1 ); then echo "xvdaw OPENED"; else echo "xvdaw $out"; fi
		mknod /tmp/o b '"$lmaj $omin"' && if out=$( (exec 3</tmp/o) 2>&1 ); then echo "other OPENED"; else echo "other $out"; fi
		ls -l /dev/xvda' > "$work/out" 2>&1 || fail "--device: exit $? ($(cat "$work/out"))"
	grep -q "$canary" "$work/out" || fail "--device: the granted device is not readable: $(cat "$work/out")"
	grep -q '^xvdaw .*not permitted' "$work/out" || fail "--device :r allows writing: $(cat "$work/out")"
	grep -q '^other .*not permitted' "$work/out" || fail "--device grants more than the named device: $(cat "$work/out")"
	grep -q "^b.* $lmaj, *$lmin " "$work/out" || fail "--device: /dev/xvda is not b $lmaj:$lmin: $(cat "$work/out")"
	[ "$(sha256sum < "$hostimg")" = "$sum0" ] || fail "--device :r: the host file changed"
	"$KILN" run --rm --network none --privileged devimg sh -c "head -c 64 $loopdev | tr -d '\\000'" > "$work/out" 2>&1 ||
		fail "--privileged: exit $? ($(cat "$work/out"))"
	grep -q "$canary" "$work/out" || fail "--privileged: the host's devices are not there: $(cat "$work/out")"
fi
"$KILN" run --rm --network none --device /dev/null:/dev/mynull devimg sh -c 'echo x > /dev/mynull' ||
	fail "--device /dev/null:/dev/mynull"
set +e
"$KILN" run --rm --network none --device /etc/hostname devimg true > "$work/out" 2>&1; rc=$?
"$KILN" run --rm --network none --device dev/null devimg true > "$work/out2" 2>&1; rc2=$?
set -e
[ $rc = 125 ] && grep -q 'not a character or block device' "$work/out" || fail "--device FILE: exit $rc ($(cat "$work/out"))"
[ $rc2 = 125 ] && grep -q 'absolute' "$work/out2" || fail "--device RELATIVE: exit $rc2 ($(cat "$work/out2"))"
echo "devices ok"
