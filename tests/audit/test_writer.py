"""`AuditLog`'s writer thread: the proxy's event loop never waits for the disk, a clean shutdown loses no line,
and a disk that fails or stops keeping up fails the log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog, log_files, verify
from proxy.audit import writer as audit_writer

from .logs import KEY, lines_of, write_log


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
                                cwd=Path(__file__).resolve().parents[2]) for n in (1, 2)]
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
