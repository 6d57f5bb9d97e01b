"""The project documents its own protocol knowledge: comments cite docs/protocol.md or RFC 5456.

Every tracked source or documentation file is read line by line.  A line that cites a bare
"section N", "§N" or "pitfall N" must say which document it means (``docs/protocol.md`` or an
RFC), no file may cite a document that is not in the repository, and every
``docs/protocol.md §N`` / ``§N.M`` / ``PN`` cited must exist in docs/protocol.md.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
DOC_NAME = "docs/protocol.md"
SUFFIXES = frozenset({".py", ".pyx", ".pxi", ".pxd", ".pyi", ".md", ".sh"})
#: docs/ defines the sections; this file names the patterns it looks for.
EXEMPT = ("docs/", "tests/test_docs.py")
SKIP_DIRS = frozenset({"build", ".git", "__pycache__", ".mypy_cache", ".ruff_cache"})

#: Documents outside the repository that comments must not send a reader to.
OUTSIDE_DOCS = re.compile(
    r"fact[ -]?sheet|iax2-facts|facts\.md|style\.md|style notes|field[- ]notes|"
    r"asterisk-lab\.md|/work/shared",
    re.IGNORECASE,
)
#: A numbered reference that means nothing without the document's name.
NUMBERED_REF = re.compile(r"\bsections? \d|§\s*\d|\bpitfalls? \d", re.IGNORECASE)
#: What a numbered reference may name on its line.
DOC_OR_RFC = re.compile(re.escape(DOC_NAME) + r"|\bRFC\b")
#: A section (§3, §9.1) or pitfall (P4) token.
REF_TOKEN = re.compile(r"§(\d+(?:\.\d+)?)|\b(P\d+)\b")


def tracked_files() -> list[str]:
    """Repository-relative paths of the tracked files we check (a tree walk outside git)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        out = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
               if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in out if Path(p).suffix in SUFFIXES and not p.startswith(EXEMPT))


def _token(m: re.Match[str]) -> str:
    return f"§{m.group(1)}" if m.group(1) else m.group(2)


def bad_citations(lines: Iterable[str]) -> list[tuple[int, str]]:
    """(line number, line) of each line citing an outside document or an unnamed section."""
    bad: list[tuple[int, str]] = []
    for n, line in enumerate(lines, start=1):
        if OUTSIDE_DOCS.search(line) or (NUMBERED_REF.search(line) and not DOC_OR_RFC.search(line)):
            bad.append((n, line.strip()))
    return bad


def cited_refs(lines: Iterable[str]) -> list[tuple[int, str]]:
    """(line number, "§N" / "§N.M" / "PN") cited after ``docs/protocol.md`` on each line.

    The part of a line from "RFC" on is the RFC's, not ours, and is left out.
    """
    refs: list[tuple[int, str]] = []
    for n, line in enumerate(lines, start=1):
        start = line.find(DOC_NAME)
        if start < 0:
            continue
        tail = line[start + len(DOC_NAME):].split("RFC", 1)[0]
        refs.extend((n, _token(m)) for m in REF_TOKEN.finditer(tail))
    return refs


def defined_refs(text: str) -> set[str]:
    """Sections (``## N.``), numbered points (``N.M `` / ``### N.M``) and pitfalls (``**PN**``)."""
    found = {f"§{m}" for m in re.findall(r"^## (\d+)\. ", text, re.MULTILINE)}
    found |= {f"§{m}" for m in re.findall(r"^(?:### )?(\d+\.\d+) ", text, re.MULTILINE)}
    found |= set(re.findall(r"^- \*\*(P\d+)\*\*", text, re.MULTILINE))
    return found


def _read_lines(rel: str) -> list[str]:
    return (ROOT / rel).read_text(encoding="utf-8", errors="replace").splitlines()


def test_protocol_md_has_the_numbered_sections_and_pitfalls() -> None:
    defined = defined_refs(PROTOCOL_MD.read_text(encoding="utf-8"))
    assert {f"§{n}" for n in range(1, 13)} <= defined
    pitfalls = sorted(int(r[1:]) for r in defined if r.startswith("P"))
    assert pitfalls == list(range(1, len(pitfalls) + 1)) and len(pitfalls) >= 10


def test_docs_readme_names_protocol_md() -> None:
    assert "protocol.md" in (ROOT / "docs" / "README.md").read_text(encoding="utf-8")


def test_checker_flags_what_it_should() -> None:
    lines = [
        "# retransmission (section 7)",                  # unnamed section
        "x = 1  # see the fact sheet",                    # outside document
        '"""Trunk (iax2-facts §3)."""',                   # outside document
        "# ACK the ACCEPT (pitfall 10)",                  # unnamed pitfall
        "# retransmission (docs/protocol.md §7.6)",       # fine
        "# jitter as RFC 3550 section 6.4.1 computes it",  # fine
        "# sections of iax.conf are [general] and entries",  # fine: no number
    ]
    assert [n for n, _ in bad_citations(lines)] == [1, 2, 3, 4]
    refs = cited_refs(["(docs/protocol.md §3.3, P4) and RFC 5456 §8.1.1",
                       "(docs/protocol.md §9 to §12)"])
    assert refs == [(1, "§3.3"), (1, "P4"), (2, "§9"), (2, "§12")]


def test_no_source_cites_an_outside_document_or_an_unnamed_section() -> None:
    files = tracked_files()
    assert any(f.startswith("gateway/") for f in files), files[:5]
    bad = [f"{rel}:{n}: {line}" for rel in files for n, line in bad_citations(_read_lines(rel))]
    assert not bad, "cite docs/protocol.md §N / PN or RFC 5456 instead:\n" + "\n".join(bad)


def test_every_cited_section_and_pitfall_exists() -> None:
    defined = defined_refs(PROTOCOL_MD.read_text(encoding="utf-8"))
    cited = [(rel, n, ref) for rel in tracked_files() for n, ref in cited_refs(_read_lines(rel))]
    assert len(cited) >= 20, cited
    missing = [f"{rel}:{n}: {ref}" for rel, n, ref in cited if ref not in defined]
    assert not missing, "not in docs/protocol.md:\n" + "\n".join(missing)


def test_protocol_md_cross_references_exist() -> None:
    """The §N.M and PN that protocol.md cites in its own text (not its "Refs:" lines) exist."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    defined = defined_refs(text)
    body = [ln for ln in text.splitlines() if not ln.startswith("Refs:")]
    refs = {_token(m) for ln in body for m in REF_TOKEN.finditer(ln)}
    assert refs and refs <= defined, sorted(refs - defined)
