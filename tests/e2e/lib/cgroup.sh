# Sourced by e2e scripts that start podman/runc: a cgroup parent that lies
# beneath this process's own cgroup in every hierarchy, and its removal.
#
# cg_parent_init NAME   sets CG_PARENT (for --cgroup-parent) to
#                       <our deepest cgroup path>/NAME; on a hybrid machine our
#                       path may differ per controller, so the deepest one is
#                       used only when every other one is a prefix of it (then
#                       the parent is beneath ours everywhere).  Returns 1 when
#                       no such path exists.
# cg_parent_cleanup     removes CG_PARENT and whatever intermediate folders
#                       the runtime had to create for it, in every hierarchy.
CG_PARENT=
_cg_made=()
cg_parent_init() {
	local deepest= p
	while IFS=: read -r _ _ p; do
		[ ${#p} -gt ${#deepest} ] && deepest=$p
	done </proc/self/cgroup
	[ "$deepest" = / ] && deepest=
	while IFS=: read -r _ _ p; do
		[ "$p" = / ] && continue
		case "$deepest/" in "$p"/*) ;; *) return 1;; esac
	done </proc/self/cgroup
	CG_PARENT=$deepest/$1
	# remember, per hierarchy, the deepest folder of CG_PARENT that exists now
	local m d
	for m in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[ -e "$m/cgroup.procs" ] || continue
		d=$CG_PARENT
		while [ -n "$d" ] && [ ! -d "$m$d" ]; do d=${d%/*}; done
		_cg_made+=("$m|$d")
	done
}
cg_parent_cleanup() {
	[ -n "$CG_PARENT" ] || return 0
	local e m keep d
	for e in "${_cg_made[@]}"; do
		m=${e%%|*} keep=${e#*|}
		[ -d "$m$CG_PARENT" ] || continue
		find "$m$CG_PARENT" -depth -type d -exec rmdir {} \; 2>/dev/null
		d=${CG_PARENT%/*}
		while [ -n "$d" ] && [ "$d" != "$keep" ] && [ ${#d} -gt ${#keep} ]; do
			rmdir "$m$d" 2>/dev/null || break
			d=${d%/*}
		done
	done
}
