#!/bin/bash
# The network of RUN steps (hostile review, issue 11 finding 2).  A RUN step
# has a network namespace of its own by default: it cannot reach the host's
# loopback services (TCP or UDP on 127.0.0.1, nor through the bridge's
# gateway address) nor its abstract unix sockets, and neither can
# --network none; `kiln build --network host` is the user's explicit choice
# and reaches them; a Dockerfile's RUN --network=host is refused unless the
# build says --allow network.host.  Outbound: a default RUN step and a
# `kiln run` container on the bridge reach a server in a network namespace
# this test makes ("outside", joined to the host by a veth in TEST-NET-2/3),
# through NAT: the server sees the host's address, never 10.213.37.x.
# resolv.conf: the host's nameservers minus loopback ones, no public
# fallback, one warning per build when none is left.  The cache key of a
# default step does not depend on how "default" was spelt.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, veth, nftables)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v ip >/dev/null || { echo "iproute2 is not installed"; exit 77; }
command -v gcc >/dev/null || { echo "gcc is not installed (the probe is built static)"; exit 77; }
command -v unshare >/dev/null || { echo "util-linux unshare is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
work=$(mktemp -d)
ns=kiln-out-$$           # the "outside" network namespace
vh=knt$$h vo=knt$$o      # its veth pair (host side, outside side)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	ip link del "$vh" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
ctx=$work/ctx
mkdir -p "$ctx"
gcc -static -O2 -o "$ctx/netprobe" "$KILN_SRC/tests/e2e/lib/netprobe.c" 2>"$work/gcc.err" ||
	{ cat "$work/gcc.err"; echo "cannot build the static probe (libc6-dev's libc.a)"; exit 77; }
NP=$ctx/netprobe

# start "$@" in the background; wait for its ready file ($1 of the call) or its death
start() {
	local ready=$1; shift
	"$@" &
	local pid=$!
	while [ ! -e "$ready" ]; do
		if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null; return 1; fi
		sleep 0.05
	done
	pids="$pids $pid"
}
# a server on a port nobody on the host's loopback uses (its bind decides):
# on_free_port VAR CMD... runs CMD with @PORT@ replaced, until one binds
on_free_port() {
	local var=$1 ready=$2 tries=0 p a; shift 2
	while :; do
		p=$((20000 + RANDOM % 12000))   # below the ephemeral range
		local args=()
		for a in "$@"; do args+=("${a//@PORT@/$p}"); done
		if start "$ready" "${args[@]}"; then printf -v "$var" %s "$p"; return 0; fi
		tries=$((tries + 1))
		[ $tries -lt 20 ] || fail "no free port for $1"
	done
}

# ---- the host's loopback-only services ----
on_free_port tport "$work/tcp.ready" "$NP" serve-tcp 127.0.0.1 @PORT@ HOST-LOOPBACK-SECRET "$work/tcp.log" "$work/tcp.ready"
on_free_port uport "$work/udp.ready" "$NP" serve-udp 127.0.0.1 @PORT@ "$work/udp.log" "$work/udp.ready"
abs=kiln-test-abstract-$$
start "$work/abs.ready" "$NP" serve-abstract "$abs" HOST-ABSTRACT-SECRET "$work/abs.ready" ||
	fail "abstract socket server did not start"
# the probes work from the host itself
"$NP" tcp 127.0.0.1 "$tport" | grep -q HOST-LOOPBACK-SECRET || fail "host cannot reach its own TCP server"
"$NP" abstract "$abs" | grep -q HOST-ABSTRACT-SECRET || fail "host cannot reach its own abstract socket"

# every probe of the host; the step always succeeds, the results are files
cat > "$ctx/Dockerfile" <<EOF
FROM busybox
COPY netprobe /np
ARG MODE
RUN /np tcp 127.0.0.1 $tport > /tcp 2>&1; \\
    /np tcp 10.213.37.1 $tport > /gw-tcp 2>&1; \\
    /np udp 127.0.0.1 $uport LEAK-LO-\$MODE; \\
    /np udp 10.213.37.1 $uport LEAK-GW-\$MODE; \\
    /np abstract $abs > /abs 2>&1; \\
    cat /etc/resolv.conf > /resolv; true
EOF

# UDP: after the build, a marker from the host; once the server logged it,
# any datagram of the step would have been logged before it
udp_sync() {
	"$NP" udp 127.0.0.1 "$uport" "END-$1"
	while ! grep -qx "END-$1" "$work/udp.log" 2>/dev/null; do
		kill -0 $pids 2>/dev/null || fail "a server died"
		sleep 0.05
		"$NP" udp 127.0.0.1 "$uport" "END-$1"
	done
}

probe_build() { # mode out-dir build-flags...
	local mode=$1 out=$2; shift 2
	"$KILN" build --progress plain --no-cache --build-arg MODE="$mode" -o "type=local,dest=$out" "$@" \
		-t "probe-$mode" "$ctx" >"$work/build-$mode.log" 2>&1 || { cat "$work/build-$mode.log"; fail "probe build ($mode)"; }
	udp_sync "$mode"
}

# default: nothing of the host's loopback or abstract sockets
probe_build default "$work/o-default"
for f in tcp gw-tcp abs; do
	grep -q SECRET "$work/o-default/$f" && fail "a default RUN step reached the host's $f service: $(cat "$work/o-default/$f")"
done
grep -q '^LEAK-..-default$' "$work/udp.log" && fail "a default RUN step's UDP datagram reached the host's 127.0.0.1: $(cat "$work/udp.log")"

# --network none: nothing either
probe_build none "$work/o-none" --network none
for f in tcp gw-tcp abs; do
	grep -q SECRET "$work/o-none/$f" && fail "a --network none RUN step reached the host's $f service"
done
grep -q '^LEAK-..-none$' "$work/udp.log" && fail "a --network none RUN step's datagram reached the host"

# --network host on the command line: the user's explicit choice reaches them
# (this is also what shows the probes above could have seen a leak)
probe_build host "$work/o-host" --network host
grep -q HOST-LOOPBACK-SECRET "$work/o-host/tcp" || fail "--network host did not reach 127.0.0.1: $(cat "$work/o-host/tcp")"
grep -q HOST-ABSTRACT-SECRET "$work/o-host/abs" || fail "--network host did not reach the abstract socket"
grep -qx LEAK-LO-host "$work/udp.log" || fail "--network host: the UDP datagram did not arrive"

# RUN --network=host from the Dockerfile: refused without the entitlement
mkdir -p "$work/ctx-host"
cp "$NP" "$work/ctx-host/netprobe"
printf 'FROM busybox\nCOPY netprobe /np\nRUN --network=host /np tcp 127.0.0.1 %s > /tcp\n' "$tport" > "$work/ctx-host/Dockerfile"
lines_before=$(wc -l < "$work/tcp.log")
if "$KILN" build --progress plain -t hostnet "$work/ctx-host" >"$work/h1.log" 2>&1; then
	cat "$work/h1.log"; fail "RUN --network=host ran without --allow network.host"
fi
grep -q "Dockerfile:3.*network.host" "$work/h1.log" || { cat "$work/h1.log"; fail "the refusal does not name Dockerfile:3 and network.host"; }
[ "$(wc -l < "$work/tcp.log")" = "$lines_before" ] || fail "the refused step still connected"
"$KILN" build --progress plain --allow network.host -o "type=local,dest=$work/o-allow" -t hostnet "$work/ctx-host" >"$work/h2.log" 2>&1 ||
	{ cat "$work/h2.log"; fail "RUN --network=host with --allow network.host"; }
grep -q HOST-LOOPBACK-SECRET "$work/o-allow/tcp" || fail "RUN --network=host with the entitlement did not reach 127.0.0.1"
# --network host on the command line grants it too (as buildx does)
"$KILN" build --progress plain --no-cache --network host -t hostnet "$work/ctx-host" >"$work/h3.log" 2>&1 ||
	{ cat "$work/h3.log"; fail "RUN --network=host under --network host"; }
"$KILN" build --allow security.insecure -t x "$work/ctx-host" >"$work/h4.log" 2>&1 && fail "--allow security.insecure accepted"
grep -q "security.insecure" "$work/h4.log" || fail "unknown entitlement not named"

# ---- resolv.conf ----
want=$(awk '!($1 == "nameserver" && ($2 ~ /^127\./ || $2 ~ /:/))' /etc/resolv.conf)
[ "$(cat "$work/o-default/resolv")" = "$want" ] || fail "default RUN resolv.conf: $(cat "$work/o-default/resolv") (want: $want)"
if ! grep -qE '^nameserver[[:space:]]+8\.8\.' /etc/resolv.conf; then
	grep -q '8\.8\.' "$work/o-default/resolv" && fail "a public resolver was added"
fi
[ "$(cat "$work/o-host/resolv")" = "$(cat /etc/resolv.conf)" ] || fail "--network host resolv.conf differs from the host's"
grep -q "no nameserver" "$work/build-default.log" && grep -qE '^nameserver[[:space:]]+[0-9.]+' "$work/o-default/resolv" &&
	fail "warned about missing nameservers while one is there"
# a host whose only resolver is on loopback (in a mount namespace of this
# test, /etc/resolv.conf is replaced): none is written, one warning per build
printf 'search kiln.test\nnameserver 127.0.0.53\nnameserver ::1\n' > "$work/resolv.lo"
mkdir -p "$work/ctx-dns"
printf 'FROM busybox\nRUN cat /etc/resolv.conf > /r1\nRUN cat /etc/resolv.conf > /r2\nRUN --network=host cat /etc/resolv.conf > /rh\n' > "$work/ctx-dns/Dockerfile"
unshare -m --propagation private sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh \
	"$work/resolv.lo" "$KILN" build --progress plain --allow network.host -o "type=local,dest=$work/o-dns" -t dns "$work/ctx-dns" \
	>"$work/dns.log" 2>&1 || { cat "$work/dns.log"; fail "build with loopback-only resolvers"; }
[ "$(grep -c 'no nameserver' "$work/dns.log")" = 1 ] || { cat "$work/dns.log"; fail "not exactly one warning about the missing nameserver"; }
grep -q nameserver "$work/o-dns/r1" && fail "a nameserver was invented: $(cat "$work/o-dns/r1")"
grep -qx 'search kiln.test' "$work/o-dns/r2" || fail "the rest of resolv.conf was not kept"
grep -qx 'nameserver 127.0.0.53' "$work/o-dns/rh" || fail "the host network lost its loopback resolver"

# ---- the cache key of the default network ----
printf 'FROM busybox\nRUN echo k > /k\n' > "$work/ctx-dns/Dockerfile"
kc() { "$KILN" build --progress plain "$@" -t keyed "$work/ctx-dns" >"$work/k.log" 2>&1 || { cat "$work/k.log"; fail "build $*"; }; }
kc
kc --network default
grep -q '^#[0-9]* CACHED' "$work/k.log" || { cat "$work/k.log"; fail "--network default missed the default step's cache"; }
printf 'FROM busybox\nRUN --network=default echo k > /k\n' > "$work/ctx-dns/Dockerfile"
kc
grep -q '^#[0-9]* CACHED' "$work/k.log" || { cat "$work/k.log"; fail "RUN --network=default missed the default step's cache"; }
kc --network host
grep -q '^#[0-9]* CACHED' "$work/k.log" && { cat "$work/k.log"; fail "a host-network step reused a default step's cache"; }

# ---- outbound through NAT, to a namespace of this test ----
net=
for cand in 198.51.100 203.0.113; do
	if ! ip -4 route show | grep -q "^$cand\." && ! ip -4 addr show | grep -q "inet $cand\."; then net=$cand; break; fi
done
[ -n "$net" ] || { echo "TEST-NET-2 and -3 are both routed here: skipping the outbound part"; exit 77; }
ip netns add "$ns"
ip link add "$vh" type veth peer name "$vo"
ip link set "$vo" netns "$ns"
ip addr add "$net.1/24" dev "$vh"
ip link set "$vh" up
ip -n "$ns" addr add "$net.2/24" dev "$vo"
ip -n "$ns" link set "$vo" up
ip -n "$ns" link set lo up
# no route back to 10.213.37.0/24 inside: only NAT can make a reply arrive
start "$work/out.ready" ip netns exec "$ns" "$NP" serve-tcp "$net.2" 8080 OUTSIDE-OK "$work/out.log" "$work/out.ready" ||
	fail "outside server did not start"

printf 'FROM busybox\nCOPY netprobe /np\nRUN /np tcp %s.2 8080 > /outside 2>&1; true\n' "$net" > "$ctx/Dockerfile"
"$KILN" build --progress plain --no-cache -o "type=local,dest=$work/o-out" -t outbound "$ctx" >"$work/out-build.log" 2>&1 ||
	{ cat "$work/out-build.log"; fail "outbound build"; }
grep -q OUTSIDE-OK "$work/o-out/outside" || { cat "$work/o-out/outside"; fail "a default RUN step did not reach the outside server"; }
[ "$(tail -n 1 "$work/out.log")" = "$net.1" ] || fail "the outside server saw $(tail -n 1 "$work/out.log"), not the host's $net.1 (no masquerade)"
grep -q '^10\.213\.37\.' "$work/out.log" && fail "a bridge address left the host un-NATed"

"$KILN" build --progress plain --no-cache --network none -o "type=local,dest=$work/o-out-none" -t outbound "$ctx" >"$work/out-none.log" 2>&1 ||
	{ cat "$work/out-none.log"; fail "outbound build, --network none"; }
grep -q OUTSIDE-OK "$work/o-out-none/outside" && fail "a --network none RUN step reached the outside server"

got=$("$KILN" run --rm -v "$NP:/np:ro" busybox /np tcp "$net.2" 8080 2>&1) || true
[ "$got" = OUTSIDE-OK ] || fail "kiln run on the bridge did not reach the outside server: $got"
[ "$(tail -n 1 "$work/out.log")" = "$net.1" ] || fail "kiln run: the outside server saw $(tail -n 1 "$work/out.log")"
# the bridge still keeps the host's loopback out of `kiln run` containers
got=$("$KILN" run --rm -v "$NP:/np:ro" busybox /np tcp 10.213.37.1 "$tport" 2>&1) || true
case $got in *SECRET*) fail "kiln run reached a loopback-only host service through the gateway";; esac
# kiln's table is there, with the masquerade for the bridge's subnet only
if command -v nft >/dev/null; then
	nft list table ip kiln | grep -q 'ip saddr 10.213.37.0/24 oifname != "kiln0" masquerade' || fail "kiln's NAT rule"
fi
[ "$(cat /proc/sys/net/ipv4/conf/all/route_localnet)" = 0 ] || fail "route_localnet was turned on"
echo "ok"
