#!/bin/bash
# Issue 11, findings 9 and 13: what kiln does with hostile archive streams.
#  9: an archive whose header is lrzip's, lzop's or grzip's must never make
#     kiln exec a decompressor: fake `lrzip`/`lzop`/`grzip` first on $PATH
#     write a marker if run; every entry point that opens archives (load,
#     import, ADD of a local file, a build context on stdin) gets each header
#     and must fail clearly (or copy the file as it is, for ADD) without the marker.
# 13: /dev/zero is an empty tar followed by endless zeros: import and load end
#     with a clear error (not by the timeout); a valid tar followed by a lot of
#     zeros (file, pipe, endless pipe, gzip) imports and ends; ADD of one works.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# ---- 9: no external decompressor, ever
mkdir -p "$work/bin" "$work/ctx"
marker=$work/marker
for p in lrzip lzop grzip; do
	printf '#!/bin/sh\necho %s >> %s\ncat >/dev/null\n' "$p" "$marker" > "$work/bin/$p"
	chmod +x "$work/bin/$p"
done
# each header is one libarchive's bidders accept for its external program
python3 - "$work/ctx" <<'EOF'
import sys
d = sys.argv[1]
heads = {
    "lrz": b"LRZI\x00\x06" + b"\x00" * 18,
    "lzo": b"\x89LZO\x00\x0d\x0a\x1a\x0a\x10\x30\x20\xa0\x09\x40\x01\x05\x03\x00\x00\x01\x00\x00\x81\xa4",
    "grz": b"GRZipII\x00\x02\x04:)" + b"\x00" * 12,
}
for n, h in heads.items():
    open(f"{d}/evil.{n}", "wb").write(h + b"\x00" * 512)
EOF
# the control: the old archive reader (every libarchive filter) runs the fake
# programs for these very files, so a missing marker means something
if PATH="$work/bin:$PATH" python3 -c 'import shutil,sys; sys.exit(0 if shutil.which("lrzip") else 1)'; then :; else fail "the fake lrzip is not on PATH"; fi
for f in lrz lzo grz; do
	rm -f "$marker"
	out=$(PATH="$work/bin:$PATH" "$KILN" load -i "$work/ctx/evil.$f" 2>&1) && fail "load evil.$f succeeded"
	[ -e "$marker" ] && fail "load evil.$f ran $(cat "$marker")"
	grep -q "^kiln: read the archive: " <<<"$out" || fail "load evil.$f: unclear error: $out"
	out=$(PATH="$work/bin:$PATH" "$KILN" import "$work/ctx/evil.$f" evil 2>&1) && fail "import evil.$f succeeded"
	[ -e "$marker" ] && fail "import evil.$f ran $(cat "$marker")"
	grep -q "^kiln: import .*evil.$f: reading layer: " <<<"$out" || fail "import evil.$f: unclear error: $out"
	out=$(PATH="$work/bin:$PATH" "$KILN" import - evil < "$work/ctx/evil.$f" 2>&1) && fail "import - evil.$f succeeded"
	[ -e "$marker" ] && fail "import - evil.$f ran $(cat "$marker")"
	# ADD: not an archive kiln extracts, so the file is copied as it is (as Docker does)
	printf 'FROM busybox\nADD evil.%s /x\nRUN cmp /x /x\n' "$f" > "$work/ctx/Dockerfile"
	PATH="$work/bin:$PATH" "$KILN" build --progress plain -t "evil-$f" "$work/ctx" > "$work/log" 2>&1 ||
		{ cat "$work/log"; fail "ADD evil.$f"; }
	[ -e "$marker" ] && fail "ADD evil.$f ran $(cat "$marker")"
	"$KILN" run --rm --network none "evil-$f" cat /x | cmp - "$work/ctx/evil.$f" || fail "ADD evil.$f did not copy the file as it is"
	# a build context on stdin
	PATH="$work/bin:$PATH" "$KILN" build -q - < "$work/ctx/evil.$f" > "$work/log" 2>&1 && fail "build - < evil.$f succeeded"
	[ -e "$marker" ] && fail "build - < evil.$f ran $(cat "$marker")"
	true
done
rm -f "$work/ctx/evil."*
echo "9: no decompressor was run (load, import, import -, ADD, build -)"

# ---- 13: the end of a tar is its end-of-archive marker
out=$(timeout 60 "$KILN" import /dev/zero zero 2>&1) && fail "import /dev/zero succeeded"
rc=$?
[ $rc = 124 ] && fail "import /dev/zero did not end (timeout)"
grep -q "^kiln: import /dev/zero: reading layer: not a tar archive" <<<"$out" || fail "import /dev/zero: unclear error: $out"
out=$(timeout 60 "$KILN" import - zero 2>&1 < /dev/zero) && fail "import - < /dev/zero succeeded"
grep -q "not a tar archive" <<<"$out" || fail "import - < /dev/zero: unclear error: $out"
out=$(timeout 60 "$KILN" load -i /dev/zero 2>&1) && fail "load -i /dev/zero succeeded"
grep -q "^kiln: .*not an image archive" <<<"$out" || fail "load -i /dev/zero: unclear error: $out"
out=$(timeout 60 "$KILN" load 2>&1 < /dev/zero) && fail "load < /dev/zero succeeded"
grep -q "not an image archive" <<<"$out" || fail "load < /dev/zero: unclear error: $out"
# an empty tar (GNU tar pads to 10 KiB) is still an archive
head -c 10240 /dev/zero > "$work/empty.tar"
"$KILN" import "$work/empty.tar" empty >/dev/null || fail "import of an empty tar"
# a valid tar and 64 MiB of zeros: a file, a pipe, an endless pipe, gzip
mkdir -p "$work/t/d"
echo hello > "$work/t/d/f"
tar -C "$work/t" -cf "$work/a.tar" d
{ cat "$work/a.tar"; head -c 64M /dev/zero; } > "$work/z.tar"
timeout 120 "$KILN" import "$work/z.tar" z1 >/dev/null || fail "import of a tar followed by zeros"
timeout 120 "$KILN" import - z2 < "$work/z.tar" >/dev/null || fail "import - of a tar followed by zeros"
{ cat "$work/a.tar"; cat /dev/zero; } 2>/dev/null | timeout 120 "$KILN" import - z3 >/dev/null ||
	fail "import - of a tar followed by endless zeros"
{ cat "$work/a.tar"; cat /dev/zero; } 2>/dev/null | gzip -1 2>/dev/null | timeout 120 "$KILN" import - z4 >/dev/null ||
	fail "import - of a gzip stream of a tar followed by endless zeros"
for i in z1 z2 z3 z4; do
	# the imported image has no shell: a build FROM it + COPY --from shows its files
	printf 'FROM busybox\nCOPY --from=%s /d/f /f\nRUN test "$(cat /f)" = hello\n' "$i" > "$work/ctx/Dockerfile"
	"$KILN" build -q -t "chk-$i" "$work/ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "$i lost its file"; }
done
# ADD of that tar (a regular file in the context) extracts it and ends
cp "$work/z.tar" "$work/ctx/z.tar"
printf 'FROM busybox\nADD z.tar /z/\nRUN test "$(cat /z/d/f)" = hello\n' > "$work/ctx/Dockerfile"
timeout 300 "$KILN" build -q -t addz "$work/ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "ADD of a tar followed by zeros"; }
echo "13: /dev/zero refused by import and load; trailing zeros read only up to a bound"
echo "security archives ok"
