#!/usr/bin/env bash
# Prepare the build context of the lab image in images/.build/ on the host, where PyPI is reachable,
# so that `docker build` itself needs no network:
#   .build/wheels/   third-party wheels for CPython 3.11 (cached: refreshed only when requirements.txt changes)
#   .build/project/  this working tree's dp2pt/ and lab/, and its console scripts (copied every time)
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

# The project goes in as a copy of the working tree (tracked and non-ignored files) on the image's
# sys.path, with its console scripts written from pyproject.toml: no wheel build, so no build
# backend to fetch, and a rebuild after a code change costs only the last image layer.
rm -rf "$OUT/project"
dest="$(pwd)/$OUT/project/src"
mkdir -p "$dest"
(bash list-sources.sh dp2pt lab | (cd "$ROOT" && xargs -0 cp --parents -t "$dest")) \
  || die "copying the project into the build context failed"
"$PY" - "$ROOT/pyproject.toml" > "$OUT/project/entry-points" <<'PYEOF' || die "cannot read [project.scripts] from pyproject.toml"
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    for name, target in tomllib.load(f)["project"]["scripts"].items():
        print(name, target)
PYEOF
