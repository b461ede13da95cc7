#!/bin/bash
# Differential test: the same Dockerfiles built by kiln and by `buildah bud`
# (private --root/--runroot, vfs, --isolation chroot) from the same busybox
# base; both images unpacked with umoci must have the same files (type, mode,
# owner, size, content, symlink target) and the same config (times and ids
# ignored).
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
for t in buildah umoci jq; do command -v $t >/dev/null || { echo "$t is not installed"; exit 77; }; done

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
BR=$work/buildah-root
BRR=$work/buildah-runroot
bah() { buildah --root "$BR" --runroot "$BRR" --storage-driver vfs "$@"; }
cleanup() {
	bah rm --all >/dev/null 2>&1 || true
	bah rmi --all --force >/dev/null 2>&1 || true
	rm -f "${lc:-}"
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
# the same base for buildah, read straight from kiln's OCI layout
# (buildah names an oci: source after its path, which must be lower case)
lc=/tmp/kiln-diff-$$-$RANDOM
ln -s "$KILN_ROOT" "$lc"
bah pull -q "oci:$lc:docker.io/library/busybox:latest" > "$work/base-id" 2>"$work/pull.err" \
	|| { cat "$work/pull.err"; fail "buildah could not pull kiln's busybox"; }
bah tag "$(cat "$work/base-id")" docker.io/library/busybox:latest

# listing of an unpacked rootfs: path type mode uid gid size target/sha256
listing() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
		st=$(stat -c '%F %a %u %g' "$p")
		case $(stat -c %F "$p") in
		"regular file"|"regular empty file") extra="$(stat -c %s "$p") $(sha256sum < "$p" | cut -c1-16)";;
		"symbolic link") extra="-> $(readlink "$p")";;
		*) extra="";;
		esac
		echo "$p $st $extra"
	done)
}
config() { jq -S '.config | {Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes, StopSignal}' "$1"; }

compare() { # name, context dir
	local name=$1 ctx=$2
	"$KILN" build -q -t "diff-$name" "$ctx" >/dev/null 2>"$work/kiln.err" || { cat "$work/kiln.err"; fail "$name: kiln build"; }
	bah bud -q --isolation chroot --network host -t "diff-$name" "$ctx" >/dev/null 2>"$work/bah.err" \
		|| { cat "$work/bah.err"; fail "$name: buildah bud"; }
	bah push -q "diff-$name" "oci:$work/bah-oci:diff-$name" >/dev/null 2>"$work/push.err" || { cat "$work/push.err"; fail "$name: buildah push"; }
	umoci unpack --image "$KILN_ROOT:docker.io/library/diff-$name:latest" "$work/k-$name" >/dev/null 2>&1 || fail "$name: umoci unpack (kiln)"
	umoci unpack --image "$work/bah-oci:diff-$name" "$work/b-$name" >/dev/null 2>&1 || fail "$name: umoci unpack (buildah)"
	listing "$work/k-$name/rootfs" > "$work/k-$name.list"
	listing "$work/b-$name/rootfs" > "$work/b-$name.list"
	if ! diff -u "$work/b-$name.list" "$work/k-$name.list" > "$work/$name.fsdiff"; then
		echo "--- buildah  +++ kiln: $name files differ"; head -40 "$work/$name.fsdiff"; fail "$name: files differ"
	fi
	# the config of each image (runtime part) from the unpacked bundles' source images
	local kcfg bcfg
	kcfg=$("$KILN" inspect "diff-$name" | jq -S '.[0].Config | {Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes, StopSignal} | with_entries(select(.value != null and .value != "" and .value != {} and .value != []))')
	bcfg=$(bah inspect --type image "diff-$name" | jq -S '.OCIv1.config | {Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes, StopSignal} | with_entries(select(.value != null and .value != "" and .value != {} and .value != []))')
	# buildah adds its own version label
	bcfg=$(echo "$bcfg" | jq -S 'if .Labels then .Labels |= del(."io.buildah.version") | (if .Labels == {} then del(.Labels) else . end) else . end')
	if [ "$kcfg" != "$bcfg" ]; then
		diff -u <(echo "$bcfg") <(echo "$kcfg") || true
		fail "$name: configs differ"
	fi
	echo "same: $name ($(wc -l < "$work/k-$name.list") paths)"
}

# 1: COPY rules, ownership and modes, RUN, metadata
c1=$work/c1
mkdir -p "$c1/dir/sub"
echo "file" > "$c1/f.txt"
echo "a" > "$c1/dir/a"
echo "b" > "$c1/dir/sub/b"
chmod 0750 "$c1/dir/sub"
chmod 0604 "$c1/dir/a"
ln -s a "$c1/dir/link"
cat > "$c1/Dockerfile" <<'DF'
FROM busybox
ENV A=1 B="two words"
WORKDIR /app
COPY f.txt ./
COPY dir/ /data/
COPY --chown=7:8 f.txt /owned.txt
COPY --chmod=600 f.txt /private.txt
COPY f.txt dir /multi/
RUN mkdir -p /made/deep && echo hi > /made/x && chmod 700 /made && ln -s /made/x /made/link && rm -rf /home && touch -d @0 /made/x
USER 1000:1000
EXPOSE 80 53/udp
LABEL a=b c="d e"
VOLUME /data
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
DF
compare copy-run "$c1"

# 2: multi-stage with COPY --from
c2=$work/c2
mkdir -p "$c2"
cat > "$c2/Dockerfile" <<'DF'
FROM busybox AS build
RUN mkdir /out && echo built > /out/x && chown 5:6 /out/x && chmod 640 /out/x
FROM busybox
COPY --from=build /out /opt/
ARG V=3
RUN echo "v=$V" > /opt/v
CMD ["cat", "/opt/x"]
DF
compare multistage "$c2"
echo "kiln and buildah agree"
