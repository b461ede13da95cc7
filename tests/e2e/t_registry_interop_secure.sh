#!/bin/bash
# Interop with skopeo and podman against a docker-registry that needs BOTH
# htpasswd Basic auth and TLS (a CA and a server certificate made here):
#   skopeo pushes (--dest-creds, --dest-cert-dir; from kiln's OCI layout as
#   Docker schema2 and OCI, and from a `kiln save` docker-archive) → kiln
#   login + pull + run;
#   kiln pushes → skopeo inspect and podman pull + run (--creds, --cert-dir);
#   kiln without credentials gets the registry's "unauthorized", kiln without
#   the CA gets a certificate error and never falls back to plain http.
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
. "$KILN_SRC/tests/e2e/lib/cgroup.sh"
for t in docker-registry skopeo jq openssl htpasswd; do
	command -v $t >/dev/null || { echo "$t is not installed"; exit 77; }
done
W=$(mktemp -d)
mkdir -p "$W/home" "$W/xdg" "$W/docker" "$W/nocreds"
chmod 700 "$W/xdg"
# nothing may touch the real ~/.docker or containers auth.json
# (REGISTRY_AUTH_FILE is exported only after the registry started: docker-registry
# reads REGISTRY_* variables as configuration overrides, REGISTRY_AUTH_FILE = auth.file)
unset REGISTRY_AUTH_FILE
export KILN_ROOT=$W/root HOME=$W/home DOCKER_CONFIG=$W/docker XDG_RUNTIME_DIR=$W/xdg
PR=$W/podman
CGP=kiln_e2e_regsec_$$
PODMAN=
cleanup() {
	if [ -n "${PODMAN:-}" ]; then
		$PODMAN rm -af >/dev/null 2>&1 || true
		$PODMAN rmi -af >/dev/null 2>&1 || true
	fi
	cg_parent_cleanup
	grep -o " $W/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	reg_cleanup
	rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# a CA and a server certificate for 127.0.0.1/localhost
(
	cd "$W"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kiln-sec-ca 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
		-extfile server.ext 2>/dev/null
	mkdir -p certs
	cp ca.pem certs/ca.crt
)
CERTS=$W/certs
PW='s3cret pw'
htpasswd -Bbn alice "$PW" >"$W/htpasswd"
REG_TLS_CERT=$W/server.pem REG_TLS_KEY=$W/server.key REG_AUTH_YAML="auth:
  htpasswd:
    realm: kiln-sec
    path: $W/htpasswd" reg_start "$W/reg"
export REGISTRY_AUTH_FILE=$W/auth.json
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
# it really is https with auth
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca.pem" "https://$REG_ADDR/v2/")
[ "$code" = 401 ] || fail "registry /v2/ over TLS without credentials answered $code, want 401"

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
can_run=false
if "$KILN" run --rm --network none busybox:latest true >/dev/null 2>&1; then can_run=true; fi

# --- (1) skopeo → secure registry → kiln (Docker schema2 and OCI)
printf '%s\n' "$PW" | "$KILN" login --cert-dir "$CERTS" -u alice --password-stdin "$REG_ADDR" >"$W/login.out" ||
	fail "kiln login: $(cat "$W/login.out")"
grep -qx "Login Succeeded" "$W/login.out" || fail "login output: $(cat "$W/login.out")"
[ "$(jq -r --arg h "$REG_ADDR" '.auths[$h].auth' "$DOCKER_CONFIG/config.json" | base64 -d)" = "alice:$PW" ] ||
	fail "kiln login stored other credentials"
"$KILN" save -o "$W/bb.tar" busybox:latest || fail "kiln save"
for fmt in v2s2 oci archive; do
	case $fmt in
	archive) src=docker-archive:$W/bb.tar fopt="--format v2s2";;
	*) src=oci:$KILN_ROOT:docker.io/library/busybox:latest fopt="--format $fmt";;
	esac
	skopeo copy -q $fopt --dest-creds "alice:$PW" --dest-cert-dir "$CERTS" \
		"$src" "docker://$REG_ADDR/sec/$fmt:1" || fail "$fmt: skopeo copy to the secure registry"
	want=$(skopeo inspect --creds "alice:$PW" --cert-dir "$CERTS" --format '{{.Digest}}' \
		"docker://$REG_ADDR/sec/$fmt:1")
	case $want in sha256:*) ;; *) fail "$fmt: skopeo inspect digest '$want'";; esac
	out=$(KILN_ROOT=$W/r-$fmt "$KILN" pull --cert-dir "$CERTS" "$REG_ADDR/sec/$fmt:1") ||
		fail "$fmt: kiln pull from the secure registry: $out"
	echo "$out" | grep -q "^Digest: $want$" || fail "$fmt: kiln pulled another digest than skopeo pushed ($want): $out"
	mt=$(jq -r .mediaType "$W/r-$fmt/blobs/sha256/${want#sha256:}")
	case $fmt in
	v2s2|archive) [ "$mt" = application/vnd.docker.distribution.manifest.v2+json ] || fail "v2s2 media type $mt";;
	oci) [ "$mt" = application/vnd.oci.image.manifest.v1+json ] || fail "oci media type $mt";;
	esac
	KILN_ROOT=$W/r-$fmt "$KILN" fsck >/dev/null || fail "$fmt: fsck"
	if $can_run; then
		got=$(KILN_ROOT=$W/r-$fmt "$KILN" run --rm --network none "$REG_ADDR/sec/$fmt:1" echo ok)
		[ "$got" = ok ] || fail "$fmt: kiln run printed '$got'"
	else
		KILN_ROOT=$W/r-$fmt "$KILN" image inspect "$REG_ADDR/sec/$fmt:1" >/dev/null || fail "$fmt: inspect"
	fi
