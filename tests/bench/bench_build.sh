#!/bin/bash
# Build benchmark: kiln build side by side with `buildah bud` (overlay storage,
# --isolation chroot) and, where docker.io is installed, `docker build` (the
# classic builder and BuildKit, on a private dockerd with vfs storage), all
# with private roots and the same busybox base.
# Scenarios on samples/echo plus a one-line COPY of a context file (so that a
# one-file change has something to invalidate):
#   cold      empty build cache (base image present), first build
#   nocache   --no-cache
#   nochange  rebuild, nothing changed
#   onefile   rebuild after rewriting the copied file
#   bigrun    a RUN that writes 1 GiB in 20,000 files (zeros), --no-cache
# Medians of RUNS runs (bigrun: BIG_RUNS) and kiln/buildah ratios go to the
# "Build" section of tests/bench/RESULTS.md (other sections are kept).
# Usage: tests/bench/bench_build.sh KILN_BINARY
set -eu
KILN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
. "$src/tests/e2e/lib/cgroup.sh"
. "$src/tests/e2e/lib/dockerd.sh"
RUNS=${RUNS:-5}
BIG_RUNS=${BIG_RUNS:-3}
command -v buildah >/dev/null || { echo "buildah is not installed"; exit 77; }

work=$(mktemp -d)
export KILN_ROOT=$work/kiln-root
BR=$work/bah/root
BRR=$work/bah/run
bah() { buildah --root "$BR" --runroot "$BRR" --storage-driver overlay "$@"; }
lc=/tmp/kiln-bench-$$-$RANDOM
cleanup() {
	dockerd_stop
	cg_parent_cleanup
	bah rm --all >/dev/null 2>&1 || true
	bah rmi --all --force >/dev/null 2>&1 || true
	grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -f "$lc"
	rm -rf "$work"
}
trap cleanup EXIT

"$src/samples/make-base.sh" "$KILN" >/dev/null
ln -s "$KILN_ROOT" "$lc"
bah pull -q "oci:$lc:docker.io/library/busybox:latest" > "$work/base-id"
bah tag "$(cat "$work/base-id")" docker.io/library/busybox:latest

tools="kiln buildah"
cg_parent_init "kiln_bench_build_$$" || CG_PARENT=
if [ "${BENCH_DOCKER:-1}" = 1 ] && dockerd_start "$work/docker"; then
	"$KILN" save busybox | $DOCKER load >/dev/null
	tools="$tools docker-classic docker-buildkit"
fi

ctx=$work/echo
cp -r "$src/samples/echo" "$ctx"
echo "motd v0" > "$ctx/motd.txt"
echo 'COPY motd.txt /srv/echo/motd.txt' >> "$ctx/Dockerfile"
big=$work/big
mkdir -p "$big"
cat > "$big/Dockerfile" <<'DF'
FROM busybox:latest
RUN mkdir /data && i=0 && while [ $i -lt 20000 ]; do head -c 53687 /dev/zero > /data/f$i; i=$((i+1)); done
DF

now() { date +%s.%N; }
# time one command (stdout/stderr dropped); prints seconds
t1() { local s e; s=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; e=$(now); echo "$e - $s" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

kb() { "$KILN" build -q -t bench-echo "$@"; }
bb() { bah bud -q --layers --isolation chroot --network host -t bench-echo "$@"; }
dc() { DOCKER_BUILDKIT=0 $DOCKER build -q --network host -t bench-echo "$@"; }
dk() { DOCKER_BUILDKIT=1 $DOCKER build -q --network host -t bench-echo "$@"; }

declare -A R
run_scenarios() { # tool
	local tool=$1 b
	case $tool in kiln) b=kb;; buildah) b=bb;; docker-classic) b=dc;; docker-buildkit) b=dk;; esac
	local cold=() nocache=() nochange=() onefile=() bigs=()
	for i in $(seq "$RUNS"); do
		# cold: no build cache (kiln: prune; buildah: remove the built images)
		case $tool in
		kiln) "$KILN" builder prune -a -f >/dev/null; "$KILN" rmi -f bench-echo >/dev/null 2>&1 || true;;
		buildah) bah rmi -f bench-echo >/dev/null 2>&1 || true; bah rmi --prune >/dev/null 2>&1 || true;;
		docker-*) $DOCKER rmi -f bench-echo >/dev/null 2>&1 || true; $DOCKER builder prune -af >/dev/null 2>&1 || true;;
		esac
		cold+=("$(t1 $b "$ctx")")
		nocache+=("$(t1 $b --no-cache "$ctx")")
		nochange+=("$(t1 $b "$ctx")")
		echo "motd $tool $i $RANDOM" > "$ctx/motd.txt"
		onefile+=("$(t1 $b "$ctx")")
	done
	for i in $(seq "$BIG_RUNS"); do
		case $tool in
		kiln) bigs+=("$(t1 "$KILN" build -q --no-cache -t bench-big "$big")");;
		buildah) bigs+=("$(t1 bah bud -q --layers --no-cache --isolation chroot --network host -t bench-big "$big")");;
		docker-classic) bigs+=("$(t1 env DOCKER_BUILDKIT=0 $DOCKER build -q --no-cache --network host -t bench-big "$big")");;
		docker-buildkit) bigs+=("$(t1 env DOCKER_BUILDKIT=1 $DOCKER build -q --no-cache --network host -t bench-big "$big")");;
		esac
	done
	R[$tool.cold]=$(printf '%s\n' "${cold[@]}" | median)
	R[$tool.nocache]=$(printf '%s\n' "${nocache[@]}" | median)
	R[$tool.nochange]=$(printf '%s\n' "${nochange[@]}" | median)
	R[$tool.onefile]=$(printf '%s\n' "${onefile[@]}" | median)
	R[$tool.bigrun]=$(printf '%s\n' "${bigs[@]}" | median)
}

