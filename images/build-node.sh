#!/usr/bin/env bash
# Build the lab node image (default dp2pt/node:latest) from the working tree, only when needed:
# the image carries a label with a hash of every input (project sources, Dockerfile, node.py,
# requirements), so an unchanged tree costs one `docker image inspect` (FORCE=1 rebuilds).
# BASE selects the base image: dp2pt/base:bookworm (registry-free, built by build-base.sh) by
# default; python:3.11-slim-bookworm on machines that can pull from a registry.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${NODE_IMAGE:-dp2pt/node:latest}
BASE=${LAB_BASE:-dp2pt/base:bookworm}
die() { echo "lab-image: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (run: make setup, or start dockerd)"
# The base's id too: a rebuilt base (new tools) must rebuild the node image.
base_id=$(docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null || echo "$BASE")
digest=$( { echo "$BASE $base_id"; bash list-sources.sh pyproject.toml dp2pt lab images | (cd .. && xargs -0 sha256sum); } \
         | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "dp2pt.source"}}' "$IMAGE" 2>/dev/null || true)
if [ -z "${FORCE:-}" ] && [ "$have" = "$digest" ]; then
  echo "lab-image: $IMAGE is up to date"
  exit 0
fi
start=$(date +%s)
bash prepare-context.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! docker build -q --build-arg BASE="$BASE" --label dp2pt.source="$digest" -t "$IMAGE" . >"$log" 2>&1; then
  grep -v -e DEPRECATED -e 'legacy builder' -e buildx "$log" | tail -n 15 >&2
  die "docker build failed (base $BASE; without a registry use the default base: make base-image)"
fi
echo "lab-image: built $IMAGE on $BASE in $(( $(date +%s) - start ))s"