done

# --- (2) kiln → secure registry → skopeo inspect, podman pull + run
out=$("$KILN" push --cert-dir "$CERTS" busybox:latest "$REG_ADDR/sec/kiln:1") || fail "kiln push: $out"
dg=$(echo "$out" | sed -n 's/^1: digest: \(sha256:[0-9a-f]*\) .*/\1/p')
[ -n "$dg" ] || fail "no digest in the kiln push output: $out"
got=$(skopeo inspect --creds "alice:$PW" --cert-dir "$CERTS" --format '{{.Digest}}' "docker://$REG_ADDR/sec/kiln:1")
[ "$got" = "$dg" ] || fail "skopeo sees digest $got, kiln pushed $dg"
# skopeo without credentials is refused as well (the registry really checks)
if skopeo inspect --cert-dir "$CERTS" --no-creds "docker://$REG_ADDR/sec/kiln:1" >/dev/null 2>&1; then
	fail "skopeo inspect without credentials succeeded"
fi

if command -v podman >/dev/null && command -v runc >/dev/null && cg_parent_init "$CGP"; then
	mkdir -p "$PR"
	cat >"$PR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
	export CONTAINERS_CONF=$PR/containers.conf
	PODMAN="podman --root $PR/root --runroot $PR/run --tmpdir $PR/tmp --storage-driver vfs"
	$PODMAN pull -q --creds "alice:$PW" --cert-dir "$CERTS" "$REG_ADDR/sec/kiln:1" >/dev/null ||
		fail "podman pull from the secure registry"
	got=$($PODMAN run --rm --runtime runc --network none --cgroup-parent="$CG_PARENT" \
		"$REG_ADDR/sec/kiln:1" echo hello-podman) || fail "podman run"
	[ "$got" = hello-podman ] || fail "podman run printed '$got'"
	pd=$($PODMAN image inspect --format '{{.Digest}}' "$REG_ADDR/sec/kiln:1")
	[ "$pd" = "$dg" ] || fail "podman digest $pd, want $dg"
	$PODMAN rmi -af >/dev/null 2>&1 || true
else
	echo "podman/runc missing or no cgroup parent beneath ours: podman part not run"
fi

# --- (3) negative: no credentials → the registry's "unauthorized"
set +e
err=$(KILN_ROOT=$W/r-neg1 HOME=$W/nocreds DOCKER_CONFIG=$W/nocreds REGISTRY_AUTH_FILE=$W/nocreds/auth.json \
	"$KILN" pull -q --cert-dir "$CERTS" "$REG_ADDR/sec/kiln:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "pull without credentials: exit $rc ($err)"
echo "$err" | grep -q "unauthorized" || fail "pull without credentials: no 'unauthorized' in: $err"
# no CA → a certificate error, not a silent retry over plain http
set +e
err=$(KILN_ROOT=$W/r-neg2 "$KILN" pull -q "$REG_ADDR/sec/kiln:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "pull without the CA: exit $rc ($err)"
echo "$err" | grep -qi "certificate" || fail "pull without the CA: no certificate error in: $err"
echo "$err" | grep -q "http://" && fail "pull without the CA fell back to http: $err"
[ ! -e "$W/r-neg2/index.json" ] || [ "$(jq '.manifests | length' "$W/r-neg2/index.json")" = 0 ] ||
	fail "pull without the CA stored an image"
echo "registry interop secure ok"
