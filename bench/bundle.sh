#!/usr/bin/env bash
# Benchmark: bundles for air-gapped sites, prewarm vs skopeo, same set, one run each.
#
#   export: `prewarm export` (one pass: registry → tar → zstd → segments)
#       vs  `skopeo copy --all` of every image into one oci: layout, then tar | zstd -1
#   import: `prewarm import` (segments → zstd → tar → registry, nothing unpacked)
#       vs  zstd -d | tar -x, then `skopeo copy --all` of every image from the layout
#   into a fresh, empty distribution registry each (plain HTTP on loopback).
#
#   bench/bundle.sh                    # bench-scale seed plus one 1 GiB layer
#   LARGE_LAYER=0 bench/bundle.sh      # without the large layer
#
# Prints wall times, peak RSS (/usr/bin/time -v), bundle bytes vs unique blob bytes.
set -euo pipefail
export PREWARM_LAB_DIR=${BENCH_DIR:-/tmp/prewarm-bench-bundle}
LARGE_LAYER=${LARGE_LAYER:-1073741824}
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
seed_args=(--bench)
[ "$LARGE_LAYER" != 0 ] && seed_args+=(--large-layer "$LARGE_LAYER")
# SEED_ARGS replaces the seed options, e.g. SEED_ARGS=--release-scale (bench/release.sh).
[ -n "${SEED_ARGS:-}" ] && read -ra seed_args <<< "$SEED_ARGS"
echo "seeding: $(lab seed "${seed_args[@]}")"
eval "$(lab env)"
job="$W/job.yaml"
auth="$W/auth.json"
certs="$W/certs"

measure() { # name, command...
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$W/$name.time" "$@" > "$W/$name.out" 2>&1 || {
    echo "$name failed:"; tail -n 20 "$W/$name.out"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$W/$name.time")
  printf '%-16s wall %8.2f s  peak RSS %7.1f MiB\n' "$name" "$wall" "$(python3 -c "print($rss/1024)")"
  eval "wall_${name//-/_}=$wall"
}

# The set, as the job resolves it: source references at the upstream endpoints.
"$prewarm" plan "$job" --authfile "$auth" -q -o json > "$W/plan.json"
python3 - "$W/plan.json" "$QUAY" "$REDHAT" > "$W/images.tsv" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1])); quay, redhat = sys.argv[2], sys.argv[3]
for n, i in enumerate(plan["images"]):
    host, rest = i["source"].split("/", 1)
    repo = rest.split("@")[0]
    if ":" in repo.split("/")[-1]:
        repo = repo.rsplit(":", 1)[0]
    addr = quay if host == "quay.io" else redhat
    print(f"{n}\t{host}\t{addr}/{repo}@{i['digest']}\t{repo}\t{i['source']}")
PY
echo "images: $(wc -l < "$W/images.tsv")"

skopeo_export() {
  rm -rf "$W/oci" && mkdir -p "$W/oci"
  while IFS=$'\t' read -r n host src repo ref; do
    if [ "$host" = quay.io ]; then tls=(--src-tls-verify=false); else tls=(--src-cert-dir "$certs" --src-authfile "$auth"); fi
    skopeo copy --quiet --all "${tls[@]}" "docker://$src" "oci:$W/oci:img$n"
  done < "$W/images.tsv"
  tar -C "$W/oci" -cf - . | zstd -1 -q -o "$W/skopeo-bundle.tar.zst"
}
skopeo_import() {
  rm -rf "$W/oci-in" && mkdir -p "$W/oci-in"
  zstd -dc "$W/skopeo-bundle.tar.zst" | tar -x -C "$W/oci-in"
  while IFS=$'\t' read -r n host src repo ref; do
    skopeo copy --quiet --all --dest-tls-verify=false "oci:$W/oci-in:img$n" "docker://$DEST_SKOPEO/mirror/$repo:img$n"
  done < "$W/images.tsv"
}
export -f skopeo_export skopeo_import
export W certs auth

measure prewarm-export "$prewarm" export "$job" --authfile "$auth" -q -o "$W/bundle"
measure skopeo-export bash -c skopeo_export
DEST_PREWARM=$(fresh_registry prewarm)
measure prewarm-import "$prewarm" import "$W/bundle" --authfile "$auth" -q --to "$DEST_PREWARM/mirror" --to-insecure
DEST_SKOPEO=$(fresh_registry skopeo)
export DEST_SKOPEO
measure skopeo-import bash -c skopeo_import

python3 - "$W" <<PY
import json, os, sys
w = sys.argv[1]
b = json.load(open(f"{w}/bundle.json" if os.path.exists(f"{w}/bundle.json") else f"{w}/bundle/bundle.json"))
seg = sum(s["size"] for s in b["segments"])
unique = sum(x["size"] for x in b["blobs"])
inside = unique + sum(m["size"] for m in b["manifests"])
sk = os.path.getsize(f"{w}/skopeo-bundle.tar.zst")
print(f"unique blob bytes {unique} ({unique/2**20:.1f} MiB), manifests {inside-unique} bytes")
print(f"prewarm bundle {seg} bytes = {seg/unique:.4f}x unique blob bytes (goal <= 1.02x); tar {b['tar_bytes']}")
print(f"skopeo layout tar.zst {sk} bytes = {sk/unique:.4f}x")
pe, se, pi, si = $wall_prewarm_export, $wall_skopeo_export, $wall_prewarm_import, $wall_skopeo_import
print(f"export: prewarm {pe:.2f} s vs skopeo+tar+zstd {se:.2f} s: {se/pe:.2f}x (goal >= 2x)")
print(f"import: prewarm {pi:.2f} s vs untar+skopeo {si:.2f} s: {si/pi:.2f}x (goal >= 2x)")
PY
# Every image at prewarm's destination by its source digest.
bad=0
while IFS=$'\t' read -r n host src repo ref; do
  digest=${src##*@}
  got=$(skopeo inspect --raw --tls-verify=false "docker://$DEST_PREWARM/mirror/$repo@$digest" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$digest" ] || { echo "mismatch: $repo@$digest"; bad=1; }
done < "$W/images.tsv"
[ $bad = 0 ] && echo "prewarm import: every image at the destination has its source digest"
