"""The audit log: hash chain, writer thread, rotation and keyed checkpoints, checked by `verify`.

The log is what an auditor relies on after the fact, so these tests tamper
with real files the way an attacker or a failing disk would, and check that
`verify` names the exact file and line; and they check that the proxy's event
loop never waits for the disk and that a clean shutdown loses no line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit import GENESIS, AuditLog, canonical, chain_hash, checkpoint_mac, log_files, verify
from proxy.audit import writer as audit_writer

KEY = b"checkpoint-key-for-tests-0123456789abcdef"
ROTATED = re.compile(r"^audit(\.worker\d+)?\.\d{8}T\d{6}\.\d{3}Z\.jsonl$")


def write_log(path: Path, count: int, **options: Any) -> AuditLog:
    log = AuditLog(str(path), **options)
    for n in range(count):
        log.write({"decision_id": f"d{n}", "decision": "allow"})
    log.close()
    return log


def lines_of(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for file in files for line in file.read_text().splitlines()]


def rehash(records: list[dict[str, Any]], prev: str = GENESIS) -> list[str]:
    """What an attacker without the key can do: recompute every hash after an edit."""
    out = []
    for record in records:
        record = {k: v for k, v in record.items() if k != "hash"}
        record["prev"] = prev
        record["hash"] = prev = chain_hash(record)
        out.append(json.dumps(record))
    return out


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


# --- the writer thread ------------------------------------------------------------------------


class Disk:
    """Stands in for the open file: records which thread writes, and can be slow or broken."""

    def __init__(self, real: Any, *, delay: float = 0.0, error: OSError | None = None) -> None:
        self.real = real
        self.delay = delay
        self.error = error
        self.threads: list[threading.Thread] = []

    def write(self, data: str) -> int:
        self.threads.append(threading.current_thread())
        if self.error is not None:
            raise self.error
        time.sleep(self.delay)
        return int(self.real.write(data))

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


class HungDisk(Disk):
    """A disk whose writes do not return until `answer` is set."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.answer = threading.Event()

    def write(self, data: str) -> int:
        self.answer.wait(30)
        return super().write(data)


@pytest.mark.parametrize("how", ["stalled-write", "backlog"])
async def test_a_disk_that_stops_keeping_up_fails_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    if how == "stalled-write":
        monkeypatch.setattr(audit_writer, "STALL_SECONDS", 0.2)
    else:
        monkeypatch.setattr(audit_writer, "MAX_BACKLOG", 2000)
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    disk = HungDisk(log._out)
    log._out = disk  # type: ignore[assignment]
    try:
        log.write({"n": 0})
        await asyncio.sleep(0)            # handed over; the write hangs
        assert not log.failed
        for n in range(1, 40):            # the backlog grows while the disk hangs
            log.write({"n": n, "pad": "p" * 100})
            await asyncio.sleep(0)
        if how == "stalled-write":
            assert not log.failed         # 40 short lines: well under the backlog limit
            await asyncio.sleep(0.3)
        assert log.failed
    finally:
        disk.answer.set()
        log.close()
    assert log.failed                     # for good, even once the disk answers again


STDOUT_WRITER = """
import asyncio, sys
from proxy.audit import AuditLog
log = AuditLog("-", worker=int(sys.argv[1]))
async def main():
    for batch in range(40):
        for n in range(300):             # ~90 KB a batch: more than a pipe holds
            log.write({"batch": batch, "n": n, "pad": "w" * 200})
        await asyncio.sleep(0)
asyncio.run(main())
log.close()
"""


