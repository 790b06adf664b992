#!/usr/bin/env bash
# Print, NUL-separated and relative to the repository root, the files of the working tree under the
# given paths that go into the node image: tracked or untracked-but-not-ignored, and present (a
# tracked file deleted in the working tree is left out). Used for the image's copy and its hash.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z -co --exclude-standard -- "$@" | while IFS= read -r -d '' f; do
  [ -f "$f" ] && printf '%s\0' "$f"
done
exit 0
