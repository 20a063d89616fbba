"""The checkpoint the shipper asks of the writer (`AuditLog.checkpoint_now`) before it cuts a piece."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proxy.audit import AuditLog, verify
from proxy.audit.bound import CHECKPOINT_BOUND, LINE_BOUND

from .logs import KEY


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_a_piece_is_cut_after_a_fresh_checkpoint_and_only_when_lines_came_since(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), checkpoint_key=KEY, reserve_bytes=0)
    log.write({"decision_id": "d1"})
    cut = log.checkpoint_now()
    assert log.wait_written(5)
    written = lines(path)
    assert written[-1]["hash"] == cut
    assert written[-1]["checkpoint"] == {"kind": "interval", "lines": 1, "mac": written[-1]["checkpoint"]["mac"]}
    assert log.checkpoint_now() == cut   # nothing since: no second checkpoint, the same place to cut
    assert log.wait_written(5)
    assert len(lines(path)) == 2
    log.close()
    assert verify(path, checkpoint_key=KEY).sealed


def test_the_checkpoint_never_takes_the_space_reserved_for_admitted_requests(tiny_disk: Path) -> None:
    # A reserve just over three requests' claims once a line is written: admission keeps room for the
    # shipper's checkpoint and the closing one, and the checkpoint asked for in between must not take
    # the room an admitted request's line is owed (else the writer skips it: the piece ends at the last line).
    path = tiny_disk / "audit.jsonl"
    claim = LINE_BOUND + CHECKPOINT_BOUND
    log = AuditLog(str(path), checkpoint_key=KEY, reserve_bytes=CHECKPOINT_BOUND + 3 * claim + 2 * CHECKPOINT_BOUND)
    log.write({"decision_id": "d0", "reason": "x" * (CHECKPOINT_BOUND + 100)})
    assert log.wait_written(5)
    admitted = 0
    while log.admit() is None and admitted < 10:
        admitted += 1
    assert 1 <= admitted <= 3
    cut = log.checkpoint_now()
    assert log.wait_written(5)
    assert lines(path)[-1]["hash"] == cut
    for n in range(admitted):
        log.write({"decision_id": f"d{n + 1}", "reason": "y" * (LINE_BOUND - 1024)})
    log.close()
    written = lines(path)   # every line whole (json.loads of each), each admitted request's among them
    assert [line["decision_id"] for line in written if "decision_id" in line] == [
        f"d{n}" for n in range(admitted + 1)]
    assert written[-1]["checkpoint"]["kind"] == "close"
    assert verify(path, checkpoint_key=KEY).sealed
