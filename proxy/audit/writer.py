"""The audit log's writer: one JSON line per decision, hash-chained (`proxy.audit.chain`) so edits show.

Secrets never reach this module: callers pass only the fields of docs/operations.md, "Audit log",
and the checkpoint key is used for MACs, never written.

Why a writer thread: the proxy's event loop must never wait for a disk. On the
loop, `AuditLog.write` only hashes the line (the chain's order is the loop's
order) and adds it to the lines not yet handed over; `HAND_OVER_SECONDS` after
the first of them (or as soon as they reach `HAND_OVER_BYTES`) they are handed,
as one batch, to a thread that writes and flushes them (no fsync). A crash
loses at most the batches not yet written.

Why a few milliseconds rather than each turn of the loop: at moderate rates
every request has a turn of its own, and a hand-off per turn woke the thread
(and passed the GIL back and forth) once per request; batching wakes it once
per 5 ms (or per 64 KiB of lines) instead. A line reaches the file at most
those milliseconds later; the answer never waited for it anyway. A failed
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

Why `admit`: a forwarded request must get its whole line even when the disk
fills up. With `reserve_bytes`, the writer thread keeps that much space
allocated ahead of the file (`proxy.audit.reserve`), and the proxy forwards a
request only when what is left of it covers every line still owed (each at
most `proxy.audit.bound.LINE_BOUND`) plus this one. A request refused for want
of that space (`AuditLogFull`) has its line written only while unclaimed
reserve remains; otherwise the line is dropped and counted (`on_dropped`).
Standard output has no reserve.

Why this module is over 400 lines: the loop's side (the chain, admission)
and the thread's side (files, rotation, the reserve) share the counts of
bytes handed over and written, which `failed` and `admit` both read; split
in two, each half would reach into the other's state.

Why a restart rotates a file that ends in a partial line (a crash, or a disk
that filled without a reserve): the chain goes on from the last complete
line, in a new file, so the partial line stays the end of a rotated file,
which `verify` accepts (and names); ending it with a newline in place would
make it a corrupt line in the middle of the log.
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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from proxy.audit.bound import CHECKPOINT_BOUND, LINE_BOUND, bounded
from proxy.audit.chain import CHECKPOINT_CLOSE, CHECKPOINT_INTERVAL, GENESIS, checkpoint_mac, encode
from proxy.audit.clock import UtcClock
from proxy.audit.files import ends_with_newline, last_complete_line, newest_rotated, rotated_at_ms, rotated_name
from proxy.audit.record import AuditRecord
from proxy.audit.reserve import RETRY_SECONDS, Reserve, release_beyond
from proxy.errors import AuditLogFull

log = logging.getLogger("bailiwick.audit")

# A write to the audit log that has not returned after this long, or this many bytes waiting
# for the writer thread, means the disk is not keeping up: the log counts as failed.
STALL_SECONDS = 10.0
MAX_BACKLOG = 32 * 1024 * 1024
# The lines of the loop's turns are handed to the writer thread together, at most this long after the first
# of them, or at once when they reach this size: one wake-up of the thread per batch, not one per turn.
HAND_OVER_SECONDS = 0.005
HAND_OVER_BYTES = 64 * 1024
# The longest canonical text of a line before its hash: the hash (,"hash":"<64>") and the newline make LINE_BOUND.
_LONGEST = LINE_BOUND - 77
# Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF, 4096 on Linux).
_PIPE_ATOMIC = getattr(os, "PIPE_BUF", None) or 512


# What the writer thread takes from its queue: a batch of lines (and, when someone waits
# for it, an event set once it is written), or None to stop.
_Batch = tuple[str, threading.Event | None]


class AuditLog:
    """Appends chained records to a file (or standard output for ``"-"``) from a writer thread."""

    def __init__(self, path: str | None, worker: int | None = None, *, max_bytes: int = 0,
                 checkpoint_every: int = 1000, checkpoint_key: bytes | None = None, reserve_bytes: int = 0,
                 on_reserve: Callable[[int, bool], None] | None = None,
                 on_dropped: Callable[[], None] | None = None) -> None:
        """`worker` (with several processes): each keeps its own chain, in its own file
        (``audit.jsonl`` becomes ``audit.worker1.jsonl``) or, on standard output, in
        lines marked ``"worker": N`` that `verify` chains separately.

        `max_bytes` (0: never): rotate the file before it would grow past this size.
        `checkpoint_key` (None: no checkpoints): the key of the checkpoint lines written
        every `checkpoint_every` lines and at `close`.
        `reserve_bytes` (0: none): the space kept reserved ahead of a log file (see `admit`);
        `on_reserve(left, exhausted)` hears how it stands (from the writer thread), `on_dropped()`
        of each refusal's line dropped for want of space.
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
        # Space: what one admitted request's lines may take (its line, and a checkpoint it may bring), what
        # is always kept for the closing checkpoint, and what admitted requests still owe (the loop's side).
        self._reserve = Reserve(reserve_bytes) if path not in (None, "-") else Reserve(0)
        self._aside = CHECKPOINT_BOUND if checkpoint_key is not None else 0
        self._claim = LINE_BOUND + self._aside
        self._claimed = 0
        self._pending_bytes = 0
        self._on_reserve = on_reserve
        self._on_dropped = on_dropped
        self._published: tuple[int, bool] | None = None
        # Set when a write failed or the disk stopped keeping up (see `failed`).
        self._failed = False
        self._handed = 0        # bytes handed to the writer thread (written by the loop's side only)
        self._written = 0       # bytes the writer thread is done with (written by the thread only)
        self._busy_since = 0.0  # when the thread's current write began (monotonic), 0 when idle
        # The loop's side (the thread that made the log, the loop's): the chain and the lines not yet handed over.
        self._owner = threading.get_ident()
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
            self._open_current(first=True)
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
        backlog = self._handed - self._written + self._pending_bytes
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

    @property
    def reserve_left(self) -> int | None:
        """Bytes reserved ahead of the file and not yet written into (None: no reserve is kept)."""
        return self._reserve.left if self._reserve.supported else None

    @property
    def out_of_space(self) -> bool:
        """No space could be reserved ahead of the file (its disk is full): every new request is refused."""
        return self._open and self._reserve.supported and self._reserve.exhausted

    def admit(self) -> str | None:
        """Claim room for one more request's line: None if there is room, else why not (refuse the request).

        Room: the reserve left covers what was handed to the writer and not yet written, the lines of this
        turn of the loop, the claims of requests admitted before, the closing checkpoint, and this claim.
        """
        reserve = self._reserve
        if not reserve.supported or not self._open:
            return None
        if reserve.exhausted:
            return ("the audit log's disk is full: no space could be reserved for the audit lines of new "
                    "requests, so none is forwarded until there is (retry later)")
        if reserve.left < self._owed() + self._claim:
            return ("the space reserved for the audit log (audit.reserve_bytes) is taken by the lines of the "
                    "requests in flight, so this one is not forwarded (retry later)")
        self._claimed += self._claim
        return None

    def _owed(self) -> int:
        """Bytes the reserve must still hold: lines not yet written, claims not yet lines, the closing checkpoint,
        and, while lines follow the last checkpoint, the one the shipper may ask for (`checkpoint_now`): it
        comes after their claims were settled, so no claim holds room for it."""
        checkpoints = 2 if self._since_checkpoint else 1
        return self._handed - self._written + self._pending_bytes + self._claimed + self._aside * checkpoints

    def _has_room(self, record: AuditRecord | dict[str, Any], line: dict[str, Any]) -> bool:
        """Settle `record`'s claim; False for a refusal's line that finds no unclaimed reserve (not written).

        Every line but an `AuditLogFull` refusal's is taken as an admitted request's: the proxy admits a
        request before anything else may refuse it (`proxy.gateway`)."""
        if not isinstance(record, AuditRecord) or record.error_code != AuditLogFull.default_code:
            self._claimed = max(0, self._claimed - self._claim)   # an admitted request's line
            return True
        # This line as written (its chain fields take under 256 bytes), and a checkpoint it may bring.
        if self._reserve.left >= self._owed() + min(len(encode(line)) + 256, LINE_BOUND) + self._aside:
            return True
        if self._on_dropped is not None:
            self._on_dropped()
        return False

    # --- on the event loop --------------------------------------------------------------------

    def write(self, record: AuditRecord | dict[str, Any]) -> None:
        """Append `record` with its place in the chain (and a checkpoint after it when one is due)."""
        if not self._open:
            return
        line = record.to_dict() if isinstance(record, AuditRecord) else record
        if self._reserve.supported and not self._has_room(record, line):
            return
        self._append(line)
        self._sealed = False
        self._since_checkpoint += 1
        if self._key is not None and self._since_checkpoint >= self.checkpoint_every:
            self._checkpoint(CHECKPOINT_INTERVAL)
        if self._flush_scheduled:
            if self._pending_bytes >= HAND_OVER_BYTES:
                self._hand_over(wait=False)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand_over(wait=True)
            return
        # One batch for the lines of the turns of the next few milliseconds, handed over after them.
        self._flush_scheduled = True
        loop.call_later(HAND_OVER_SECONDS, self.flush)

    def flush(self) -> None:
        """Hand the pending lines to the writer thread (without waiting for them to be written)."""
        self._flush_scheduled = False
        self._hand_over(wait=False)

    def wait_written(self, timeout: float | None = None) -> bool:
        """Block until every line written so far is written to the log (or failed); False on timeout.

        For tools and tests: on the event loop, use it only where blocking is meant (shutdown).
        """
        if self._thread is None or not self._thread.is_alive():
            return True
        if threading.get_ident() == self._owner:   # another thread (the shipper's) must not touch the loop's side
            self._hand_over(wait=False)
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
        if len(text) > _LONGEST:   # rare: its longest strings are cut (proxy.audit.bound), never the chain's
            record = bounded({k: v for k, v in record.items() if k not in ("prev", "worker")})
            record["prev"] = self._prev
            if self.worker is not None:
                record["worker"] = self.worker
            text = encode(record)
        digest = hashlib.sha256(text.encode()).hexdigest()
        self._prev = digest
        # The line is the canonical body with the hash appended: `verify` parses it and
        # recomputes the canonical form without "hash", so the order of keys is free.
        line = f'{text[:-1]},"hash":"{digest}"}}\n'
        self._pending.append(line)
        self._pending_bytes += len(line)

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
        self._pending_bytes = 0
        done = threading.Event() if wait else None
        self._queue.put((data, done))
        if done is not None:
            done.wait()

    # --- at start, on the caller's thread ---------------------------------------------------------

    def _resume(self) -> None:
        """Continue the chain from the current file's last complete line, or, when the current file is
        missing or empty (a rotation just happened), from the newest rotated file's.

        A current file that ends in a partial line is rotated away first (see the module's docstring).
        """
        assert self._file is not None
        newest = newest_rotated(self._file)
        if newest is not None:
            self._last_stamp_ms = rotated_at_ms(newest)
        tail = b""
        if self._file.exists() and self._file.stat().st_size:
            tail = last_complete_line(self._file)
            if not ends_with_newline(self._file):
                with self._file.open("ab") as torn:   # a crashed writer's reserve, if any, goes back
                    release_beyond(torn.fileno(), torn.tell())
                log.warning("the audit log %s ends in a partial line (cut short by a full disk or a crash): "
                            "rotated away, the chain goes on from its last complete line", self._file)
                self._rename_current()
        if not tail and newest is not None:
            tail = last_complete_line(newest)
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
            if self._reserve.exhausted:
                try:
                    item = self._queue.get(timeout=RETRY_SECONDS)
                except queue.Empty:
                    if self._out is not None:
                        self._reserve.retry(self._out.fileno(), self._size)
                        self._publish()
                    continue
            else:
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
        self._release_reserve()
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
        if self._reserve.supported:
            self._reserve.wrote(out.fileno(), self._size)
            self._publish()

    def _rotate(self) -> None:
        """The current file becomes a rotated one; a new current file takes over, with its reserve taken
        before the old file's goes back (`Reserve.move`)."""
        old, old_size = self._out, self._size
        if old is None:
            raise ValueError("the audit log is not open")
        old.flush()
        target = self._rename_current()   # still open: its reserve holds until the new file has one
        log.info("audit log rotated to %s", target)
        try:
            self._open_current(rotated=(old.fileno(), old_size) if self._reserve.supported else None)
        finally:
            self._close_file(old)

    def _rename_current(self) -> Path:
        assert self._file is not None
        stamp_ms = max(int(time.time() * 1000), self._last_stamp_ms + 1)
        while True:
            target = rotated_name(self._file, stamp_ms)
            if not target.exists():
                break
            stamp_ms += 1
        self._file.rename(target)
        self._last_stamp_ms = stamp_ms
        return target

    def _open_current(self, *, first: bool = False, rotated: tuple[int, int] | None = None) -> None:
        """Open the current file (`rotated`: the descriptor and size of the file it takes over from)."""
        assert self._file is not None
        out = self._file.open("a", encoding="utf-8")
        try:
            self._size = self._file.stat().st_size
            if self._reserve.supported:
                if first:   # what a killed predecessor had reserved beyond the end goes back first
                    release_beyond(out.fileno(), self._size)
                if rotated is not None:
                    self._reserve.move(*rotated, out.fileno(), self._size)
                else:
                    self._reserve.start(out.fileno(), self._size)
                self._publish()
        except BaseException:
            out.close()
            raise
        self._out = out

    def _publish(self) -> None:
        """Tell `on_reserve` how the reserve stands, when that changed."""
        state = (self._reserve.left, self._reserve.exhausted)
        if self._on_reserve is not None and state != self._published:
            self._published = state
            self._on_reserve(*state)

    def _release_reserve(self) -> None:
        """Give back the current file's unused reserve (before closing it)."""
        out = self._out
        if out is None or out is sys.stdout or not self._reserve.supported:
            return
        try:
            out.flush()
            self._reserve.release(out.fileno(), self._size)
        except (OSError, ValueError):
            return   # closing reports what is wrong with the file

    def _close_file(self, out: IO[str] | None = None) -> None:
        """Close `out` (default: the current file)."""
        out = out or self._out
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
        shipper cuts its next piece, so that a piece ends with a MAC'd checkpoint.

        No checkpoint when the reserve left would not hold it besides what is owed (the lines of requests
        admitted, the closing checkpoint): it is not theirs to take; the piece then ends at the last line."""
        if self._open:
            # `_owed` already holds this checkpoint's room (lines follow the last one), beside the closing one's.
            room = not self._reserve.supported or self._reserve.left >= self._owed()
            if self._key is not None and self._since_checkpoint and room:
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
