"""The audit log: one JSON line per decision, hash-chained so edits show.

Each line carries ``prev`` (the previous line's hash) and ``hash`` (SHA-256
over the line's canonical JSON without ``hash``). Editing, removing or
reordering a line breaks the chain at that point, which `verify` reports.
Secrets never reach this module: callers pass only the fields of CONTRACT.md.

On an event loop, the lines of one turn of the loop are written together, in
one ``write`` call flushed right after that turn; without a loop, each line is
written and flushed at once. A crash loses at most the lines of the turn
being written. A failed write sets `AuditLog.failed`, after which the proxy
refuses every request. (Writing off the event loop, rotation and keyed
checkpoints are the next steps for this module.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("bailiwick.audit")

GENESIS = "0" * 64


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


class AuditLog:
    """Appends chained records to a file (or standard output for ``"-"``)."""

    def __init__(self, path: str | None, worker: int | None = None) -> None:
        """`worker` (with several processes): each keeps its own chain, in its own file
        (``audit.jsonl`` becomes ``audit.worker1.jsonl``) or, on standard output, in
        lines marked ``"worker": N`` that `verify` chains separately."""
        self.worker = worker
        if path not in (None, "-") and worker is not None:
            file = Path(str(path))
            path = str(file.with_name(f"{file.stem}.worker{worker}{file.suffix}"))
        self.path = path
        self.failed = False  # set when a write failed: the proxy then refuses everything
        self._prev = GENESIS
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._out: IO[str] | None = None
        if path is None:
            return
        if path == "-":
            self._out = sys.stdout
            return
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.exists():
            self._prev = _last_hash(file)
        self._out = file.open("a", encoding="utf-8")

    @property
    def enabled(self) -> bool:
        return self._out is not None

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` with its place in the chain."""
        if self._out is None:
            return
        record["prev"] = self._prev
        if self.worker is not None:
            record["worker"] = self.worker
        text = _ENCODE(record)
        digest = hashlib.sha256(text.encode()).hexdigest()
        self._prev = digest
        # The line is the canonical body with the hash appended: `verify` parses it and
        # recomputes the canonical form without "hash", so the order of keys is free.
        self._pending.append(f'{text[:-1]},"hash":"{digest}"}}\n')
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        # One write for all the lines of this turn of the event loop, right after it.
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending lines; a failure sets `failed` (the proxy then refuses everything)."""
        self._flush_scheduled = False
        if not self._pending or self._out is None:
            return
        data = "".join(self._pending)
        self._pending.clear()
        try:
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError):
            log.exception("the audit log could not be written; refusing all requests")
            self.failed = True

    def close(self) -> None:
        self.flush()
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None


def _last_hash(file: Path) -> str:
    last = GENESIS
    with file.open("rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    last = str(json.loads(line)["hash"])
                except (ValueError, KeyError, TypeError):
                    # A damaged tail: chain on from it anyway; `verify` will point at it.
                    last = hashlib.sha256(line.strip()).hexdigest()
    return last


@dataclass(frozen=True, slots=True)
class VerifyResult:
    lines: int
    broken_at: int | None   # 1-based line number of the first bad line
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(file: Path) -> VerifyResult:
    """Walk the chain; report the first line that is not what the chain expects.

    Lines marked with a ``worker`` (several processes writing one stream) form
    one chain per worker.
    """
    prevs: dict[object, str] = {}
    count = 0
    with file.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            count = number
            try:
                record = json.loads(raw)
            except ValueError:
                return VerifyResult(number, number, "not valid JSON")
            if not isinstance(record, dict) or "hash" not in record or "prev" not in record:
                return VerifyResult(number, number, "no prev/hash fields")
            prev = prevs.get(record.get("worker"), GENESIS)
            if record["prev"] != prev:
                return VerifyResult(number, number, "prev does not match the previous line's hash "
                                    "(a line was removed, inserted or reordered before it)")
            if chain_hash(record) != record["hash"]:
                return VerifyResult(number, number, "hash does not match the line's content (the line was edited)")
            prevs[record.get("worker")] = record["hash"]
    return VerifyResult(count, None)
