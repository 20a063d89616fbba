"""The docs and comments send readers only to what ships in the repository.

Every relative link of a Markdown page resolves (its file exists, and its
``#anchor`` is a heading of that page, as GitHub names headings); every path
of the repository a Markdown page, a comment or a docstring names (``proxy/...``,
``docs/operations.md``, ``deploy/...``) exists; every ``NAME.md`` anything
names is a page of the repository, and every section cited by its heading
(``docs/operations.md, "Audit log"``) is a heading of that page. A reader
sent to a file that does not ship (a design note, a contract, a spec kept
elsewhere) finds nothing, so such a reference fails here.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a run writes, named by the pages that say so (git-ignored, never in the repository).
ARTIFACTS = frozenset({"report.md", "bench/results"})
# Files whose comments are the text of another format (none of them names repository files).
COMMENTED = frozenset({".py", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini", ""})

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
# Sources that do not ship, however they are named: a shared folder, "the spec", "the contract"
# (not tests/crypto/test_format_spec.py's "spec reader", a reader written from docs/encryption.md).
ELSEWHERE = re.compile(r"(?<![\w./-])shared/|\bthe (?:spec|contract)\b(?! reader)", re.I)
# A page's section named as in a link, outside one: docs/operations.md#metrics.
PAGE_ANCHOR = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)#([\w-]+)")
MARKDOWN_NAME = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w./-]*[\w-]\.md)\b")


@dataclass(frozen=True, slots=True)
class Reference:
    """One place that names a file: where it is, and what it names."""

    source: str      # the file, relative to the root
    line: int
    target: str      # as written

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.target}"


def tracked() -> list[Path]:
    """The repository's files (as git lists them; a checkout without git: every file but .git's)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts)
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def top_folders(files: list[Path]) -> list[str]:
    """The repository's top-level folders a path of it can start with (``proxy``, ``docs``, ...)."""
    return sorted({f.relative_to(ROOT).parts[0] for f in files if len(f.relative_to(ROOT).parts) > 1
                   and not f.relative_to(ROOT).parts[0].startswith(".")})


def path_pattern(folders: list[str]) -> re.Pattern[str]:
    """A path of the repository written in prose: a top folder, a slash, and more of a path."""
    names = "|".join(re.escape(name) for name in folders)
    return re.compile(rf"(?<![\w./@:-])((?:{names})/[\w./-]*[\w/])")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\*|_(?=\W)|(?<=\W)_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a Markdown page's headings (a repeated heading gets ``-1``, ``-2``, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match is None:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def prose_lines(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """The lines of `path` a reader reads as prose: all of a page, a program's comments and docstrings."""
    if path.suffix == ".md":
        yield from enumerate(text.splitlines(), 1)
    elif path.suffix == ".py":
        yield from python_prose(text)
    elif path.suffix in COMMENTED or path.name == "Dockerfile":
        for number, line in enumerate(text.splitlines(), 1):
            if "#" in line:
                yield number, line[line.index("#"):]


def python_prose(text: str) -> Iterator[tuple[int, str]]:
    """A Python file's comments and docstrings, each line with its number."""
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                for offset, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + offset, line


def text_of(path: Path) -> str | None:
    """The file's text, or None for a file that is not UTF-8 text (an image, a key)."""
    try:
        return path.read_text()
    except (UnicodeDecodeError, OSError):
        return None


def resolves(source: Path, target: str) -> bool:
    """Whether `target`, named in `source`, is a file or folder of the repository.

    A path is tried from the root and from the naming file's folder; a bare page
    name (``operations.md``) is also a page of docs/, as the pages name each other.
    """
    clean = target.rstrip("/")
    if clean in ARTIFACTS or Path(clean).name in ARTIFACTS:
        return True
    tries = [ROOT / clean, source.parent / clean]
    if "/" not in clean:
        tries.append(ROOT / "docs" / clean)
    return any(candidate.resolve().is_relative_to(ROOT) and candidate.exists() for candidate in tries)


def page_anchors(source: Path, page: str) -> set[str]:
    """The anchors of `page` as `source` names it (from the root, its folder, or docs/)."""
    for candidate in (ROOT / page, source.parent / page, ROOT / "docs" / page):
        if candidate.is_file():
            return anchors(candidate.read_text())
    return set()


def dangling_names(texts: dict[Path, str]) -> list[Reference]:
    """Paths of the repository, ``.md`` names and sources kept elsewhere, in prose, that name nothing here."""
    pattern = path_pattern(top_folders(tracked()))
    missing: list[Reference] = []
    for path, text in texts.items():
        source = str(path.relative_to(ROOT))
        for number, line in prose_lines(path, text):
            named = {m.group(1) for m in pattern.finditer(line)} | {m.group(1) for m in MARKDOWN_NAME.finditer(line)}
            missing.extend(Reference(source, number, name) for name in sorted(named) if not resolves(path, name))
            missing.extend(Reference(source, number, f"{page}#{anchor}") for page, anchor in PAGE_ANCHOR.findall(line)
                           if resolves(path, page) and anchor not in page_anchors(path, page))
            missing.extend(Reference(source, number, m.group(0)) for m in ELSEWHERE.finditer(line))
    return missing


@functools.cache
def repository_texts() -> dict[Path, str]:
    """Every tracked text file with its text (but this one, which names what it looks for); read once."""
    texts = {path: text_of(path) for path in tracked() if path != Path(__file__).resolve()}
    return {path: text for path, text in texts.items() if text is not None}


