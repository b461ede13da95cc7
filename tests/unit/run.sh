#!/bin/sh
# Run each cmocka unit-test binary; print cmocka's own summaries and a total.
# Exits non-zero when any binary fails or when no test ran at all.
passed=0; failed=0; bins=0
for t in "$@"; do
	bins=$((bins + 1))
	echo "== $(basename "$t")"
	if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
echo "unit: $passed passed, $failed failed"
[ "$bins" -gt 0 ] || { echo "unit: no test binaries" >&2; exit 1; }
[ "$failed" -eq 0 ]
