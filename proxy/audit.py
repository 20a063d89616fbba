"""The audit log: one JSON line per decision, hash-chained so edits show.

Each line carries ``prev`` (the previous line's hash) and ``hash`` (SHA-256
over the line's canonical JSON without ``hash``). Editing, removing or
reordering a line breaks the chain at that point, which `verify` reports.
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

Why rotation keeps the chain: a file is only where the lines land. When the
next lines would take the current file past ``max_bytes``, the writer renames
it to ``STEM.YYYYMMDDTHHMMSS.mmmZ.SUFFIX`` (UTC time of the rotation, made
unique and increasing, so names sort in order) and opens a new current file
whose first line's ``prev`` is the last hash of the renamed one. Rotated files
are never deleted here; shipping them away is the log collector's job.

Why keyed checkpoints: anyone can recompute SHA-256, so a chain alone cannot
show that lines were cut off its end, or that it was rewritten from some
point on. With a ``checkpoint_key``, every ``checkpoint_every`` lines and at
`close` the log gets a chained checkpoint line whose MAC (HMAC-SHA256 with
the key) covers the line, hence the hash of the line before it, hence
everything before. Someone holding the key can then tell a log that ends
with its closing checkpoint from one whose tail was cut off (or whose
writer was killed: SIGKILL leaves no closing checkpoint).
"""

from __future__ import annotations

import asyncio
import calendar
import glob
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("bailiwick.audit")

GENESIS = "0" * 64

# A write to the audit log that has not returned after this long, or this many bytes waiting
# for the writer thread, means the disk is not keeping up: the log counts as failed.
STALL_SECONDS = 10.0
MAX_BACKLOG = 32 * 1024 * 1024
# Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF, 4096 on Linux).
_PIPE_ATOMIC = getattr(os, "PIPE_BUF", None) or 512

CHECKPOINT_INTERVAL = "interval"   # every `checkpoint_every` lines
CHECKPOINT_CLOSE = "close"         # the last line a clean shutdown writes

# A rotated file: STEM.<UTC time of its rotation, to the millisecond>SUFFIX.
_ROTATED = re.compile(r"^(?P<stem>.+)\.(?P<stamp>\d{8}T\d{6}\.\d{3}Z)(?P<suffix>(?:\.[^.]*)?)$")
_STAMP_FORMAT = "%Y%m%dT%H%M%S"


