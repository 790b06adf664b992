#!/usr/bin/env bash
# Prepare the build context of the lab image in images/.build/ on the host, where PyPI is reachable,
# so that `docker build` itself needs no network:
#   .build/wheels/   third-party wheels for CPython 3.11 (cached: refreshed only when requirements.txt changes)
#   .build/project/  a wheel of this working tree (rebuilt every time, from a clean copy of the tree)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
PY=${PYTHON:-python3}
OUT=.build
die() { echo "lab-image: $*" >&2; exit 1; }

mkdir -p "$OUT/wheels" "$OUT/project"
stamp="$OUT/wheels/.stamp"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -f "$OUT"/wheels/*.whl
  "$PY" -m pip download -q --dest "$OUT/wheels" --only-binary=:all: \
      --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 --platform any \
      -r requirements.txt || die "pip download of the image's wheels failed (is PyPI reachable?)"
  cp requirements.txt "$OUT/wheels/requirements.txt"
  echo "$want" > "$stamp"
fi

# Build from a copy holding only tracked and non-ignored files: no stale build/ in the shared tree.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
(cd "$ROOT" && git ls-files -z -co --exclude-standard -- pyproject.toml README.md dp2pt lab \
   | xargs -0 cp --parents -t "$src")
rm -f "$OUT"/project/*.whl
"$PY" -m pip wheel -q --no-deps -w "$OUT/project" "$src" >/dev/null \
  || die "building the project wheel failed (try: $PY -m pip wheel --no-deps $ROOT)"
