#!/usr/bin/env bash
# The local lab: real registries on 127.0.0.1 standing in for quay.io and registry.redhat.io,
# a distribution pull-through proxy per upstream, nginx in front as a Quay-like cache host.
#
#   examples/lab/lab.sh install     apt-get install the servers (docker-registry, skopeo, nginx, …)
#   examples/lab/lab.sh up          start them (state in $PREWARM_LAB_DIR, default /tmp/prewarm-lab)
#   examples/lab/lab.sh seed        push OCP-shaped content; writes images.txt
#   examples/lab/lab.sh down        stop them by PID
#   examples/lab/lab.sh demo        install, up, seed, then `prewarm warm` and `prewarm verify`
#                                   with the upstreams stopped: the README quick start
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PREWARM_LAB_DIR=${PREWARM_LAB_DIR:-/tmp/prewarm-lab}

install() {
  local missing=()
  for cmd in docker-registry:docker-registry skopeo:skopeo nginx:nginx htpasswd:apache2-utils openssl:openssl curl:curl zstd:zstd /usr/bin/time:time; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "${cmd%%:*}" ] || missing+=("${cmd##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

# Builds go to $CARGO_TARGET_DIR when set, as cargo's own; cargo's progress stays visible (a
# first build takes minutes on a small machine and should not look hung).
target=${CARGO_TARGET_DIR:-$root/target}
build() { (cd "$root" && cargo build --locked --release --bin prewarm -p prewarm -p prewarm-lab --bin lab); }
lab() { build >&2; "$target/release/lab" "$@"; }

case "${1:-}" in
  install) install ;;
  up) shift; lab up "$@" ;;
  seed) shift; lab seed "$@" ;;
  down|stop-upstreams|start-upstreams|reset-cache|env) lab "$@" ;;
  demo)
    install
    build
    [ -f "$PREWARM_LAB_DIR/lab.json" ] && lab down >/dev/null 2>&1 || true
    rm -rf "$PREWARM_LAB_DIR"
    lab up
    lab seed
    prewarm="$target/release/prewarm"
    echo "+ prewarm plan $PREWARM_LAB_DIR/job.yaml"
    "$prewarm" plan "$PREWARM_LAB_DIR/job.yaml" --authfile "$PREWARM_LAB_DIR/auth.json" | tail -n 1
    echo "+ prewarm warm $PREWARM_LAB_DIR/job.yaml"
    "$prewarm" warm "$PREWARM_LAB_DIR/job.yaml" --authfile "$PREWARM_LAB_DIR/auth.json" \
      --state "$PREWARM_LAB_DIR/state.db" --report "$PREWARM_LAB_DIR/warm.json"
    echo "+ stopping the upstreams: from now on only the cache can serve"
    lab stop-upstreams
    echo "+ prewarm verify $PREWARM_LAB_DIR/job.yaml"
    "$prewarm" verify "$PREWARM_LAB_DIR/job.yaml" --authfile "$PREWARM_LAB_DIR/auth.json" --resolve cache \
      --no-state --report "$PREWARM_LAB_DIR/verify.json"
    echo "The lab keeps running (upstreams stopped): $0 start-upstreams, or $0 down to stop it."
    ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
