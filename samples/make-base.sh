#!/bin/sh
# Make the offline base image: a small busybox rootfs from Debian's
# busybox-static, imported into the kiln store as busybox:latest (or TAG).
# Deterministic (fixed mtimes, sorted, numeric owners) and idempotent: when
# the tag already exists it is left alone (set KILN_BASE_FORCE=1 to re-import;
# the same busybox gives the same image id).
# Usage: samples/make-base.sh KILN_BINARY [TAG]   (the store: $KILN_ROOT or kiln's default)
set -eu
KILN=${1:?usage: make-base.sh KILN_BINARY [TAG]}
TAG=${2:-busybox:latest}
: "${SOURCE_DATE_EPOCH:=1700000000}"
export SOURCE_DATE_EPOCH

if [ -z "${KILN_BASE_FORCE:-}" ] && "$KILN" image inspect "$TAG" >/dev/null 2>&1; then
	echo "$TAG already present"
	exit 0
fi

BB=/bin/busybox
[ -x "$BB" ] || BB=$(command -v busybox || true)
if [ -z "$BB" ] || ! "$BB" --list-full >/dev/null 2>&1; then
	echo "make-base: busybox-static is not installed (apt-get install busybox-static)" >&2
	exit 1
fi
case $(file -L "$BB" 2>/dev/null) in
*dynamically*) echo "make-base: $BB is not statically linked (need busybox-static)" >&2; exit 1;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
R=$work/rootfs
mkdir -p "$R"/bin "$R"/sbin "$R"/usr/bin "$R"/usr/sbin "$R"/proc "$R"/sys "$R"/dev \
	"$R"/tmp "$R"/etc "$R"/root "$R"/home "$R"/var/www "$R"/var/tmp "$R"/run "$R"/mnt
cp "$BB" "$R"/bin/busybox
chmod 0755 "$R"/bin/busybox
"$BB" --list-full | while read -r p; do
	[ "$p" = bin/busybox ] && continue
	mkdir -p "$R/$(dirname "$p")"
	ln -sf /bin/busybox "$R/$p"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R"/etc/passwd
printf 'root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n' >"$R"/etc/group
: >"$R"/etc/hosts
: >"$R"/etc/hostname
: >"$R"/etc/resolv.conf
chmod 0644 "$R"/etc/passwd "$R"/etc/group "$R"/etc/hosts "$R"/etc/hostname "$R"/etc/resolv.conf
chmod 1777 "$R"/tmp "$R"/var/tmp
chmod 0700 "$R"/root
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" \
	-C "$R" -cf "$work/rootfs.tar" .
"$KILN" import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["sh"]' \
	-m "kiln base: busybox $("$BB" 2>&1 | head -n 1 | sed -n 's/^BusyBox \(v[^ ]*\).*/\1/p')" \
	"$work/rootfs.tar" "$TAG"
