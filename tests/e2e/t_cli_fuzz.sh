#!/bin/bash
# Command-line fuzz pass: several hundred malformed argument vectors (a table
# of flags x bad values, plus seeded mutations of valid command lines) against
# every command of an ASan+UBSan build of kiln, in a network namespace of its
# own.  Asserts no sanitizer report, no crash, the usage exit codes (125 for
# run/exec, 2 elsewhere) and one "kiln: " line on stderr.  See lib/cli_fuzz.py.
# The sanitized binary is KILN_ASAN (`make check` builds build/asan-kiln/kiln
# and passes it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
K=${KILN_ASAN:-$KILN_SRC/build/asan-kiln/kiln}
[ -x "$K" ] || { echo "no sanitized kiln at $K (make build/asan-kiln/kiln)"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace of its own)"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is not installed"; exit 77; }
command -v unshare >/dev/null || { echo "unshare is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT

# a store holding one small image, so that inspect, history and save reach it
python3 - "$work/img.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    data = b"hello\n"
    i = tarfile.TarInfo("hello")
    i.size = len(data)
    t.addfile(i, io.BytesIO(data))
PY
"$KILN" import "$work/img.tar" fuzz:1 >/dev/null

start=$(date +%s)
# no route to anything but loopback: a vector that reached a registry could not leave
unshare --net -- sh -c 'ip link set lo up 2>/dev/null || true; exec python3 "$@"' sh \
	"$here/lib/cli_fuzz.py" "$K" "$work" "${KILN_CLI_FUZZ_SEED:-11}"
echo "cli fuzz suite: $(( $(date +%s) - start )) s"
