#!/usr/bin/env bash
# Build the registry-free base image (default dp2pt/base:bookworm): debootstrap a minimal Debian
# bookworm from the mirror the host's APT already uses, add the lab's tools, and `docker import` it.
# Why: CI and air-gapped machines cannot pull python:3.11-slim-bookworm; this gives an equivalent
# base (python3 + venv) that also carries the router tools, so `docker build` needs no network.
# Cached: does nothing when the image exists with the same package list (a label); a changed list
# (a tool the lab newly needs) rebuilds it. FORCE=1 always rebuilds.
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${BASE_IMAGE:-dp2pt/base:bookworm}
SUITE=${SUITE:-bookworm}
# python3-venv: the images install the project into a venv (PEP 668 forbids system pip installs).
PACKAGES=${BASE_PACKAGES:-python3,python3-venv,iproute2,nftables,iptables,conntrack,tcpdump,coturn,stun-client,procps,iputils-ping,netcat-openbsd}
WORK=${BASE_WORKDIR:-/var/tmp/dp2pt-base}

die() { echo "base-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap is missing (run: make setup)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (run: make setup, or start dockerd)"

have=$(docker image inspect -f '{{index .Config.Labels "dp2pt.base-packages"}}' "$IMAGE" 2>/dev/null || true)
if [ -z "${FORCE:-}" ] && [ "$have" = "$PACKAGES" ]; then
  echo "base-image: $IMAGE is up to date (FORCE=1 to rebuild)"
  exit 0
fi
[ -n "$have" ] || ! docker image inspect "$IMAGE" >/dev/null 2>&1 || echo "base-image: $IMAGE lacks packages the lab now needs: rebuilding"

MIRROR=${DEBIAN_MIRROR:-$(python3 debian_mirror.py "$SUITE")} || die "no Debian mirror configured for $SUITE"
start=$(date +%s)
rootfs="$WORK/rootfs"
cache="$WORK/debs"   # kept between builds: a rebuild downloads nothing new
rm -rf "$rootfs"
mkdir -p "$rootfs" "$cache"
trap 'rm -rf "$rootfs"' EXIT

echo "base-image: debootstrap $SUITE from $MIRROR (log: $WORK/debootstrap.log)"
if ! debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$cache" \
      "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 20 "$WORK/debootstrap.log" >&2
  die "debootstrap failed (full log: $WORK/debootstrap.log)"
fi

# Slim the tree like the official slim images: no package caches, lists, docs or man pages.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
       "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
# coturn's package enables a system service; the lab starts its own turnserver when needed.
rm -f "$rootfs"/etc/rc*.d/*coturn

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL dp2pt.base-packages=$PACKAGES" \
  --message "dp2pt base: debootstrap $SUITE minbase + lab tools" - "$IMAGE" >/dev/null
echo "base-image: built $IMAGE in $(( $(date +%s) - start ))s"