def _canonical_encoder() -> Callable[[dict[str, Any]], str]:
    """Sorted keys, no spaces, ASCII only.

    ASCII because any text (even a lone surrogate) then encodes, so a caller can
    never make a line unwritable, which would stop the proxy (it refuses
    everything without its log). json's C encoder is made once here:
    ``JSONEncoder.encode`` makes a new one for every call, which costs more
    than encoding the line.
    """
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:   # Python without json's C accelerator
        return encoder.encode
    # markers=None: no circularity check (records are trees); key order sorted; allow_nan as json.
    once = make(None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
    return lambda record: "".join(once(record, 0))


_ENCODE = _canonical_encoder()


def canonical(record: dict[str, Any]) -> bytes:
    return _ENCODE(record).encode()


def chain_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def checkpoint_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 over the checkpoint line's canonical JSON without ``hash`` and without ``checkpoint.mac``.

    The line holds ``prev``, so the MAC vouches for the whole chain before it.
    """
    body = {k: v for k, v in record.items() if k != "hash"}
    body["checkpoint"] = {k: v for k, v in body["checkpoint"].items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


class UtcClock:
    """UTC timestamps to the millisecond, as audit lines carry them; the seconds are formatted once a second.

    One per thread that uses it (it keeps the last second it formatted).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


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

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` with its place in the chain (and a checkpoint after it when one is due)."""
        if not self._open:
            return
        self._append(record)
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
        text = _ENCODE(record)
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
        newest = _newest_rotated(self._file)
        if newest is not None:
            self._last_stamp_ms = _stamp_ms(newest)
        tail = _last_line(self._file) if self._file.exists() else b""
        if not tail and newest is not None:
            tail = _last_line(newest)
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
            target = _rotated_name(self._file, stamp_ms)
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
            if self._size and not _ends_with_newline(self._file):
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


# --- files --------------------------------------------------------------------------------------


def _rotated_name(file: Path, stamp_ms: int) -> Path:
    seconds, millis = divmod(stamp_ms, 1000)
    stamp = time.strftime(_STAMP_FORMAT, time.gmtime(seconds)) + f".{millis:03d}Z"
    return file.with_name(f"{file.stem}.{stamp}{file.suffix}")


def _stamp_ms(file: Path) -> int:
    match = _ROTATED.match(file.name)
    if match is None:
        return 0
    whole, _, millis = match["stamp"].rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, _STAMP_FORMAT)) * 1000 + int(millis)


def _newest_rotated(file: Path) -> Path | None:
    pattern = f"{glob.escape(file.stem)}.*{glob.escape(file.suffix)}"
    rotated = [p for p in file.parent.glob(pattern) if _chain_key(p) == (file.parent, file.name)]
    return max(rotated, key=lambda p: p.name) if rotated else None


def _last_line(file: Path) -> bytes:
    """The file's last non-blank line, read from its end (the file may be large)."""
    with file.open("rb") as fh:
        position = fh.seek(0, os.SEEK_END)
        block = b""
        while position > 0:
            step = min(65536, position)
            position -= step
            fh.seek(position)
            block = fh.read(step) + block
            body = block.rstrip()
            newline = body.rfind(b"\n")
            if newline >= 0:
                return body[newline + 1:].strip()
        return block.strip()


def _ends_with_newline(file: Path) -> bool:
    with file.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _chain_key(file: Path) -> tuple[Path, str]:
    """The log a file belongs to: its folder and its name without a rotation time."""
    match = _ROTATED.match(file.name)
    return file.parent, (f"{match['stem']}{match['suffix']}" if match else file.name)


def log_files(paths: Iterable[str | Path]) -> dict[Path, list[Path]]:
    """The audit logs named by `paths`, each as its files in chain order.

    A path is a file, a directory (its ``*.jsonl`` files) or a glob pattern. Files
    of one log (in one folder, with the same name but for the rotation time, such
    as ``audit.20261123T185512.004Z.jsonl`` and ``audit.jsonl``) form one chain:
    rotated files by name (that is, by time), then the current file. Files of other
    names (``audit.worker1.jsonl``) are other chains. Raises FileNotFoundError for a
    path that names no file.
    """
    found: dict[Path, Path] = {}
    for raw in paths:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            matches = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        elif path.exists() or not any(c in text for c in "*?["):
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"{text}: no audit log file there")
        for match in matches:
            found.setdefault(match.resolve(), match)
    logs: dict[Path, list[Path]] = {}
    for file in found.values():
        folder, name = _chain_key(file)
        logs.setdefault(folder / name, []).append(file)
    for files in logs.values():
        # Rotated files first, by name (fixed-width UTC times sort as they happened); the current file last.
        files.sort(key=lambda p: (_ROTATED.match(p.name) is None, p.name))
    return dict(sorted(logs.items()))


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    lines: int
    broken_at: int | None   # 1-based line number (in `file`) of the first bad line
    problem: str = ""
    file: Path | None = None    # the file of `broken_at` (the last file read when the chain holds)
    files: int = 1
    checkpoints: int = 0        # checkpoint lines whose MAC was checked (only with a key)
    # With a key: how a chain ends short of its closing checkpoint (lines may have been cut off).
    warnings: tuple[str, ...] = ()
    sealed_at: str = ""         # with a key: time of the closing checkpoint the log ends with

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    @property
    def sealed(self) -> bool:
        return self.ok and not self.warnings


@dataclass(slots=True)
class _Chain:
    """Where one worker's chain stands while `verify` reads."""

    prev: str
    file: Path
    line: int
    since_checkpoint: int = 0
    checkpoint_at: tuple[Path, int] | None = None
    checkpoint_kind: str = ""
    checkpoint_time: str = ""


def verify(files: Path | Sequence[Path], *, checkpoint_key: bytes | None = None,
           starts_mid_chain: bool = False) -> VerifyResult:
    """Walk the chain through `files` in order; report the first line that is not what it expects.

    The first line of each file must continue the last line of the one before.
    Lines marked with a ``worker`` (several processes writing one stream) form one
    chain per worker. The first line must start the chain (``prev`` all zeros)
    unless `starts_mid_chain` (older files were archived away). With
    `checkpoint_key`, every checkpoint's MAC is checked too, and a chain that
    does not end with its closing checkpoint is reported in `warnings`.
    """
    ordered = [files] if isinstance(files, Path) else list(files)
    chains: dict[object, _Chain] = {}
    total = 0
    checked = 0
    file = ordered[0] if ordered else Path()

    def broken(number: int, problem: str) -> VerifyResult:
        return VerifyResult(total, number, problem, file, len(ordered), checked)

    for file in ordered:
        with file.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                total += 1
                try:
                    record = json.loads(raw)
                except ValueError:
                    return broken(number, "not valid JSON")
                if (not isinstance(record, dict) or not isinstance(record.get("hash"), str)
                        or not isinstance(record.get("prev"), str)):
                    return broken(number, "no prev/hash fields")
                worker = record.get("worker")
                if not isinstance(worker, int | None):
                    return broken(number, "the worker field is not a number")
                chain = chains.get(worker)
                problem = _prev_problem(record["prev"], chain, file, starts_mid_chain)
                if problem:
                    return broken(number, problem)
                if chain_hash(record) != record["hash"]:
                    return broken(number, "hash does not match the line's content (the line was edited)")
                if chain is None:
                    chain = chains[worker] = _Chain(prev=record["hash"], file=file, line=number)
                checkpoint = record.get("checkpoint")
                if checkpoint is not None and checkpoint_key is not None:
                    problem = _checkpoint_problem(checkpoint_key, record)
                    if problem:
                        return broken(number, problem)
                    checked += 1
                    chain.since_checkpoint = 0
                    chain.checkpoint_at = (file, number)
                    chain.checkpoint_kind = checkpoint["kind"]
                    chain.checkpoint_time = str(record.get("time", ""))
                else:
                    chain.since_checkpoint += 1
                chain.prev, chain.file, chain.line = record["hash"], file, number
    warnings: list[str] = []
    sealed_at = ""
    if checkpoint_key is not None:
        for worker, chain in sorted(chains.items(), key=lambda item: str(item[0])):
            who = f"worker {worker}: " if worker is not None else ""
            if chain.checkpoint_at is None:
                warnings.append(f"{who}the log has no checkpoint: none of its {chain.since_checkpoint} lines is "
                                "sealed, lines may have been cut off (or the proxy writes no checkpoints)")
                continue
            at = f"{chain.checkpoint_at[0]}:{chain.checkpoint_at[1]}"
            if chain.since_checkpoint:
                warnings.append(f"{who}the log ends {chain.since_checkpoint} lines after its last checkpoint "
                                f"({at}): lines may have been cut off (or the proxy is still running, or was killed)")
            elif chain.checkpoint_kind != CHECKPOINT_CLOSE:
                warnings.append(f"{who}the log ends at a periodic checkpoint ({at}), not a closing one: lines "
                                "after it may have been cut off (or the proxy was killed right after it)")
            else:
                sealed_at = max(sealed_at, chain.checkpoint_time)
    return VerifyResult(total, None, "", file, len(ordered), checked, tuple(warnings), sealed_at)


def _prev_problem(prev: str, chain: _Chain | None, file: Path, starts_mid_chain: bool) -> str:
    if chain is None:
        if prev == GENESIS or starts_mid_chain:
            return ""
        return ("prev is not the start of a chain (all zeros): earlier lines or files are missing "
                "(--starts-mid-chain accepts a log whose older files were archived away)")
    if prev == chain.prev:
        return ""
    if prev == GENESIS:
        return ("a new chain starts here (prev is all zeros): the lines before it were not found when the "
                "proxy started, or lines were inserted")
    if chain.file != file:
        return (f"prev is not the hash of the last line of {chain.file} (line {chain.line}): a file, or lines "
                "at the end of that file, are missing or removed, or the files are out of order")
    return "prev does not match the previous line's hash (a line was removed, inserted or reordered before it)"


def _checkpoint_problem(key: bytes, record: dict[str, Any]) -> str:
    checkpoint = record["checkpoint"]
    if (not isinstance(checkpoint, dict) or checkpoint.get("kind") not in (CHECKPOINT_INTERVAL, CHECKPOINT_CLOSE)
            or not isinstance(checkpoint.get("lines"), int) or not isinstance(checkpoint.get("mac"), str)):
        return "malformed checkpoint (kind, lines and mac expected)"
    # As bytes: the mac read from the file may be any text, and compare_digest takes only ASCII str.
    given = checkpoint["mac"].encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, checkpoint_mac(key, record).encode()):
        return "the checkpoint's MAC does not match: it was forged or edited, or made with another key"
    return ""
