"""Every citation of the design document points at something docs/design.md defines.

The code and the docs cite the design document as ``docs/design.md §N``, invariants by id
(``I1`` … ``I8``, defined in §4 as ``**I1 — …**``) and L1 rules by id (``L1-OPEN`` …,
defined in §5 as ``**L1-OPEN — …**``). This test scans the repository's code and docs for
all three and checks that each names a section, invariant or rule that exists; that the
document defines each exactly once, in its section; that the files and tests it names
exist; and that no older citation form (the design brief's file name, or a bare ``§N``
that does not say which document) is left.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
SECTIONS = {1, 2, 3, 4, 5, 6, 7}

#: The folders and files scanned for citations, and which files in them are text.
SCANNED = ("bfs_smr", "apps", "adapters", "tests", "docs", "README.md", "pyproject.toml")
SUFFIXES = {".py", ".md", ".vy", ".toml"}
#: This file spells out the forms it looks for.
SELF = Path(__file__).resolve()

SECTION_CITE = re.compile(r"(?<![\w/])(?:docs/)?design\.md\s+§(\d+)(?:\s*[-–]\s*§?(\d+))?")
INVARIANT = re.compile(r"\bI(\d+)\b")
RULE = re.compile(r"\bL1-[A-Z]{2,}(?:-[A-Z0-9]+)*\b")
#: The conformance kit's checks, listed under their rule in §5 as ``- `L1-X-Y` — …``.
CHECK = re.compile(r"^- `(L1-[A-Z0-9-]+)` — ", re.MULTILINE)
DEFINITION = re.compile(r"^\*\*(I\d+|L1-[A-Z]{2,}) — ", re.MULTILINE)
HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)
#: Old forms: the brief's name in any spelling (``DESIGN.md §5``, ``DESIGN I1, I3``,
#: ``DESIGN §6``, ``DESIGN's``), with what it cites; and a ``§N`` that names no document.
OLD_NAME = re.compile(
    r"\bDESIGN\b(?:\.md)?(?:'s)?"
    r"(?:\s+(?:section\s+\d+|§\d+(?:\s*[-–]\s*§?\d+)?|I\d+(?:,\s*I\d+)*))?"
)
BARE_SECTION = re.compile(r"§\s*\d+")
#: Section signs that cite another document, and are not design citations.
OTHER_DOCUMENT = re.compile(r"\bRFC\s+\d+\s+§[\d.]+")


@dataclass(frozen=True)
class Finding:
    where: str  # path:line
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def scanned_files() -> Iterator[Path]:
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for file in sorted(path.rglob("*")):
            if (
                file.is_file()
                and file.suffix in SUFFIXES
                and "__pycache__" not in file.parts
                and file.resolve() != SELF
            ):
                yield file


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def citations(text: str, where: str) -> Iterator[tuple[str, Finding]]:
    """``("§N" | "In" | "L1-X", finding)`` for every design citation in ``text``."""
    for m in SECTION_CITE.finditer(text):
        first = int(m.group(1))
        last = int(m.group(2) or first)
        for n in range(first, max(first, last) + 1):
            yield f"§{n}", Finding(f"{where}:{_line(text, m.start())}", m.group(0))
    for pattern in (INVARIANT, RULE):
        for m in pattern.finditer(text):
            yield m.group(0), Finding(f"{where}:{_line(text, m.start())}", m.group(0))


def old_forms(text: str, where: str) -> Iterator[Finding]:
    """Citations in a form that must go: the brief's file name, or a bare ``§N``."""
    for m in OLD_NAME.finditer(text):
        yield Finding(f"{where}:{_line(text, m.start())}", " ".join(m.group(0).split()))
    blank = text
    for pattern in (OTHER_DOCUMENT, SECTION_CITE, OLD_NAME):
        blank = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), blank)
    for m in BARE_SECTION.finditer(blank):
        yield Finding(f"{where}:{_line(text, m.start())}", m.group(0))


def new_form(old: str) -> str:
    """What an old citation becomes (shown in the failure, for a sed at merge)."""
    words = " ".join(old.split())
    if ids := re.findall(r"I\d+", words):
        return f"{', '.join(ids)} (docs/design.md §4)"
    if m := re.search(r"(?:§|section\s+)(\d+(?:\s*[-–]\s*§?\d+)?)", words):
        return "docs/design.md §" + m.group(1).replace("-", "–")
    return "docs/design.md"


@cache
def design_text() -> str:
    return DESIGN.read_text(encoding="utf-8")


def defined() -> set[str]:
    text = design_text()
    return (
        {f"§{n}" for n in HEADING.findall(text)}
        | set(DEFINITION.findall(text))
        | set(CHECK.findall(text))
    )


def test_the_kit_checks_exactly_the_rules_the_document_lists():
    from bfs_smr.testing import L1_RULES

    assert sorted(CHECK.findall(_sections()[5])) == sorted(L1_RULES)