def test_workers_sharing_standard_output_never_interleave_within_a_line(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    workers = [subprocess.Popen([sys.executable, "-c", STDOUT_WRITER, str(n)], stdout=write_end,
                                cwd=Path(__file__).resolve().parents[1]) for n in (1, 2)]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    assert [worker.wait(60) for worker in workers] == [0, 0]
    (tmp_path / "out.jsonl").write_bytes(output)
    records = [json.loads(line) for line in output.splitlines()]   # every line whole
    assert sorted({r["worker"] for r in records}) == [1, 2]
    assert len(records) == 2 * 40 * 300
    assert verify(tmp_path / "out.jsonl").ok   # each worker's chain, in its own order


async def test_lines_of_one_loop_turn_are_written_together(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    disk = Disk(log._out)
    log._out = disk  # type: ignore[assignment]
    for n in range(3):
        log.write({"n": n})
    await asyncio.sleep(0)                   # the turn ends: its lines go to the writer as one batch
    assert log.wait_written(5)
    assert len(path.read_text().splitlines()) == 3
    assert len(disk.threads) == 1
    log.write({"n": 3})
    log.close()                              # and nothing is lost at close
    assert len(path.read_text().splitlines()) == 4
    assert verify(path).ok


async def test_the_disk_is_written_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    disk = Disk(log._out, delay=0.3)   # a slow disk
    log._out = disk  # type: ignore[assignment]
    loop_thread = threading.current_thread()
    started = time.monotonic()
    for turn in range(3):
        log.write({"turn": turn})
        await asyncio.sleep(0)
    assert time.monotonic() - started < 0.2       # the loop never waited for it
    log.close()
    assert disk.threads
    assert all(t is not loop_thread and t is not threading.main_thread() for t in disk.threads)
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("options", [
    {},
    {"max_bytes": 20_000},
    {"checkpoint_every": 97, "checkpoint_key": KEY},
    {"max_bytes": 20_000, "checkpoint_every": 97, "checkpoint_key": KEY, "worker": 3},
])
async def test_close_loses_nothing_written_from_a_loop(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), **options)
    log._out = Disk(log._out, delay=0.001)  # type: ignore[assignment]  # the writer falls behind the loop

    async def client(number: int) -> None:
        for n in range(250):
            log.write({"client": number, "n": n})
            if n % 7 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(client(c) for c in range(8)))
    log.close()
    files = log_files([tmp_path])
    assert len(files) == 1
    (chain,) = files.values()
    records = lines_of(chain)
    decisions = [r for r in records if "checkpoint" not in r]
    assert len(decisions) == 2000
    assert sorted((r["client"], r["n"]) for r in decisions) == [(c, n) for c in range(8) for n in range(250)]
    result = verify(chain, checkpoint_key=options.get("checkpoint_key"))
    assert result.sealed, result
    if "max_bytes" in options:
        assert len(chain) > 2


@pytest.mark.parametrize("use_loop", [False, True])
def test_a_write_failure_on_the_thread_sets_failed(tmp_path: Path, use_loop: bool) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    real = log._out
    disk = Disk(real, error=OSError(28, "No space left on device"))
    log._out = disk  # type: ignore[assignment]
    assert not log.failed
    if use_loop:
        async def turn() -> None:
            log.write({"n": 0})
            await asyncio.sleep(0)     # the batch goes to the writer; the loop does not wait for it

        asyncio.run(turn())
        assert log.wait_written(5)
    else:
        log.write({"n": 0})            # without a loop, write returns once the writer is done
    assert log.failed
    assert disk.threads
    assert disk.threads[0] is not threading.current_thread()
    log.close()
    assert real is not None
    assert real.closed


def test_a_closed_log_is_not_enabled_and_ignores_writes(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.jsonl", 1)
    assert not log.enabled
    log.write({"n": 1})
    log.close()
    assert verify(tmp_path / "audit.jsonl").lines == 1
    assert not AuditLog(None).enabled


# --- rotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("worker", "count", "max_bytes"), [
    (None, 20, 600),
    (None, 3, 100_000),   # never reaches the limit: one file
    (4, 20, 600),
    (None, 5, 50),        # every line is longer than the limit: one file each
])
def test_rotation_keeps_the_chain_across_files(tmp_path: Path, worker: int | None, count: int, max_bytes: int) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, count, worker=worker, max_bytes=max_bytes)
    logs = log_files([tmp_path])
    current = path if worker is None else tmp_path / f"audit.worker{worker}.jsonl"
    assert list(logs) == [current]
    files = logs[current]
    assert files[-1] == current
    assert all(ROTATED.match(f.name) for f in files[:-1])
    assert [f.name for f in files[:-1]] == sorted(f.name for f in files[:-1])
    for file in files:
        size = file.stat().st_size
        assert size <= max_bytes or len(file.read_text().splitlines()) == 1
    # Each file's first line continues the previous file's last.
    for before, after in pairwise(files):
        assert json.loads(after.read_text().splitlines()[0])["prev"] == json.loads(
            before.read_text().splitlines()[-1])["hash"]
    assert [r["decision_id"] for r in lines_of(files)] == [f"d{n}" for n in range(count)]
    result = verify(files)
    assert result.ok, result
    assert (result.lines, result.files) == (count, len(files))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=30),
       max_bytes=st.integers(min_value=150, max_value=2000))
