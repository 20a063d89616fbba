"""The audit log's writer: one JSON line per decision, hash-chained (`proxy.audit.chain`) so edits show.

Secrets never reach this module: callers pass only the fields of docs/operations.md, "Audit log",
and the checkpoint key is used for MACs, never written.

Why a writer thread: the proxy's event loop must never wait for a disk. On the
loop, `AuditLog.write` only hashes the line (the chain's order is the loop's
order) and adds it to the lines of the current turn of the loop; right after
that turn they are handed, as one batch, to a thread that writes and flushes
them (no fsync). A crash loses at most the batches not yet written. A failed
write makes `AuditLog.failed` true, which the proxy reads on every request and
from then on refuses everything. So does a disk that stops answering: a write
that has not returned after `STALL_SECONDS`, or more than `MAX_BACKLOG` bytes
handed over and not yet written, counts as a failure (a hung disk must not
turn into unbounded memory or into requests served without a record).
`close` hands over what is left, writes it and joins the thread, so a clean
shutdown loses nothing. Without a running loop (tools, tests) `write` returns
once its line is written.

Why standard output is written line by line: with ``--workers N`` every
process writes to the same pipe, and only writes of at most ``PIPE_BUF``
bytes are atomic on a pipe; whole lines in writes of that size (a line longer
than that alone) never interleave with another worker's.

Rotation (`max_bytes`) renames the current file and starts a new one that
continues the chain (`proxy.audit.files`); checkpoints (`checkpoint_key`) are
chained lines with a MAC (`proxy.audit.chain`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from proxy.audit.chain import CHECKPOINT_CLOSE, CHECKPOINT_INTERVAL, GENESIS, checkpoint_mac, encode
from proxy.audit.clock import UtcClock
from proxy.audit.files import ends_with_newline, last_line, newest_rotated, rotated_at_ms, rotated_name
from proxy.audit.record import AuditRecord

log = logging.getLogger("bailiwick.audit")

# A write to the audit log that has not returned after this long, or this many bytes waiting
# for the writer thread, means the disk is not keeping up: the log counts as failed.
STALL_SECONDS = 10.0
MAX_BACKLOG = 32 * 1024 * 1024
# Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF, 4096 on Linux).
_PIPE_ATOMIC = getattr(os, "PIPE_BUF", None) or 512


# What the writer thread takes from its queue: a batch of lines (and, when someone waits
# for it, an event set once it is written), or None to stop.
_Batch = tuple[str, threading.Event | None]


class AuditLog:
    """Appends chained records to a file (or standard output for ``"-"``) from a writer thread."""

    def __init__(self, path: str | None, worker: int | None = None, *, max_bytes: int = 0,
                 checkpoint_every: int = 1000, checkpoint_key: bytes | None = None) -> None:
        """`worker` (with several processes): each keeps its own chain, in its own file
        (``audit.jsonl`` becomes ``audit.worker1.jsonl``) or, on standard output, in
        lines marked ``"worker": N`` that `verify` chains separately.

        `max_bytes` (0: never): rotate the file before it would grow past this size.
        `checkpoint_key` (None: no checkpoints): the key of the checkpoint lines written
        every `checkpoint_every` lines and at `close`.
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (no rotation) or positive, got {max_bytes}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
        if checkpoint_key is not None and not checkpoint_key:
            raise ValueError("checkpoint_key must not be empty")
        self.worker = worker
        if path not in (None, "-") and worker is not None:
            file = Path(str(path))
            path = str(file.with_name(f"{file.stem}.worker{worker}{file.suffix}"))
        self.path = path
        self.max_bytes = max_bytes
        self.checkpoint_every = checkpoint_every
        self._key = checkpoint_key
        # Set when a write failed or the disk stopped keeping up (see `failed`).
        self._failed = False
        self._handed = 0        # bytes handed to the writer thread (written by the loop's side only)
        self._written = 0       # bytes the writer thread is done with (written by the thread only)
        self._busy_since = 0.0  # when the thread's current write began (monotonic), 0 when idle
        # The loop's side: the chain and the lines of this turn of the loop.
        self._prev = GENESIS
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._since_checkpoint = 0
        self._clock = UtcClock()
        self._sealed = True     # the chain ends with a closing checkpoint (or is empty): nothing to seal at close
        self._open = False
        # The writer thread's side: the file it writes and how big it is.
        self._out: IO[str] | None = None
        self._file: Path | None = None
        self._size = 0
        self._last_stamp_ms = 0   # rotated names only ever increase, even if the clock steps back
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if path is None:
            return
        if path == "-":
            self._out = sys.stdout
        else:
            self._file = Path(path)
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._resume()
            self._open_current()
        self._open = True
        # A daemon: an AuditLog nobody closes must not keep the interpreter alive (close() writes
        # everything and joins). Started here, after any fork of the server's workers.
        self._thread = threading.Thread(target=self._run, name=f"bailiwick-audit-{Path(path).name}", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return self._open

    @property
    def failed(self) -> bool:
        """True once a write failed or the disk fell behind (for good: the proxy then refuses everything)."""
        if self._failed:
            return True
        backlog = self._handed - self._written
        busy_since = self._busy_since
        if backlog > MAX_BACKLOG:
            self._fail(f"the audit log is {backlog} bytes behind (its disk is not keeping up); "
                       "refusing all requests")
        elif busy_since and time.monotonic() - busy_since > STALL_SECONDS:
            self._fail(f"a write to the audit log has not returned for over {STALL_SECONDS:g}s (its disk is not "
                       "answering); refusing all requests")
        return self._failed

    def _fail(self, message: str) -> None:
        if not self._failed:
            log.error("%s", message)
            self._failed = True

    # --- on the event loop --------------------------------------------------------------------

    def write(self, record: AuditRecord | dict[str, Any]) -> None:
        """Append `record` with its place in the chain (and a checkpoint after it when one is due)."""
        if not self._open:
            return
        self._append(record.to_dict() if isinstance(record, AuditRecord) else record)
        self._sealed = False
        self._since_checkpoint += 1
        if self._key is not None and self._since_checkpoint >= self.checkpoint_every:
            self._checkpoint(CHECKPOINT_INTERVAL)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand_over(wait=True)
            return
        # One batch for all the lines of this turn of the event loop, handed over right after it.
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the pending lines to the writer thread (without waiting for them to be written)."""
        self._flush_scheduled = False
        self._hand_over(wait=False)

    def wait_written(self, timeout: float | None = None) -> bool:
        """Block until every line handed over so far is written (or failed); False on timeout.

        For tools and tests: on the event loop, use it only where blocking is meant (shutdown).
        """
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("", done))
        return done.wait(timeout)

    def close(self) -> None:
        """Seal the chain (with a key), write every line still queued, stop the writer thread."""
        if not self._open:
            return
        if self._key is not None and not self._sealed:
            self._checkpoint(CHECKPOINT_CLOSE)
            self._sealed = True
        self._open = False
        self._hand_over(wait=False)
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _append(self, record: dict[str, Any]) -> None:
        record["prev"] = self._prev
        if self.worker is not None:
            record["worker"] = self.worker
        text = encode(record)
        digest = hashlib.sha256(text.encode()).hexdigest()
        self._prev = digest
        # The line is the canonical body with the hash appended: `verify` parses it and
        # recomputes the canonical form without "hash", so the order of keys is free.
        self._pending.append(f'{text[:-1]},"hash":"{digest}"}}\n')

    def _checkpoint(self, kind: str) -> None:
        assert self._key is not None
        record: dict[str, Any] = {
            "checkpoint": {"kind": kind, "lines": self._since_checkpoint},
            "prev": self._prev,
            "time": self._clock.now(),
        }
        if self.worker is not None:
            record["worker"] = self.worker
        record["checkpoint"]["mac"] = checkpoint_mac(self._key, record)
        self._append(record)
        self._since_checkpoint = 0

    def _hand_over(self, *, wait: bool) -> None:
        if not self._pending:
            return
        data = "".join(self._pending)
        self._pending.clear()
        self._handed += len(data)
        done = threading.Event() if wait else None
        self._queue.put((data, done))
        if done is not None:
            done.wait()

    # --- at start, on the caller's thread ---------------------------------------------------------

    def _resume(self) -> None:
        """Continue the chain from the current file's last line, or, when the current file is
        missing or empty (a rotation just happened), from the newest rotated file's."""
        assert self._file is not None
        newest = newest_rotated(self._file)
        if newest is not None:
            self._last_stamp_ms = rotated_at_ms(newest)
        tail = last_line(self._file) if self._file.exists() else b""
        if not tail and newest is not None:
            tail = last_line(newest)
        if not tail:
            return
        try:
            record = json.loads(tail)
            self._prev = str(record["hash"])
            checkpoint = record.get("checkpoint")
            self._sealed = isinstance(checkpoint, dict) and checkpoint.get("kind") == CHECKPOINT_CLOSE
        except (ValueError, KeyError, TypeError, AttributeError):
            # A damaged tail: chain on from it anyway; `verify` will point at it.
            self._prev = hashlib.sha256(tail).hexdigest()
            self._sealed = False

    # --- on the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            data, done = item
            if data and not self._failed:
                self._busy_since = time.monotonic()
                try:
                    self._store(data)
                except Exception:   # any failure: the thread must live on to answer close() and waiters
                    log.exception("the audit log could not be written; refusing all requests")
                    self._failed = True
                self._busy_since = 0.0
            self._written += len(data)
            if done is not None:
                done.set()
        self._close_file()

    def _store(self, data: str) -> None:
        """Write `data` (whole lines), rotating first whenever the next lines would pass max_bytes."""
        limit = self.max_bytes if self._file is not None else 0
        while data:
            if not limit or self._size + len(data) <= limit:
                self._emit(data)
                return
            # The lines are ASCII, so characters are bytes. Whole lines that still fit:
            cut = data.rfind("\n", 0, max(limit - self._size, 0)) + 1
            if cut == 0 and self._size == 0:
                cut = data.index("\n") + 1   # one line longer than max_bytes gets a file of its own
            if cut:
                self._emit(data[:cut])
                data = data[cut:]
            if data:
                self._rotate()

    def _emit(self, data: str) -> None:
        out = self._out
        if out is None:
            raise ValueError("the audit log is not open")
        if out is sys.stdout:
            _write_lines_atomically(out, data)
        else:
            out.write(data)
            out.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._file is not None
        self._close_file()
        stamp_ms = max(int(time.time() * 1000), self._last_stamp_ms + 1)
        while True:
            target = rotated_name(self._file, stamp_ms)
            if not target.exists():
                break
            stamp_ms += 1
        self._file.rename(target)
        self._last_stamp_ms = stamp_ms
        log.info("audit log rotated to %s", target)
        self._open_current()

    def _open_current(self) -> None:
        assert self._file is not None
        out = self._file.open("a", encoding="utf-8")
        try:
            self._size = self._file.stat().st_size
            if self._size and not ends_with_newline(self._file):
                # A line cut off mid-write (a crash): end it, so that the next line stays whole.
                out.write("\n")
                out.flush()
                self._size += 1
        except BaseException:
            out.close()
            raise
        self._out = out

    def _close_file(self) -> None:
        out = self._out
        if out is None:
            return
        try:
            if out is sys.stdout:
                out.flush()
            else:
                out.close()
        except (OSError, ValueError):
            log.exception("the audit log could not be closed cleanly")
            self._failed = True

    # --- for the shipper (proxy.audit.ship), on the event loop -----------------------------------

    def checkpoint_now(self) -> str:
        """End the lines so far with an `interval` checkpoint (with a key, when any were written since the
        last one), hand them to the writer thread, and return the hash of the chain's last line: where the
        shipper cuts its next piece, so that a piece ends with a MAC'd checkpoint."""
        if self._open:
            if self._key is not None and self._since_checkpoint:
                self._checkpoint(CHECKPOINT_INTERVAL)
            self.flush()
        return self._prev


def _write_lines_atomically(out: IO[str], data: str) -> None:
    """Write whole lines to `out`'s descriptor in writes a pipe keeps whole (see the module's docstring)."""
    out.flush()   # anything else the process printed goes first
    try:
        fd = out.fileno()
    except (OSError, ValueError):   # not backed by a descriptor (replaced in-process): nothing to share
        out.write(data)
        out.flush()
        return
    start = 0
    while start < len(data):
        end = data.rfind("\n", start, start + _PIPE_ATOMIC) + 1
        if end <= start:
            end = data.index("\n", start) + 1   # a line longer than PIPE_BUF: alone, in one write
        piece = data[start:end].encode("ascii")
        written = 0
        while written < len(piece):
            written += os.write(fd, piece[written:])
        start = end
