# Helpers for the registry tests (source this file; bash).
#
#   reg_start DIR          start a docker-registry (distribution 2.8) on a free
#                          127.0.0.1 port with storage under DIR; sets REG_PID,
#                          REG_PORT, REG_ADDR (127.0.0.1:PORT).  Optional env:
#                          REG_TLS_CERT/REG_TLS_KEY (serve https), REG_TLS_CLIENTCA
#                          (then require client certificates signed by it),
#                          REG_AUTH_YAML (an "auth:" block, indented by 2),
#                          REG_PORT (reuse a port, e.g. after a restart),
#                          REG_ACCESSLOG_OFF=false (log every request to DIR/registry.log).
#   reg_stop               stop it (by PID) and wait for it
#   reg_kill               SIGKILL it (a crash) and wait
#   reg_fake_start DIR MODE
#                          start a small python registry that serves one image
#                          from DIR/blobs + DIR/manifest.json with a fault:
#                          MODE = baddigest | bigblob | ambiguous | fail500 | break | ok; sets
#                          FAKE_PID, FAKE_ADDR; requests are logged to DIR/requests.log
#   reg_fake_stop
#   reg_cleanup            stop everything started here (use in an EXIT trap)
#
# Everything listens on 127.0.0.1 only; processes are stopped by PID.

REG_PID=
FAKE_PID=
TOKEN_PID=

reg_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# reg_wait_http URL [curl options...]: until the URL answers (any HTTP status).
reg_wait_http() {
	local url=$1; shift
	local i code
	for i in $(seq 100); do
		code=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null || true)
		if [ -n "$code" ] && [ "$code" != 000 ]; then return 0; fi
		sleep 0.1
	done
	echo "nothing answers at $url" >&2
	return 1
}

reg_start() {
	local dir=$1
	mkdir -p "$dir/data"
	REG_PORT=${REG_PORT:-$(reg_free_port)}
	REG_ADDR=127.0.0.1:$REG_PORT
	local tls=""
	if [ -n "${REG_TLS_CERT:-}" ]; then
		tls="  tls:
    certificate: $REG_TLS_CERT
    key: $REG_TLS_KEY"
		if [ -n "${REG_TLS_CLIENTCA:-}" ]; then
			tls="$tls
    clientcas: [$REG_TLS_CLIENTCA]"
		fi
	fi
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: ${REG_LOG_LEVEL:-warn}
  accesslog: {disabled: ${REG_ACCESSLOG_OFF:-true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: 127.0.0.1:$REG_PORT
  secret: kiln-e2e-secret
$tls
${REG_AUTH_YAML:-}
EOF
	docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 &
	REG_PID=$!
	local i
	for i in $(seq 100); do
		ss -Hltn "sport = :$REG_PORT" 2>/dev/null | grep -q LISTEN && return 0
		kill -0 "$REG_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "docker-registry did not start on $REG_ADDR" >&2
	cat "$dir/registry.log" >&2
	return 1
}

reg_stop() {
	if [ -n "${REG_PID:-}" ]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
		REG_PID=
	fi
}

reg_kill() {
	if [ -n "${REG_PID:-}" ]; then
		kill -9 "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
		REG_PID=
	fi
}

# A fake registry serving DIR/manifest.json (by tag "latest" and by digest)
# and DIR/blobs/<digest>, with one fault (see above).
reg_fake_start() {
	local dir=$1 mode=$2
	cat >"$dir/fake.py" <<'PYEOF'
import hashlib, http.server, os, sys, threading
root, mode, portfile = sys.argv[1], sys.argv[2], sys.argv[3]
state = {"n500": 0, "broken": 0}
lock = threading.Lock()
def log(line):
    with lock, open(os.path.join(root, "requests.log"), "a") as f:
        f.write(line + "\n")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, body=b"", ctype="application/json", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.do_GET()
    def do_GET(self):
        log("%s %s range=%s" % (self.command, self.path, self.headers.get("Range", "")))
        p = self.path
        if p == "/v2/":
            return self.send(200, b"{}")
        if "/manifests/" in p:
            if mode == "fail500":
                with lock:
                    state["n500"] += 1
                    first = state["n500"] == 1
                if first:
                    return self.send(500, b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}')
            data = open(os.path.join(root, "manifest.json"), "rb").read()
            if mode == "ambiguous":
                # a manifest that is also an index (CVE-2021-41190)
                data = data.rstrip()[:-1] + b',"manifests":[]}'
            dg = "sha256:" + hashlib.sha256(data).hexdigest()
            return self.send(200, data, "application/vnd.oci.image.manifest.v1+json",
                             {"Docker-Content-Digest": dg})
        if "/blobs/" in p:
            dg = p.rsplit("/", 1)[1]
            path = os.path.join(root, "blobs", dg)
            if not os.path.exists(path):
                return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
            data = open(path, "rb").read()
            if mode == "baddigest" and not data.startswith(b"{"):
                data = bytes([data[0] ^ 0xff]) + data[1:]
            if mode == "bigblob" and not data.startswith(b"{"):
                data = data + b"\0" * 4096
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                body = data[start:]
                return self.send(206, body, "application/octet-stream",
                                 {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data))})
            if mode == "break" and len(data) > 4096:
                with lock:
                    state["broken"] += 1
                    first = state["broken"] == 1
                if first:
                    # promise everything, send half, drop the connection
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
            return self.send(200, data, "application/octet-stream")
        return self.send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}')
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(portfile + ".tmp", "w").write(str(s.server_address[1]))
os.rename(portfile + ".tmp", portfile)
s.serve_forever()
PYEOF
	rm -f "$dir/port" "$dir/requests.log"
	python3 "$dir/fake.py" "$dir" "$mode" "$dir/port" >"$dir/fake.log" 2>&1 &
	FAKE_PID=$!
	local i
	for i in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.05; done
	[ -s "$dir/port" ] || { echo "fake registry did not start" >&2; cat "$dir/fake.log" >&2; return 1; }
	FAKE_ADDR=127.0.0.1:$(cat "$dir/port")
}

reg_fake_stop() {
	if [ -n "${FAKE_PID:-}" ]; then
		kill "$FAKE_PID" 2>/dev/null || true
		wait "$FAKE_PID" 2>/dev/null || true
		FAKE_PID=
	fi
}

reg_cleanup() {
	reg_stop
	reg_fake_stop
	if [ -n "${TOKEN_PID:-}" ]; then
		kill "$TOKEN_PID" 2>/dev/null || true
		wait "$TOKEN_PID" 2>/dev/null || true
		TOKEN_PID=
	fi
}

# reg_fsck_clean: `kiln fsck` must report no problems.
reg_fsck_clean() {
	local out
	if ! out=$("$KILN" fsck 2>&1); then
		echo "kiln fsck failed:"; echo "$out"
		return 1
	fi
}
