#!/usr/bin/env bash
# Builds the distributed_sac image with podman on a machine without Docker or registry access.
#
# The base image (debian:bookworm-slim) is made with debootstrap from Debian's mirror and
# imported, since no container registry may be reachable. Podman's storage and configuration
# live under $DISTRIBUTED_SAC_PODMAN_DIR (default /var/tmp/distributed_sac-podman-<uid>), a
# directory only its user may touch (checked: see private_dir); nothing global is changed.
# Use the same CONTAINERS_CONF / CONTAINERS_STORAGE_CONF to run the image:
#   source <(docker/build_local.sh --print-env)
#
# Usage: docker/build_local.sh [--tag NAME] [--ca-bundle PATH | --no-ca-bundle] [--print-env]
#   --ca-bundle PATH  CA certificates pip trusts inside the build (for TLS-intercepting proxies;
#                     default: /etc/ssl/certs/ca-certificates.crt when it exists)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PODMAN_DIR="${DISTRIBUTED_SAC_PODMAN_DIR:-/var/tmp/distributed_sac-podman-$(id -u)}"
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

# Podman takes its configuration, storage and base image from this directory, as root: whoever
# else could write it (a directory planted in /var/tmp by another user, a symlink, a parent
# others may write) could run what they like in the build. It is used only if it and every
# directory above it belong to this user or root, none of them is a symlink, and no one else
# can enter it or replace any of them; it is created here, mode 0700, when it does not exist.
private_dir() {
  local dir="$1" me owner mode parent path
  me="$(id -u)"
  case "$dir" in /*) ;; *) die "DISTRIBUTED_SAC_PODMAN_DIR must be an absolute path: $dir" ;; esac
  parent="$(dirname -- "$dir")"
  mkdir -p -- "$parent" || die "cannot create $parent for the podman directory"
  path="$(cd -P -- "$parent" && pwd)"
  [ "$path" = "$(cd -L -- "$parent" && pwd -L)" ] \
    || die "refusing the podman directory $dir: its path goes through a symlink (give the real path, under $path)"
  while :; do
    read -r owner mode < <(stat -c '%u %a' -- "$path")
    [ "$owner" = 0 ] || [ "$owner" = "$me" ] \
      || die "refusing the podman directory $dir: $path is owned by uid $owner"
    (( (8#$mode & 8#022) == 0 || (8#$mode & 8#1000) != 0 )) \
      || die "refusing the podman directory $dir: others may write $path (mode $mode, not sticky)"
    [ "$path" != / ] || break
    path="$(dirname -- "$path")"
  done
  # mkdir fails on anything already there, a symlink included: then it is checked, not trusted.
  mkdir -m 0700 -- "$dir" 2>/dev/null || true
  [ ! -L "$dir" ] || die "refusing the podman directory $dir: it is a symlink"
  [ -d "$dir" ] || die "refusing the podman directory $dir: not a directory"
  read -r owner mode < <(stat -c '%u %a' -- "$dir")
  [ "$owner" = "$me" ] \
    || die "refusing the podman directory $dir: owned by uid $owner, not $me (remove it, or set DISTRIBUTED_SAC_PODMAN_DIR)"
  (( (8#$mode & 8#077) == 0 )) \
    || die "refusing the podman directory $dir: mode $mode lets others in (chmod 700 it)"
}
private_dir "$PODMAN_DIR"

export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
if [ "$PRINT_ENV" = 1 ]; then
  echo "export CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
  exit 0
fi

# podman and what it runs on, by name (launch/system-packages.txt, group "container").
# shellcheck source=../launch/common.sh
source "$REPO_ROOT/launch/common.sh"
ensure_system_packages container || die "the packages podman needs are missing (see above)"

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

# Every podman call is bounded; timeout signals the command's whole process group on expiry.
bounded() { local seconds="$1"; shift; timeout --kill-after=10 "$seconds" "$@"; }

started=$(date +%s)
BASE="docker.io/library/debian:bookworm-slim"  # what FROM debian:bookworm-slim resolves to
if ! bounded 60 podman image exists "$BASE"; then
  rootfs="$(mktemp -d "$PODMAN_DIR/rootfs.XXXX")"
  echo "making $BASE with debootstrap from $MIRROR" >&2
  bounded 1200 debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" \
    >"$PODMAN_DIR/debootstrap.log" 2>&1 \
    || { rm -rf "$rootfs"; die "debootstrap failed; see $PODMAN_DIR/debootstrap.log"; }
  tar -C "$rootfs" -c . | bounded 600 podman import --quiet - "$BASE" >/dev/null \
    || { rm -rf "$rootfs"; die "podman import of the debootstrapped base failed"; }
  rm -rf "$rootfs"
fi

secret=()
[ -n "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")
bounded 2400 podman build --network=host --pull=never "${secret[@]}" \
  -f "$REPO_ROOT/docker/Dockerfile" -t "$TAG" "$REPO_ROOT" >"$PODMAN_DIR/build.log" 2>&1 \
  || { tail -20 "$PODMAN_DIR/build.log" >&2; die "podman build failed; see $PODMAN_DIR/build.log"; }

# A container that cannot start (netavark without iptables, say) is named here in seconds, with
# the engine's own error, rather than by a compose run that waits for it forever: one container
# of the image on a bridge network of its own, as compose starts them.
network="dsac-build-probe-$$"
remove_network() { bounded 60 podman network rm -f "$network" >/dev/null 2>&1 || true; }
trap remove_network EXIT
bounded 60 podman network create "$network" >/dev/null \
  || die "podman cannot create a bridge network (podman network create $network failed)"
if ! probe="$(bounded 120 podman run --rm --network "$network" "$TAG" true 2>&1)"; then
  die "a container of $TAG did not start on a bridge network: $(printf '%s\n' "$probe" | grep . | tail -1)"
fi
size=$(bounded 60 podman image inspect --format '{{.Size}}' "$TAG")
echo "built $TAG in $(( $(date +%s) - started ))s, $(( size / 1000000 )) MB; a container of it starts on a bridge network"