def _sections() -> dict[int, str]:
    """Each section's text, by number."""
    text = design_text()
    heads = list(HEADING.finditer(text))
    return {
        int(h.group(1)): text[h.start() : heads[i + 1].start() if i + 1 < len(heads) else None]
        for i, h in enumerate(heads)
    }


# -- the document itself ------------------------------------------------------------------


def test_sections_are_numbered_one_to_seven_in_order():
    assert [int(n) for n in HEADING.findall(design_text())] == sorted(SECTIONS)


def test_invariants_and_rules_are_each_defined_once_in_their_section():
    ids = DEFINITION.findall(design_text())
    assert len(ids) == len(set(ids)), ids
    sections = _sections()
    invariants = DEFINITION.findall(sections[4])
    rules = DEFINITION.findall(sections[5])
    assert invariants == [f"I{n}" for n in range(1, 9)]
    assert rules == [
        "L1-OPEN", "L1-COOP", "L1-CLOSE", "L1-REFUTE", "L1-FORCE", "L1-SETTLE", "L1-REJECT",
    ]  # fmt: skip
    assert set(ids) == set(invariants) | set(rules)


def test_each_invariant_says_where_it_is_enforced_and_what_shows_it():
    section = _sections()[4]
    parts = DEFINITION.split(section)[1:]  # id, body, id, body …
    for name, body in zip(parts[::2], parts[1::2], strict=True):
        assert "*Enforced:*" in body and "*Shown by:*" in body, name
        assert re.search(r"tests/\S+\.py", body), f"{name} names no test"


def test_the_files_the_document_names_exist():
    text = design_text()
    missing = []
    for m in re.finditer(r"\b(?:bfs_smr|apps|adapters|tests|docs)/[\w./-]*", text):
        path = m.group(0).rstrip(".")
        if not ((ROOT / path).exists() or (ROOT / (path + ".py")).exists()):
            missing.append(path)
    assert not missing, missing


def test_the_tests_the_document_names_exist():
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", design_text()))
    assert len(named) > 20
    missing = sorted(n for n in named if not re.search(rf"\bdef {n}\(", tests))
    assert not missing, missing


def test_the_document_does_not_point_at_the_brief():
    assert "/work/" not in design_text()
    assert not OLD_NAME.search(design_text())


# -- the code and docs --------------------------------------------------------------------


def test_every_citation_names_something_the_document_defines():
    known = defined()
    found = 0
    wrong = []
    for path in scanned_files():
        where = str(path.relative_to(ROOT))
        for key, finding in citations(path.read_text(encoding="utf-8"), where):
            found += 1
            if key not in known:
                wrong.append(f"{finding} ({key} is not defined in docs/design.md)")
    assert found > 50  # the scan sees the code's citations
    assert not wrong, "\n".join(wrong)


def test_bare_section_signs_in_the_document_name_its_own_sections():
    text = HEADING.sub("", design_text())
    numbers = {int(n) for n in re.findall(r"§(\d+)", text)}
    assert numbers <= SECTIONS


def test_no_old_citation_forms_are_left():
    old = [
        f"{f} → {new_form(f.text)}"
        for path in scanned_files()
        if path != DESIGN
        for f in old_forms(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not old, "cite docs/design.md §N, I1…I8 and L1-… instead:\n" + "\n".join(old)


# -- the scanner can fail -----------------------------------------------------------------


def test_the_scanner_finds_each_form():
    text = (
        "see docs/design.md §4 and docs/design.md §4–§6 (I3, I12)\n"
        "rule L1-REFUTE, not L1-BOGUS; Layer L1-side; FI1 and I1x are not ids\n"
        "old: DESIGN I5, DESIGN.md §5, DESIGN §6, (§7), RFC 8949 §4.2 is fine\n"
    )
    keys = [key for key, _ in citations(text, "x")]
    assert keys == ["§4", "§4", "§5", "§6", "I3", "I12", "I5", "L1-REFUTE", "L1-BOGUS"]
    assert not {"I12", "L1-BOGUS"} & defined()
    old = [(f.where, f.text, new_form(f.text)) for f in old_forms(text, "x")]
    assert old == [
        ("x:3", "DESIGN I5", "I5 (docs/design.md §4)"),
        ("x:3", "DESIGN.md §5", "docs/design.md §5"),
        ("x:3", "DESIGN §6", "docs/design.md §6"),
        ("x:3", "§7", "docs/design.md §7"),
    ]
    assert [f.where for f in old_forms("one\na (§5) b", "x")] == ["x:2"]
    assert new_form("DESIGN.md §4-§6") == "docs/design.md §4–§6"
    assert new_form("DESIGN I1, I3") == "I1, I3 (docs/design.md §4)"
    assert new_form("DESIGN.md section 5") == "docs/design.md §5"
    assert not list(old_forms("[design.md §5](design.md) and docs/design.md §2", "x"))
