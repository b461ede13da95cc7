#!/bin/bash
# Docker's (BuildKit's) semantics where kiln once deviated (issue: Docker's
# semantics on real Dockerfiles): one ENV/LABEL/ARG line expands every pair
# against the values from before the line, ARG names are expanded, WORKDIR
# creates its directories owned by the stage's USER, and a scratch stage has
# the default PATH in its config.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
cleanup() { rm -rf "$KILN_ROOT" "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# --- one line, values from before it (the reference's def=$abc example)
mkdir -p "$work/env"
cat > "$work/env/Dockerfile" <<'DF'
FROM busybox
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
LABEL one=1
ARG a=1
ARG a=2 b=$a
ARG src=dyn
ARG ${src}=context/bar
LABEL two=$a three=$b
RUN echo "a=$a b=$b dyn=$dyn" > /args
DF
"$KILN" build -q -t env "$work/env" >/dev/null
env=$("$KILN" inspect env | jq -r '.[0].Config.Env | join(" ")')
[[ " $env " == *" abc=bye "* ]] || fail "ENV abc: $env"
[[ " $env " == *" def=hello "* ]] || fail "ENV def=\$abc on the line that changes abc must see the old value: $env"
[[ " $env " == *" ghi=bye "* ]] || fail "ENV ghi: $env"
[ "$("$KILN" inspect env | jq -r '.[0].Config.Labels.two + "," + .[0].Config.Labels.three')" = "2,1" ] ||
	fail "ARG a=2 b=\$a: $("$KILN" inspect env | jq -c '.[0].Config.Labels')"
[ "$("$KILN" run --rm --network none env cat /args)" = "a=2 b=1 dyn=context/bar" ] ||
	fail "ARG values in RUN: $("$KILN" run --rm --network none env cat /args)"

# an ARG name that expands to nothing is an error naming the line
mkdir -p "$work/emptyarg"
printf 'FROM busybox\nARG ${nothing}=x\n' > "$work/emptyarg/Dockerfile"
if "$KILN" build -q "$work/emptyarg" 2>"$work/err" >/dev/null; then fail "ARG with an empty name built"; fi
grep -q "Dockerfile:2" "$work/err" || fail "empty ARG name error: $(cat "$work/err")"

# --- WORKDIR after USER
mkdir -p "$work/wd"
cat > "$work/wd/Dockerfile" <<'DF'
FROM busybox
USER 1000:1001
WORKDIR /app/sub
USER root
WORKDIR /tmp
RUN stat -c '%u:%g %n' /app /app/sub /tmp > /own
DF
"$KILN" build -q -t wd "$work/wd" >/dev/null
own=$("$KILN" run --rm --network none wd cat /own)
[ "$own" = "1000:1001 /app
1000:1001 /app/sub
0:0 /tmp" ] || fail "WORKDIR ownership: $own"

# --- FROM scratch: BuildKit's default PATH
mkdir -p "$work/scratch"
printf 'FROM scratch\nCOPY Dockerfile /\n' > "$work/scratch/Dockerfile"
"$KILN" build -q -t scr "$work/scratch" >/dev/null
[ "$("$KILN" inspect scr | jq -r '.[0].Config.Env[0]')" = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ] ||
	fail "scratch PATH: $("$KILN" inspect scr | jq -c '.[0].Config.Env')"

# --- layers like Docker's: a RUN/WORKDIR/COPY that changes nothing still gets
# a layer (the empty tar) and a history entry without empty_layer; every
# entry of the Dockerfile carries BuildKit's comment
mkdir -p "$work/empty"
cat > "$work/empty/Dockerfile" <<'DF'
FROM busybox
RUN true
WORKDIR /
ENV A=1
DF
"$KILN" build -q -t empty "$work/empty" >/dev/null
base_layers=$("$KILN" inspect busybox | jq '.[0].RootFS.Layers | length')
layers=$("$KILN" inspect empty | jq -c ".[0].RootFS.Layers[$base_layers:]")
E=sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
[ "$layers" = "[\"$E\",\"$E\"]" ] || fail "no-change RUN/WORKDIR layers: $layers"
hist=$("$KILN" inspect empty | jq -c '[.[0].History[-3:][] | [.created_by, (.empty_layer // false), .comment]]')
[ "$hist" = '[["RUN /bin/sh -c true # buildkit",false,"buildkit.dockerfile.v0"],["WORKDIR /",false,"buildkit.dockerfile.v0"],["ENV A=1",true,"buildkit.dockerfile.v0"]]' ] ||
	fail "history: $hist"
echo ok