def test_rotation_splits_only_between_lines(sizes: list[int], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog(str(path), max_bytes=max_bytes)
        for n, size in enumerate(sizes):
            log.write({"n": n, "pad": "x" * size})
        log.close()
        (files,) = log_files([folder]).values()
        assert [r["n"] for r in lines_of(files)] == list(range(len(sizes)))
        for file in files:
            text = file.read_text()
            assert text.endswith("\n")
            assert len(text) <= max_bytes or text.count("\n") == 1
        assert verify(files).ok


def test_reopening_continues_from_the_newest_rotated_file_when_the_current_one_is_gone(tmp_path: Path) -> None:
    # A crash between renaming the full file and writing the next line leaves no current file.
    path = tmp_path / "audit.jsonl"
    write_log(path, 10, max_bytes=600)
    path.rename(tmp_path / "audit.29991231T235959.999Z.jsonl")
    write_log(path, 4, max_bytes=600)
    (files,) = log_files([tmp_path]).values()
    assert files[-1] == path
    assert verify(files).ok
    assert verify(files).lines == 14


def test_a_line_cut_off_by_a_crash_is_ended_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_text(path.read_text()[:-30])   # the last line's end never reached the disk
    write_log(path, 2)
    assert len(path.read_text().splitlines()) == 5   # the new lines are whole
    result = verify(path)
    assert (result.broken_at, result.problem) == (3, "not valid JSON")


def rotated_set(tmp_path: Path, count: int = 30, **options: Any) -> list[Path]:
    write_log(tmp_path / "audit.jsonl", count, max_bytes=600, **options)
    (files,) = log_files([tmp_path]).values()
    assert len(files) >= 4
    return files


def edit_line(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    record = json.loads(lines[line - 1])
    record["decision"] = "deny"
    lines[line - 1] = json.dumps(record)
    files[index].write_text("\n".join(lines) + "\n")
    return files[index], line


def delete_line(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    del lines[line - 1]
    files[index].write_text("\n".join(lines) + "\n")
    if line - 1 < len(lines):
        return files[index], line
    return files[index + 1], 1     # the file's last line: the next file no longer joins


def swap_lines(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    lines[line - 1], lines[line] = lines[line], lines[line - 1]
    files[index].write_text("\n".join(lines) + "\n")
    return files[index], line


def drop_file(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    files[index].unlink()
    del files[index]
    return files[index], 1


def swap_files(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    a, b = files[index], files[index + 1]
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)
    return a, 1


def cut_tail(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    files[index].write_text("\n".join(lines[:-1]) + "\n")
    return files[index + 1], 1


@pytest.mark.parametrize(("tamper", "index", "line", "problem"), [
    (edit_line, 0, 2, "edited"),
    (edit_line, 1, 1, "edited"),
    (edit_line, -1, 1, "edited"),
    (delete_line, 1, 2, "removed"),
    (delete_line, 0, 1, "not the start of a chain"),
    (delete_line, 1, 3, "last line of"),
    (swap_lines, 2, 2, "reordered"),
    (drop_file, 1, 0, "last line of"),
    (drop_file, 0, 0, "not the start of a chain"),
    (swap_files, 1, 0, "last line of"),
    (cut_tail, 1, 0, "last line of"),
])
def test_tampering_in_a_rotated_set_is_found_at_its_file_and_line(
    tmp_path: Path, tamper: Callable[[list[Path], int, int], tuple[Path, int]], index: int, line: int, problem: str,
) -> None:
    files = rotated_set(tmp_path)
    assert verify(files).ok
    index = index % len(files)
    if tamper is delete_line and line == 3:
        line = len(files[index].read_text().splitlines())     # the last line of that file
    expected = tamper(files, index, line)
    (found,) = log_files([tmp_path]).values()
    result = verify(found)
    assert not result.ok
    assert (result.file, result.broken_at) == expected, result.problem
    assert problem in result.problem


def test_a_set_whose_older_files_were_archived_verifies_when_told(tmp_path: Path) -> None:
    files = rotated_set(tmp_path)
    files[0].unlink()
    assert "not the start of a chain" in verify(files[1:]).problem
    assert verify(files[1:], starts_mid_chain=True).ok


@pytest.mark.parametrize(("paths", "expected"), [
    (["."], {"audit.jsonl": 4, "audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
    (["audit.jsonl"], {"audit.jsonl": 1}),
    (["audit.2*.jsonl", "audit.jsonl"], {"audit.jsonl": 4}),
    (["audit.worker*.jsonl"], {"audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
    (["audit.worker1.*Z.jsonl", "audit.worker1.jsonl", "."], {
        "audit.jsonl": 4, "audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
])
def test_log_files_groups_files_into_chains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[str], expected: dict[str, int],
) -> None:
    names = ["audit.20261123T185512.004Z.jsonl", "audit.20261123T185512.005Z.jsonl",
             "audit.20261124T000000.000Z.jsonl", "audit.jsonl",
             "audit.worker0.20261123T185512.004Z.jsonl", "audit.worker0.20261123T185513.000Z.jsonl",
             "audit.worker0.jsonl", "audit.worker1.20261123T185512.004Z.jsonl",
             "audit.worker1.20261123T185512.005Z.jsonl", "audit.worker1.jsonl", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    logs = log_files(paths)
    assert {key.name: len(files) for key, files in logs.items()} == expected
    for files in logs.values():
        assert files == sorted(files, key=lambda f: (not f.name.endswith("Z.jsonl"), f.name))


def test_log_files_refuses_a_path_with_no_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        log_files([tmp_path / "audit.*.jsonl"])


# --- keyed checkpoints --------------------------------------------------------------------------


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
    assert "ends 1 lines after its last checkpoint" in verify(path, checkpoint_key=KEY).warnings[0]
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
        assert f"ends {keep - last} lines after its last checkpoint ({path}:{last})" in warning
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
