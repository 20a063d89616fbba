"""Shipping the audit chain to an S3 bucket with Object Lock (`audit.ship`), from a thread of its own.

Why a thread that reads the files: no request ever waits on the store, and nothing is lost
while the store is down, since what is not shipped yet is on disk (`proxy.audit.shiplines`),
not in memory. The thread wakes every second; it cuts a piece when a rotated (closed) file
has lines not shipped, or every `interval_seconds` when the open file has, first asking the
writer, on the event loop, for a checkpoint line (`AuditLog.checkpoint_now`) so that the
piece ends with a MAC'd checkpoint. A piece is uploaded under the next seq of its chain
(`proxy.audit.shiplayout`) with its retention (`proxy.audit.shipstore`); a failure is
retried with the same bytes under the same key, after a backoff that doubles up to a cap,
so a piece is never rewritten with other bytes.

Where to resume is asked of the bucket, which is the truth: the chain's id comes from the
first local line, its last shipped piece's last line is found in the local files, and the
pieces go on from there. So a process restarted on the same files ships what its
predecessor had not (a pod killed with SIGKILL loses only what its disk loses); and a
file that does not continue where the shipper's cursor is (`Discontinuity`: it moved
into a file a rotation had just renamed) sends it back to the bucket the same way.

On SIGTERM (`finish`, after the audit log's close wrote its closing checkpoint) the tail is
shipped, within `shutdown_seconds`; what could not be is logged, and stays on disk.
The age of the oldest line not shipped is `lag` (and a metric); with `required`, a lag past
`max_lag_seconds` makes the proxy refuse requests (`overdue`), as an unwritable log does.
"""

from __future__ import annotations

import asyncio
import calendar
import concurrent.futures
import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from proxy.audit.chain import GENESIS
from proxy.audit.shiplayout import chain_id, piece_key
from proxy.audit.shiplines import (
    Cursor,
    Discontinuity,
    Piece,
    chain_files,
    first_line,
    in_closed_file,
    line_hash,
    locate,
    next_piece,
    oldest_time,
    past_torn_end,
    start_cursor,
    unshipped,
)
from proxy.audit.shipstore import ShipStore
from proxy.audit.writer import AuditLog
from proxy.config.auditship import AuditShipConfig
from proxy.errors import ConfigError

if TYPE_CHECKING:   # proxy.metrics imports proxy.audit
    from proxy.metrics import Metrics

log = logging.getLogger("bailiwick.audit.ship")

# How often the thread looks at the files (for a rotation, and for the lag), in seconds.
POLL_SECONDS = 0.5
# A piece holds about this many bytes at most (a backlog after the store was down goes in several).
PIECE_BYTES = 16 * 1024 * 1024
# Backoff after a failure: from FIRST_BACKOFF, doubling, up to MAX_BACKOFF (and never above the interval).
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# How long the thread waits for the event loop to write a checkpoint before cutting without it.
_CHECKPOINT_WAIT = 5.0

_Failure = (BotoCoreError, ClientError, OSError, ValueError)


class ShipError(Exception):
    """Shipping cannot go on as things are (logged; retried after the backoff)."""


