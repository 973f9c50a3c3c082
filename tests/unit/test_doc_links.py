"""The README and docs/ as a reader follows them: every link and every file they name exists.

The docs are plain Markdown read on the forge or in an editor (no site generator), so nothing
else notices a file moved or a heading renamed under a link.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_NAMED = re.compile(
    r"`((?:docs|ledger|api|projections|audit|relay|stripe_standin|cluster|clients|deploy|bench|"
    r"tests)/[\w./-]+\.(?:md|py|sql|yml|yaml|conf|html|js|css|sh|toml))`"
)


def _documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "bench").glob("*.md")),
        ROOT / "clients" / "python" / "README.md",
    ]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a link in an example is not the doc's own)."""
    return "".join(re.split(r"^```.*?^```", text, flags=re.MULTILINE | re.DOTALL))


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(text), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
        anchors.add(slug.replace(" ", "-"))
    return anchors


def test_every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist() -> None:
    broken = []
    for document in _documents():
        text = document.read_text()
        for target in _LINK.findall(_prose(text)):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            found = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {target}"
            if not found.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and found.suffix == ".md" and anchor not in _anchors(found.read_text()):
                broken.append(f"{where} (no such heading)")
    assert broken == []


def test_every_file_the_docs_name_exists() -> None:
    missing = [
        f"{document.relative_to(ROOT)}: {named}"
        for document in _documents()
        for named in _NAMED.findall(document.read_text())
        if not (ROOT / named).exists() and not (document.parent / named).exists()
    ]
    assert missing == []
