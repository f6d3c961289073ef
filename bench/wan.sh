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
# MODE=warm (default) measures that. distribution's pull-through proxy fetches every cold blob
# from its upstream twice (registry/proxy/proxyblobstore.go ServeBlob in 2.8.2: a storeLocal
# goroutine and the client's copyContent each read it), so in warm mode twice the unique bytes
# cross the link whoever the client is; the script prints both ratios (against unique bytes and
# against the bytes that did cross). MODE=copy takes the cache out: `prewarm copy` from the
# shaped quay.io stand-in into a fresh local distribution registry, beside a skopeo copy loop
# (docker:// to docker://) into another; each blob then crosses the link once per fetch.
# MODE="warm copy" runs both on one seed. SKOPEO=0 leaves the skopeo loops out.
#
#   bench/wan.sh                            # full release scale: needs ~10 GB free under /tmp
#   MODE=copy bench/wan.sh                  # copy into a local registry (~9 GB)
#   COMPONENTS=8 LARGE_LAYERS=0 bench/wan.sh    # small trial (~190 MiB unique)
#   LATENCY_MS=50 LINK_RATE=$((25<<20)) FLOW_RATE=$((25<<18)) JOBS=8 BENCH_DIR=/tmp/x bench/wan.sh
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-wan}
JOBS=${JOBS:-8}
LATENCY_MS=${LATENCY_MS:-50}
LINK_RATE=${LINK_RATE:-$((25 << 20))}        # bytes/s, all connections together (200 Mbit/s)
FLOW_RATE=${FLOW_RATE:-$((LINK_RATE / 4))}   # bytes/s, each connection
COMPONENTS=${COMPONENTS:-190}
MODE=${MODE:-warm}
SKOPEO=${SKOPEO:-1}
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
read -r images unique_bytes < <(python3 - "$plan" "$FRONT" "$PREWARM_LAB_DIR/images.urls" "$PREWARM_LAB_DIR/images.tsv" <<'PY'
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
# For MODE=copy: number, source repository path (no host), digest.
with open(sys.argv[4], "w") as f:
    for n, i in enumerate(plan["images"]):
        f.write(f"{n}\t{cache_repo(i['source']).split('/', 1)[1]}\t{i['digest']}\n")
print(len(plan["images"]), sum(b["size"] for b in plan["blobs"]))
PY
)

# The shaper, on a port of its own choosing; it ends with this script (it watches its parent).
"$labbin" shape --listen 127.0.0.1:0 --upstream "$QUAY" --latency-ms "$LATENCY_MS" \
  --rate "$FLOW_RATE" --total-rate "$LINK_RATE" > "$PREWARM_LAB_DIR/shape.out" 2>&1 &
shaper_pid=$!
trap 'kill "$shaper_pid" 2>/dev/null || true; stop_registries; lab down >/dev/null 2>&1 || true' EXIT
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

export PREWARM_LAB_DIR SHAPED=$shaped

# Bytes the upstream sent for blob GETs since line $1 of its access log (what crossed the link).
upstream_log="$PREWARM_LAB_DIR/logs/quay.log"
link_bytes() {
  tail -n +"$(($1 + 1))" "$upstream_log" |
    awk '/"GET \/v2\/.*\/blobs\/sha256:/ {split($0, a, "\" "); split(a[2], b, " "); s += b[2]} END {printf "%.0f\n", s}'
}

# run NAME COMMAND...: measure it and note the blob bytes that crossed the link meanwhile.
run() {
  local name=$1 mark; shift
  mark=$(wc -l < "$upstream_log")
  measure "$name" "$unique_bytes" "$@"
  eval "link_$name=$(link_bytes "$mark")"
  echo "$name: load average $(cut -d' ' -f1-3 /proc/loadavg) after the run"
  report "$name"
}

