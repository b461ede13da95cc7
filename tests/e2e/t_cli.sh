#!/bin/bash
# The command line: version, help, usage errors and exit codes.
set -eu
out=$("$KILN" version)
[[ "$out" == "kiln version "* ]] || { echo "bad version output: $out"; exit 1; }
"$KILN" --help | grep -q "Usage: kiln" || { echo "help lacks usage"; exit 1; }
set +e
"$KILN" no-such-command 2>/tmp/kiln-e2e-cli.$$; rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "unknown command exit $rc, want 2"; exit 1; }
grep -q "not a kiln command" /tmp/kiln-e2e-cli.$$ || { echo "no clear message"; exit 1; }
rm -f /tmp/kiln-e2e-cli.$$
set +e
"$KILN" --bogus-flag version 2>/dev/null; rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "unknown option exit $rc, want 2"; exit 1; }
echo "cli ok"
