"""Every page under docs/ that the code, the tests and the READMEs cite exists: a docstring that sends its reader
to a missing page is worse than none."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(rb"\bdocs/[\w./-]+\.md\b")


def test_every_cited_document_exists():
    sources = [path for folder in ("dp2pt", "lab", "tests", "scenarios", "docs") for pattern in ("*.py", "*.md")
               for path in (ROOT / folder).rglob(pattern)] + list(ROOT.glob("*.md"))
    cited = {(m.group().decode(), str(path.relative_to(ROOT)))
             for path in sources for m in CITED.finditer(path.read_bytes())}
    assert cited, "no citation found: the pattern is wrong"
    missing = sorted((doc, where) for doc, where in cited if not (ROOT / doc).is_file())
    assert not missing, missing
