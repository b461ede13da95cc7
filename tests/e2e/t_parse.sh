#!/bin/bash
# kiln parse: the BuildKit dump of Dockerfiles, -f/stdin/default file, --check,
# --json, and one-line "file:line: what" errors with exit code 1.
set -eu
work=$(mktemp -d)
export KILN_ROOT=$(mktemp -d)
trap 'rm -rf "$work" "$KILN_ROOT"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cd "$work"

# Default file ./Dockerfile, continuation, heredoc, JSON and shell forms, flags.
cat > Dockerfile <<'EOF'
# syntax=docker/dockerfile:1
FROM busybox:latest AS base
ARG V=1
RUN --mount=type=cache,target=/c echo a \
    && echo b
COPY --chown=1:1 ["a b", "/dst/"]
RUN <<SCRIPT
echo from heredoc
SCRIPT
ENV A=1 B="2 3"
CMD ["/bin/sh", "-c", "echo hi"]
EOF
cat > want <<'EOF'
(from "busybox:latest" "AS" "base")
(arg "V=1")
(run ["--mount=type=cache,target=/c"] "echo a     && echo b")
(copy ["--chown=1:1"] "a b" "/dst/")
(run "<<SCRIPT")
(env "A" "1" "=" "B" "\"2 3\"" "=")
(cmd "/bin/sh" "-c" "echo hi")
EOF
"$KILN" parse > got || fail "parse of ./Dockerfile failed"
cmp -s got want || { diff got want; fail "dump of ./Dockerfile differs"; }

# -f FILE, --file=FILE, positional and stdin give the same dump.
mkdir sub && cp Dockerfile sub/Dockerfile.dev
"$KILN" parse -f sub/Dockerfile.dev | cmp -s - want || fail "-f FILE"
"$KILN" parse --file=sub/Dockerfile.dev | cmp -s - want || fail "--file=FILE"
"$KILN" parse sub/Dockerfile.dev | cmp -s - want || fail "positional FILE"
"$KILN" parse -f - < Dockerfile | cmp -s - want || fail "-f - (stdin)"
"$KILN" parse --check | cmp -s - want || fail "--check on a valid file"

# The BuildKit suite: every case byte for byte, every negative case fails.
suite="${KILN_TESTDATA:-}/buildkit-parser"
if [ -d "$suite/testfiles" ]; then
	n=0
	for d in "$suite"/testfiles/*/; do
		"$KILN" parse -f "$d/Dockerfile" > got || fail "case $(basename "$d") failed to parse"
		cmp -s got "$d/result" || { diff got "$d/result" | head; fail "case $(basename "$d") dump differs"; }
		n=$((n + 1))
	done
	[ "$n" -gt 0 ] || fail "no BuildKit cases found"
	for d in "$suite"/testfiles-negative/*/; do
		set +e
		"$KILN" parse -f "$d/Dockerfile" > /dev/null 2> err; rc=$?
		set -e
		[ "$rc" -eq 1 ] || fail "negative case $(basename "$d"): exit $rc, want 1"
		[ "$(wc -l < err)" -eq 1 ] || fail "negative case $(basename "$d"): not one line: $(cat err)"
		grep -q '^kiln: .*Dockerfile' err || fail "negative case $(basename "$d"): $(cat err)"
	done
fi

# Parse errors: one line naming file and line, exit 1.
printf 'FROM a\nENV PATH\n' > bad1
set +e
"$KILN" parse -f bad1 > out 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "ENV without value: exit $rc, want 1"
[ ! -s out ] || fail "ENV without value printed a dump"
[ "$(cat err)" = "kiln: bad1:2: ENV must have two arguments (write ENV NAME=VALUE)" ] || fail "message: $(cat err)"

printf 'FROM a\nRUN <<EOF\necho\n' > bad2
set +e
"$KILN" parse -f bad2 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q '^kiln: bad2:2: unterminated heredoc' err || fail "unterminated heredoc: $rc $(cat err)"

printf '# only a comment\n\n' > bad3
set +e
"$KILN" parse -f bad3 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q 'file with no instructions' err || fail "empty file: $rc $(cat err)"

# Instruction checks: only with --check/--json (the dump is BuildKit's parser alone).
printf 'FROM a\n\nADD --fro=x a b\n' > bad4
"$KILN" parse -f bad4 > /dev/null || fail "plain dump must accept unknown flags"
set +e
"$KILN" parse --check -f bad4 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "--check unknown flag: exit $rc"
grep -q '^kiln: bad4:3: unknown flag: --fro (ADD accepts --chown' err || fail "unknown flag message: $(cat err)"

printf 'FROM a\nHEALTHCHECK --interval=5 CMD true\n' > bad5
set +e
"$KILN" parse --check -f bad5 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q 'bad5:2: .*invalid\|bad5:2: .*missing unit' err || fail "bad duration: $rc $(cat err)"

printf 'FROM a\nCOPY onlyone\n' > bad6
set +e
"$KILN" parse --json -f bad6 > /dev/null 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q 'bad6:2: COPY requires at least two arguments' err || fail "COPY one arg: $rc $(cat err)"

