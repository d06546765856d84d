#!/usr/bin/env bash
# Builds the distributed_sac image with podman on a machine without Docker or registry access.
#
# The base image (debian:bookworm-slim) is made with debootstrap from Debian's mirror and
# imported, since no container registry may be reachable. Podman's storage and configuration
# live under $DISTRIBUTED_SAC_PODMAN_DIR (default /var/tmp/distributed_sac-podman); nothing
# global is changed. Use the same CONTAINERS_CONF / CONTAINERS_STORAGE_CONF to run the image:
#   source <(docker/build_local.sh --print-env)
#
# Usage: docker/build_local.sh [--tag NAME] [--ca-bundle PATH | --no-ca-bundle] [--print-env]
#   --ca-bundle PATH  CA certificates pip trusts inside the build (for TLS-intercepting proxies;
#                     default: /etc/ssl/certs/ca-certificates.crt when it exists)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PODMAN_DIR="${DISTRIBUTED_SAC_PODMAN_DIR:-/var/tmp/distributed_sac-podman}"
TAG="distributed-sac:latest"
CA_BUNDLE=""
[ -f /etc/ssl/certs/ca-certificates.crt ] && CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PRINT_ENV=0

die() { echo "build_local.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; TAG="$2"; shift 2 ;;
    --ca-bundle) [ $# -ge 2 ] || die "--ca-bundle needs a path"; CA_BUNDLE="$2"; shift 2 ;;
    --no-ca-bundle) CA_BUNDLE=""; shift ;;
    --print-env) PRINT_ENV=1; shift ;;
    *) die "unknown argument: $1 (see the usage at the top of $0)" ;;
  esac
done
[ -z "$CA_BUNDLE" ] || [ -s "$CA_BUNDLE" ] || die "CA bundle not found or empty: $CA_BUNDLE"

export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
if [ "$PRINT_ENV" = 1 ]; then
  echo "export CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
  exit 0
fi

# netavark and aardvark-dns: networks whose containers find each other by service name, as
# compose.yaml's roles do (podman's CNI backend has no DNS without another plugin).
PACKAGES="podman runc debootstrap netavark aardvark-dns"
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
for tool in netavark aardvark-dns; do
  [ -x "/usr/lib/podman/$tool" ] || [ -x "/usr/libexec/podman/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (Debian: apt-get install $PACKAGES)"
  echo "installing ${missing[*]} with apt-get" >&2
  install() {
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null
  }
  # A new machine may have no package lists yet.
  install || { apt-get update -q >/dev/null && install; } || die "apt-get install $PACKAGES failed"
fi

mkdir -p "$PODMAN_DIR"
# crun fails on some cgroup layouts, and podman's default ulimits can be refused: runc and
# explicit limits work on both kinds of machine seen here.
cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
CONF
cat > "$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
CONF

started=$(date +%s)
BASE="docker.io/library/debian:bookworm-slim"  # what FROM debian:bookworm-slim resolves to
if ! podman image exists "$BASE"; then
  rootfs="$(mktemp -d "$PODMAN_DIR/rootfs.XXXX")"
  echo "making $BASE with debootstrap from $MIRROR" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$PODMAN_DIR/debootstrap.log" 2>&1 \
    || { rm -rf "$rootfs"; die "debootstrap failed; see $PODMAN_DIR/debootstrap.log"; }
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

secret=()
[ -n "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")
podman build --network=host --pull=never "${secret[@]}" -f "$REPO_ROOT/docker/Dockerfile" \
  -t "$TAG" "$REPO_ROOT" >"$PODMAN_DIR/build.log" 2>&1 \
  || { tail -20 "$PODMAN_DIR/build.log" >&2; die "podman build failed; see $PODMAN_DIR/build.log"; }
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "built $TAG in $(( $(date +%s) - started ))s, $(( size / 1000000 )) MB"
