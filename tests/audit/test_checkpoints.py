"""Keyed checkpoints: with the key, `verify` tells a sealed log from one whose tail was cut off or that was
rewritten."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog, checkpoint_mac, log_files, verify

from .logs import KEY, lines_of, rehash, write_log


def keyed_log(tmp_path: Path, count: int = 10, every: int = 3, **options: Any) -> list[Path]:
    write_log(tmp_path / "audit.jsonl", count, checkpoint_every=every, checkpoint_key=KEY, **options)
    (files,) = log_files([tmp_path]).values()
    return files


def test_checkpoints_are_chained_lines_with_a_mac(tmp_path: Path) -> None:
    files = keyed_log(tmp_path, count=7, every=3)
    records = lines_of(files)
    kinds = [r["checkpoint"]["kind"] if "checkpoint" in r else "line" for r in records]
    assert kinds == ["line"] * 3 + ["interval"] + ["line"] * 3 + ["interval", "line", "close"]
    assert [r["checkpoint"]["lines"] for r in records if "checkpoint" in r] == [3, 3, 1]
    for record in records:
        if "checkpoint" in record:
            assert set(record) == {"checkpoint", "prev", "hash", "time"}
            assert record["checkpoint"]["mac"] == checkpoint_mac(KEY, record)
    text = "".join(f.read_text() for f in files)
    assert KEY.decode() not in text   # the key is never written
    assert KEY.hex() not in text
    result = verify(files, checkpoint_key=KEY)
    assert result.sealed, result
    assert result.checkpoints == 3
    assert result.sealed_at == records[-1]["time"]
    assert verify(files).ok    # without the key, checkpoints are ordinary lines


def test_a_restart_continues_and_seals_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4, checkpoint_every=3, checkpoint_key=KEY)
    write_log(path, 0, checkpoint_every=3, checkpoint_key=KEY)   # nothing written: no second seal
    write_log(path, 2, checkpoint_every=3, checkpoint_key=KEY)
    kinds = [r.get("checkpoint", {}).get("kind") for r in lines_of([path])]
    assert kinds == [None, None, None, "interval", None, "close", None, None, "close"]
    assert verify(path, checkpoint_key=KEY).sealed


def test_a_killed_writer_is_sealed_by_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    killed = AuditLog(str(path), checkpoint_every=3, checkpoint_key=KEY)
    for n in range(4):
        killed.write({"n": n})
    # SIGKILL: the writer stops where it is, no closing checkpoint.
    killed._open = False
    killed._queue.put(None)
    assert killed._thread is not None
    killed._thread.join()
    assert "ends 1 line after its last checkpoint" in verify(path, checkpoint_key=KEY).warnings[0]
    write_log(path, 0, checkpoint_key=KEY)   # the next process seals what it found
    assert verify(path, checkpoint_key=KEY).sealed


@pytest.mark.parametrize("keep", range(14))
def test_every_cut_tail_is_detected_with_the_key(tmp_path: Path, keep: int) -> None:
    files = keyed_log(tmp_path, count=10, every=3)
    (path,) = files
    lines = path.read_text().splitlines()
    assert len(lines) == 14       # 10 lines, 3 periodic checkpoints, the closing one
    path.write_text("".join(line + "\n" for line in lines[:keep]))
    assert verify(path).ok        # without the key a cut tail is a valid shorter chain
    result = verify(path, checkpoint_key=KEY)
    assert result.ok
    if keep == 0:
        assert result.warnings == ()   # nothing at all is left to judge
        return
    assert not result.sealed
    (warning,) = result.warnings
    last = max((n for n, line in enumerate(lines[:keep], 1) if "checkpoint" in line), default=0)
    if last == 0:
        assert "the log has no checkpoint" in warning
    elif last == keep:
        assert f"ends at a periodic checkpoint ({path}:{last})" in warning
    else:
        cut = keep - last
        assert f"ends {cut} {'line' if cut == 1 else 'lines'} after its last checkpoint ({path}:{last})" in warning
        assert "lines may have been cut off" in warning


def forge_edit(records: list[dict[str, Any]]) -> int:
    records[1]["decision"] = "deny"       # then every hash after it is recomputed
    return 4                              # the first checkpoint after the edit


def forge_checkpoint(records: list[dict[str, Any]]) -> int:
    records[3]["checkpoint"]["lines"] = 2
    return 4


def forge_with_another_key(records: list[dict[str, Any]]) -> int:
    del records[5:]
    checkpoint: dict[str, Any] = {"checkpoint": {"kind": "close", "lines": 1}, "prev": "", "time": "t"}
    records.append(checkpoint)
    rehashed = [json.loads(line) for line in rehash(records)]
    checkpoint["prev"] = rehashed[-2]["hash"]
    checkpoint["checkpoint"]["mac"] = checkpoint_mac(b"another key, not the right one!!", checkpoint)
    return 6


def forge_kind(records: list[dict[str, Any]]) -> int:
    del records[8:]
    records[7]["checkpoint"]["kind"] = "close"   # pass a cut at a periodic checkpoint off as the end
    return 8


def forge_malformed(records: list[dict[str, Any]]) -> int:
    records[3]["checkpoint"] = "trust me"
    return 4


@pytest.mark.parametrize(("forge", "problem"), [
    (forge_edit, "MAC does not match"),
    (forge_checkpoint, "MAC does not match"),
    (forge_with_another_key, "MAC does not match"),
    (forge_kind, "MAC does not match"),
    (forge_malformed, "malformed checkpoint"),
])
def test_a_rewritten_chain_fails_the_checkpoint_mac(
    tmp_path: Path, forge: Callable[[list[dict[str, Any]]], int], problem: str,
) -> None:
    (path,) = keyed_log(tmp_path, count=10, every=3)
    records = lines_of([path])
    line = forge(records)
    path.write_text("".join(line + "\n" for line in rehash(records)))
    assert verify(path).ok            # a consistent chain: only the key tells
    result = verify(path, checkpoint_key=KEY)
    assert (result.file, result.broken_at) == (path, line)
    assert problem in result.problem


def test_stripping_every_checkpoint_leaves_an_unsealed_log(tmp_path: Path) -> None:
    (path,) = keyed_log(tmp_path, count=10, every=3)
    records = [r for r in lines_of([path]) if "checkpoint" not in r]
    path.write_text("".join(line + "\n" for line in rehash(records)))
    result = verify(path, checkpoint_key=KEY)
    assert result.ok
    assert result.warnings == ("the log has no checkpoint: none of its 10 lines is sealed, lines may have been "
                               "cut off (or the proxy writes no checkpoints)",)


def test_checkpoints_cross_rotation_and_workers(tmp_path: Path) -> None:
    for worker in (0, 1):
        write_log(tmp_path / "audit.jsonl", 25, worker=worker, max_bytes=900, checkpoint_every=4, checkpoint_key=KEY)
    logs = log_files([tmp_path])
    assert [key.name for key in logs] == ["audit.worker0.jsonl", "audit.worker1.jsonl"]
    for files in logs.values():
        assert len(files) > 3
        result = verify(files, checkpoint_key=KEY)
        assert result.sealed, result
        assert result.checkpoints == 7     # 6 periodic, 1 closing
    # A cut of the newest file's tail shows, whichever file it is in.
    current = logs[tmp_path / "audit.worker1.jsonl"][-1]
    current.write_text("".join(line + "\n" for line in current.read_text().splitlines()[:-1]))
    assert not verify(logs[tmp_path / "audit.worker1.jsonl"], checkpoint_key=KEY).sealed


@pytest.mark.parametrize(("options", "error"), [
    ({"max_bytes": -1}, "max_bytes"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"checkpoint_key": b""}, "checkpoint_key"),
])
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AuditLog(str(tmp_path / "audit.jsonl"), **options)