def broken_links(pages: dict[Path, str]) -> list[Reference]:
    """Relative links of Markdown pages whose file, or whose ``#anchor`` in it, does not exist."""
    broken: list[Reference] = []
    for page, text in pages.items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in LINK.finditer(line):
                target = match.group(1) or match.group(2)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):   # https:, mailto:: not a file of ours
                    continue
                name, _, anchor = target.partition("#")
                if not name:
                    ok = anchor in anchors(text)
                else:
                    linked = (page.parent / name).resolve()
                    ok = linked.is_relative_to(ROOT) and linked.exists()
                    if ok and anchor:
                        ok = linked.suffix == ".md" and anchor in anchors(linked.read_text())
                if not ok:
                    broken.append(Reference(str(page.relative_to(ROOT)), number, target))
    return broken


# A section cited by its heading: docs/operations.md, "Audit log" (or ("Audit log"), or section "...").
SECTION = re.compile(r'((?:[\w./-]*/)?[\w-]+\.md)\)?(?:,| \(| section) ?"([^"\n]{3,80})"')


def headings(text: str) -> list[str]:
    """A page's headings as written (without the #s and backticks)."""
    return [match.strip().replace("`", "") for match in re.findall(r"^#{1,6} +(.*)$", text, re.M)]


def missing_sections(texts: dict[Path, str]) -> list[Reference]:
    """Citations of a page's section by its heading where the page has no heading that is, or starts with, it."""
    missing: list[Reference] = []
    for path, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in SECTION.finditer(line):
                page, section = match.group(1), match.group(2).replace("`", "")
                found = [c for c in (ROOT / page, path.parent / page, ROOT / "docs" / Path(page).name) if c.is_file()]
                if found and not any(h.startswith(section) for h in headings(found[0].read_text())):
                    missing.append(Reference(str(path.relative_to(ROOT)), number, match.group(0)))
    return missing


def test_every_section_cited_by_its_heading_exists() -> None:
    texts = repository_texts()
    assert len([m for text in texts.values() for m in SECTION.finditer(text)]) > 15
    assert [str(r) for r in missing_sections(texts)] == []


@pytest.mark.parametrize(("text", "found"), [
    ('# see docs/operations.md, "Audit log"\n', True),
    ('"""As docs/policies.md ("Policy tests") says."""\n', True),
    ('# docs/encryption.md, "Operations" (freeze, thaw, shred)\n', True),
    ('# see docs/operations.md, "Audit trail"\n', False),
])
def test_a_cited_section_that_does_not_exist_is_noticed(text: str, found: bool) -> None:
    assert (missing_sections({ROOT / "proxy" / "probe.py": text}) == []) is found


def test_no_page_comment_or_docstring_names_a_file_that_does_not_ship() -> None:
    assert [str(r) for r in dangling_names(repository_texts())] == []


def test_every_relative_link_and_anchor_of_a_page_resolves() -> None:
    pages = {path: text for path, text in repository_texts().items() if path.suffix == ".md"}
    assert len(pages) >= 8   # README, docs/*.md, the deploy and bench READMEs
    assert [str(r) for r in broken_links(pages)] == []


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Configuration reference", "configuration-reference"),
    ("Access keys: the proxy holds the callers' secrets", "access-keys-the-proxy-holds-the-callers-secrets"),
    ("Objects written by a multipart upload (format 2)", "objects-written-by-a-multipart-upload-format-2"),
    ("Operations: freeze, thaw, shred", "operations-freeze-thaw-shred"),
    ("`audit verify`", "audit-verify"),
])
def test_a_heading_gets_githubs_anchor(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


@pytest.mark.parametrize(("text", "dangling"), [
    ("# the rules are in CONTRACT.md\nx = 1\n", ["CONTRACT.md"]),
    ('"""See POLICY.md for the grammar."""\n', ["POLICY.md"]),
    ("# see shared/notes/design.md\n", ["shared/", "shared/notes/design.md"]),
    ("# as the spec says\n", ["the spec"]),
    ("# see proxy/nowhere.py for why\n", ["proxy/nowhere.py"]),
    ("# see proxy/cli.py and docs/operations.md\n", []),
    ("# the metrics: docs/operations.md#metrics\n", []),
    ("# the metrics: docs/operations.md#metric\n", ["docs/operations.md#metric"]),
    ('PATH = "proxy/nowhere.py"   # a string of the program, not prose\n', []),
])
def test_a_comment_naming_a_missing_file_is_noticed(text: str, dangling: list[str]) -> None:
    found = [r.target for r in dangling_names({ROOT / "proxy" / "probe.py": text})]
    assert sorted(found) == sorted(dangling)


@pytest.mark.parametrize(("link", "ok"), [
    ("[ops](operations.md#configuration-reference)", True),
    ("[ops](operations.md#no-such-heading)", False),
    ("[spec](../CONTRACT.md)", False),
    ("[up](../README.md#running-the-proxy)", True),
    ("[here](#probe)", True),
    ("[web](https://example.com/x.md)", True),
])
def test_a_broken_link_or_anchor_is_noticed(link: str, ok: bool) -> None:
    page = ROOT / "docs" / "probe.md"
    assert (broken_links({page: f"# Probe\n\nSee {link}.\n"}) == []) is ok
