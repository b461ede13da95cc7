#!/bin/bash
# Run every end-to-end test script tests/e2e/t_*.sh with KILN set to the binary.
# Each script exits 0 (pass), 77 (skip: a precondition the machine lacks) or
# anything else (fail).  Prints one line per script and a closing summary.
set -u
export KILN="$1"
here=$(cd "$(dirname "$0")" && pwd)
export KILN_SRC=$(cd "$here/../.." && pwd)
export KILN_TESTDATA="${KILN_TESTDATA:-$KILN_SRC/../shared/testdata}"
passed=0; failed=0; skipped=0; failures=""
only="${E2E_ONLY:-}"
for t in "$here"/t_*.sh; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)
	if [ -n "$only" ] && [[ "$name" != *$only* ]]; then continue; fi
	log=$(mktemp)
	start=$(date +%s)
	bash "$t" >"$log" 2>&1
	rc=$?
	dur=$(( $(date +%s) - start ))
	case $rc in
	0) passed=$((passed + 1)); echo "ok   $name (${dur}s)";;
	77) skipped=$((skipped + 1)); echo "skip $name: $(tail -n 1 "$log")";;
	*) failed=$((failed + 1)); failures="$failures $name"; echo "FAIL $name (exit $rc, ${dur}s)"; sed 's/^/    | /' "$log" | tail -n 40;;
	esac
	rm -f "$log"
done
echo "e2e: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ $((passed + failed)) -gt 0 ]
