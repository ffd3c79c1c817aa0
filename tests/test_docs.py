"""The documentation's links hold: every relative Markdown link in the product's documents names a file
that exists, and every `#anchor` names a heading of its target (GitHub's slug rules). README.md stays a
front door of at most README_MAX_LINES lines; the details live in docs/ and bench/README.md.

Checked documents: README.md, docs/*.md, bench/README.md, every README.md under embedded/, infra/README.md.
Links inside fenced code blocks and inline code spans are not links; absolute URLs (http:, mailto:, ...)
are not checked (no network)."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md",
            *sorted((ROOT / "embedded").rglob("README.md")), ROOT / "infra" / "README.md"]
    return [d for d in docs if d.is_file()]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of the lines outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence)):
            fence = m.group(1) if fence is None else None
            continue
        if fence is None:
            out.append((n, line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    found = []
    for n, line in prose_lines(text):
        m = _REF_DEF.match(line)
        if m:
            found.append((n, m.group(1)))
        prose = _CODE_SPAN.sub("", line)
        found += [(n, m.group(1)) for m in _INLINE_LINK.finditer(prose)]
    return [(n, t[1:-1] if t.startswith("<") else t) for n, t in found]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, punctuation and symbols dropped
    (letters, marks, numbers, `_`, `-` and spaces kept), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link renders as its text
    text = _CODE_SPAN.sub(lambda m: m.group(2), text)             # code spans render as their content
    keep = "".join(ch for ch in text.lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LMN")
    return keep.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs, repeats suffixed -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def dead_links(doc: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of `doc` that does not resolve: a missing file, a path outside the
    repository, or an anchor no heading of the target has."""
    problems = []
    for n, target in links(doc.read_text(encoding="utf-8")):
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        where = f"{doc.relative_to(root)}:{n}: ({target})"
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where} points outside the repository")
        elif not dest.exists():
            problems.append(f"{where} names a missing file")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where} names no heading of {dest.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda d: str(d.relative_to(ROOT)))
def test_links_resolve(doc):
    assert dead_links(doc) == []


def test_documents_are_there():
    names = {str(d.relative_to(ROOT)) for d in documents()}
    assert {"README.md", "bench/README.md", "infra/README.md", "embedded/longform/README.md"} <= names
    assert any(n.startswith("docs/") for n in names)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_links_every_doc():
    """A page under docs/ that the README does not link is a page nobody finds."""
    targets = {t.partition("#")[0] for _, t in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in targets]
    assert missing == []


def test_checker_finds_dead_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Exit codes (`run`)\n\n## Exit codes (`run`)\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# Doc\n\n"
        "[ok](docs/a.md) [ok anchor](docs/a.md#exit-codes-run) [repeat](docs/a.md#exit-codes-run-1)\n"
        "[self](#doc) ![img](docs/a.md) [web](https://example.com/x) [mail](mailto:a@b.c)\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/a.md#no-such-heading)\n"
        "[outside](../elsewhere.md)\n"
        "`[in code](docs/nope.md)`\n"
        "```\n[in a fence](docs/nope.md)\n```\n"
        "[ref]: docs/also-missing.md\n")
    problems = dead_links(doc, tmp_path)
    assert len(problems) == 4, problems
    assert "README.md:5: (docs/missing.md) names a missing file" in problems
    assert "README.md:6: (docs/a.md#no-such-heading) names no heading of docs/a.md" in problems
    assert any("(../elsewhere.md)" in p for p in problems)
    assert "README.md:12: (docs/also-missing.md) names a missing file" in problems


@pytest.mark.parametrize("heading, expected", [
    ("KV cache (`decode.cache`: none | prefix | dual)", "kv-cache-decodecache-none--prefix--dual"),
    ("The default job (`./run.sh`, task-mix model)", "the-default-job-runsh-task-mix-model"),
    ("Trace cost (`bench/trace_cost.py`, task-mix model)", "trace-cost-benchtrace_costpy-task-mix-model"),
    ("DiffusionGemma: continuous batching vs `generate()`", "diffusiongemma-continuous-batching-vs-generate"),
    ("Why [fixed](x.md) widths?", "why-fixed-widths"),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected
