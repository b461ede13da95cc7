#!/bin/bash
# The build cache shared through a registry: root A builds with
# --cache-to type=registry; a fresh root B (same base image) builds the same
# Dockerfile with --cache-from and every step is CACHED, the image id equal,
# without running a RUN step; a changed context file re-runs only the steps
# after it; mode=min leaves a dependency stage out, mode=max brings it; a
# missing cache only warns; a non-cache image is refused; a secret never
# reaches the registry.
set -eu
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, mounts)"; exit 77; }
command -v docker-registry >/dev/null || { echo "docker-registry is not installed"; exit 77; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { echo "busybox-static is not installed"; exit 77; }
command -v jq >/dev/null || { echo "jq is not installed"; exit 77; }
: "${KILN:?}" "${KILN_SRC:?}"

. "$KILN_SRC/tests/e2e/lib/registry.sh"
work=$(mktemp -d)
ROOT_A=$work/rootA
ROOT_B=$work/rootB
ROOT_C=$work/rootC
cleanup() { reg_cleanup; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

reg_start "$work/reg"
CACHE=$REG_ADDR/kiln/cache:main

ctx=$work/ctx
mkdir -p "$ctx"
echo one > "$ctx/a.txt"
echo two > "$ctx/b.txt"
echo s3cr3t-value-1234 > "$work/secret.txt"
cat > "$ctx/Dockerfile" <<'DF'
FROM busybox AS tools
RUN echo tool > /tool

FROM busybox
RUN echo base > /base
COPY a.txt /a.txt
RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /toklen
RUN cat /a.txt > /from-a
COPY --from=tools /tool /tool
COPY b.txt /b.txt
ENV GREETING=hello
CMD ["cat", "/a.txt"]
DF

build() { # ROOT LOG ARGS...
	local root=$1 log=$2; shift 2
	KILN_ROOT=$root "$KILN" build --progress plain --secret id=tok,src="$work/secret.txt" "$@" \
		-t cache-test "$ctx" > "$log" 2>&1 || { cat "$log"; fail "build $*"; }
}
count() { grep -c "$1" "$2" || true; }
step_state() { # LOG TEXT → CACHED | DONE | ?  (the first state line of that
	# step's number after its header: a nested stage's step shares its number
	# with the COPY --from that started it)
	awk -v t="] $2" '
		!n && index($0, t) { n = $1; next }
		n && $1 == n && ($2 == "CACHED" || $2 == "DONE") { print $2; found = 1; exit }
		END { if (!found) print "?" }' "$1"
}
image_id() { KILN_ROOT=$1 "$KILN" inspect cache-test | jq -r '.[0].Id'; }
# main stage: 8 steps after FROM; tools stage: 1 step
STEPS=9

# ---- root A: build and export (mode=max) ----------------------------------
mkdir -p "$ROOT_A" "$ROOT_B" "$ROOT_C"
KILN_ROOT=$ROOT_A "$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
build "$ROOT_A" "$work/a.log" --cache-to "type=registry,ref=$CACHE,mode=max" \
	--cache-to "type=registry,ref=$REG_ADDR/kiln/cache:max,mode=max"
[ "$(count '^#[0-9]* CACHED' "$work/a.log")" = 0 ] || fail "root A had cache hits on its first build"
grep -q "exporting cache to .*kiln/cache:main: $STEPS records" "$work/a.log" ||
	{ cat "$work/a.log"; fail "export did not report $STEPS records"; }
idA=$(image_id "$ROOT_A")

# what the registry holds: an OCI manifest with the kiln cache config (two tags: --cache-to repeats)
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"http://$REG_ADDR/v2/kiln/cache/manifests/main" > "$work/manifest.json" || fail "no cache manifest in the registry"
[ "$(jq -r .config.mediaType "$work/manifest.json")" = application/vnd.kiln.buildcache.config.v1+json ] ||
	fail "cache config media type: $(jq -r .config.mediaType "$work/manifest.json")"
cfgdg=$(jq -r .config.digest "$work/manifest.json")
curl -sf "http://$REG_ADDR/v2/kiln/cache/blobs/$cfgdg" > "$work/cachecfg.json" || fail "cache config blob missing"
[ "$(jq '.records | length' "$work/cachecfg.json")" = $STEPS ] || fail "cache config does not hold $STEPS records"
# no local path, no secret in the cache config
grep -q "$work" "$work/cachecfg.json" && fail "the cache config names a local path"
grep -q "s3cr3t" "$work/cachecfg.json" && fail "the secret is in the cache config"
# every record's layer is a layer of the manifest
for d in $(jq -r '.records[].layers[].digest' "$work/cachecfg.json" | sort -u); do
	jq -e --arg d "$d" '.layers | map(.digest) | index($d) != null' "$work/manifest.json" >/dev/null ||
		fail "record layer $d is not in the cache manifest"
done
# and no blob in the registry contains the secret
if grep -rqa "s3cr3t-value" "$work/reg/data"; then fail "the secret reached the registry"; fi
for d in $(jq -r '.layers[].digest' "$work/manifest.json"); do
	curl -sf "http://$REG_ADDR/v2/kiln/cache/blobs/$d" | zcat 2>/dev/null | grep -qa s3cr3t && fail "a cache layer holds the secret"
done

# ---- root B: empty, same base; everything comes from the registry ----------
KILN_ROOT=$ROOT_B "$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
[ -z "$(ls -A "$ROOT_B/cache/records" 2>/dev/null)" ] || fail "root B starts with cache records"
build "$ROOT_B" "$work/b.log" --cache-from "type=registry,ref=$CACHE"
grep -q "importing cache manifest from .*kiln/cache:main: $STEPS records, $STEPS imported" "$work/b.log" ||
	{ cat "$work/b.log"; fail "import did not report $STEPS records imported"; }
cached=$(count '^#[0-9]* CACHED' "$work/b.log")
[ "$cached" = $STEPS ] || { cat "$work/b.log"; fail "root B: $cached of $STEPS steps cached"; }
[ "$(count '^#[0-9]* DONE' "$work/b.log")" -le 3 ] || { cat "$work/b.log"; fail "root B ran steps"; }
# only the layers the base lacks were downloaded
nl=$(( $(jq ".layers | length" "$work/manifest.json") - 1 ))
grep -q "^fetched $nl cache layers" "$work/b.log" || { cat "$work/b.log"; fail "root B did not fetch exactly the $nl layers the base lacks"; }
idB=$(image_id "$ROOT_B")
[ "$idA" = "$idB" ] || fail "image id differs between roots ($idA vs $idB)"
# the image from the shared cache runs (snapshots re-created from the layer blobs)
out=$(KILN_ROOT=$ROOT_B "$KILN" run --rm --network none cache-test sh -c 'cat /base /from-a /tool /b.txt /toklen')
[ "$out" = "$(printf 'base\none\ntool\ntwo\n18')" ] || fail "image built from the shared cache has wrong content: $out"

# a second import into B changes nothing (local records are as new)
build "$ROOT_B" "$work/b2.log" --cache-from "type=registry,ref=$CACHE"
grep -q "$STEPS records, 0 imported$" "$work/b2.log" || { cat "$work/b2.log"; fail "re-import rewrote records"; }

# ---- a changed context file re-runs only what depends on it ----------------
echo TWO > "$ctx/b.txt"
build "$ROOT_B" "$work/b3.log" --cache-from "type=registry,ref=$CACHE" --cache-to "type=registry,ref=$CACHE"
for s in "RUN echo base" "COPY a.txt" "RUN --mount=type=secret" "RUN cat /a.txt" "RUN echo tool"; do
	[ "$(step_state "$work/b3.log" "$s")" = CACHED ] || { cat "$work/b3.log"; fail "$s was not cached after b.txt changed"; }
done
# (COPY --from=tools builds the tools stage in the middle of its own step, so
# its CACHED line may carry the tools step's number: count instead)
[ "$(count '^#[0-9]* CACHED' "$work/b3.log")" = 6 ] || { cat "$work/b3.log"; fail "not 6 steps cached after b.txt changed"; }
for s in "COPY b.txt" "ENV GREETING" "CMD"; do
	[ "$(step_state "$work/b3.log" "$s")" = DONE ] || { cat "$work/b3.log"; fail "$s did not re-run after b.txt changed"; }
done
[ "$(KILN_ROOT=$ROOT_B "$KILN" run --rm --network none cache-test cat /b.txt)" = TWO ] || fail "new b.txt not in the image"
idB2=$(image_id "$ROOT_B")

# ---- root C: mode=min (exported by B above) leaves the tools stage out -------
KILN_ROOT=$ROOT_C "$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
build "$ROOT_C" "$work/c.log" --cache-from "$CACHE"
[ "$(step_state "$work/c.log" "RUN echo tool")" = DONE ] || { cat "$work/c.log"; fail "mode=min exported the tools stage"; }
[ "$(step_state "$work/c.log" "COPY b.txt")" = CACHED ] || { cat "$work/c.log"; fail "mode=min: COPY b.txt not cached"; }
[ "$(step_state "$work/c.log" "RUN cat /a.txt")" = CACHED ] || { cat "$work/c.log"; fail "mode=min: RUN cat not cached"; }
[ "$(image_id "$ROOT_C")" = "$idB2" ] || fail "root C image id differs from root B's"

# ---- errors -----------------------------------------------------------------
# a cache that does not exist yet: a note, the build goes on
build "$ROOT_C" "$work/c2.log" --cache-from "type=registry,ref=$REG_ADDR/kiln/none:x"
grep -q "kiln/none:x: not found" "$work/c2.log" || { cat "$work/c2.log"; fail "missing cache not reported"; }
# an ordinary image is not a cache: a warning, the build goes on
KILN_ROOT=$ROOT_C "$KILN" push -q busybox "$REG_ADDR/kiln/plain:1" >/dev/null 2>&1 || fail "push busybox"
build "$ROOT_C" "$work/c3.log" --cache-from "type=registry,ref=$REG_ADDR/kiln/plain:1"
grep -q "warning: .*not a kiln build cache" "$work/c3.log" || { cat "$work/c3.log"; fail "a plain image was taken as a cache"; }
# layers are fetched lazily: a root whose a.txt differs hits the steps
# before COPY a.txt (and the tools stage) and never downloads later layers
ROOT_D=$work/rootD
mkdir -p "$ROOT_D"
KILN_ROOT=$ROOT_D "$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
cp -a "$ctx" "$work/ctx2"
echo uno > "$work/ctx2/a.txt"
KILN_ROOT=$ROOT_D "$KILN" build --progress plain --secret id=tok,src="$work/secret.txt" \
	--cache-from "type=registry,ref=$REG_ADDR/kiln/cache:max" -t lazy "$work/ctx2" > "$work/d.log" 2>&1 ||
	{ cat "$work/d.log"; fail "lazy build"; }
[ "$(step_state "$work/d.log" "RUN echo base")" = CACHED ] || { cat "$work/d.log"; fail "lazy: RUN echo base not cached"; }
[ "$(step_state "$work/d.log" "RUN echo tool")" = CACHED ] || { cat "$work/d.log"; fail "lazy: RUN echo tool not cached"; }
[ "$(step_state "$work/d.log" "COPY a.txt")" = DONE ] || { cat "$work/d.log"; fail "lazy: COPY a.txt cached with another a.txt"; }
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"http://$REG_ADDR/v2/kiln/cache/manifests/max" > "$work/max.json"
curl -sf "http://$REG_ADDR/v2/kiln/cache/blobs/$(jq -r .config.digest "$work/max.json")" > "$work/maxcfg.json"
catlayer=$(jq -r '.records[] | select(.config.history[-1].created_by | test("cat /a.txt")) | .layers[-1].digest' "$work/maxcfg.json")
baselayer=$(jq -r '.records[] | select(.config.history[-1].created_by | test("echo base")) | .layers[-1].digest' "$work/maxcfg.json")
[ "$(printf '%s\n' "$catlayer" | grep -c .)" = 1 ] && [ "$(printf '%s\n' "$baselayer" | grep -c .)" = 1 ] ||
	fail "cannot tell the records of RUN cat / RUN echo base apart: $catlayer / $baselayer"
[ -e "$ROOT_D/blobs/sha256/${baselayer#sha256:}" ] || fail "the layer of a hit was not fetched"
[ ! -e "$ROOT_D/blobs/sha256/${catlayer#sha256:}" ] || fail "a layer no step hit was downloaded"
[ "$(KILN_ROOT=$ROOT_D "$KILN" run --rm --network none lazy sh -c 'cat /base /from-a')" = "$(printf 'base\nuno')" ] ||
	fail "lazy: wrong image content"

# a registry that serves corrupted layers poisons nothing: the fetch fails
# (digest mismatch), the steps run
ROOT_E=$work/rootE
mkdir -p "$ROOT_E" "$work/fake/blobs"
KILN_ROOT=$ROOT_E "$KILN_SRC/samples/make-base.sh" "$KILN" >/dev/null
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"http://$REG_ADDR/v2/kiln/cache/manifests/main" > "$work/fake/manifest.json"
for d in $(jq -r '.config.digest, .layers[].digest' "$work/fake/manifest.json"); do
	curl -sf "http://$REG_ADDR/v2/kiln/cache/blobs/$d" > "$work/fake/blobs/$d"
done
reg_fake_start "$work/fake" baddigest
build "$ROOT_E" "$work/e.log" --cache-from "type=registry,ref=$FAKE_ADDR/kiln/cache:main"
reg_fake_stop
grep -q "warning: fetching cache layer.*digest mismatch" "$work/e.log" || { cat "$work/e.log"; fail "corrupt cache layers not reported"; }
[ "$(count '^#[0-9]* CACHED' "$work/e.log")" = 0 ] || { cat "$work/e.log"; fail "a corrupt cache gave cache hits"; }
# bad specs are usage errors
set +e
KILN_ROOT=$ROOT_C "$KILN" build --cache-to "type=local,dest=/tmp/x" "$ctx" >/dev/null 2>&1; r1=$?
KILN_ROOT=$ROOT_C "$KILN" build --cache-to "type=registry,ref=$CACHE,mode=all" "$ctx" >/dev/null 2>&1; r2=$?
KILN_ROOT=$ROOT_C "$KILN" build --cache-from "type=registry" "$ctx" >/dev/null 2>&1; r3=$?
set -e
[ "$r1$r2$r3" = 222 ] || fail "bad cache specs: exit codes $r1 $r2 $r3 (want 2 2 2)"
# an export that cannot reach the registry fails the build, unless ignore-error=true
port=$(reg_free_port)
set +e
KILN_ROOT=$ROOT_C KILN_REGISTRY_RETRIES=0 "$KILN" build -q --cache-to "type=registry,ref=127.0.0.1:$port/x:y" "$ctx" >/dev/null 2>"$work/e1"; r1=$?
KILN_ROOT=$ROOT_C KILN_REGISTRY_RETRIES=0 "$KILN" build -q --cache-to "type=registry,ref=127.0.0.1:$port/x:y,ignore-error=true" "$ctx" >/dev/null 2>"$work/e2"; r2=$?
set -e
[ "$r1" = 1 ] || { cat "$work/e1"; fail "unreachable --cache-to: exit $r1, want 1"; }
grep -q "exporting the build cache" "$work/e1" || { cat "$work/e1"; fail "export failure message"; }
[ "$r2" = 0 ] || { cat "$work/e2"; fail "ignore-error=true: exit $r2, want 0"; }

for r in "$ROOT_A" "$ROOT_B" "$ROOT_C" "$ROOT_D" "$ROOT_E"; do
	KILN_ROOT=$r "$KILN" fsck >/dev/null 2>&1 || { KILN_ROOT=$r "$KILN" fsck; fail "fsck of $r"; }
done
echo "ok"
