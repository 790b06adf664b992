"""Every page under docs/ that the code and the tests cite exists: a docstring that sends its reader
to a missing page is worse than none."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(rb"\bdocs/[\w./-]+\.md\b")


def test_every_cited_document_exists():
    cited = {(m.group().decode(), str(path.relative_to(ROOT)))
             for folder in ("dp2pt", "lab", "tests") for path in (ROOT / folder).rglob("*.py")
             for m in CITED.finditer(path.read_bytes())}
    assert cited, "no citation found: the pattern is wrong"
    missing = sorted((doc, where) for doc, where in cited if not (ROOT / doc).is_file())
    assert not missing, missing