# report NAME: its wall time against unique bytes / link and against the bytes that crossed.
report() {
  python3 - "$1" "$(eval "echo \$wall_$1")" "$(eval "echo \$link_$1")" \
    "$unique_bytes" "$LINK_RATE" <<'PY'
import sys
name, wall, sent, unique, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
floor = unique / rate
goal = "  (goal <= 1.2x)" if name.startswith("prewarm") else ""
print(f"{name}: wall {wall:.2f} s = {wall / floor:.2f}x unique bytes / link{goal}; "
      f"{sent} blob bytes crossed the link ({sent / unique:.2f}x unique, {sent / rate:.2f} s at "
      f"link rate): wall {wall / max(sent / rate, 1e-9):.2f}x that")
PY
}

# skopeo copy of every image of images.tsv from the shaped source into $SKOPEO_DEST.
skopeo_copy_loop() {
  while IFS=$'\t' read -r n repo digest; do
    skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
      "docker://$SHAPED/$repo@$digest" "docker://$SKOPEO_DEST/mirror/$repo:img$n"
  done < "$PREWARM_LAB_DIR/images.tsv"
}
export -f skopeo_copy_loop

accept='application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
contenders=()
for mode in $MODE; do
  case $mode in
    warm)
      run prewarm_warm "$prewarm" warm "$job" --authfile "$auth" --no-state --quiet --jobs "$JOBS"
      contenders+=(prewarm_warm)
      if [ "$SKOPEO" = 1 ]; then
        run skopeo_warm bash -c skopeo_loop
        contenders+=(skopeo_warm)
      fi
      ;;
    copy)
      # No cache: prewarm resolves and reads at the shaped source, pushes to a local registry.
      dest=$(fresh_registry prewarm)
      NO_RESET=1 run prewarm_copy "$prewarm" copy "$job" --authfile "$auth" --quiet \
        --jobs "$JOBS" --state "$PREWARM_LAB_DIR/state.db" --to "$dest/mirror" --to-insecure
      contenders+=(prewarm_copy)
      # Proven at the destination: every image's manifest, by digest, hashes to that digest.
      while IFS=$'\t' read -r n repo digest; do
        got=$(curl -sf -H "Accept: $accept" "http://$dest/v2/mirror/$repo/manifests/$digest" |
          sha256sum | cut -d' ' -f1)
        [ "sha256:$got" = "$digest" ] || { echo "prewarm copy: mirror/$repo@$digest missing or wrong"; exit 1; }
      done < "$PREWARM_LAB_DIR/images.tsv"
      echo "prewarm copy: all $images images at the destination by digest"
      rm -rf "$PREWARM_LAB_DIR/dest-prewarm"  # room for skopeo's copy
      if [ "$SKOPEO" = 1 ]; then
        SKOPEO_DEST=$(fresh_registry skopeo)
        export SKOPEO_DEST
        NO_RESET=1 run skopeo_copy bash -c skopeo_copy_loop
        contenders+=(skopeo_copy)
        rm -rf "$PREWARM_LAB_DIR/dest-skopeo"
      fi
      ;;
    *) echo "MODE: warm, copy or \"warm copy\", not $mode"; exit 2 ;;
  esac
done

floor=$(python3 -c "print($unique_bytes / $LINK_RATE)")
printf 'floor (unique bytes / link bandwidth): %.2f s at %.2f MiB/s, +%s ms per request\n' \
  "$floor" "$(python3 -c "print($LINK_RATE / 1048576)")" "$LATENCY_MS"
for name in "${contenders[@]}"; do report "$name"; done
[ -z "${wall_prewarm_warm:-}" ] || [ -z "${wall_skopeo_warm:-}" ] ||
  python3 -c "print(f'warm: prewarm vs skopeo {$wall_skopeo_warm / $wall_prewarm_warm:.2f}x faster')"
[ -z "${wall_prewarm_copy:-}" ] || [ -z "${wall_skopeo_copy:-}" ] ||
  python3 -c "print(f'copy: prewarm vs skopeo {$wall_skopeo_copy / $wall_prewarm_copy:.2f}x faster')"
