#!/usr/bin/env bash
# Peak RSS of `prewarm export` of one image with a 1 GiB layer (goal <= 64 MiB: nothing may be
# held whole). The lab's test seed plus one image `big-layer` (two RHEL-base layers and a
# LARGE_LAYER-byte layer, default 1 GiB, pushed by digest); the job lists that image alone.
# Exported twice, as a bundle and as an OCI layout directory (`--format oci-dir`), each timed
# with /usr/bin/time -v; then the large layer is proven in each: the bundle's index names it with
# its size, and the layout's blob file hashes to its digest.
#
#   bench/export-large.sh
#   LARGE_LAYER=$((256 << 20)) JOBS=8 BENCH_DIR=/tmp/x bench/export-large.sh
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-export-large}
LARGE_LAYER=${LARGE_LAYER:-1073741824}
JOBS=${JOBS:-8}
source "$(dirname "$0")/common.sh"
W=$PREWARM_LAB_DIR

fresh_lab
echo "seeding: $(lab seed --large-layer "$LARGE_LAYER")"
auth="$W/auth.json"
# The image holding the large layer, alone in a job of its own.
read -r reference large_digest < <(python3 - "$W/seed.json" "$LARGE_LAYER" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1])); size = int(sys.argv[2])
hits = [(i["reference"], d) for i in seed["images"] for d, s in i["blobs"] if s == size]
if len(hits) != 1:
    sys.exit(f"expected one image with a {size}-byte layer, found {len(hits)}")
print(*hits[0])
PY
)
printf '%s\n' "$reference" > "$W/images-large.txt"
sed 's|^image_lists:.*|image_lists: [images-large.txt]|' "$W/job.yaml" > "$W/job-large.yaml"
grep -q 'images-large.txt' "$W/job-large.yaml" || { echo "cannot point the job at images-large.txt"; exit 1; }
echo "image: $reference (layer $large_digest, $LARGE_LAYER bytes)"

# The whole image's blob bytes, for the throughput column.
bytes=$(python3 - "$W/seed.json" "$reference" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
print(sum(s for i in seed["images"] if i["reference"] == sys.argv[2] for _, s in i["blobs"]))
PY
)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
NO_RESET=1 measure bundle "$bytes" "$prewarm" export "$W/job-large.yaml" --authfile "$auth" -q \
  --jobs "$JOBS" -o "$W/bundle"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/bundle/bundle.json" "$large_digest" "$LARGE_LAYER" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
sizes = {x["digest"]: x["size"] for x in b["blobs"]}
if sizes.get(sys.argv[2]) != int(sys.argv[3]):
    sys.exit(f"bundle: {sys.argv[2]} is {sizes.get(sys.argv[2])}, not {sys.argv[3]} bytes")
print(f"bundle: {len(sizes)} blobs, the large layer among them; segments "
      f"{sum(s['size'] for s in b['segments'])} bytes")
PY
rm -rf "$W/bundle"
NO_RESET=1 measure oci_dir "$bytes" "$prewarm" export "$W/job-large.yaml" --authfile "$auth" -q \
  --jobs "$JOBS" --format oci-dir -o "$W/layout"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
blob="$W/layout/blobs/sha256/${large_digest#sha256:}"
[ "sha256:$(sha256sum "$blob" | cut -d' ' -f1)" = "$large_digest" ] ||
  { echo "oci-dir: $blob does not hash to $large_digest"; exit 1; }
echo "oci-dir: the large layer's file hashes to its digest"
rm -rf "$W/layout"
printf 'peak RSS: bundle %s MiB, oci-dir %s MiB (goal <= 64 MiB)\n' "$rss_bundle" "$rss_oci_dir"
