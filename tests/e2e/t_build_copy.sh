#!/bin/bash
# kiln build: COPY/ADD details — ADD <url> from a server on 127.0.0.1 (mode
# 0600, Last-Modified as mtime, --checksum verified, not extracted), ADD of
# local archives in every compression, COPY --parents, --exclude, hard links,
# heredoc sources, and --output type=local.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
srv_pid=
cleanup() {
	[ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
kb() { "$KILN" build --progress plain "$@" > "$work/log" 2>&1 || { cat "$work/log"; return 1; }; }
r() { "$KILN" run --rm --network none "$@"; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# a web server on 127.0.0.1 (a free port chosen by the kernel)
www=$work/www
mkdir -p "$www"
echo "remote content" > "$www/remote.txt"
touch -d '2020-01-02 03:04:05 UTC' "$www/remote.txt"
tar -C "$www" -czf "$www/remote.tar.gz" remote.txt
python3 -c '
import http.server, socketserver, sys, os
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
s = socketserver.TCPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()' "$www" "$work/port" &
srv_pid=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
sum=$(sha256sum "$www/remote.txt" | cut -d' ' -f1)

ctx=$work/ctx
mkdir -p "$ctx/src/a/b" "$ctx/src/c" "$work/arch/tree"
echo one > "$ctx/src/a/b/one.txt"
echo two > "$ctx/src/c/two.txt"
echo skip > "$ctx/src/a/skip.log"
echo hard > "$ctx/h1"
ln "$ctx/h1" "$ctx/h2"
echo "in archive" > "$work/arch/tree/file"
tar -C "$work/arch" -cf "$ctx/plain.tar" tree
tar -C "$work/arch" -cjf "$ctx/bz.tar.bz2" tree
tar -C "$work/arch" -cJf "$ctx/xz.tar.xz" tree
command -v zstd >/dev/null && tar -C "$work/arch" --zstd -cf "$ctx/zst.tar.zst" tree
cat > "$ctx/Dockerfile" <<DF
FROM busybox
ADD http://127.0.0.1:$port/remote.txt /dl/
ADD --checksum=sha256:$sum http://127.0.0.1:$port/remote.txt /dl/checked.txt
ADD http://127.0.0.1:$port/remote.tar.gz /dl/
ADD plain.tar /x/plain/
ADD bz.tar.bz2 /x/bz/
ADD xz.tar.xz /x/xz/
COPY --parents src/a/b/one.txt src/c /parents/
COPY --exclude=*.log src/a /excl/
COPY h1 h2 /links/
COPY <<EOT /heredoc.txt
hello \$HOSTNAME-not-expanded-by-kiln
EOT
DF
kb -t copytest "$ctx" || fail "build"
[ "$(r copytest cat /dl/remote.txt)" = "remote content" ] || fail "ADD url into a directory"
[ "$(r copytest stat -c %a /dl/remote.txt)" = 600 ] || fail "ADD url mode: $(r copytest stat -c %a /dl/remote.txt)"
[ "$(r copytest stat -c %Y /dl/remote.txt)" = "$(date -d '2020-01-02 03:04:05 UTC' +%s)" ] || fail "ADD url mtime from Last-Modified"
[ "$(r copytest cat /dl/checked.txt)" = "remote content" ] || fail "ADD --checksum"
r copytest test -f /dl/remote.tar.gz || fail "ADD url of a tar.gz must not extract it"
for k in plain bz xz; do
	[ "$(r copytest cat /x/$k/tree/file)" = "in archive" ] || fail "ADD $k archive not extracted"
done
[ "$(r copytest cat /parents/src/a/b/one.txt)" = one ] || fail "COPY --parents file"
[ "$(r copytest cat /parents/src/c/two.txt)" = two ] || fail "COPY --parents dir"
[ "$(r copytest cat /excl/b/one.txt)" = one ] || fail "COPY --exclude kept the rest"
if r copytest test -e /excl/skip.log; then fail "COPY --exclude=*.log"; fi
links=$(r copytest sh -c 'stat -c "%i %h" /links/h1 /links/h2' | uniq | wc -l)
[ "$links" = 1 ] || fail "hard links not kept: $(r copytest sh -c 'stat -c "%i %h %n" /links/h1 /links/h2')"
[ "$(r copytest stat -c %h /links/h1)" = 2 ] || fail "hard link count"
r copytest grep -q 'hello' /heredoc.txt || fail "COPY heredoc"

# a wrong checksum fails the build
printf 'FROM busybox\nADD --checksum=sha256:%064d http://127.0.0.1:%s/remote.txt /x\n' 0 "$port" > "$ctx/Dockerfile"
kb -t badsum "$ctx" && fail "a wrong --checksum was accepted"
grep -q "checksum mismatch" "$work/log" || fail "checksum error not named"

# --output type=local writes the final rootfs
printf 'FROM busybox\nRUN echo exported > /exported\n' > "$ctx/Dockerfile"
kb -o "type=local,dest=$work/out" -t exp "$ctx" || fail "--output local"
[ "$(cat "$work/out/exported")" = exported ] || fail "--output local lacks the file"
[ -x "$work/out/bin/busybox" ] || fail "--output local lacks the base"
kb -o "type=tar,dest=$work/out.tar" -o "type=oci,dest=$work/oci.tar" -t exp "$ctx" || fail "--output tar/oci"
tar -tf "$work/out.tar" | grep -qx exported || fail "--output tar lacks the file"
tar -tf "$work/oci.tar" | grep -qx index.json || fail "--output oci is not an OCI archive"
# extended attributes travel with COPY and COPY --from (a file capability
# set on the context file, a user xattr on one in a directory) into the
# layers; a changed xattr is a changed source (the COPY re-runs)
rm -rf "$ctx" && mkdir -p "$ctx/d"
cp "$(command -v busybox || echo /bin/busybox)" "$ctx/pingish"
echo data > "$ctx/d/f"
python3 - "$ctx" <<'PY' || fail "cannot set xattrs in the context (file system without xattrs?)"
import os, sys
c = sys.argv[1]
os.setxattr(c + '/pingish', 'security.capability', bytes.fromhex('0100000200200000000000000000000000000000'))
os.setxattr(c + '/d/f', 'user.kiln', b'v1')
PY
cat > "$ctx/Dockerfile" <<'DF'
FROM busybox AS a
COPY pingish /bin/pingish
COPY d /d
FROM busybox
COPY --from=a /bin/pingish /bin/pingish2
COPY --from=a /d /e
DF
kb -t xattrs "$ctx" || fail "build with xattrs"
"$KILN" save -o "$work/xattrs.tar" xattrs
xa() { python3 - "$work/xattrs.tar" <<'PY'
import io, json, sys, tarfile
t = tarfile.open(sys.argv[1])
for l in json.load(t.extractfile('manifest.json'))[0]['Layers']:
    lt = tarfile.open(fileobj=io.BytesIO(t.extractfile(l).read()), encoding='utf-8', errors='surrogateescape')
    for e in lt.getmembers():
        for k, v in sorted(e.pax_headers.items()):
            if k.startswith('SCHILY.xattr.'):
                print(e.name, k[13:], v.encode('utf-8', 'surrogateescape').hex())
PY
}
xa > "$work/xa1"
grep -qx "bin/pingish2 security.capability 0100000200200000000000000000000000000000" "$work/xa1" || { cat "$work/xa1"; fail "COPY --from lost the file capability"; }
grep -qx "e/f user.kiln $(printf v1 | od -An -tx1 | tr -d ' \n')" "$work/xa1" || { cat "$work/xa1"; fail "COPY lost a user xattr"; }
python3 -c "import os, sys; os.setxattr(sys.argv[1], 'user.kiln', b'v2')" "$ctx/d/f"
kb -t xattrs "$ctx" || fail "rebuild after an xattr change"
grep -A1 "COPY d /d" "$work/log" | grep -q CACHED && fail "a changed xattr left COPY d /d cached"
"$KILN" save -o "$work/xattrs.tar" xattrs
xa | grep -qx "e/f user.kiln $(printf v2 | od -An -tx1 | tr -d ' \n')" || fail "the new xattr value is not in the image"

echo "build copy ok"
