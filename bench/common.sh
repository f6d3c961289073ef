# Shared by bench/scale.sh and bench/wan.sh (sourced, not run): build the release binaries,
# start a fresh lab under $PREWARM_LAB_DIR (stopped when the script exits), and time one
# contender with /usr/bin/time -v.
#
# After sourcing: $root, $prewarm, $labbin, and the functions `lab`, `fresh_lab`, `measure`
# and `skopeo_loop` (exported for `measure ... bash -c skopeo_loop`).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
examples/lab/lab.sh install >/dev/null
cargo build -q --locked --release -p prewarm -p prewarm-lab --bin prewarm --bin lab
labbin="${CARGO_TARGET_DIR:-$root/target}/release/lab"
prewarm="${CARGO_TARGET_DIR:-$root/target}/release/prewarm"
lab() { "$labbin" "$@"; }

# A fresh lab in $PREWARM_LAB_DIR, stopped when the script exits.
fresh_lab() {
  [ -f "$PREWARM_LAB_DIR/lab.json" ] && lab down >/dev/null 2>&1 || true
  rm -rf "$PREWARM_LAB_DIR"
  lab up >/dev/null
  trap 'lab down >/dev/null 2>&1 || true' EXIT
}

# measure NAME BYTES COMMAND...: run COMMAND once (after `lab reset-cache` unless
# NO_RESET=1), print wall time, BYTES per second and peak RSS; sets wall_NAME and rss_NAME
# (MiB). The full /usr/bin/time -v report is kept in $PREWARM_LAB_DIR/NAME.time.
measure() {
  local name=$1 bytes=$2; shift 2
  [ "${NO_RESET:-0}" = 1 ] || lab reset-cache
  sync
  /usr/bin/time -v -o "$PREWARM_LAB_DIR/$name.time" "$@" > "$PREWARM_LAB_DIR/$name.out" 2>&1 || {
    echo "$name failed:"; tail -n 20 "$PREWARM_LAB_DIR/$name.out"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$PREWARM_LAB_DIR/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$PREWARM_LAB_DIR/$name.time")
  printf '%-10s wall %8.2f s  %8.2f MiB/s  peak RSS %7.1f MiB\n' "$name" "$wall" \
    "$(python3 -c "print($bytes/1048576/max($wall, 0.01))")" "$rss"
  eval "wall_$name=$wall rss_$name=$rss"
}

# skopeo copy of every docker:// URL in $PREWARM_LAB_DIR/images.urls, one image at a time.
skopeo_loop() {
  while read -r url; do
    rm -rf "$PREWARM_LAB_DIR/skopeo-out"
    skopeo copy --quiet --src-tls-verify=false "$url" "dir:$PREWARM_LAB_DIR/skopeo-out"
  done < "$PREWARM_LAB_DIR/images.urls"
  rm -rf "$PREWARM_LAB_DIR/skopeo-out"
}
export -f skopeo_loop

# fresh_registry NAME: a fresh, empty distribution registry (plain HTTP) on a free port,
# storage under $PREWARM_LAB_DIR/dest-NAME, stopped when the script exits (its PID is kept in
# dest-NAME.pid: callers run this in a command substitution). Echoes its address.
fresh_registry() {
  local name=$1 port dir=$PREWARM_LAB_DIR
  port=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
  rm -rf "$dir/dest-$name" && mkdir -p "$dir/dest-$name"
  cat > "$dir/dest-$name.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $dir/dest-$name}}
http: {addr: 127.0.0.1:$port}
health: {storagedriver: {enabled: false}}
YML
  docker-registry serve "$dir/dest-$name.yml" > "$dir/dest-$name.log" 2>&1 &
  echo $! > "$dir/dest-$name.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null || { echo "registry $name did not start" >&2; return 1; }
  echo "127.0.0.1:$port"
}

# Stop the registries fresh_registry started.
stop_registries() {
  local f
  for f in "$PREWARM_LAB_DIR"/dest-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
}
