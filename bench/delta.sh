#!/usr/bin/env bash
# Benchmark: a nightly air-gap delta at release scale. The release-scale set (~190 components,
# 2.8 GiB unique, by digest) is exported whole for site `far` and imported into a fresh
# registry; then one component changes upstream (a new image: new config, two new layers) and
# the job's list points at it, as a new nightly payload would. Measured:
#
#   export --since-last far   (the state's shipped record, no round trip to the far site)
#   inventory --job + export --have   (the far registry asked by digest)
#
# and for each, the bytes the delta bundle carries against the changed component's new blob
# and manifest bytes (they must agree within 1 %), then the delta is imported.
#
#   bench/delta.sh                  # needs ~12 GB free under /tmp
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-delta}
source "$(dirname "$0")/common.sh"
W=$PREWARM_LAB_DIR

[ -f "$W/lab.json" ] && lab down >/dev/null 2>&1 || true
rm -rf "$W"
lab up >/dev/null
cleanup() {
  stop_registries
  lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "seeding: $(lab seed --release-scale | tail -n 1)"
eval "$(lab env)"
job="$W/job.yaml"
auth="$W/auth.json"
state="$W/state.db"

# The far site's registry: fresh, plain HTTP on a free port.
far=$(fresh_registry far)

timed() { # name, command...: wall seconds into $W/name.wall
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$W/$name.out" 2>&1 || { echo "$name failed:"; tail -n 20 "$W/$name.out"; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.2f}')" > "$W/$name.wall"
}

timed export-full "$prewarm" export "$job" -o "$W/full" --site far --state "$state" --authfile "$auth" -q
timed import-full "$prewarm" import "$W/full" --to "$far/mirror" --to-insecure --state "$W/far-state.db" --authfile "$auth" -q
echo "night 1: full export $(cat "$W/export-full.wall") s, import $(cat "$W/import-full.wall") s"

# One component changes: a new image (new config, two new layers of ~6 MiB and ~2 MiB) pushed
# by digest; the list's line for component 42 points at it instead.
python3 - "$W" <<'PY'
import gzip, hashlib, io, json, os, random, sys, tarfile
w = sys.argv[1]
lay = os.path.join(w, "changed-layout")
os.makedirs(os.path.join(lay, "blobs/sha256"), exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(os.path.join(lay, "blobs/sha256", d), "wb").write(b)
    return "sha256:" + d, len(b)
rng = random.Random(20261130)
layers, diff_ids = [], []
for name, size in (("changed-a", 6 << 20), ("changed-b", 2 << 20)):
    data = rng.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo(f"usr/share/{name}/data"); info.size = len(data); info.mtime = 0
        t.addfile(info, io.BytesIO(data))
    diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    gz = gzip.compress(raw.getvalue(), mtime=0)
    layers.append(put(gz))
config = json.dumps({"architecture": "amd64", "os": "linux",
    "config": {"Labels": {"io.openshift.build.component": "component-042", "nightly": "2"}},
    "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cfg = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s} for d, s in layers]}).encode()
man = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": man[0], "size": man[1], "annotations": {"org.opencontainers.image.ref.name": "changed"}}]},
    open(os.path.join(lay, "index.json"), "w"))
open(os.path.join(lay, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
blob_bytes = sum(s for _, s in layers) + cfg[1]
open(os.path.join(w, "changed.txt"), "w").write(f"{man[0]} {blob_bytes} {man[1]}\n")
PY
read -r new_digest new_blob_bytes new_manifest_bytes < "$W/changed.txt"
skopeo copy -q --dest-tls-verify=false "oci:$W/changed-layout:changed" \
  "docker://$QUAY/openshift-release-dev/ocp-v4.0-art-dev@$new_digest" >/dev/null
old_line=$(sed -n 42p "$W/images.txt")
sed -i "42s|@sha256:[0-9a-f]*|@$new_digest|" "$W/images.txt"
echo "changed: $old_line -> @$new_digest ($new_blob_bytes blob bytes, $new_manifest_bytes manifest bytes)"

# The nightly delta, from the shipped record.
timed export-since "$prewarm" export "$job" -o "$W/night-2" --since-last far --state "$state" --authfile "$auth" -q
# The same delta against the far registry's inventory by digest.
timed inventory "$prewarm" inventory --registry "$far/mirror" --job "$job" --insecure -o "$W/inventory.json" --authfile "$auth" -q
timed export-have "$prewarm" export "$job" -o "$W/night-2-have" --have "$W/inventory.json" --authfile "$auth" -q
timed import-delta "$prewarm" import "$W/night-2" --to "$far/mirror" --to-insecure --state "$W/far-state.db" --authfile "$auth" -q

carried() { # bundle dir → "blobs manifests blob_bytes manifest_bytes"
  python3 - "$1/bundle.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
print(len(b["blobs"]), len(b["manifests"]), sum(x["size"] for x in b["blobs"]), sum(x["size"] for x in b["manifests"]))
PY
}
for name in since have; do
  dir="$W/night-2"; [ $name = have ] && dir="$W/night-2-have"
  read -r nb nm bb mb <<< "$(carried "$dir")"
  python3 - "$name" "$nb" "$nm" "$bb" "$mb" "$new_blob_bytes" "$new_manifest_bytes" "$(cat "$W/export-$name.wall")" <<'PY'
import sys
name, nb, nm, bb, mb, want_b, want_m, wall = sys.argv[1], *map(int, sys.argv[2:8]), float(sys.argv[8])
got, want = bb + mb, want_b + want_m
off = abs(got - want) / want * 100
print(f"delta ({'--since-last' if name == 'since' else '--have'}): {nb} blobs + {nm} manifests, {got} bytes carried vs {want} new bytes ({off:.2f} % off); export {wall:.2f} s")
assert off <= 1.0, "bytes carried differ from the changed component's by more than 1 %"
assert wall < 5.0, "the delta export took 5 s or more"
PY
done
echo "inventory --job by digest: $(cat "$W/inventory.wall") s; import of the delta: $(cat "$W/import-delta.wall") s"
