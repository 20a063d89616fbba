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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("bailiwick.audit")

GENESIS = "0" * 64


# ASCII only: any text (even a lone surrogate) encodes, so a caller can never make a
# line unwritable, which would stop the proxy (it refuses everything without its log).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
# The same form without sorting, for records already built in key order: json's C
# encoder sorts in Python, which costs more than the rest of the line together.
_IN_ORDER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def canonical(record: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(record).encode()


def in_canonical_order(record: dict[str, Any]) -> bool:
    """True if every key, at every level, comes in sorted order (so no sort is needed)."""
    keys = list(record)
    if keys != sorted(keys):
        return False
    return all(in_canonical_order(value) for value in record.values() if isinstance(value, dict))


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
        """Append `record` with its place in the chain (its keys in any order)."""
        self._append(record, _CANONICAL)

    def write_in_order(self, record: dict[str, Any]) -> None:
        """Append a record built with its keys in sorted order at every level and a
        ``"prev"`` key in its place (any value), which is then encoded without sorting.

        The proxy's own records are built so (`proxy.server`); one that is not
        would be found by `verify`, which recomputes the canonical form.
        """
        self._append(record, _IN_ORDER)

    def _append(self, record: dict[str, Any], encoder: json.JSONEncoder) -> None:
        if self._out is None:
            return
        record["prev"] = self._prev
        if self.worker is not None:
            record["worker"] = self.worker   # after every other key, in sorted order too
        text = encoder.encode(record)
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
