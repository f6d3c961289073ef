#!/usr/bin/env bash
# Benchmark: a no-op `prewarm refresh` (issue 13) of a job with 1,000 image tags, 2 releases
# by tag and 2 operator catalogs, on loopback. Target: under 5 s.
#
#   bench/refresh.sh          # prints the wall time of the no-op refresh and its requests
#
# The lab's upstreams get the OCP content (`lab seed --ocp`) and 1,000 tags of one image in
# quay.io/openshift/origin-cli (bench-0000 … bench-0999, PUT as manifests). One `warm` records
# the state; then the refresh is timed: every tag HEADed once, nothing else read or warmed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-refresh}
TAGS=${TAGS:-1000}
cd "$root"
examples/lab/lab.sh install >/dev/null
cargo build -q --locked --release -p prewarm -p prewarm-lab --bin prewarm --bin lab
lab() { "${CARGO_TARGET_DIR:-$root/target}/release/lab" "$@"; }
prewarm="${CARGO_TARGET_DIR:-$root/target}/release/prewarm"
W=$PREWARM_LAB_DIR

[ -f "$W/lab.json" ] && lab down >/dev/null 2>&1 || true
rm -rf "$W"
lab up >/dev/null
trap 'lab down >/dev/null 2>&1 || true' EXIT
echo "seeding: $(lab seed --ocp | tr '\n' ' ')"
eval "$(lab env)"

# 1,000 tags of one image: its manifest PUT under each tag (the blobs are already there).
python3 - "$QUAY" "$TAGS" "$W/tags.txt" <<'PY'
import http.client, sys
addr, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
repo = "openshift/origin-cli"
c = http.client.HTTPConnection(addr)
accept = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])
c.request("GET", f"/v2/{repo}/manifests/4.20", headers={"Accept": accept})
r = c.getresponse(); body = r.read(); ctype = r.getheader("Content-Type")
assert r.status == 200, r.status
with open(out, "w") as f:
    for i in range(n):
        tag = f"bench-{i:04d}"
        c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body, headers={"Content-Type": ctype})
        r = c.getresponse(); r.read()
        assert r.status == 201, (tag, r.status)
        f.write(f"quay.io/{repo}:{tag}\n")
PY

job="$W/refresh-bench.yaml"
grep -v -e '^image_lists:' -e '^platforms:' "$W/job.yaml" > "$job"
cat >> "$job" <<YAML
platforms: [linux/amd64]
image_lists: [tags.txt]
releases:
- quay.io/openshift-release-dev/ocp-release:4.20.1-x86_64
- quay.io/openshift-release-dev/ocp-release:4.20.2-x86_64
operators:
- catalog: registry.redhat.io/redhat/redhat-operator-index:v4.20
- catalog: registry.redhat.io/redhat/certified-operator-index:v4.20
  full: true
YAML
state="$W/state.db"
"$prewarm" warm "$job" --state "$state" --authfile "$W/auth.json" --quiet
report="$W/noop.json"
start=$(date +%s.%N)
"$prewarm" refresh "$job" --state "$state" --stale-after 1h --report "$report" \
  --authfile "$W/auth.json" --quiet
end=$(date +%s.%N)
python3 - "$report" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]; f = r["refresh"]
wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"no-op refresh: {wall:.2f} s wall; {f['references']} references + {f['tracked_sources']} "
      f"releases/catalogs, {f['checked']} checked upstream, {len(f['changes'])} changed, "
      f"{f['to_warm']} to warm, {s['images']} images, {s['bytes_transferred']} bytes transferred, "
      f"{s['requests']} requests; target < 5 s: {'met' if wall < 5 else 'NOT met'}")
PY
