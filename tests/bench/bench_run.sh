#!/bin/bash
# Container start latency: `kiln run --rm` of `true` on a busybox rootfs
# against crun, runc and podman (runc) starting the same rootfs; median of
# $RUNS (default 20) runs each, in one session so the ratios are comparable.
# Usage: tests/bench/bench_run.sh KILN_BINARY
# BENCH_WRITE=1 also replaces the "Container start" section of
# tests/bench/RESULTS.md.  Needs root; uses a private kiln root, bundle and
# podman storage under a temporary directory, removed at the end.
set -eu
KILN=${1:-${KILN:?usage: bench_run.sh KILN_BINARY}}
KILN=$(readlink -f "$KILN")
RUNS=${RUNS:-20}
here=$(cd "$(dirname "$0")" && pwd)
# runc/crun/podman put their cgroups beneath ours, never at the hierarchy root
. "$here/../e2e/lib/cgroup.sh"
cg_parent_init "kiln_bench_run_$$" || CG_PARENT=
[ "$(id -u)" = 0 ] || { echo "bench_run: needs root"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)

W=$(mktemp -d)
export KILN_ROOT=$W/kiln
cleanup() {
	command -v podman >/dev/null && [ -d "$W/podman" ] && podman --root "$W/podman/root" --runroot "$W/podman/run" \
		--storage-driver vfs rmi -af >/dev/null 2>&1 || true
	rm -rf "$W" 2>/dev/null || true
	cg_parent_cleanup
}
trap cleanup EXIT

R=$W/bundle/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc "$R"/root
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R"/etc/passwd
echo 'root:x:0:' > "$R"/etc/group

# one timing: median / min / max in ms of RUNS executions of "$@"
measure() { # measure NAME CMD...
	local name=$1; shift
	local i t0 t1 ts=()
	for i in 1 2 3; do "$@" >/dev/null 2>&1 || { echo "| $name | failed | | |"; return 0; }; done
	for i in $(seq "$RUNS"); do
		t0=$(date +%s%N)
		"$@" >/dev/null 2>&1 || true
		t1=$(date +%s%N)
		ts+=($(( (t1 - t0) / 1000 )))
	done
	printf '%s\n' "${ts[@]}" | sort -n | awk -v name="$name" '
		{ v[NR] = $1 }
		END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
		      printf "| %s | %.1f ms | %.1f ms | %.1f ms |\n", name, m / 1000, v[1] / 1000, v[NR] / 1000 }'
}

rows=()
rows+=("$(measure "kiln run --rm --network none --rootfs" "$KILN" run --rm --network none --rootfs "$R" true)")
rows+=("$(measure "kiln run --rm (bridge network) --rootfs" "$KILN" run --rm --rootfs "$R" true)")
rows+=("$(measure "kiln run --rm --network none -m 64m (own cgroup)" "$KILN" run --rm --network none -m 64m --rootfs "$R" true)")
# from an image in the store: snapshot mount, config, then the same sandbox
tar -C "$R" -cf "$W/img.tar" .
if "$KILN" import "$W/img.tar" kiln-bench:latest >/dev/null; then
	rows+=("$(measure "kiln run --rm --network none IMAGE (store + snapshot)" "$KILN" run --rm --network none kiln-bench true)")
fi
rows+=("$(measure "kiln version (process start alone)" "$KILN" version)")

# the sandbox alone: kiln_sandbox_run in a loop inside one process, built
# from the objects next to the binary (when they are there)
obj=$(dirname "$KILN")/obj
src=$(cd "$here/../.." && pwd)
if [ -d "$obj/runtime" ] && command -v cc >/dev/null; then
	cat > "$W/loop.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "common/util.h"
