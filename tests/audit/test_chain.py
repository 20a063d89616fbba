"""The hash chain: canonical lines, each naming the one before, so that `verify` finds any edit at its line.

The log is what an auditor relies on after the fact, so these tests tamper
with real files the way an attacker or a failing disk would, and check that
`verify` names the exact line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.audit import GENESIS, AuditLog, canonical, chain_hash, checkpoint_mac, verify

from .logs import KEY, rehash, write_log


def test_chain_continues_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    write_log(path, 2)
    result = verify(path)
    assert result.ok
    assert result.lines == 5


def edit(lines: list[str]) -> list[str]:
    record = json.loads(lines[2])
    record["decision"] = "deny"
    return [*lines[:2], json.dumps(record), *lines[3:]]


@pytest.mark.parametrize(
    ("tamper", "line", "problem"),
    [
        (edit, 3, "edited"),
        (lambda lines: lines[:1] + lines[2:], 2, "removed"),
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2, "reordered"),
        (lambda lines: [*lines[:3], "garbage", *lines[3:]], 4, "not valid JSON"),
        (lambda lines: lines[1:], 1, "not the start of a chain"),
        (lambda lines: [*lines[:3], *rehash([json.loads(lines[3])]), *lines[4:]], 4, "a new chain starts here"),
    ],
)
def test_tampering_is_found_at_its_line(tmp_path: Path, tamper: object, line: int, problem: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(tamper(lines)) + "\n")  # type: ignore[operator]
    result = verify(path)
    assert not result.ok
    assert (result.file, result.broken_at) == (path, line)
    assert problem in result.problem


def test_workers_keep_their_own_chains(tmp_path: Path) -> None:
    # Several processes on one stream (standard output): lines interleave, each worker's chain holds.
    streams = [AuditLog(str(tmp_path / "unused.jsonl"), worker=n) for n in (0, 1)]
    assert [Path(str(s.path)).name for s in streams] == ["unused.worker0.jsonl", "unused.worker1.jsonl"]
    lines: list[str] = []
    for n in range(6):
        log = streams[n % 2]
        log.write({"n": n})
        assert log.path is not None
        lines.append(Path(log.path).read_text().splitlines()[-1])
    for log in streams:
        log.close()
    merged = tmp_path / "merged.jsonl"
    merged.write_text("\n".join(lines) + "\n")
    assert verify(merged).ok
    merged.write_text("\n".join([lines[0], lines[1], lines[3], lines[2], *lines[4:]]) + "\n")
    assert verify(merged).ok  # order across workers is free
    merged.write_text("\n".join([lines[0], lines[1], lines[4], lines[3], lines[2], lines[5]]) + "\n")
    assert not verify(merged).ok  # within one worker it is not


def test_standard_output_keeps_working(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = AuditLog("-", worker=2, checkpoint_every=2, checkpoint_key=KEY)
    for n in range(3):
        log.write({"n": n})
    log.close()
    out = capsys.readouterr().out
    copy = tmp_path / "stdout.jsonl"
    copy.write_text(out)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r.get("n") for r in records] == [0, 1, None, 2, None]    # checkpoints after 2 lines and at close
    assert {r["worker"] for r in records} == {2}
    result = verify(copy, checkpoint_key=KEY)
    assert result.sealed, result


@pytest.mark.parametrize("record", [
    {"a": 1, "prev": None, "z": {"b": None, "c": "é\n\"x\ud800"}},
    {"z": {"c": 1, "b": 2}, "a": "x"},
    {"caller": {"source": "", "jurisdiction": "IE"}, "prev": None, "n": [1, None, True]},
])
def test_every_line_is_canonical_json(tmp_path: Path, record: dict[str, object]) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(dict(record))
    log.close()
    line = json.loads(path.read_text())
    body = path.read_bytes().rstrip(b"\n")
    assert body.isascii()   # any text, even a lone surrogate, is written (escaped)
    expected = canonical({k: v for k, v in line.items() if k != "hash"})[:-1] + f',"hash":"{line["hash"]}"}}'.encode()
    assert body == expected
    assert verify(path).ok
    # The encoder made once is json's own canonical form.
    assert canonical(record) == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def test_the_hash_and_the_mac_are_the_documented_ones() -> None:
    """Fixed values, computed outside Python from the canonical text the module docstring describes:
    ``printf '%s' '<json>' | sha256sum`` and ``| openssl dgst -sha256 -hmac <key>``. An auditor's own
    tool computes the same, so the values must never change with the code."""
    line = {"subject": "\u00e9", "prev": GENESIS, "n": 1, "decision_id": "d0", "decision": "allow", "hash": "x"}
    # {"decision":"allow","decision_id":"d0","n":1,"prev":"000...0","subject":"\u00e9"}
    assert chain_hash(line) == "a938fac16d3f878694f31d5ab247a24a79eea6d76a5ffd655fe7ecd8be25d0db"
    checkpoint = {"prev": "1" * 64, "checkpoint": {"kind": "close", "lines": 2, "mac": "x"}, "hash": "y"}
    # {"checkpoint":{"kind":"close","lines":2},"prev":"111...1"}, keyed with the tests' checkpoint key
    assert checkpoint_mac(KEY, checkpoint) == "5d80ee149580aae8bc44d63598968e22a2a2a0708c585016465dfe712ab7ef83"
