"""The design docs that code and docs cite are in the repository, and the docs' links lead somewhere
(issue 22).

Whoever clones ddsx reads the mathematics and the contracts in docs/; a docstring that cites a design
note by a bare name, or by a path on the machine where it was written, points nowhere for them. So,
over the checkout:

- every citation ``docs/<name>.md`` (in ddsx/, tests/, experiments/, conf/, hydra_plugins/, the
  Makefile, README.md or docs/) names a file that exists, and a section it names ("section 4",
  "sections 3-4") is a numbered heading of that file;
- a design doc is cited by its repo path only: its bare file name, or an absolute path, fails;
- every relative markdown link in README.md and docs/*.md points to a file or folder that exists.

Each check is a function of the text, tested first on planted cases (so that it can fail), then run
on the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_FOLDERS = ("ddsx", "tests", "experiments", "conf", "hydra_plugins")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".cfg"}
# The design notes the code has cited (they once lived outside the repository); with every file of
# docs/, these names may only appear as a repo path.
DESIGN_NOTES = ("method", "sequential", "architecture")

CITATION = re.compile(
    r"(?<![\w./-])docs/(?P<name>[\w-]+\.md)(?:,? (?:section|sections) (?P<first>\d+)(?:(?:-| and | to )(?P<last>\d+))?)?"
)
# Any file name ending in .md, with the path before it (if any).
MD_TOKEN = re.compile(r"(?<![\w.-])(?P<path>(?:[\w.~-]*/)*)(?P<name>[\w-]+\.md)\b")
INLINE_LINK = re.compile(r"\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?P<target>\S+)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def scanned_files(root: Path) -> list[Path]:
    """The text files whose citations are checked (not this one: its planted cases are wrong on purpose)."""
    files = [root / name for name in SCANNED_FILES if (root / name).is_file()]
    files += sorted((root / "docs").glob("*.md"))
    for folder in SCANNED_FOLDERS:
        files += sorted(
            p
            for p in (root / folder).rglob("*")
            if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
        )
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def numbered_sections(doc: Path) -> set[int]:
    """The numbers of a doc's headings ``## 4. Title``."""
    return {int(m.group(1)) for m in re.finditer(r"^#+\s+(\d+)\.", doc.read_text(), re.MULTILINE)}


def citation_problems(root: Path, files: Iterable[Path]) -> Iterator[str]:
    """One line per citation of a docs/ file that is missing or names a section it does not have."""
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in CITATION.finditer(line):
                where = f"{path.relative_to(root)}:{number}"
                doc = root / "docs" / match["name"]
                if not doc.is_file():
                    yield f"{where}: cites docs/{match['name']}, which does not exist"
                    continue
                if match["first"]:
                    first, last = int(match["first"]), int(match["last"] or match["first"])
                    missing = set(range(first, last + 1)) - numbered_sections(doc)
                    if missing:
                        yield f"{where}: docs/{match['name']} has no section {sorted(missing)}"


def bare_name_problems(root: Path, files: Iterable[Path]) -> Iterator[str]:
    """One line per design doc cited otherwise than by its repo path: a bare name or an absolute path.

    A markdown file in docs/ may name its neighbours relative to itself (``sequential.md`` there is
    docs/sequential.md)."""
    docs = root / "docs"
    names = {p.name for p in docs.glob("*.md")} | {f"{stem}.md" for stem in DESIGN_NOTES}
    for path in files:
        in_docs = path.parent == docs
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in MD_TOKEN.finditer(line):
                prefix, name = match["path"].removeprefix("./"), match["name"]
                if name not in names:
                    continue
                if prefix == "docs/" or (in_docs and prefix == ""):
                    continue
                yield (
                    f"{path.relative_to(root)}:{number}: cites {match.group(0)!r}; "
                    f"cite it by its repo path, docs/{name}"
                )


