"""docs/operations.md's audit record reference and "What verify checks" cannot drift from the code.

Lines are written by the real writer (`proxy.audit.AuditLog`) from records the
real code builds (`AuditRecord.of`, the cases of tests/audit/test_record.py,
one with a key release), with a worker and with checkpoints; every field they
hold, nested ones as ``caller.source``, must have a row with its JSON type,
and every row must name a field a line holds. The named tuples the record is
made of are read too, so a field added to them without a row fails even
before a case writes it. Every problem and warning `verify` reports for a
broken or unsealed log must be one the page writes down.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog, AuditRecord, RecordedCaller, RecordedKeyRelease, RecordedRequest, verify
from proxy.audit.chain import chain_hash
from proxy.policy.loader import load_policy
from tests.audit.test_record import CASES, SHIPPED_POLICIES, make

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
KEY = b"k" * 32
JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict}
# The record's named tuples, and where their fields are in the line.
NESTED: dict[str, type[RecordedCaller | RecordedRequest | RecordedKeyRelease]] = {
    "caller": RecordedCaller, "request": RecordedRequest, "key_release": RecordedKeyRelease,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One documented field: its JSON type, and whether it may be null or absent."""

    type: str
    nullable: bool
    optional: bool


def section(text: str, heading: str) -> str:
    """The text of the ``###`` section `heading`, up to the next ``##`` or ``###`` heading."""
    assert f"\n{heading}\n" in text, f"the section {heading!r} is missing"
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def reference_rows(text: str, kind: str) -> dict[str, Row]:
    """The rows of the reference's table for `kind` (``Decision lines`` or ``Checkpoint lines``)."""
    part = section(text, "### Audit record reference").split(f"#### {kind}\n", 1)
    assert len(part) == 2, f"no table for {kind!r}"
    rows: dict[str, Row] = {}
    for line in part[1].split("\n#### ", 1)[0].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 4:
            continue
        name, kind_cell, absence = cells[0].strip("`"), cells[1], cells[2]
        assert kind_cell in JSON_TYPES, f"{name}: {kind_cell!r} is not a JSON type"
        assert absence in ("never", "null", "absent"), f"{name}: {absence!r} is not never, null or absent"
        assert name not in rows, f"{name} has two rows"
        rows[name] = Row(kind_cell, absence == "null", absence == "absent")
    return rows


