"""The docs tell the truth about the repository.

- Every ``methods.md §N`` the code, the queries or the docs cite names a numbered heading of docs/methods.md, so a
  renumbered section cannot leave dangling references behind.
- docs/methods.md and docs/architecture.md exist, and every folder the architecture's layout lists exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METHODS = DOCS / "methods.md"
ARCHITECTURE = DOCS / "architecture.md"

SEARCHED = ["loaders", "service", "cypher", "neuronmap", "examples", "bench", "docs", "tests", "README.md"]
SUFFIXES = {".py", ".md", ".cypher"}
SKIPPED_PARTS = {"__pycache__", ".venv", "build", "node_modules"}

HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
_NUMBER = r"\d+(?:\.\d+)*"
_ITEM = rf"§\s*{_NUMBER}(?:\s*[–-]\s*{_NUMBER})?"  # §5, §9.1, or a range §5–6
# "methods.md §5", "methods.md §5, §9.4", "methods.md §5–6", "methods.md §1.2 and §2"
CITATION = re.compile(rf"methods\.md\s*({_ITEM}(?:\s*(?:,|and|&)\s*{_ITEM})*)")
SECTION = re.compile(rf"§\s*({_NUMBER})(?:\s*[–-]\s*({_NUMBER}))?")


def headings(text: str) -> set[str]:
    """The section numbers of a Markdown page's numbered headings: ``## 5. Importance`` → "5"."""
    return set(HEADING.findall(text))


def sections_in(span: str) -> list[str]:
    """Every section number in a run of § items; a range gives both ends."""
    found = []
    for first, last in SECTION.findall(span):
        found.append(first)
        if last:
            found.append(last)
    return found


def cited_sections(text: str) -> list[str]:
    """The section numbers cited as ``methods.md §N`` in a text."""
    return [number for match in CITATION.finditer(text) for number in sections_in(match.group(1))]


def searched_files() -> list[Path]:
    files = []
    for name in SEARCHED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in SUFFIXES and not SKIPPED_PARTS & set(p.relative_to(ROOT).parts)
            ]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def dangling_citations(sections: set[str]) -> list[str]:
    """``path:line: methods.md §N`` for every citation of a section that has no heading."""
    bad = []
    for path in searched_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in CITATION.finditer(text):
            missing = [n for n in sections_in(match.group(1)) if n not in sections]
            if missing:
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r} (no section {', '.join(missing)})")
    return bad


def layout_folders(text: str) -> list[str]:
    """The folders the layout block of architecture.md lists: the first token of each line, when it ends in '/'."""
    section = re.search(r"^##\s+\d+\.\s+Layout\s*$(.*?)^##\s", text, re.MULTILINE | re.DOTALL)
    assert section, "architecture.md has no numbered '## N. Layout' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block, "the Layout section has no code block"
    folders = []
    for line in block.group(1).splitlines():
        token = line.split(maxsplit=1)[0] if line.strip() and not line[0].isspace() else ""
        if token.endswith("/") and "<" not in token:
            folders.append(token)
    return folders


# -- the docs exist ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [METHODS, ARCHITECTURE], ids=lambda p: p.name)
def test_the_pages_exist(page: Path) -> None:
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing"
    assert page.read_text(encoding="utf-8").strip()


def test_methods_has_the_numbered_sections_the_code_relies_on() -> None:
    sections = headings(METHODS.read_text(encoding="utf-8"))
    assert {str(n) for n in range(1, 10)} <= sections
    assert {"1.1", "1.2", "1.3", "9.1", "9.4", "9.5"} <= sections


# -- citations -----------------------------------------------------------------------------------------------------


def test_every_methods_citation_names_a_section() -> None:
    sections = headings(METHODS.read_text(encoding="utf-8"))
    assert len(searched_files()) > 50  # the search really covers the code
    assert dangling_citations(sections) == []


def test_methods_internal_references_name_a_section() -> None:
    text = METHODS.read_text(encoding="utf-8")
    sections = headings(text)
    cited = [n for first, last in SECTION.findall(text) for n in (first, last) if n]
    assert cited
    assert sorted({n for n in cited if n not in sections}) == []


def test_the_citation_check_is_not_vacuous() -> None:
    """A bad citation is found, in every form the code writes citations in; a good one passes."""
    sections = {"1", "1.1", "5", "6", "9", "9.4"}
    text = (
        '"""Batched (methods.md §9.7)."""\n'
        "# methods.md §5, §9.4 and §12\n"
        "// reference (methods.md §5–7)\n"
        "see methods.md § 1.1; methods.md §1.3.\n"
    )
    assert cited_sections(text) == ["9.7", "5", "9.4", "12", "5", "7", "1.1", "1.3"]
    assert [n for n in cited_sections(text) if n not in sections] == ["9.7", "12", "7", "1.3"]
    assert headings("## 5. Importance\n### 9.1 Batched lesions\n#### 9.1.2 x\n## Notes\n") == {"5", "9.1", "9.1.2"}


# -- the layout --------------------------------------------------------------------------------------------------------


def test_every_folder_in_the_layout_exists() -> None:
    folders = layout_folders(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(folders) >= 10
    assert [f for f in folders if not (ROOT / f).is_dir()] == []
