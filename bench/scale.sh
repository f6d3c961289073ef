#!/usr/bin/env bash
# Scale benchmark: many small images, where per-image and per-request costs dominate.
# SCALE_IMAGES images (default 20,000) in SCALE_IMAGES/10 repositories of the quay.io stand-in
# (`lab seed --scale --direct`: one shared 64 KiB base layer per repository, one unique 1–4 KiB layer
# and a config per image, each image tagged). Then:
#
#   plan   `prewarm plan` of the tagged list: wall time and peak RSS (goal <= 20 s, <= 128 MiB)
#   warm   `prewarm warm --plan plan.json` through the lab's cold distribution proxy
#   curl   the same manifest and blob requests through the same cold proxy with raw curl:
#          JOBS (8) curl processes at a time, each given BATCH (200) URLs in a config file
#          (`curl -K`), so every process keeps one keep-alive connection for its whole batch
#          and pays no process start per request. Order: image by image, its manifest by tag
#          (and any other manifest by digest), then each of its blobs not asked for in that
#          repository before — the requests warm makes, and no more.
#
# Prints the figures and warm's throughput as a share of curl's (goal >= 100%).
#
#   bench/scale.sh                                  # 20,000 images (see docs/benchmarks.md for how long)
#   SCALE_IMAGES=500 bench/scale.sh                 # small trial (50 repositories)
#   SCALE_IMAGES=2000 ROUNDS=2 bench/scale.sh       # warm, curl, warm, curl
#   SCALE_REPOS=100 JOBS=16 BATCH=500 BENCH_DIR=/tmp/x bench/scale.sh
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-scale}
SCALE_IMAGES=${SCALE_IMAGES:-20000}
SCALE_REPOS=${SCALE_REPOS:-$((SCALE_IMAGES / 10))}
JOBS=${JOBS:-8}
BATCH=${BATCH:-200}
ROUNDS=${ROUNDS:-1}
source "$(dirname "$0")/common.sh"

fresh_lab
start=$(date +%s.%N)
# SEED=direct (default) writes the set into the stopped upstream's storage (lab/src/storage.rs,
# seconds); SEED=push pushes it over HTTP (~140,000 requests at full scale).
direct=--direct
[ "${SEED:-direct}" = push ] && direct=
echo "seeding: $(lab seed --scale "$SCALE_IMAGES" --repos "$SCALE_REPOS" $direct)"
printf 'seeded in %.0f s\n' "$(python3 -c "print($(date +%s.%N) - $start)")"
eval "$(lab env)"
job="$PREWARM_LAB_DIR/job.yaml"
auth="$PREWARM_LAB_DIR/auth.json"
plan="$PREWARM_LAB_DIR/plan.json"

# Planning reads the upstream, not the cache: no reset needed, and its output is the plan.
/usr/bin/time -v -o "$PREWARM_LAB_DIR/plan.time" "$prewarm" plan "$job" --authfile "$auth" -q -o json > "$plan" \
  2> "$PREWARM_LAB_DIR/plan.err" || { echo "plan failed:"; tail -n 20 "$PREWARM_LAB_DIR/plan.err"; exit 1; }

# The curl batches, and the plan's totals.
read -r requests unique_bytes < <(python3 - "$plan" "$FRONT" "$PREWARM_LAB_DIR/curl" "$BATCH" <<'PY'
import json, os, sys
plan = json.load(open(sys.argv[1])); front, out, batch = sys.argv[2], sys.argv[3], int(sys.argv[4])
if plan["failures"]:
    sys.exit(f"the plan has {len(plan['failures'])} failures, e.g. {plan['failures'][0]}")
def cache_repo(repository):  # quay.io/scale/repo-0001 -> cache_quay_io/scale/repo-0001
    host, repo = repository.split("/", 1)
    return "cache_" + host.replace(".", "_").replace(":", "_") + "/" + repo
def repository(source):  # quay.io/scale/repo-0001:image-03 (or @sha256:…) -> quay.io/scale/repo-0001
    name = source.split("@")[0]
    head, _, last = name.rpartition("/")
    return head + "/" + last.split(":")[0]
urls, seen = [], set()
def tag(source):  # quay.io/scale/repo-0001:image-03 -> image-03; by digest -> None
    last = source.split("@")[0].rpartition("/")[2]
    return last.split(":", 1)[1] if ":" in last and "@" not in source else None
for image in plan["images"]:
    repo = cache_repo(repository(image["source"]))
    # As warm asks: the tag (its answer is the top manifest), then every other manifest by digest.
    t = tag(image["source"])
    if t:
        urls.append(f"http://{front}/v2/{repo}/manifests/{t}")
    for m in image["manifests"]:
        if not (t and m == image["digest"]):
            urls.append(f"http://{front}/v2/{repo}/manifests/{m}")
    for b in image["blobs"]:
        if (repo, b) not in seen:
            seen.add((repo, b))
            urls.append(f"http://{front}/v2/{repo}/blobs/{b}")
os.makedirs(out, exist_ok=True)
accept = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])
for n, i in enumerate(range(0, len(urls), batch)):
    with open(f"{out}/batch-{n:05}.cfg", "w") as f:
        f.write(f'header = "Accept: {accept}"\n')
        for url in urls[i:i + batch]:
            f.write(f'url = "{url}"\noutput = "/dev/null"\n')
print(len(urls), sum(b["size"] for b in plan["blobs"]))
PY
)
python3 - "$plan" "$PREWARM_LAB_DIR/plan.time" <<'PY'
import json, re, sys
plan = json.load(open(sys.argv[1])); t = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
print(f"plan: {len(plan['images'])} images, {len(plan['manifests'])} manifests, "
      f"{len(plan['blobs'])} unique blobs, {sum(b['size'] for b in plan['blobs'])} bytes")
print(f"plan       wall {secs:8.2f} s  peak RSS {rss:7.1f} MiB   (goal <= 20 s, <= 128 MiB at 20,000 images)")
PY
echo "curl: $requests requests in batches of $BATCH, $JOBS at a time"

curl_all() {
  find "$PREWARM_LAB_DIR/curl" -name 'batch-*.cfg' | sort |
    xargs -P "$JOBS" -n 1 curl -sS --fail --fail-early --noproxy '*' -K
}
export -f curl_all
export JOBS PREWARM_LAB_DIR

# ROUNDS (1) rounds of warm then curl, each on a cold cache: A B A B … so that a load that
# changes during the run (the machine is shared) falls on both.
for round in $(seq "$ROUNDS"); do
  echo "round $round: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  measure "warm$round" "$unique_bytes" "$prewarm" warm "$job" --plan "$plan" --authfile "$auth" --no-state --quiet --jobs "$JOBS"
  measure "curl$round" "$unique_bytes" bash -c curl_all
  python3 - <<PY
w, c, n = $(eval "echo \$wall_warm$round"), $(eval "echo \$wall_curl$round"), $requests
print(f"round $round: warm {n / w:.0f} requests/s, curl {n / c:.0f} requests/s; "
      f"warm's throughput {100 * c / w:.0f}% of curl's (goal >= 100%)")
PY
done