#include "runtime/sandbox.h"
static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}
int main(int argc, char **argv)
{
	int n = atoi(argv[2]);
	char *av[] = {"true", NULL};
	uint64_t *ts = calloc((size_t)n, sizeof(*ts));
	for (int i = -3; i < n; i++) {
		struct kiln_sandbox_spec s;
		kiln_sandbox_spec_init(&s);
		s.rootfs = argv[1];
		s.argv = av;
		struct kiln_exit ex;
		struct kiln_err err = {0};
		uint64_t t0 = kiln_now_ns();
		if (kiln_sandbox_run(&s, &ex, &err) < 0 || ex.code != 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		if (i >= 0)
			ts[i] = kiln_now_ns() - t0;
	}
	qsort(ts, (size_t)n, sizeof(*ts), cmp);
	double med = n % 2 ? ts[n / 2] : (ts[n / 2 - 1] + ts[n / 2]) / 2.0;
	printf("| kiln_sandbox_run in-process (no process start; --network none) | %.1f ms | %.1f ms | %.1f ms |\n",
	       med / 1e6, ts[0] / 1e6, ts[n - 1] / 1e6);
	return 0;
}
C
	objs=$(find "$obj" -name '*.o' ! -name main.o)
	if cc -std=gnu11 -D_GNU_SOURCE -I"$src" -O2 -o "$W/loop" "$W/loop.c" $objs \
		$(pkg-config --libs libarchive libcrypto jansson libcurl libcap libbtrfsutil libseccomp libmnl) \
		-lpthread 2>/dev/null; then
		rows+=("$("$W/loop" "$R" "$RUNS")")
	fi
fi

if command -v crun >/dev/null || command -v runc >/dev/null; then
	(cd "$W/bundle" && (crun spec 2>/dev/null || runc spec)) >/dev/null
	jq --arg r "$R" --arg cg "$CG_PARENT" '.root.path=$r | .process.args=["true"] | .process.terminal=false
		| if $cg != "" then .linux.cgroupsPath=($cg + "/oci") else . end' \
		"$W/bundle/config.json" > "$W/c.json" && mv "$W/c.json" "$W/bundle/config.json"
fi
if command -v runc >/dev/null; then
	rows+=("$(measure "runc run" runc run --bundle "$W/bundle" "kiln-bench-runc-$$")")
fi
if command -v crun >/dev/null; then
	# crun refuses hybrid cgroups: run it where the empty cgroup2 mount is hidden
	legacy="unshare --mount --propagation private sh -c"
	if [ -d /sys/fs/cgroup/unified ]; then
		rows+=("$(measure "crun run (private mount ns hiding cgroup2)" $legacy "umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun run --bundle $W/bundle kiln-bench-crun-$$")")
		rows+=("$(measure "unshare + umount alone (overhead of the line above)" $legacy "umount -l /sys/fs/cgroup/unified 2>/dev/null; exec true")")
	else
		rows+=("$(measure "crun run" crun run --bundle "$W/bundle" "kiln-bench-crun-$$")")
	fi
fi
if command -v podman >/dev/null; then
	mkdir -p "$W/podman"
	cat > "$W/podman/containers.conf" <<'C'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
C
	export CONTAINERS_CONF=$W/podman/containers.conf
	P="podman --root $W/podman/root --runroot $W/podman/run --storage-driver vfs"
	tar -C "$R" -cf "$W/rootfs.tar" .
	if $P import "$W/rootfs.tar" localhost/kiln-bench:latest >/dev/null 2>&1; then
		RUNS_SAVED=$RUNS
		RUNS=$(( RUNS < 10 ? RUNS : 10 ))
		rows+=("$(measure "podman run --rm --runtime runc --network none" $P run --rm --runtime runc --network none ${CG_PARENT:+--cgroup-parent="$CG_PARENT"} localhost/kiln-bench:latest true)")
		RUNS=$RUNS_SAVED
	fi
fi

table="| command | median | min | max |
|---|---|---|---|
$(printf '%s\n' "${rows[@]}")"
echo "$table"

if [ "${BENCH_WRITE:-}" = 1 ]; then
	res=$here/RESULTS.md
	[ -f "$res" ] || printf '# Benchmarks\n' > "$res"
	section="## Container start

\`tests/bench/bench_run.sh\` on $(date -u +%F), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs each (podman 10), times of the whole command:

$table

What the rows mean: \`kiln version\` is the cost of starting the kiln binary at all, paid by
every kiln command: 9 shared objects (libcurl and libarchive, with their ~40 dependencies, are
loaded only by the commands that call them, see common/lazylib.h).  The IMAGE row is what
\`kiln run --rm busybox true\` costs: store lookup and digest checks (OpenSSL's first digest
initialises its provider, ~1 ms), a writable overlay snapshot made and removed, then the same
sandbox as the --rootfs row.  The in-process row is the sandbox alone (kiln_sandbox_run in a
loop): namespaces, mounts, masks, seccomp, caps, exec, wait.  runc, crun and podman put their
cgroups beneath the benchmark's own cgroup; the crun row runs inside a private mount namespace
that hides the empty cgroup2 mount (crun refuses hybrid cgroups), and the row below it is that
wrapper's own cost.  Without limits kiln leaves the container in its own cgroup (the pid
namespace holds its processes): moving a task into a new v1 cgroup waits for an RCU grace
period (the \`-m 64m\` row).  The machine is shared: compare rows of one run only.
"
	python3 - "$res" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pat = re.compile(r'^## Container start\n.*?(?=^## |\Z)', re.S | re.M)
if pat.search(text):
    text = pat.sub(lambda m: section + "\n", text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
fi
