"""`bailiwick demo` runs the whole story and exits 0 only when every outcome is what it should be."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from proxy import demo_encryption
from proxy.crypto.segments import ciphertext_length
from proxy.demo import HEADER, run_demo
from proxy.demo_encryption import ENCRYPTED_HEADER, EXCERPT_BYTES, MAIL, encryption_act
from proxy.demo_tools import print_table
from proxy.localstore import MotoServer

ROOT = Path(__file__).resolve().parent.parent
CALLER_ROW = ("Irish", "German", "US prosecutor", "storage provider")


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(CALLER_ROW)]


def test_demo_story_comes_out_as_the_policy_says(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(ROOT / "policies") == 0
    out = capsys.readouterr().out
    first, encrypted = out.split("\nEncryption at rest: ")
    rows = _rows(first)
    assert len(rows) == 18
    us_on_dublin = [r for r in rows if r.startswith("US") and "Dublin" in r]
    assert us_on_dublin
    assert all("  deny  " in r for r in us_on_dublin)
    assert all("  deny  " in r for r in rows if "copy Dublin mail to us-east-1" in r)
    assert "policy says  proxy did  storage    check  what the caller was told" in first   # every column named
    tables = _tables(out)
    assert len(tables) == 2
    assert [_unnamed_columns(table) for table in tables] == [[], []]
    assert len(_rows(encrypted)) == 5
    assert "All 23 outcomes came out as they should" in encrypted


def _tables(text: str) -> list[list[str]]:
    """Each table printed in `text`: its header line, its rule of dashes, and its rows."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---") and set(line) <= {"-", " "}]
    tables = []
    for rule in rules:
        end = next((i for i in range(rule + 1, len(lines)) if not lines[i].strip()), len(lines))
        tables.append(lines[rule - 1:end])
    return tables


def _unnamed_columns(table: list[str]) -> list[str]:
    """What in `table` lies under no named column: a run of dashes with nothing above it, or a row's text
    outside every run (a column the header does not have)."""
    header, rule, *rows = table
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    found = [f"column {n} at {start}" for n, (start, end) in enumerate(spans, 1) if not header[start:end].strip()]
    for row in [header, *rows]:
        for at, char in enumerate(row):
            if char != " " and not any(start <= at < end for start, end in spans):
                found.append(f"{row!r} at {at}")
                break
    return found


@pytest.mark.parametrize(("header", "rows", "unnamed"), [
    (("caller", "got", "why"), [("IE", "allow", ""), ("US", "deny", "not allowed")], []),
    (("caller", "got", ""), [("US", "deny", "not allowed")], ["column 3 at 14"]),
])
def test_the_table_check_finds_a_column_without_a_header(
    capsys: pytest.CaptureFixture[str], header: tuple[str, ...], rows: list[tuple[str, ...]], unnamed: list[str],
) -> None:
    print_table(header, rows)   # type: ignore[arg-type]   # the check is for any width, not only the demo's
    (table,) = _tables(capsys.readouterr().out)
    assert _unnamed_columns(table) == unnamed


def test_every_column_of_the_demos_tables_has_a_header() -> None:
    for header in (HEADER, ENCRYPTED_HEADER):
        assert all(name.strip() for name in header)


def _act(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, str], int]:
    """The encryption act alone on a fresh moto server: its rows by request, and its problems."""
    with MotoServer() as running:
        rows, problems = encryption_act(running.url, tmp_path, ROOT / "policies", secrets.token_urlsafe(48))
    printed = _rows(capsys.readouterr().out)
    assert len(printed) == len(rows)
    return {row[1]: line for row, line in zip(rows, printed, strict=True)}, problems


def test_the_encryption_act_shows_ciphertext_at_rest_and_a_refused_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rows, problems = _act(tmp_path, capsys)
    assert problems == 0
    assert all(re.search(r"\s+ok(\s|$)", line) for line in rows.values())
    assert re.search(r"allow\s+allow\s+written\s+ok", rows["write mail to encrypted Dublin (eu-west-1 proxy)"])
    assert re.search(r"plaintext\s+plaintext\s+ok", rows["read it back (eu-west-1 proxy)"])
    stored = rows["read its own copy of that mail"]
    assert re.search(r"ciphertext\s+ciphertext\s+ok", stored)
    shown = re.search(rf"first {EXCERPT_BYTES} of (\d+) bytes: ([0-9a-f]+);", stored)
    assert shown is not None
    assert int(shown[1]) == ciphertext_length(len(MAIL))   # the whole object is the sealed mail
    excerpt = bytes.fromhex(shown[2])
    assert len(excerpt) == EXCERPT_BYTES
    assert not any(MAIL[i:i + 6] in excerpt for i in range(len(MAIL) - 5))   # not a trace of the plaintext
    assert re.search(r"written\s+written\s+written\s+ok", rows["copy it into mail-us-east-encrypted"])
    refused = rows["read that copy (us-east-1 proxy)"]
    assert re.search(r"403 KeyReleaseRefused\s+403 KeyReleaseRefused\s+ok", refused)
    assert "does not hold" in refused   # the row says why


def test_the_encryption_act_fails_when_the_storage_holds_plaintext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same datasets without `encryption: required`: the proxies store and serve plaintext.
    plain = demo_encryption.ENCRYPTED_DATASETS.replace("    encryption: required\n", "")
    assert plain != demo_encryption.ENCRYPTED_DATASETS
    monkeypatch.setattr(demo_encryption, "ENCRYPTED_DATASETS", plain)
    rows, problems = _act(tmp_path, capsys)
    assert problems == 3   # what moto holds, what the us-east-1 proxy gave, and the audit's key releases
    assert re.search(r"ciphertext\s+PLAINTEXT\s+MISMATCH", rows["read its own copy of that mail"])
    assert re.search(r"403 KeyReleaseRefused\s+allow\s+MISMATCH", rows["read that copy (us-east-1 proxy)"])


def test_demo_fails_when_the_policy_disagrees_with_the_story(tmp_path: Path) -> None:
    # Let US callers read Dublin mail: the proxy follows the policy, but the story's claim
    # (no US access to Dublin mail) breaks, so the demo must fail.
    for file in (ROOT / "policies").glob("*.yaml"):
        text = file.read_text()
        if file.name == "mail.yaml":
            text = text.replace("from: [US]", "from: [CN]").replace("from: [EEA]", "from: [EEA, US]", 1)
        (tmp_path / file.name).write_text(text)
    assert run_demo(tmp_path) == 1
