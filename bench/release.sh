#!/usr/bin/env bash
# Release-scale benchmark: ~190 component images shaped like an OCP release in miniature
# (shared RHEL base layers, a few 120 MiB layers, many small ones; 2.8 GiB unique) and a
# catalog of 3,000 bundles over them. One run of each contender, cold each time:
#
#   warm   vs a skopeo copy loop through the same cache, and vs raw parallel curl (bench/warm.sh)
#   export vs skopeo copy into an oci: layout + tar + zstd        (bench/bundle.sh)
#   import vs zstd -d | tar -x + skopeo copy from the layout      (bench/bundle.sh)
#   planning time and peak RSS for the catalog (heads, and full)
#
#   bench/release.sh                  # needs ~20 GB free under /tmp; prints every figure
#   PARTS="bundle plan" bench/release.sh   # only some parts (warm, bundle, plan)
set -euo pipefail
PARTS=${PARTS:-warm bundle plan}
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
base=${BENCH_DIR:-/tmp/prewarm-bench-release}

if has warm; then
  echo "== warm at release scale"
  SEED_ARGS=--release-scale BENCH_DIR="$base-warm" bench/warm.sh
  rm -rf "$base-warm"
fi

if has bundle; then
  echo "== export / import at release scale"
  SEED_ARGS=--release-scale BENCH_DIR="$base-bundle" bench/bundle.sh
  rm -rf "$base-bundle"
fi

has plan || exit 0

echo "== planning the 3,000-bundle catalog"
export PREWARM_LAB_DIR="$base-plan"
lab() { "${CARGO_TARGET_DIR:-$root/target}/release/lab" "$@"; }
[ -f "$PREWARM_LAB_DIR/lab.json" ] && lab down >/dev/null 2>&1 || true
rm -rf "$PREWARM_LAB_DIR"
lab up >/dev/null
trap 'lab down >/dev/null 2>&1 || true; rm -rf "$PREWARM_LAB_DIR"' EXIT
lab seed --release-scale >/dev/null
catalog=$(cat "$PREWARM_LAB_DIR/catalog.ref")
for mode in heads full; do
  job="$PREWARM_LAB_DIR/catalog-$mode.yaml"
  grep -v '^image_lists:' "$PREWARM_LAB_DIR/job.yaml" > "$job"
  printf 'operators:\n  - catalog: %s\n' "$catalog" >> "$job"
  [ "$mode" = full ] && printf '    full: true\n' >> "$job"
  /usr/bin/time -f "%e %M" -o "$PREWARM_LAB_DIR/plan-$mode.time" \
    "${CARGO_TARGET_DIR:-$root/target}/release/prewarm" plan "$job" --authfile "$PREWARM_LAB_DIR/auth.json" -q > "$PREWARM_LAB_DIR/plan-$mode.out"
  read -r wall rss < "$PREWARM_LAB_DIR/plan-$mode.time"
  printf 'catalog plan (%s): %s  wall %s s  peak RSS %.1f MiB\n' "$mode" "$(tail -n 1 "$PREWARM_LAB_DIR/plan-$mode.out")" "$wall" "$(python3 -c "print($rss/1024)")"
done