class Shipper:
    """Ships one worker's audit chain: `start` on the event loop, `finish` at shutdown."""

    def __init__(self, config: AuditShipConfig, region: str, audit: AuditLog, metrics: Metrics,
                 store: ShipStore | None = None) -> None:
        if audit.path in (None, "-"):
            raise ValueError("shipping needs an audit log in a file")
        self.config = config
        self.region = region
        self._audit = audit
        self._file = Path(str(audit.path))
        self._metrics = metrics
        self._store = store if store is not None else ShipStore(config, region)
        self._meta = {"bailiwick-worker": "" if audit.worker is None else str(audit.worker),
                      "bailiwick-host": socket.gethostname()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._deadline = float("inf")   # monotonic time by which the tail must be shipped, once stopping
        self._started = time.time()
        self._oldest: float | None = None   # Unix time of the oldest line not shipped (None: all shipped)
        self._pending: Piece | None = None  # cut, not yet uploaded: retried with the same bytes
        self._target: str | None = None     # the hash of the checkpoint the pieces being shipped end with
        self._region_ok = False
        self.finished_clean = False   # set when `finish` shipped everything

    # --- on the event loop ------------------------------------------------------------------------

    def check_region(self) -> None:
        """At start (blocking: run it off the loop). A bucket in another region is a `ConfigError`; a store that
        does not answer is only logged (the thread asks again before shipping)."""
        try:
            self._check_region()
        except _Failure as err:
            log.warning("audit shipping: the bucket %s does not answer yet (%s); shipping will retry",
                        self.config.bucket, err)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"bailiwick-ship-{self._file.name}", daemon=True)
        self._thread.start()

    @property
    def lag(self) -> float:
        """Seconds since the oldest line not shipped was written; 0 when everything is shipped."""
        oldest = self._oldest
        return 0.0 if oldest is None else max(time.time() - oldest, 0.0)

    @property
    def overdue(self) -> bool:
        """Shipping is required and lags more than `max_lag_seconds`: the proxy refuses requests."""
        return self.config.required and self.lag > self.config.max_lag_seconds

    def finish(self) -> bool:
        """Ship the tail (the audit log is closed by now), within `shutdown_seconds`; True if all is shipped.

        Blocking: run it off the loop."""
        if self._thread is None:
            return True
        self._deadline = time.monotonic() + self.config.shutdown_seconds
        self._stop.set()
        self._thread.join(self.config.shutdown_seconds + 1.0)
        if self._thread.is_alive() or not self.finished_clean:
            log.error("audit shipping: the tail of %s could not be shipped within %gs (audit.ship.shutdown_seconds); "
                      "it stays in the local files, and a proxy started on them ships it", self._file,
                      self.config.shutdown_seconds)
            return False
        log.info("audit shipping: %s shipped to its end", self._file)
        return True

    # --- on the shipper's thread -----------------------------------------------------------------

    def _check_region(self) -> None:
        where = self._store.bucket_region()
        if where != self.region:
            raise ConfigError(f"the bucket {self.config.bucket} is in {where}, not in the "
                              f"proxy's region {self.region}: the audit trail of a region stays in that region")
        self._region_ok = True

    def _run(self) -> None:
        cursor: Cursor | None = None
        relocate = False
        backoff = FIRST_BACKOFF
        next_cut = time.monotonic() + self.config.interval_seconds
        while True:
            final = self._stop.is_set()
            wait = POLL_SECONDS
            try:
                files = chain_files(self._file)
                if final and cursor is None and not _written(files):
                    # A log with no line yet has nothing to ship, whether the store answers or not.
                    self.finished_clean = True
                    break
                if not self._region_ok:
                    self._check_region()
                if cursor is None:
                    self._note_lag(files, cursor)
                if cursor is None or relocate:
                    cursor, relocate = self._resume(files), False
                if cursor is not None:
                    cursor = past_torn_end(files, cursor)
                self._note_lag(files, cursor)
                if cursor is not None:
                    due = final or time.monotonic() >= next_cut or in_closed_file(files, cursor)
                    if due and (self._pending is not None or unshipped(files, cursor) != 0):
                        cursor = self._ship(cursor, final)
                        next_cut = time.monotonic() + self.config.interval_seconds
                        self._note_lag(chain_files(self._file), cursor)
                backoff = FIRST_BACKOFF
                if final:
                    # Nothing left unshipped; with no cursor, that is a log with no line yet (nothing to ship).
                    self.finished_clean = self._oldest is None
                    break
            except (*_Failure, ShipError, ConfigError) as err:
                relocate = relocate or isinstance(err, Discontinuity)   # where the shipped part ends: the bucket says
                self._metrics.audit_ship_failures.inc()
                log.warning("audit shipping failed (retrying in %gs): %s", backoff, err)
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF, max(self.config.interval_seconds, 1.0))
                if final and time.monotonic() + wait > self._deadline:
                    break
            if not final:
                self._stop.wait(wait)   # a stop wakes it at once, for the last pass
                continue
            time.sleep(min(wait, max(self._deadline - time.monotonic(), 0.0)))
            if time.monotonic() >= self._deadline:
                break
        self._metrics.audit_ship_lag.set(self.lag)

    def _resume(self, files: list[Path]) -> Cursor | None:
        """Where the shipped part of the chain ends, from the bucket; None while the log has no line."""
        first = first_line(files)
        if first is None:
            return None
        if not first.startswith(b"{") or f'"prev":"{GENESIS}"'.encode() not in first:
            raise ShipError(f"the first line of {files[0]} does not start a chain (earlier files were removed?): "
                            "the chain's id, hence where it is shipped, is unknown")
        chain = chain_id(first)
        self._meta["bailiwick-chain"] = chain
        last = self._store.last_piece(chain)
        if last is None:
            log.info("audit shipping: chain %s starts at s3://%s/%s", chain, self.config.bucket,
                     piece_key(self.config.prefix, chain, 1))
            return start_cursor(files)
        seq, data = last
        digest = line_hash(data.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        where = None if digest is None else locate(files, digest)
        if digest is None or where is None:
            raise ShipError(f"piece {seq} of chain {chain} ends with a line that is not in the local files")
        log.info("audit shipping: chain %s resumes after piece %d", chain, seq)
        return Cursor(where[0], where[1], digest, seq)

    def _ship(self, cursor: Cursor, final: bool) -> Cursor:
        """Upload pieces up to a fresh checkpoint (at a stop: up to the end); the cursor after them.

        The checkpoint asked for is kept until a piece ends with it, so that retries while the store is
        down do not add a checkpoint each."""
        if final:
            self._target = None
        elif self._target is None:
            self._target = self._checkpoint()
        while True:
            piece = self._pending
            if piece is None:
                piece = next_piece(chain_files(self._file), cursor, self._target, cap=PIECE_BYTES)
                if piece is None:
                    self._target = None   # not on disk (the log failed, or it was cut already): ask again next time
                    return cursor
                self._pending = piece
            key = piece_key(self.config.prefix, self._meta["bailiwick-chain"], piece.end.seq)
            self._store.put_piece(key, piece.data, {**self._meta, "bailiwick-lines": str(piece.lines),
                                                    "bailiwick-last-hash": piece.last_hash})
            self._pending = None
            self._oldest = None   # the oldest line not shipped is further on now: looked up again
            cursor = piece.end
            self._metrics.audit_shipped_bytes.inc(len(piece.data))
            log.debug("audit shipping: %s (%d lines)", key, piece.lines)
            if piece.reached:
                self._target = None
                return cursor

    def _checkpoint(self) -> str | None:
        """Ask the writer (on the loop) to end its lines with a checkpoint; the hash of the line to cut at."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        done: concurrent.futures.Future[str] = concurrent.futures.Future()

        def cut() -> None:
            try:
                done.set_result(self._audit.checkpoint_now())
            except Exception as err:   # reported to the waiting thread, which cuts without a checkpoint
                done.set_exception(err)

        try:
            loop.call_soon_threadsafe(cut)
            target = done.result(_CHECKPOINT_WAIT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None
        self._audit.wait_written(_CHECKPOINT_WAIT)
        return target

    def _note_lag(self, files: list[Path], cursor: Cursor | None) -> None:
        if cursor is None:
            # Not resumed yet: what is on disk waits since the shipper started.
            self._oldest = self._started if _written(files) else None
        elif self._pending is None and unshipped(files, cursor) == 0:
            self._oldest = None
        elif self._oldest is None:
            # None while no complete line follows (one being written is not due yet).
            stamp = oldest_time(files, cursor)
            self._oldest = None if stamp is None else _unix(stamp) if stamp else time.time()
        self._metrics.audit_ship_lag.set(self.lag)


def _written(files: list[Path]) -> bool:
    """Whether the log's files hold anything at all."""
    return any(p.stat().st_size for p in files)


def _unix(stamp: str) -> float:
    """Unix time of an audit line's ``time`` (``2026-11-23T18:55:12.004Z``)."""
    whole, _, rest = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + int(rest.rstrip("Z") or 0) / 1000
