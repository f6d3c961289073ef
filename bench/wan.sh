#!/usr/bin/env bash
# WAN-shaped benchmark: the release-scale set (`lab seed --release-scale`: ~190 components,
# 2.8 GiB unique) warmed while every byte from the upstream crosses a shaped link, prewarm
# against a skopeo copy loop (as in bench/warm.sh). Cold cache before each contender.
#
# Where the shaping sits: `lab shape` (a TCP proxy, lab/src/shaper.rs) is placed between the
# cache and its upstream, and the job's quay.io endpoint goes through it as well:
#
#   prewarm / skopeo -> nginx -> distribution proxy -> lab shape -> quay.io stand-in
#   prewarm (resolving tags at the source)           -> lab shape -> quay.io stand-in
#
# That is the WAN a site's cache has: the cache sits on the site's LAN next to whoever warms
# it, and quay.io is across the internet. What the benchmark asks of prewarm is to keep that
# link full despite the round trips: with LATENCY_MS added to every request and the link's
# bandwidth LINK_RATE shared by all connections (each one also capped at FLOW_RATE, as a
# single TCP flow over a long round trip is window-limited), the floor is
# unique bytes / LINK_RATE, and the goal is prewarm within 1.2× of it. (Shaping between
# prewarm and the cache would model a remote cache instead, and would shape skopeo's and
# prewarm's reads of what the cache already holds, which a site does not pay for.)
#
#   bench/wan.sh                            # full release scale: needs ~10 GB free under /tmp
#   COMPONENTS=8 LARGE_LAYERS=0 bench/wan.sh    # small trial (~190 MiB unique)
#   LATENCY_MS=50 LINK_RATE=$((25<<20)) FLOW_RATE=$((25<<18)) JOBS=8 BENCH_DIR=/tmp/x bench/wan.sh
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-wan}
JOBS=${JOBS:-8}
LATENCY_MS=${LATENCY_MS:-50}
LINK_RATE=${LINK_RATE:-$((25 << 20))}        # bytes/s, all connections together (200 Mbit/s)
FLOW_RATE=${FLOW_RATE:-$((LINK_RATE / 4))}   # bytes/s, each connection
COMPONENTS=${COMPONENTS:-190}
LARGE_LAYERS=${LARGE_LAYERS:-5}
source "$(dirname "$0")/common.sh"

fresh_lab
echo "seeding: $(lab seed --release-scale --components "$COMPONENTS" --large-layers "$LARGE_LAYERS" | tail -n 1)"
eval "$(lab env)"
job="$PREWARM_LAB_DIR/job.yaml"
auth="$PREWARM_LAB_DIR/auth.json"
plan="$PREWARM_LAB_DIR/plan.json"
# skopeo copies one platform per image: compare on linux/amd64 only.
sed -i 's|^platforms:.*|platforms: [linux/amd64]|' "$job"
# The plan (unshaped, untimed) only names what skopeo copies and what the floor counts.
"$prewarm" plan "$job" --authfile "$auth" -q -o json > "$plan"
read -r images unique_bytes < <(python3 - "$plan" "$FRONT" "$PREWARM_LAB_DIR/images.urls" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1])); front = sys.argv[2]
if plan["failures"]:
    sys.exit(f"the plan has {len(plan['failures'])} failures, e.g. {plan['failures'][0]}")
def cache_repo(source):  # quay.io/a/b@sha256:… or quay.io/a/b:tag -> cache_quay_io/a/b
    head, _, last = source.split("@")[0].rpartition("/")
    host, _, repo = (head + "/" + last.split(":")[0]).partition("/")
    return "cache_" + host.replace(".", "_").replace(":", "_") + "/" + repo
with open(sys.argv[3], "w") as f:
    for i in plan["images"]:
        f.write(f"docker://{front}/{cache_repo(i['source'])}@{i['digest']}\n")
print(len(plan["images"]), sum(b["size"] for b in plan["blobs"]))
PY
)

# The shaper, on a port of its own choosing; it ends with this script (it watches its parent).
"$labbin" shape --listen 127.0.0.1:0 --upstream "$QUAY" --latency-ms "$LATENCY_MS" \
  --rate "$FLOW_RATE" --total-rate "$LINK_RATE" > "$PREWARM_LAB_DIR/shape.out" 2>&1 &
shaper_pid=$!
trap 'kill "$shaper_pid" 2>/dev/null || true; lab down >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do grep -q '^shaping' "$PREWARM_LAB_DIR/shape.out" && break; sleep 0.1; done
shaped=$(awk '/^shaping/ {print $2}' "$PREWARM_LAB_DIR/shape.out")
[ -n "$shaped" ] || { echo "lab shape did not start:"; cat "$PREWARM_LAB_DIR/shape.out"; exit 1; }
echo "$(head -n 1 "$PREWARM_LAB_DIR/shape.out")"
# The quay proxy's upstream and the job's quay.io endpoint go through the shaper; the proxy
# reads its config again at every `lab reset-cache`.
sed -i "s|\"remoteurl\": \"http://$QUAY\"|\"remoteurl\": \"http://$shaped\"|" "$PREWARM_LAB_DIR/conf/proxy_quay.yml"
grep -q "http://$shaped" "$PREWARM_LAB_DIR/conf/proxy_quay.yml" || { echo "cannot re-point proxy_quay"; exit 1; }
sed -i "s|endpoint: $QUAY\$|endpoint: $shaped|" "$job"
grep -q "endpoint: $shaped" "$job" || { echo "cannot re-point the job's quay.io endpoint"; exit 1; }
echo "plan: $images images, $unique_bytes unique bytes"

export PREWARM_LAB_DIR

# Bytes the upstream sent for blob GETs since line $1 of its access log (what crossed the link).
upstream_log="$PREWARM_LAB_DIR/logs/quay.log"
link_bytes() {
  tail -n +"$(($1 + 1))" "$upstream_log" |
    awk '/"GET \/v2\/.*\/blobs\/sha256:/ {split($0, a, "\" "); split(a[2], b, " "); s += b[2]} END {print s + 0}'
}
mark=$(wc -l < "$upstream_log")
measure prewarm "$unique_bytes" "$prewarm" warm "$job" --authfile "$auth" --no-state --quiet --jobs "$JOBS"
link_prewarm=$(link_bytes "$mark")
mark=$(wc -l < "$upstream_log")
measure skopeo "$unique_bytes" bash -c skopeo_loop
link_skopeo=$(link_bytes "$mark")
python3 - <<PY
p, s, floor = $wall_prewarm, $wall_skopeo, $unique_bytes / $LINK_RATE
print(f"floor (unique bytes / link bandwidth): {floor:.2f} s at {$LINK_RATE / 1048576:.2f} MiB/s, +$LATENCY_MS ms per request")
print(f"prewarm: {p / floor:.2f}x the floor (goal <= 1.2x); skopeo copy loop: {s / floor:.2f}x; prewarm vs skopeo: {s / p:.2f}x faster")
# distribution's pull-through proxy reads a cold blob from its upstream twice (once to serve,
# once to store); a Quay cache reads it once. Say what crossed the link, and the time that
# traffic needs at the link's rate, so the cache's share is not counted against the client.
for name, sent, wall in (("prewarm", $link_prewarm, p), ("skopeo", $link_skopeo, s)):
    print(f"{name}: {sent} blob bytes crossed the link ({sent / $unique_bytes:.2f}x unique), "
          f"{sent / $LINK_RATE:.2f} s at link rate; wall {wall / (sent / $LINK_RATE):.2f}x that")
PY
