# Sourced by e2e scripts and benchmarks that compare with Docker: a private
# dockerd (docker.io), started only where it is installed, with all its state
# under one folder, no iptables, no bridge, vfs storage, and its containers'
# cgroups beneath ours (lib/cgroup.sh's CG_PARENT must be set first).
#
# dockerd_start DIR   starts it, sets DOCKER (the client command line);
#                     returns 1 (and says why) when dockerd is missing or does
#                     not come up within 30 s.
# dockerd_stop        stops the dockerd we started (by its PID) and unmounts
#                     whatever it left beneath DIR.
DOCKER=
_dockerd_dir=
_dockerd_pid=
dockerd_start() {
	local d=$1 i
	command -v dockerd >/dev/null || { echo "dockerd is not installed"; return 1; }
	[ -n "${CG_PARENT:-}" ] || { echo "no cgroup parent beneath ours for docker"; return 1; }
	# the client of the same package as the daemon when there is one
	local cli=/usr/bin/docker
	[ -x "$cli" ] || cli=$(command -v docker) || { echo "no docker client"; return 1; }
	mkdir -p "$d"
	_dockerd_dir=$d
	dockerd --data-root "$d/root" --exec-root "$d/exec" -H "unix://$d/docker.sock" \
		--pidfile "$d/docker.pid" --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
		--storage-driver=vfs --cgroup-parent="$CG_PARENT/docker" \
		--default-ulimit nofile=20000:20000 --default-ulimit nproc=32768:32768 \
		>"$d/dockerd.log" 2>&1 &
	_dockerd_pid=$!
	DOCKER="$cli -H unix://$d/docker.sock"
	for i in $(seq 150); do
		$DOCKER version >/dev/null 2>&1 && return 0
		kill -0 "$_dockerd_pid" 2>/dev/null || break
		sleep 0.2
	done
	echo "dockerd did not start:"; tail -5 "$d/dockerd.log"
	dockerd_stop
	return 1
}
dockerd_stop() {
	[ -n "$_dockerd_pid" ] || return 0
	local i
	kill "$_dockerd_pid" 2>/dev/null
	for i in $(seq 100); do kill -0 "$_dockerd_pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$_dockerd_pid" 2>/dev/null && kill -9 "$_dockerd_pid" 2>/dev/null
	wait "$_dockerd_pid" 2>/dev/null
	_dockerd_pid=
	grep -o " $_dockerd_dir/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	return 0
}
