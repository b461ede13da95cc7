#!/bin/bash
# kiln build: every instruction's effect on the filesystem and on the config,
# checked with kiln inspect (jq) and kiln run.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }

export KILN_ROOT=$(mktemp -d)
# many layers: the vfs driver (kiln run on overlay cannot mount more than a few
# lower layers yet: fsconfig limits one lowerdir string to 256 bytes)
work=$(mktemp -d)
cleanup() {
	for c in $("$KILN" ps -aq 2>/dev/null); do "$KILN" rm -f "$c" >/dev/null 2>&1 || true; done
	rm -rf "$KILN_ROOT" "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null

ctx=$work/ctx
mkdir -p "$ctx/dir/sub" "$work/arch/x"
echo "file content" > "$ctx/file.txt"
echo "in dir" > "$ctx/dir/a"
echo "deeper" > "$ctx/dir/sub/b"
echo "readme" > "$ctx/README.md"
echo "notes" > "$ctx/NOTES.md"
echo "ignored" > "$ctx/secret.key"
printf 'secret.key\n' > "$ctx/.dockerignore"
echo "from the tar" > "$work/arch/x/inside"
tar -C "$work/arch" -czf "$ctx/archive.tar.gz" x
echo "s3cr3t" > "$work/token"
cat > "$ctx/Dockerfile" <<'DF'
# syntax=docker/dockerfile:1
ARG BASE=busybox:latest
FROM $BASE
ARG GREETING=hello
ENV APP=/app SPACED="a b"
LABEL test.label="x y" version=$GREETING
MAINTAINER kiln tests
WORKDIR /app
COPY file.txt .
COPY --chown=1000:1000 --chmod=640 file.txt owned.txt
COPY dir/ /data/
COPY *.md /docs/
COPY . /ctx/
ADD archive.tar.gz /extract/
RUN echo "$GREETING from $APP" > greeting && echo "$SPACED" > spaced
USER 1000
RUN id -u > /tmp/uid1000
USER root
RUN --mount=type=cache,target=/cache echo x >> /cache/f && wc -l < /cache/f | tr -d ' ' > /app/cachecount
RUN --mount=type=secret,id=tok,required=true cp /run/secrets/tok /app/secretcopy
RUN --mount=type=bind,source=dir,target=/mnt/dir cat /mnt/dir/a > /app/bound
RUN <<EOT
echo heredoc > /app/heredoc
EOT
WORKDIR sub
RUN pwd > /app/pwd
EXPOSE 8080 53/udp
VOLUME /vol
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=3 CMD true
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
ONBUILD RUN echo onbuild-ran > /onbuild
DF

"$KILN" build --progress plain --secret id=tok,src="$work/token" --build-arg GREETING=bonjour \
	--label extra=1 -t kiln-test/instr:1 "$ctx" > "$work/log" 2>&1 || { cat "$work/log"; fail "build failed"; }
grep -q "naming to docker.io/kiln-test/instr:1" "$work/log" || fail "no 'naming to' line"

cfg=$("$KILN" inspect kiln-test/instr:1)
q() { echo "$cfg" | jq -c "$1"; }
[ "$(q '.[0].Config.Env | index("APP=/app") != null')" = true ] || fail "ENV APP: $(q '.[0].Config.Env')"
[ "$(q '.[0].Config.Env | index("SPACED=a b") != null')" = true ] || fail "ENV quoted value"
[ "$(q '.[0].Config.Labels["test.label"]')" = '"x y"' ] || fail "LABEL"
[ "$(q '.[0].Config.Labels.version')" = '"bonjour"' ] || fail "LABEL with a build arg: $(q '.[0].Config.Labels')"
[ "$(q '.[0].Config.Labels.extra')" = '"1"' ] || fail "--label"
[ "$(q '.[0].Config.WorkingDir')" = '"/app/sub"' ] || fail "WORKDIR relative: $(q '.[0].Config.WorkingDir')"
[ "$(q '.[0].Config.ExposedPorts | keys')" = '["53/udp","8080/tcp"]' ] || fail "EXPOSE: $(q '.[0].Config.ExposedPorts')"
[ "$(q '.[0].Config.Volumes | keys')" = '["/vol"]' ] || fail "VOLUME"
[ "$(q '.[0].Config.StopSignal')" = '"SIGTERM"' ] || fail "STOPSIGNAL"
[ "$(q '.[0].Config.Entrypoint')" = '["/bin/sh","-c"]' ] || fail "ENTRYPOINT"
[ "$(q '.[0].Config.Cmd')" = '["echo hi"]' ] || fail "CMD"
[ "$(q '.[0].Config.Shell')" = '["/bin/sh","-ec"]' ] || fail "SHELL"
[ "$(q '.[0].Config.OnBuild')" = '["RUN echo onbuild-ran > /onbuild"]' ] || fail "ONBUILD: $(q '.[0].Config.OnBuild')"
[ "$(q '.[0].Config.Healthcheck.Test')" = '["CMD-SHELL","true"]' ] || fail "HEALTHCHECK test: $(q '.[0].Config.Healthcheck')"
[ "$(q '.[0].Config.Healthcheck.Interval')" = 5000000000 ] || fail "HEALTHCHECK interval"
[ "$(q '.[0].Config.Healthcheck.Retries')" = 3 ] || fail "HEALTHCHECK retries"
[ "$(q '.[0].Author')" = '"kiln tests"' ] || fail "MAINTAINER: $(q '.[0].Author')"
[ "$(q '[.[0].History[] | select(.created_by != null) | .created_by | select(startswith("RUN /bin/sh -c echo"))] | length')" -ge 1 ] \
	|| fail "history lacks the RUN entry"
[ "$(q '[.[0].History[] | select(.empty_layer == true)] | length')" -ge 5 ] || fail "metadata steps are not empty_layer"

r() { "$KILN" run --rm --network none --entrypoint "$1" kiln-test/instr:1 "${@:2}"; }
[ "$(r cat /app/file.txt)" = "file content" ] || fail "COPY file ."
[ "$(r stat -c '%u %g %a' /app/owned.txt)" = "1000 1000 640" ] || fail "COPY --chown --chmod: $(r stat -c '%u %g %a' /app/owned.txt)"
[ "$(r stat -c '%u %g' /app/file.txt)" = "0 0" ] || fail "COPY from the context is owned by root"
[ "$(r cat /data/a)" = "in dir" ] || fail "COPY dir/ copies the contents"
[ "$(r cat /data/sub/b)" = "deeper" ] || fail "COPY dir/ keeps subdirectories"
if r test -e /data/dir; then fail "COPY dir/ must not create dir itself"; fi
[ "$(r ls /docs | tr '\n' ' ')" = "NOTES.md README.md " ] || fail "COPY *.md: $(r ls /docs)"
if r test -e /ctx/secret.key; then fail ".dockerignore not honoured"; fi
r test -e /ctx/file.txt || fail "COPY . lacks file.txt"
[ "$(r cat /extract/x/inside)" = "from the tar" ] || fail "ADD archive.tar.gz not extracted"
[ "$(r cat /app/greeting)" = "bonjour from /app" ] || fail "RUN env: $(r cat /app/greeting)"
[ "$(r cat /app/spaced)" = "a b" ] || fail "ENV with spaces in RUN"
[ "$(r cat /tmp/uid1000)" = 1000 ] || fail "USER 1000 in RUN"
[ "$(r cat /app/cachecount)" = 1 ] || fail "cache mount"
if r test -e /cache/f; then fail "cache mount content leaked into the image"; fi
[ "$(r cat /app/secretcopy)" = "s3cr3t" ] || fail "secret mount"
if r test -e /run/secrets/tok; then fail "secret left in the image"; fi
[ "$(r cat /app/bound)" = "in dir" ] || fail "bind mount from the context"
[ "$(r cat /app/heredoc)" = "heredoc" ] || fail "RUN heredoc"
[ "$(r cat /app/pwd)" = "/app/sub" ] || fail "RUN cwd is the WORKDIR"
# the secret never reaches the cache records
if grep -rqs s3cr3t "$KILN_ROOT/cache"; then fail "secret in the cache records"; fi

# ONBUILD runs in a build FROM this image, and is not inherited further
mkdir -p "$work/child"
printf 'FROM kiln-test/instr:1\nRUN cat /onbuild > /app/child\n' > "$work/child/Dockerfile"
"$KILN" build -q -t kiln-test/child "$work/child" >/dev/null || fail "child build"
[ "$("$KILN" run --rm --network none --entrypoint cat kiln-test/child /app/child)" = "onbuild-ran" ] || fail "ONBUILD trigger did not run"
[ "$("$KILN" inspect kiln-test/child | jq -c '.[0].Config.OnBuild')" = null ] || fail "ONBUILD inherited"

# a Dockerfile on stdin without context; and a tar context on stdin
printf 'FROM busybox\nRUN echo stdin > /s\n' | "$KILN" build -q -t kiln-test/stdin - >/dev/null || fail "build -"
[ "$("$KILN" run --rm --network none kiln-test/stdin cat /s)" = stdin ] || fail "Dockerfile on stdin"
tar -C "$ctx" -cf - Dockerfile file.txt dir README.md NOTES.md archive.tar.gz .dockerignore | \
	"$KILN" build -q --secret id=tok,src="$work/token" -t kiln-test/tarctx - >/dev/null || fail "tar context on stdin"
[ "$("$KILN" run --rm --network none --entrypoint cat kiln-test/tarctx /app/file.txt)" = "file content" ] || fail "tar context content"

# -q prints only the id; --iidfile
id=$("$KILN" build -q --secret id=tok,src="$work/token" --build-arg GREETING=bonjour --label extra=1 \
	--iidfile "$work/iid" -t kiln-test/instr:1 "$ctx")
[[ "$id" =~ ^sha256:[0-9a-f]{64}$ ]] || fail "-q output: $id"
[ "$(cat "$work/iid")" = "$id" ] || fail "--iidfile"
echo "build instructions ok"
