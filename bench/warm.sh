#!/usr/bin/env bash
# Benchmark: `prewarm warm` vs a skopeo copy loop vs raw parallel curl, through the same lab
# cache, cold each time (the proxies' storage is wiped and they restart before every contender).
#
#   bench/warm.sh                      # bench-scale seed plus one 1 GiB layer
#   LARGE_LAYER=0 bench/warm.sh        # without the large layer
#   JOBS=8 BENCH_DIR=/tmp/x bench/warm.sh
#
# Prints wall times, throughput, ratios and peak RSS (/usr/bin/time -v). One run of each.
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench}
JOBS=${JOBS:-8}
LARGE_LAYER=${LARGE_LAYER:-1073741824}
source "$(dirname "$0")/common.sh"
fresh_lab
seed_args=(--bench)
[ "$LARGE_LAYER" != 0 ] && seed_args+=(--large-layer "$LARGE_LAYER")
# SEED_ARGS replaces the seed options, e.g. SEED_ARGS=--release-scale (bench/release.sh).
[ -n "${SEED_ARGS:-}" ] && read -ra seed_args <<< "$SEED_ARGS"
echo "seeding: $(lab seed "${seed_args[@]}")"
eval "$(lab env)"
job="$PREWARM_LAB_DIR/job.yaml"
auth="$PREWARM_LAB_DIR/auth.json"
# skopeo copies one platform per image: compare on linux/amd64 only.
sed -i 's|^platforms:.*|platforms: [linux/amd64]|' "$job"
"$prewarm" plan "$job" --authfile "$auth" -q -o json > "$PREWARM_LAB_DIR/plan.json"

# (cache URL of each planned image by digest) and (cache URL of each (repository, blob) pair).
python3 - "$PREWARM_LAB_DIR/plan.json" "$FRONT" "$PREWARM_LAB_DIR" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1])); front = sys.argv[2]; out = sys.argv[3]
def cache_repo(source):
    ref = source.split('@')[0]
    host, rest = ref.split('/', 1)
    repo = rest.rsplit(':', 1)[0] if ':' in rest.split('/')[-1] else rest
    return "cache_" + host.replace('.', '_').replace(':', '_') + "/" + repo
with open(out + "/images.urls", "w") as f:
    for i in plan["images"]:
        f.write(f"docker://{front}/{cache_repo(i['source'])}@{i['digest']}\n")
pairs = set()
for i in plan["images"]:
    for b in i["blobs"]:
        pairs.add(f"http://{front}/v2/{cache_repo(i['source'])}/blobs/{b}")
with open(out + "/blobs.urls", "w") as f:
    f.write("\n".join(sorted(pairs)) + "\n")
s = sum(b["size"] for b in plan["blobs"])
print(f"plan: {len(plan['images'])} images, {len(plan['blobs'])} unique blobs, {s} bytes, {len(pairs)} (repository, blob) pairs")
PY
unique_bytes=$(python3 -c "import json;print(sum(b['size'] for b in json.load(open('$PREWARM_LAB_DIR/plan.json'))['blobs']))")

curl_all() { xargs -P "$JOBS" -n 1 curl -sf -o /dev/null < "$PREWARM_LAB_DIR/blobs.urls"; }
export -f curl_all
export JOBS

measure prewarm "$unique_bytes" "$prewarm" warm "$job" --authfile "$auth" --no-state --quiet --jobs "$JOBS"
measure skopeo "$unique_bytes" bash -c skopeo_loop
measure curl "$unique_bytes" bash -c curl_all
python3 - <<PY
p, s, c = $wall_prewarm, $wall_skopeo, $wall_curl
print(f"prewarm vs skopeo copy loop: {s/p:.2f}x faster (goal >= 3x)")
print(f"prewarm throughput vs raw curl: {100*c/p:.0f}% (goal >= 85%)")
PY