def fields(line: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every field of a line by its dotted name (``caller.source``), objects and what they hold."""
    found: dict[str, Any] = {}
    for name, value in line.items():
        found[prefix + name] = value
        if isinstance(value, dict):
            found.update(fields(value, f"{prefix}{name}."))
    return found


def json_type(value: object) -> str:
    return next(name for name, python in JSON_TYPES.items() if type(value) is python)


def records() -> list[AuditRecord]:
    """Records the real code builds: every case of tests/audit/test_record.py, one with a key release, one located."""
    policy = load_policy(SHIPPED_POLICIES)
    built = [make(policy, name)[0] for name in CASES]
    release = RecordedKeyRelease("transit", "transit:transit/bailiwick-eu-west-1", "unwrap+generate", "released")
    located = built[0]._replace(caller=built[0].caller._replace(location="US"))   # with identity.geoip
    return [*built, built[0]._replace(key_release=release), located]


def written_lines(tmp_path: Path) -> list[dict[str, Any]]:
    """The lines the real writer writes for `records`: alone, and as a worker with checkpoints."""
    lines: list[dict[str, Any]] = []
    for name, worker, key in (("alone", None, None), ("worker", 1, KEY)):
        log = AuditLog(str(tmp_path / name / "audit.jsonl"), worker, checkpoint_every=3, checkpoint_key=key)
        for record in records():
            log.write(record)
        log.close()
        [file] = (tmp_path / name).glob("*.jsonl")
        lines.extend(json.loads(text) for text in file.read_text().splitlines())
    return lines


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return written_lines(tmp_path_factory.mktemp("audit"))


KINDS = {"Decision lines": False, "Checkpoint lines": True}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_written_is_documented_and_every_row_is_written(kind: str, lines: list[dict[str, Any]]) -> None:
    rows = reference_rows(DOC.read_text(), kind)
    of_kind = [line for line in lines if ("checkpoint" in line) is KINDS[kind]]
    assert of_kind
    written = set().union(*(fields(line) for line in of_kind))
    assert sorted(written - rows.keys()) == []    # written, without a row
    assert sorted(rows.keys() - written) == []    # a row for a field no line holds


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_has_its_documented_type_null_and_absence(kind: str, lines: list[dict[str, Any]]) -> None:
    rows = reference_rows(DOC.read_text(), kind)
    wrong: list[str] = []
    for line in (line for line in lines if ("checkpoint" in line) is KINDS[kind]):
        present = fields(line)
        for name, row in rows.items():
            parent = name.rpartition(".")[0]
            if name not in present:
                if not row.optional and (not parent or parent in present):
                    wrong.append(f"{name} is absent but documented as never absent")
            elif present[name] is None:
                if not row.nullable:
                    wrong.append(f"{name} is null but documented as never null")
            elif json_type(present[name]) != row.type:
                wrong.append(f"{name} is a {json_type(present[name])}, documented as a {row.type}")
    assert sorted(set(wrong)) == []


def test_every_field_of_the_record_has_a_row() -> None:
    rows = reference_rows(DOC.read_text(), "Decision lines")
    declared = set(AuditRecord._fields) | {
        f"{prefix}.{name}" for prefix, shape in NESTED.items() for name in shape._fields
    }
    assert set(NESTED) <= set(AuditRecord._fields)
    assert sorted(declared - rows.keys()) == []


def test_the_written_lines_hold_what_the_cases_are_for(lines: list[dict[str, Any]]) -> None:
    # A guard on the guard: the lines above hold the optional fields, nulls and checkpoints.
    decisions = [line for line in lines if "checkpoint" not in line]
    assert any("key_release" in line for line in decisions)
    assert any(line["caller"]["subject"] is None for line in decisions)
    assert any(line["request"]["listing"] for line in decisions)
    assert any("worker" in line for line in lines)
    assert any("worker" not in line for line in lines)
    assert {line["checkpoint"]["kind"] for line in lines if "checkpoint" in line} == {"interval", "close"}


def test_a_missing_or_mistyped_row_is_noticed() -> None:
    text = DOC.read_text()
    assert "status" in reference_rows(text, "Decision lines")
    assert "status" not in reference_rows(re.sub(r"\n\| `status` \|[^\n]*", "", text), "Decision lines")
    with pytest.raises(AssertionError, match="not a JSON type"):
        reference_rows(text.replace("| `status` | integer |", "| `status` | number |"), "Decision lines")


# --- What verify checks ------------------------------------------------------------------------


def documented_messages(text: str) -> list[re.Pattern[str]]:
    """The messages the section writes down, as patterns: FILE, LINE, N, TIME and LABEL stand for values."""
    body = section(text, "### What verify checks")
    patterns: list[re.Pattern[str]] = []
    for quoted in re.findall(r"`([^`]+)`", body):   # a span may wrap onto the next line
        if len(quoted) < 12:
            continue
        pattern = re.escape(" ".join(quoted.split()))
        for placeholder, value in (("FILE", r".+"), ("LINE", r"\d+"), ("N", r"\d+"), ("TIME", r".+")):
            pattern = re.sub(rf"\b{placeholder}\b", value.replace("\\", "\\\\"), pattern)
        # "N lines" is written for any count; the tool says "1 line".
        pattern = pattern.replace(r"\d+\ lines", r"\d+\ lines?")
        patterns.append(re.compile(pattern))
    return patterns


def rehash(line: dict[str, Any]) -> dict[str, Any]:
    """`line` with its hash made right again (an edit that keeps the line's own hash)."""
    return {**line, "hash": chain_hash(line)}


def write_log(folder: Path, *, key: bytes | None, count: int = 5, every: int = 2) -> Path:
    log = AuditLog(str(folder / "audit.jsonl"), checkpoint_every=every, checkpoint_key=key)
    for record in records()[:count]:
        log.write(record)
    log.close()
    return folder / "audit.jsonl"


def tamper(path: Path, how: str) -> None:
    texts = path.read_text().splitlines()
    lines = [json.loads(text) for text in texts]
    if how == "not JSON":
        texts[1] = texts[1][:-5]
    elif how == "no hash":
        texts[1] = json.dumps({k: v for k, v in lines[1].items() if k != "hash"})
    elif how == "worker not a number":
        texts[1] = json.dumps(rehash({**lines[1], "worker": "one"}))
    elif how == "first line not a start":
        texts = texts[1:]
    elif how == "new chain in the middle":
        texts[2] = json.dumps(rehash({**lines[2], "prev": "0" * 64}))
    elif how == "line removed":
        del texts[1]
    elif how == "line edited":
        texts[0] = texts[0].replace('"status":', '"status":1')
    elif how == "malformed checkpoint":
        at = next(i for i, line in enumerate(lines) if "checkpoint" in line)
        texts[at] = json.dumps(rehash({**lines[at], "checkpoint": {"kind": "interval"}}))
    elif how == "forged MAC":
        at = next(i for i, line in enumerate(lines) if "checkpoint" in line)
        texts[at] = json.dumps(rehash({**lines[at], "checkpoint": {**lines[at]["checkpoint"], "mac": "0" * 64}}))
    elif how == "cut after a checkpoint":
        texts = texts[:-1]                 # the closing checkpoint
    elif how == "cut at a checkpoint":
        at = max(i for i, line in enumerate(lines) if line.get("checkpoint", {}).get("kind") == "interval")
        texts = texts[:at + 1]
    path.write_text("".join(f"{text}\n" for text in texts))


BROKEN = ["not JSON", "no hash", "worker not a number", "first line not a start", "new chain in the middle",
          "line removed", "line edited", "malformed checkpoint", "forged MAC"]
UNSEALED = ["cut after a checkpoint", "cut at a checkpoint"]


@pytest.mark.parametrize("how", BROKEN + UNSEALED + ["no checkpoint"])
def test_every_problem_verify_reports_is_written_down(tmp_path: Path, how: str) -> None:
    path = write_log(tmp_path, key=None if how == "no checkpoint" else KEY)
    if how != "no checkpoint":
        tamper(path, how)
    result = verify(path, checkpoint_key=KEY)
    reported = [result.problem] if how in BROKEN else list(result.warnings)
    assert reported
    assert all(reported)
    assert not result.ok if how in BROKEN else result.ok
    patterns = documented_messages(DOC.read_text())
    assert [problem for problem in reported if not any(p.fullmatch(problem) for p in patterns)] == []


def test_a_file_missing_from_the_middle_is_written_down(tmp_path: Path) -> None:
    texts = write_log(tmp_path, key=None).read_text().splitlines(keepends=True)
    first, second = tmp_path / "audit.1.jsonl", tmp_path / "audit.3.jsonl"
    first.write_text("".join(texts[:2]))
    second.write_text("".join(texts[3:]))      # the file of line 3 is missing
    result = verify([first, second])
    assert result.problem.startswith(f"prev is not the hash of the last line of {first} (line 2)")
    assert not result.ok
    patterns = documented_messages(DOC.read_text())
    assert any(p.fullmatch(result.problem) for p in patterns), result.problem


def test_an_undocumented_problem_is_noticed() -> None:
    patterns = documented_messages(DOC.read_text())
    assert any(p.fullmatch("not valid JSON") for p in patterns)
    assert not any(p.fullmatch("the line is haunted") for p in patterns)
    assert any(p.fullmatch("the log ends 12 lines after its last checkpoint (/var/log/a.jsonl:4): lines may have "
                           "been cut off (or the proxy is still running, or was killed)") for p in patterns)