for t in $tools; do run_scenarios "$t"; done
dockerd_stop

fmt() { printf '%.3f s' "$1"; }
ratio() { echo "scale=3; $1 / $2" | bc | sed 's/^\./0./'; }
driver=$(ls "$KILN_ROOT/snapshots" 2>/dev/null | head -1)
section=$work/section.md
{
	echo "## Build"
	echo
	echo "\`tests/bench/bench_build.sh\` on $(date -u +%F), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg);"
	echo "kiln (storage driver $driver, gzip layers) vs buildah $(buildah --version | awk '{print $3}') (overlay, --isolation chroot, --layers)"
	case " $tools " in *" docker-classic "*)
		echo "and docker $(dockerd --version | awk '{print $3}' | tr -d ,) (private dockerd, vfs storage; classic builder and BuildKit);";;
	*) echo "(docker.io not installed: no docker columns);";; esac
	echo "samples/echo + one COPY of a context file, median of $RUNS runs; bigrun: RUN writing 1 GiB in 20,000 files, --no-cache, median of $BIG_RUNS."
	echo
	peers=${tools#kiln }
	head="| scenario | kiln |"; sep="|---|---|"
	for t in $peers; do head="$head $t |"; sep="$sep---|"; done
	echo "$head kiln/buildah | kiln/fastest peer | goal |"
	echo "$sep---|---|---|"
	for sc in cold nocache nochange onefile bigrun; do
		goal=""
		[ $sc = nochange ] && goal="<= 0.2x"
		[ $sc = nocache ] && goal="<= 0.3x"
		row="| $sc | $(fmt "${R[kiln.$sc]}") |"
		best=
		for t in $peers; do
			row="$row $(fmt "${R[$t.$sc]}") |"
			if [ -z "$best" ] || [ "$(echo "${R[$t.$sc]} < $best" | bc)" = 1 ]; then best=${R[$t.$sc]}; fi
		done
		echo "$row $(ratio "${R[kiln.$sc]}" "${R[buildah.$sc]}")x | $(ratio "${R[kiln.$sc]}" "$best")x | $goal |"
	done
	echo
	echo "bigrun is bound by how fast the host's filesystem creates files (the loop alone, without any commit,
takes about as long in \`kiln run\`, \`docker run\` and on the host), so it moves with the host's state
and the order the tools ran in; the echo rows are what the builders themselves cost."
	echo
} > "$section"
cat "$section"

# replace (or append) the Build section of RESULTS.md, keeping the others
res=$here/RESULTS.md
[ -f "$res" ] || echo "# Benchmarks" > "$res"
python3 - "$res" "$section" <<'PY'
import re, sys
res, sec = sys.argv[1], sys.argv[2]
text = open(res).read()
new = open(sec).read()
parts = re.split(r'(?m)^(?=## )', text)
out, done = [], False
for p in parts:
    if p.startswith('## Build\n'):
        out.append(new); done = True
    else:
        out.append(p)
if not done:
    if not out[-1].endswith('\n\n'):
        out[-1] = out[-1].rstrip('\n') + '\n\n'
    out.append(new)
open(res + '.tmp', 'w').write(''.join(out))
import os; os.replace(res + '.tmp', res)
PY
echo "written to $res"
