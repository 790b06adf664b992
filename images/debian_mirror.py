"""Print the Debian archive URI this machine's APT uses for a suite (default: bookworm).

Why: `make base-image` runs debootstrap against the same mirror the host already reaches, so no
mirror host is hard-coded in the repository (CI and air-gapped sites configure their own).
Reads /etc/apt/sources.list (one-line format) and /etc/apt/sources.list.d/*.list|*.sources (deb822).
"""
from __future__ import annotations

import glob
import re
import sys
from pathlib import Path

APT_DIR = Path("/etc/apt")


def _one_line_entries(text: str):
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def _deb822_entries(text: str):
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def find_mirror(suite: str, apt_dir: Path = APT_DIR) -> str | None:
    """Return the first configured URI that serves `suite` of the main Debian archive, or None."""
    files = [apt_dir / "sources.list"] + sorted(Path(p) for p in glob.glob(str(apt_dir / "sources.list.d/*")))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suites in entries:
            if suite in suites and "security" not in uri:
                return uri
    return None


def main(argv: list[str]) -> int:
    suite = argv[1] if len(argv) > 1 else "bookworm"
    uri = find_mirror(suite)
    if uri is None:
        print(f"debian_mirror: no APT source for suite {suite!r} in {APT_DIR}", file=sys.stderr)
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
