#!/bin/sh
# Run each libFuzzer target for a bounded time (seconds in $1) on its own corpus.
set -e
secs="$1"; shift
here=$(cd "$(dirname "$0")" && pwd)
for f in "$@"; do
	name=$(basename "$f")
	corpus="$here/corpus/$name"
	work=$(mktemp -d)
	[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
	echo "== $name for ${secs}s"
	"$f" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$work/" "$work" 2>&1 | tail -n 5
	if ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* >/dev/null 2>&1; then
		echo "fuzz: $name found a problem, artifacts in $work" >&2
		exit 1
	fi
	rm -rf "$work"
done