# A sample of bad Dockerfiles: each error is one line "kiln: FILE:LINE: what
# (what to do)", exit 1, through "parse --check" and, for what the parser
# itself refuses, through "kiln build" too.
check_bad() { # file line substring [build]
	set +e
	"$KILN" parse --check -f "$1" > /dev/null 2> err; rc=$?
	set -e
	[ "$rc" -eq 1 ] || fail "$1: parse --check exit $rc, want 1"
	[ "$(wc -l < err)" -eq 1 ] || fail "$1: not one line: $(cat err)"
	grep -q "^kiln: $1:$2: " err || fail "$1: want line $2: $(cat err)"
	grep -qF -- "$3" err || fail "$1: want [$3]: $(cat err)"
	grep -q '(.*)' err || fail "$1: no hint on what to do: $(cat err)"
	if [ "${4:-}" = build ]; then
		mkdir -p "ctx-$1" && cp "$1" "ctx-$1/Dockerfile"
		set +e
		"$KILN" build -t bad:latest "ctx-$1" > /dev/null 2> berr; rc=$?
		set -e
		[ "$rc" -eq 1 ] || fail "$1: build exit $rc, want 1: $(cat berr)"
		grep -q "^kiln: Dockerfile:$2: " berr || fail "$1: build message: $(cat berr)"
	fi
}
printf 'FROM a\nRUN echo \\\n  more\nCOPYY a b\n' > e1; check_bad e1 4 "unknown instruction: COPYY (did you mean COPY?)" build
printf '# escape=x\nFROM a\n' > e2; check_bad e2 1 "invalid escape token" build
printf '# escape=`\n# escape=`\nFROM a\n' > e3; check_bad e3 2 "only one escape parser directive" build
printf 'FROM a\nCOPY <<EOF /dst\nbody\n' > e4; check_bad e4 2 "unterminated heredoc" build
printf 'FROM a\nENV\n' > e5; check_bad e5 2 "ENV requires at least one argument" build
printf 'FROM a\nCMD ["a", 1]\n' > e6; check_bad e6 2 "" build
printf 'FROM a\nHEALTHCHECK --retries=x CMD true\n' > e7; check_bad e7 2 "retries"
printf 'FROM a\nONBUILD FROM b\n' > e8; check_bad e8 2 "isn't allowed as an ONBUILD trigger"
printf 'FROM a AS one\nCOPY --from=two x y\nFROM b AS two\nRUN --mount=from=one,target=/m true\n' > e9
check_bad e9 4 "circular dependency detected on stage: one"
printf 'FROM a\nCOPY --from=3 x y\n' > e10; check_bad e10 2 "index out of bounds"
printf 'FROM a\nCOPY x 3<<EOF\nb\nEOF\n' > e11; check_bad e11 2 "cannot accept a heredoc as a destination"
printf 'ARG B\nFROM ${B}\n' > e12; check_bad e12 2 "should not be blank"
printf 'FROM a AS 1x\n' > e13; check_bad e13 1 "invalid name for build stage"
printf 'FROM a\nSHELL sh -c\n' > e14; check_bad e14 2 "JSON"
# A bad .dockerignore names its file and line too.
mkdir ictx && printf 'FROM a\n' > ictx/Dockerfile && printf 'a\n# c\n!\n' > ictx/.dockerignore
set +e
"$KILN" build -t bad:latest ictx > /dev/null 2> berr; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q 'ictx/.dockerignore:3: illegal exclusion pattern' berr || fail ".dockerignore error: $rc $(cat berr)"
# A forward reference is fine (BuildKit builds the later stage first).
printf 'FROM a AS one\nCOPY --from=two x y\nFROM b AS two\n' > ok1
"$KILN" parse --check -f ok1 > /dev/null || fail "forward --from reference refused"

# --json prints valid JSON.
"$KILN" parse --json > out.json || fail "--json failed"
if command -v jq > /dev/null; then
	jq -e . out.json > /dev/null || fail "--json output is not JSON"
fi
grep -q 'echo from heredoc' out.json || fail "--json lacks the heredoc body"

# --build-arg and --target reach the plan (global ARGs expand FROM).
printf 'ARG BASE=busybox\nFROM ${BASE}:latest AS one\nRUN true\nFROM one\n' > args.df
"$KILN" parse --json --build-arg BASE=alpine -f args.df > out.json || fail "--json --build-arg failed"
grep -q '"alpine:latest"' out.json || fail "--build-arg did not reach FROM: $(cat out.json)"
set +e
"$KILN" parse --json --target nope -f args.df > /dev/null 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q 'nope' err || fail "unknown --target: $rc $(cat err)"

# Usage.
"$KILN" parse --help | grep -q 'Usage: kiln parse' || fail "--help"
set +e
"$KILN" parse --bogus > /dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "unknown option: exit $rc, want 2"
"$KILN" parse -f does-not-exist > /dev/null 2> err; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q '^kiln: .*does-not-exist' err || fail "missing file: $rc $(cat err)"

echo "parse ok"