def link_targets(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline or reference link outside code (fenced or indented blocks,
    code spans)."""
    fenced = False
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith(("    ", "\t")):
            continue
        text = CODE_SPAN.sub("", line)
        for match in INLINE_LINK.finditer(text):
            yield number, match["target"]
        reference = REFERENCE_LINK.match(text)
        if reference:
            yield number, reference["target"]


def link_problems(root: Path, documents: Iterable[Path]) -> Iterator[str]:
    """One line per relative link of a markdown document whose file or folder does not exist."""
    for document in documents:
        for number, target in link_targets(document.read_text()):
            if URL_SCHEME.match(target) or target.startswith("#"):
                continue
            relative = target.split("#", 1)[0]
            if not (document.parent / relative).exists():
                yield f"{document.relative_to(root)}:{number}: link to {target}, which does not exist"


def markdown_documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# The checks on planted cases: each must see what is wrong (and nothing where all is well).


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## 1. First\n\n## 2. Second\n")
    (tmp_path / "ddsx").mkdir()
    return tmp_path


def test_a_citation_of_a_missing_doc_or_section_is_found(checkout: Path) -> None:
    code = checkout / "ddsx" / "a.py"
    code.write_text('"""See docs/guide.md section 2 and docs/guide.md sections 1-2."""\n')
    assert list(citation_problems(checkout, [code])) == []
    code.write_text('"""See docs/gone.md, docs/guide.md section 3 and docs/guide.md sections 2-4."""\n')
    problems = list(citation_problems(checkout, [code]))
    assert problems == [
        "ddsx/a.py:1: cites docs/gone.md, which does not exist",
        "ddsx/a.py:1: docs/guide.md has no section [3]",
        "ddsx/a.py:1: docs/guide.md has no section [3, 4]",
    ]


def test_a_design_doc_cited_by_its_bare_name_or_an_absolute_path_is_found(checkout: Path) -> None:
    stem = DESIGN_NOTES[1]
    code = checkout / "ddsx" / "a.py"
    code.write_text(
        f"# docs/{stem}.md and docs/guide.md are repo paths; results/{stem}_notes.md is another file\n"
    )
    assert list(bare_name_problems(checkout, [code])) == []
    code.write_text(f"# ({stem}.md, step 3)\n# /work/shared/design/{stem}.md\n# guide.md section 1\n")
    problems = list(bare_name_problems(checkout, [code]))
    assert len(problems) == 3
    assert problems[0].startswith(f"ddsx/a.py:1: cites '{stem}.md'")
    assert problems[1].startswith("ddsx/a.py:2: cites '/work/shared/design/")
    assert problems[2].endswith("docs/guide.md")
    # Inside docs/, a neighbour is named relative to the doc itself.
    (checkout / "docs" / "other.md").write_text("See guide.md section 2.\n")
    assert list(bare_name_problems(checkout, [checkout / "docs" / "other.md"])) == []


def test_a_dead_relative_link_is_found_and_urls_anchors_and_code_are_not_links(checkout: Path) -> None:
    readme = checkout / "README.md"
    readme.write_text(
        "[guide](docs/guide.md#1-first) [code](ddsx/) [web](https://example.org/x.md) [top](#top)\n"
        "`[not](a-link.md)`\n\n    [indented](code.md)\n\n```\n[fenced](code.md)\n```\n"
        "[ref]: docs/guide.md\n"
    )
    assert list(link_problems(checkout, [readme])) == []
    readme.write_text("Read [the guide](docs/guid.md).\n\n[ref]: docs/missing/\n")
    assert list(link_problems(checkout, [readme])) == [
        "README.md:1: link to docs/guid.md, which does not exist",
        "README.md:3: link to docs/missing/, which does not exist",
    ]
    inside = checkout / "docs" / "other.md"
    inside.write_text("[up](../README.md) [neighbour](guide.md) [gone](../ddsx/gone.py)\n")
    assert list(link_problems(checkout, [inside])) == [
        "docs/other.md:1: link to ../ddsx/gone.py, which does not exist"
    ]


# The checks on the repository.


def test_every_cited_doc_and_section_exists() -> None:
    problems = list(citation_problems(ROOT, scanned_files(ROOT)))
    assert not problems, "\n".join(problems)


def test_design_docs_are_cited_by_their_repo_path() -> None:
    problems = list(bare_name_problems(ROOT, scanned_files(ROOT)))
    assert not problems, "\n".join(problems)


def test_every_relative_link_of_the_readme_and_the_docs_exists() -> None:
    problems = list(link_problems(ROOT, markdown_documents(ROOT)))
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = {target.split("#", 1)[0] for _, target in link_targets(readme)}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not unlinked, f"README.md links no docs/{unlinked}"
