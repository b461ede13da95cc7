#!/bin/bash
# TLS: a registry with a certificate from a CA this test makes.  Verified by
# default (no fallback to plain http when the certificate does not verify,
# even on 127.0.0.1); --cert-dir with ca.crt makes it work; client
# certificates (client.cert/client.key) when the registry requires them;
# --tls-verify=false skips verification; --tls-verify forbids the localhost
# http fallback.
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
command -v docker-registry >/dev/null || { echo "docker-registry is not installed"; exit 77; }
command -v openssl >/dev/null || { echo "openssl is not installed"; exit 77; }
W=$(mktemp -d)
export KILN_ROOT=$W/root DOCKER_CONFIG=$W/docker
trap 'reg_cleanup; rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

# a CA, a server certificate for 127.0.0.1/localhost, a client certificate
cd "$W"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=kiln-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=kiln-client 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null
mkdir -p certs certs-client
cp ca.pem certs/ca.crt
cp ca.pem certs-client/ca.crt
cp client.pem certs-client/client.cert
cp client.key certs-client/client.key
cd - >/dev/null

REG_TLS_CERT=$W/server.pem REG_TLS_KEY=$W/server.key reg_start "$W/reg"

# an unknown CA is a failure, not a reason to try http
set +e
err=$("$KILN" push busybox:latest "$REG_ADDR/e2e/tls:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "push to an unverifiable registry: exit $rc"
echo "$err" | grep -qi "certificate" || fail "no certificate error: $err"
echo "$err" | grep -q "http://" && fail "fell back to http: $err"

out=$("$KILN" push --cert-dir "$W/certs" busybox:latest "$REG_ADDR/e2e/tls:1")
echo "$out" | grep -q ": Pushed" || fail "push with --cert-dir: $out"
KILN_ROOT=$W/root2 "$KILN" pull -q --cert-dir="$W/certs" "$REG_ADDR/e2e/tls:1" >/dev/null
KILN_ROOT=$W/root2 "$KILN" fsck >/dev/null
set +e
KILN_ROOT=$W/root3 "$KILN" pull -q "$REG_ADDR/e2e/tls:1" >/dev/null 2>&1; rc=$?
set -e
[ "$rc" = 1 ] || fail "pull without the CA: exit $rc"
# --tls-verify=false: https without verification
KILN_ROOT=$W/root3 "$KILN" pull -q --tls-verify=false "$REG_ADDR/e2e/tls:1" >/dev/null
# the registry really is https: curl with the CA agrees on the digest
curl -fsS --cacert "$W/ca.pem" -o /dev/null "https://$REG_ADDR/v2/e2e/tls/manifests/1" \
	-H 'Accept: application/vnd.oci.image.manifest.v1+json' || fail "curl over TLS"
# login over TLS (no auth configured: accepted and saved, as docker does)
printf 'u\n' | "$KILN" login --cert-dir "$W/certs" -u u --password-stdin "$REG_ADDR" | grep -q "Login Succeeded" ||
	fail "login over TLS"
reg_stop

# client certificates required
REG_PORT= REG_TLS_CERT=$W/server.pem REG_TLS_KEY=$W/server.key REG_TLS_CLIENTCA=$W/ca.pem \
	reg_start "$W/reg-mtls"
curl -fsS --cacert "$W/ca.pem" --cert "$W/client.pem" --key "$W/client.key" "https://$REG_ADDR/v2/" >/dev/null ||
	fail "mTLS registry did not start"
set +e
err=$("$KILN" push --cert-dir "$W/certs" busybox:latest "$REG_ADDR/e2e/mtls:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "push without a client certificate: exit $rc ($err)"
"$KILN" push -q --cert-dir "$W/certs-client" busybox:latest "$REG_ADDR/e2e/mtls:1"
KILN_ROOT=$W/root4 "$KILN" pull -q --cert-dir "$W/certs-client" "$REG_ADDR/e2e/mtls:1" >/dev/null
reg_stop

# a plain-http registry on 127.0.0.1: allowed by default, refused with --tls-verify
REG_PORT= reg_start "$W/reg-plain"
"$KILN" push -q busybox:latest "$REG_ADDR/e2e/plain:1"
set +e
err=$("$KILN" push --tls-verify busybox:latest "$REG_ADDR/e2e/plain:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "--tls-verify against plain http: exit $rc"
echo "$err" | grep -q "https://" || fail "--tls-verify error does not name https: $err"
echo "registry tls ok"
