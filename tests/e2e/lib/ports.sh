# free_port: print a TCP port of 127.0.0.1 that nothing listens on, drawn
# below the kernel's ephemeral range (32768-60999 by default): a port there
# can be the local end of someone's outbound connection, which a listening
# check cannot see, and a later bind on it fails.  Ports of concurrent tests
# rarely collide (random start); a test that binds must still say clearly
# when its bind fails.
free_port() {
	local p=$((20000 + RANDOM % 12000)) n=0
	while ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || ss -Htan "sport = :$p" 2>/dev/null | grep -q .; do
		p=$((p + 1)); n=$((n + 1))
		[ $n -lt 1000 ] || { echo "free_port: no free port" >&2; return 1; }
	done
	echo "$p"
}
