#!/bin/bash
# Registry authentication: htpasswd Basic auth and the Bearer token flow
# (distribution's `auth: token:` with a small token server made here), kiln
# login / logout and the credentials they store.
set -eu
. "$KILN_SRC/tests/e2e/lib/registry.sh"
command -v docker-registry >/dev/null || { echo "docker-registry is not installed"; exit 77; }
command -v htpasswd >/dev/null || { echo "htpasswd (apache2-utils) is not installed"; exit 77; }
command -v openssl >/dev/null || { echo "openssl is not installed"; exit 77; }
W=$(mktemp -d)
export KILN_ROOT=$W/root DOCKER_CONFIG=$W/docker
unset REGISTRY_AUTH_FILE XDG_RUNTIME_DIR
trap 'reg_cleanup; rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

########## Basic (htpasswd)
htpasswd -Bbn alice 's3cret pw' >"$W/htpasswd"
REG_AUTH_YAML="auth:
  htpasswd:
    realm: kiln-basic
    path: $W/htpasswd" reg_start "$W/reg-basic"

set +e
err=$("$KILN" push busybox:latest "$REG_ADDR/e2e/bb:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "anonymous push: exit $rc"
echo "$err" | grep -q "unauthorized: authentication required" || fail "anonymous push message: $err"

set +e
err=$(echo wrong | "$KILN" login -u alice --password-stdin "$REG_ADDR" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "login with a wrong password: exit $rc"
echo "$err" | grep -q "unauthorized" || fail "wrong password message: $err"
[ ! -e "$DOCKER_CONFIG/config.json" ] || fail "a failed login saved credentials"

out=$(printf 's3cret pw\n' | "$KILN" login -u alice --password-stdin "$REG_ADDR")
[ "$out" = "Login Succeeded" ] || fail "login output: $out"
[ "$(stat -c %a "$DOCKER_CONFIG/config.json")" = 600 ] || fail "config.json mode $(stat -c %a "$DOCKER_CONFIG/config.json")"
[ "$(stat -c %a "$DOCKER_CONFIG")" = 700 ] || fail "config dir mode"
auth=$(jq -r --arg h "$REG_ADDR" '.auths[$h].auth' "$DOCKER_CONFIG/config.json")
[ "$(echo "$auth" | base64 -d)" = "alice:s3cret pw" ] || fail "stored auth '$auth'"

"$KILN" push -q busybox:latest "$REG_ADDR/e2e/bb:1"
KILN_ROOT=$W/root2 "$KILN" pull -q "$REG_ADDR/e2e/bb:1" >/dev/null
# without -u: the stored credentials are checked, nothing is asked
out=$("$KILN" login "$REG_ADDR" </dev/null)
echo "$out" | grep -q "Authenticating with existing credentials" && echo "$out" | grep -q "Login Succeeded" ||
	fail "login with stored credentials: $out"
KILN_ROOT=$W/root2 "$KILN" fsck >/dev/null

# -p works too and warns
err=$("$KILN" login -u alice -p 's3cret pw' "http://$REG_ADDR/" 2>&1 >/dev/null)
echo "$err" | grep -q "WARNING! Using --password" || fail "no warning for -p"

out=$("$KILN" logout "$REG_ADDR")
[ "$out" = "Removing login credentials for $REG_ADDR" ] || fail "logout output: $out"
[ "$(jq -r --arg h "$REG_ADDR" '.auths[$h] // "gone"' "$DOCKER_CONFIG/config.json")" = gone ] || fail "logout left credentials"
[ "$("$KILN" logout "$REG_ADDR")" = "Not logged in to $REG_ADDR" ] || fail "second logout"
set +e
err=$(KILN_ROOT=$W/root3 "$KILN" pull -q "$REG_ADDR/e2e/bb:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && echo "$err" | grep -q "unauthorized: authentication required" || fail "pull after logout: $rc $err"

# credentials from the containers auth.json are used as well
printf '{"auths":{"%s":{"auth":"%s"}}}' "$REG_ADDR" "$(printf 'alice:s3cret pw' | base64 -w0)" >"$W/auth.json"
REGISTRY_AUTH_FILE=$W/auth.json KILN_ROOT=$W/root3 "$KILN" pull -q "$REG_ADDR/e2e/bb:1" >/dev/null ||
	fail "pull with REGISTRY_AUTH_FILE"
# logout edits the docker config only (as docker does) and says that the
# containers auth.json still logs kiln in
err=$(REGISTRY_AUTH_FILE=$W/auth.json "$KILN" logout "$REG_ADDR" 2>&1 >/dev/null)
echo "$err" | grep -q "credentials for $REG_ADDR are still found elsewhere ($W/auth.json" || fail "logout did not mention auth.json: $err"
[ -z "$("$KILN" logout "$REG_ADDR" 2>&1 >/dev/null)" ] || fail "logout warned without other credentials"
reg_stop

########## Bearer tokens
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/token.key" -out "$W/token.crt" -days 2 \
	-subj /CN=kiln-token-issuer 2>/dev/null
cat >"$W/token.py" <<'PY'
import base64, http.server, json, os, subprocess, sys, time, urllib.parse
key, crt, portfile, logfile = sys.argv[1:5]
der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True, capture_output=True).stdout
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def sign(claims):
    head = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    msg = (b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=msg, check=True,
                         capture_output=True).stdout
    return msg.decode() + "." + b64(sig)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        q = urllib.parse.urlparse(self.path)
        params = urllib.parse.parse_qs(q.query)
        user = "-"
        a = self.headers.get("Authorization", "")
        if a.startswith("Basic "):
            u, _, p = base64.b64decode(a[6:]).decode().partition(":")
            if (u, p) != ("alice", "s3cret pw"):
                body = b'{"details":"incorrect username or password"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            user = u
        scopes = params.get("scope", [])
        with open(logfile, "a") as f:
            f.write("%s %s %s\n" % (user, params.get("service", [""])[0], " ".join(scopes)))
        access = []
        if user != "-":
            for s in scopes:
                typ, _, rest = s.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        tok = sign({"iss": "kiln-issuer", "sub": user, "aud": params.get("service", [""])[0],
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(now) + os.urandom(4).hex(),
                    "access": access})
        body = json.dumps({"token": tok, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(portfile + ".tmp", "w").write(str(s.server_address[1]))
os.rename(portfile + ".tmp", portfile)
s.serve_forever()
PY
python3 "$W/token.py" "$W/token.key" "$W/token.crt" "$W/token.port" "$W/token.log" >"$W/token.out" 2>&1 &
TOKEN_PID=$!
for i in $(seq 100); do [ -s "$W/token.port" ] && break; sleep 0.05; done
[ -s "$W/token.port" ] || { cat "$W/token.out"; fail "token server did not start"; }
TPORT=$(cat "$W/token.port")
: >"$W/token.log"
REG_PORT=
REG_AUTH_YAML="auth:
  token:
    realm: http://127.0.0.1:$TPORT/token
    service: kiln-registry
    issuer: kiln-issuer
    rootcertbundle: $W/token.crt" reg_start "$W/reg-token"

# anonymous: a token without access, and the registry's refusal as it words it
set +e
err=$("$KILN" push busybox:latest "$REG_ADDR/e2e/a:1" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "anonymous push with tokens: exit $rc"
echo "$err" | grep -q "unauthorized: authentication required" || fail "anonymous token push message: $err"
grep -q "^- kiln-registry repository:e2e/a:pull,push" "$W/token.log" || fail "no anonymous token request: $(cat "$W/token.log")"

set +e
err=$(echo nope | "$KILN" login -u alice --password-stdin "$REG_ADDR" 2>&1); rc=$?
set -e
[ "$rc" = 1 ] && echo "$err" | grep -q "incorrect username or password" || fail "token login with a wrong password: $rc $err"
printf 's3cret pw\n' | "$KILN" login -u alice --password-stdin "$REG_ADDR" >/dev/null

"$KILN" push -q busybox:latest "$REG_ADDR/e2e/a:1"
grep -q "^alice kiln-registry repository:e2e/a:pull,push$" "$W/token.log" || fail "no push token: $(cat "$W/token.log")"
KILN_ROOT=$W/root4 "$KILN" pull -q "$REG_ADDR/e2e/a:1" >/dev/null
grep -q "^alice kiln-registry repository:e2e/a:pull$" "$W/token.log" || fail "no pull token"
KILN_ROOT=$W/root4 "$KILN" fsck >/dev/null

# cross-repository mount: the token asks for pull on the source as well
out=$(KILN_ROOT=$W/root4 "$KILN" push "$REG_ADDR/e2e/a:1" "$REG_ADDR/e2e/b:1")
echo "$out" | grep -q "Mounted from e2e/a" || fail "no mount with tokens: $out"
grep -q "^alice kiln-registry repository:e2e/b:pull,push repository:e2e/a:pull$" "$W/token.log" ||
	fail "mount token scope: $(cat "$W/token.log")"
"$KILN" logout "$REG_ADDR" >/dev/null
echo "registry auth ok"
