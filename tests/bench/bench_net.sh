#!/bin/bash
# Network of a RUN step / a bridged container: what each way of giving a
# network namespace outbound access costs per start, and its throughput.
#   bridge  kiln0 + veth + nftables masquerade (what kiln does as root)
#   slirp   slirp4netns --configure --disable-host-loopback on a fresh netns
# Start cost: median of $RUNS (default 20) starts; for kiln the whole
# `kiln run --rm ... true`, for slirp/pasta a new netns with the helper up and
# ready, then torn down.  Throughput: $MIB MiB (default 1024) sent over TCP
# to a sink in a network namespace this script makes ("outside", joined to
# the host by a veth in 198.51.100.0/24), median of 3.  Needs root.
# Usage: tests/bench/bench_net.sh KILN_BINARY
set -eu
KILN=${1:-${KILN:?usage: bench_net.sh KILN_BINARY}}
KILN=$(readlink -f "$KILN")
RUNS=${RUNS:-20}
MIB=${MIB:-1024}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench_net: needs root"; exit 77; }
BB=$(command -v busybox || echo /bin/busybox)
ip -4 route show | grep -q '^198\.51\.100\.' && { echo "bench_net: 198.51.100.0/24 is routed here"; exit 77; }

W=$(mktemp -d)
export KILN_ROOT=$W/kiln
ns=kiln-bench-$$ vh=knb$$h vo=knb$$o
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	ip link del "$vh" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$W" 2>/dev/null || true
}
trap cleanup EXIT

R=$W/rootfs
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc
cp "$BB" "$R"/bin/busybox
for a in $("$BB" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
gcc -static -O2 -o "$R/bin/netprobe" "$src/tests/e2e/lib/netprobe.c"
NP=$R/bin/netprobe

ip netns add "$ns"
ip link add "$vh" type veth peer name "$vo"
ip link set "$vo" netns "$ns"
ip addr add 198.51.100.1/24 dev "$vh"
ip link set "$vh" up
ip -n "$ns" addr add 198.51.100.2/24 dev "$vo"
ip -n "$ns" link set "$vo" up
ip -n "$ns" link set lo up
ip netns exec "$ns" "$NP" sink 198.51.100.2 9000 "$W/sink.ready" &
pids="$pids $!"
while [ ! -e "$W/sink.ready" ]; do sleep 0.05; done

median() { sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'; }
# start cost of "$@" in ms: median min max
starts() {
	local i t0 t1 ts=()
	for i in 1 2 3; do "$@" >/dev/null 2>&1 || { echo "failed"; return 0; }; done
	for i in $(seq "$RUNS"); do
		t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N)
		ts+=($(( (t1 - t0) / 1000 )))
	done
	printf '%s\n' "${ts[@]}" | median | awk '{ printf "%.1f ms | %.1f ms | %.1f ms", $1 / 1000, $2 / 1000, $3 / 1000 }'
}
# throughput of "$@" (a command printing MiB/s): median of 3
rate() {
	local i rs=()
	for i in 1 2 3; do rs+=("$("$@" 2>/dev/null | tail -n 1)"); done
	printf '%s\n' "${rs[@]}" | median | awk '{ printf "%d MiB/s", $1 }'
}

# a netns with slirp4netns up (ready), then the command, then teardown
slirp_run() {
	unshare -n "$BB" sleep 60 &
	local holder=$! fifo=$W/slirp.ready.$RANDOM
	mkfifo "$fifo"
	slirp4netns --configure --disable-host-loopback --ready-fd=3 "$holder" tap0 3>"$fifo" >/dev/null 2>&1 &
	local slirp=$!
	timeout 30 head -c 1 "$fifo" >/dev/null || true
	if [ $# -gt 0 ]; then nsenter -t "$holder" -n "$@"; fi
	kill "$slirp" "$holder" 2>/dev/null; wait "$slirp" "$holder" 2>/dev/null || true
	rm -f "$fifo"
}

ROWS=()
ROWS+=("| kiln run --rm --network none --rootfs true | $(starts "$KILN" run --rm --network none --rootfs "$R" true) |")
ROWS+=("| kiln run --rm (bridge + NAT) --rootfs true | $(starts "$KILN" run --rm --rootfs "$R" true) |")
command -v slirp4netns >/dev/null && ROWS+=("| new netns + slirp4netns ready | $(starts slirp_run) |")
ROWS+=("| unshare -n true (a netns alone) | $(starts unshare -n true) |")

# a one-RUN build, --no-cache: the step's network is the difference
mkdir -p "$W/ctx"
printf 'FROM scratch\nCOPY rootfs /\nRUN true\n' > "$W/ctx/Dockerfile"
cp -a "$R" "$W/ctx/rootfs"
"$KILN" build -q -t warm "$W/ctx" >/dev/null
ROWS+=("| kiln build --no-cache, one RUN, --network none | $(starts "$KILN" build -q --no-cache --network none "$W/ctx") |")
ROWS+=("| kiln build --no-cache, one RUN, default network | $(starts "$KILN" build -q --no-cache "$W/ctx") |")

T=()
T+=("| bridge + veth + masquerade (kiln run) | $(rate "$KILN" run --rm --rootfs "$R" netprobe send 198.51.100.2 9000 "$MIB") |")
command -v slirp4netns >/dev/null && T+=("| slirp4netns | $(rate slirp_run "$NP" send 198.51.100.2 9000 "$MIB") |")
T+=("| host network (no namespace, the ceiling) | $(rate "$NP" send 198.51.100.2 9000 "$MIB") |")

echo "tests/bench/bench_net.sh on $(date +%F), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS starts each"
echo
echo "| start | median | min | max |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| TCP throughput to the outside namespace, $MIB MiB | median of 3 |"
echo "|---|---|"
printf '%s\n' "${T[@]}"
