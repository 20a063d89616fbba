"""The space reserve ahead of the audit file, admission against it, and the bound of a line.

On a real 64 KiB tmpfs (`tiny_disk`): what the writer keeps allocated beyond
the end of the file, what it gives back at rotation and close, when `admit`
refuses (the reserve all claimed, or none to be had) and that it admits again
on its own once there is room.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog, AuditOutcome, AuditRecord, RecordedCaller, RecordedRequest, log_files, verify
from proxy.audit import reserve as reserve_module
from proxy.audit.bound import CHECKPOINT_BOUND, CUT_MARKER, LINE_BOUND, bounded
from proxy.config import load_config
from proxy.errors import AuditLogFull, ConfigError

from .disk import allocated, fill
from .logs import KEY

RESERVE = 16384


def record(resource: str = "s3://bucket/key", *, code: str | None = None, subject: str = "client-1") -> AuditRecord:
    return AuditRecord(
        "2026-12-06T19:22:37.123Z", "0123456789abcdef0123456789abcdef", AuditOutcome.ALLOW, "allowed", "mail",
        "rule", "v1", RecordedCaller("IE", "127.0.0.1", subject),
        RecordedRequest(None, "s3", None, "PUT", "PutObject", resource, 1, False), code, 200,
    )


@pytest.mark.parametrize(("resource", "subject"), [
    ("s3://bucket/" + "k" * 20_000, "client-1"),
    ("s3://bucket/" + "é" * 9_000, "client-1"),            # 6 bytes each in the ASCII line
    ("s3://bucket/" + "\U0001F600" * 5_000, "s" * 9_000),   # 12 bytes each; two long fields
])
def test_a_line_never_passes_its_bound_and_says_what_was_cut(tmp_path: Path, resource: str, subject: str) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(record(resource, subject=subject))
    log.close()
    (line,) = path.read_bytes().splitlines(keepends=True)
    assert len(line) <= LINE_BOUND
    written = json.loads(line)
    assert written["request"]["resource"].startswith("s3://bucket/" + resource[12:20])
    assert "[bailiwick: cut, " in written["request"]["resource"]
    assert written["decision_id"] == "0123456789abcdef0123456789abcdef"
    assert verify(path).ok


@pytest.mark.parametrize("fields", [
    {"decision_id": "d1", "request": {"resource": "s3://b/k"}},
    {"reason": "x" * 3000},
])
def test_a_line_within_its_bound_is_left_as_it_is(fields: dict[str, Any]) -> None:
    assert bounded(fields) is fields


def test_the_marker_counts_what_was_cut() -> None:
    cut = bounded({"reason": "x" * 10_000})["reason"]
    kept = cut.split("[", 1)[0]
    assert cut == kept + CUT_MARKER.format(10_000 - len(kept))


def test_the_writer_keeps_the_reserve_beyond_the_end_and_gives_it_back(tiny_disk: Path) -> None:
    path = tiny_disk / "audit.jsonl"
    log = AuditLog(str(path), reserve_bytes=RESERVE, max_bytes=4096)
    assert log.reserve_left == RESERVE
    assert allocated(path) >= RESERVE
    for n in range(100):   # several rotations
        log.write({"decision_id": f"d{n}", "decision": "allow"})
    assert log.wait_written(5)
    files = log_files([tiny_disk])[path]
    assert len(files) >= 3
    for rotated in files[:-1]:   # a rotated file holds its lines' pages only
        assert allocated(rotated) <= -(-rotated.stat().st_size // 4096) * 4096
    assert allocated(path) >= path.stat().st_size + RESERVE * 3 // 4
    log.close()
    assert allocated(path) <= -(-path.stat().st_size // 4096) * 4096
    assert verify(files).ok


@pytest.mark.parametrize("key", [None, KEY])
def test_admission_claims_a_line_per_request_until_the_reserve_is_taken(tiny_disk: Path, key: bytes | None) -> None:
    log = AuditLog(str(tiny_disk / "audit.jsonl"), reserve_bytes=RESERVE, checkpoint_key=key)
    claim = LINE_BOUND + (CHECKPOINT_BOUND if key else 0)
    room = (RESERVE - (CHECKPOINT_BOUND if key else 0)) // claim
    assert [log.admit() for _ in range(room)] == [None] * room
    refused = log.admit()
    assert refused is not None
    assert "taken by the lines of the requests in flight" in refused
    for n in range(room):   # the admitted requests end: their lines are written, their claims gone
        log.write(record(f"s3://bucket/{n}"))
    assert log.wait_written(5)
    assert log.admit() is None
    log.close()


def test_admission_keeps_room_for_the_checkpoint_the_shipper_may_ask_for(tiny_disk: Path) -> None:
    """Once lines follow the last checkpoint, a shipper may end them with one (`checkpoint_now`) before the
    closing one: both must fit beside the claims, or the closing checkpoint is what a full disk cuts."""
    claim = LINE_BOUND + CHECKPOINT_BOUND
    probe = AuditLog(str(tiny_disk / "probe" / "audit.jsonl"))
    probe.write(record())
    probe.close()
    line = (tiny_disk / "probe" / "audit.jsonl").stat().st_size
    # After the first line: room for 3 claims and the closing checkpoint, but not also the shipper's.
    log = AuditLog(str(tiny_disk / "audit.jsonl"), reserve_bytes=3 * claim + 2 * CHECKPOINT_BOUND + line - 1,
                   checkpoint_key=KEY)
    log.write(record())
    assert log.wait_written(5)
    admitted = 0
    while log.admit() is None and admitted < 10:
        admitted += 1
    assert admitted == 2
    log.checkpoint_now()   # the shipper cuts a piece: no line follows a checkpoint any more
    assert log.wait_written(5)
    assert log.admit() is None
    log.close()


def test_a_full_disk_refuses_until_there_is_room_again(tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_disk / "audit.jsonl"
    seen: list[tuple[int, bool]] = []
    dropped: list[int] = []
    log = AuditLog(str(path), reserve_bytes=RESERVE, checkpoint_key=KEY, on_reserve=lambda *s: seen.append(s),
                   on_dropped=lambda: dropped.append(1))
    filler = fill(tiny_disk, leave=0)
    written = 0
    while log.admit() is None and written < 100:
        log.write(record(f"s3://bucket/{written}"))
        assert log.wait_written(5)
        written += 1
    assert 0 < written < 100
    assert log.admit() is not None
    assert "the audit log's disk is full" in str(log.admit())
    assert seen[-1][1] is True   # exhausted, and said so
    for n in range(40):   # refusals: written while unclaimed reserve is left, then dropped and counted
        log.write(record(f"s3://bucket/refused/{n}", code=AuditLogFull.default_code))
    assert log.wait_written(5)
    assert dropped
    filler.unlink()
    deadline = time.monotonic() + 5
    while log.admit() is not None:
        assert time.monotonic() < deadline, "the writer did not reserve again once there was room"
        time.sleep(0.1)
    assert seen[-1] == (log.reserve_left, False)
    log.close()
    result = verify(path, checkpoint_key=KEY)
    assert result.sealed, (result.problem, result.warnings)
    assert result.lines == written + 40 - len(dropped) + sum(1 for _ in range(written // 1000)) + 1
    assert any("no space could be reserved" in r.message for r in caplog.records)


def test_without_fallocate_the_log_works_as_before_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(reserve_module, "_fallocate", None)
    with caplog.at_level(logging.WARNING, "bailiwick.audit"):
        log = AuditLog(str(tmp_path / "audit.jsonl"), reserve_bytes=RESERVE)
    assert "no space can be reserved ahead of the audit log" in caplog.text
    assert log.reserve_left is None
    assert all(log.admit() is None for _ in range(100))
    log.write(record())
    log.close()
    assert verify(tmp_path / "audit.jsonl").ok


def test_standard_output_has_no_reserve() -> None:
    log = AuditLog("-", reserve_bytes=RESERVE)
    assert log.reserve_left is None
    assert log.admit() is None
    log.close()


@pytest.mark.parametrize(("value", "accepted"), [(0, True), (16384, True), (1 << 30, True), (16383, False),
                                                 (-1, False)])
def test_reserve_bytes_is_checked_at_start(tmp_path: Path, value: int, accepted: bool) -> None:
    config = tmp_path / "bailiwick.yaml"
    config.write_text(f"audit:\n  reserve_bytes: {value}\n")
    if accepted:
        assert load_config(config, environ={}).audit.reserve_bytes == value
    else:
        with pytest.raises(ConfigError, match=r"audit\.reserve_bytes"):
            load_config(config, environ={})


def test_a_rotation_takes_the_new_file_s_reserve_before_the_old_one_goes_back(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else, between the two, another writer on the disk could take the room the lines still owed need."""
    calls: list[tuple[str, int]] = []
    real = reserve_module.fallocate

    def recorded(fd: int, mode: int, offset: int, length: int) -> None:
        calls.append(("release" if mode & 0x02 else "reserve", os.fstat(fd).st_ino))
        real(fd, mode, offset, length)

    monkeypatch.setattr(reserve_module, "fallocate", recorded)
    path = tiny_disk / "audit.jsonl"
    log = AuditLog(str(path), reserve_bytes=RESERVE, max_bytes=4096)
    first = path.stat().st_ino
    for n in range(40):
        log.write({"decision_id": f"d{n}", "decision": "allow"})
    assert log.wait_written(5)
    second = path.stat().st_ino
    assert second != first   # rotated
    moved = calls[calls.index(("reserve", first)) + 1:]   # after the first file's own reserve, at start
    assert moved.index(("reserve", second)) < moved.index(("release", first)), calls
    log.close()
