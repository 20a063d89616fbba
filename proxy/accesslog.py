"""The access log: one JSON line per request, for operating the proxy.

Why beside the audit log: the audit log is the record of decisions, chained
and kept for a regulator; the access log is for the people who run the
proxy (what took long, what moved how many bytes, which requests failed) and
may be sampled, shipped and dropped like any service log. It is off unless
``access_log`` names a file or ``-`` (standard error).

Lines are handed to a thread that writes them (logging's QueueHandler and
QueueListener), so that the event loop never waits for the disk; `close`
writes what is queued. Each `AccessLog` has a logger of its own, outside
logging's registry, so two proxies in one process never write each other's
lines.

The path is logged without its query string: a presigned URL carries its
signature there. Nothing else that could be a secret is logged (no headers
but a shortened User-Agent).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
from dataclasses import dataclass
from typing import TextIO

_USER_AGENT_CHARS = 200
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


@dataclass(frozen=True, slots=True)
class AccessEntry:
    time: str
    request_id: str
    source: str
    method: str
    path: str                 # without the query string
    status: int               # 0: the connection was cut (stream interrupted, caller gone)
    decision: str
    error_code: str | None
    caller_jurisdiction: str | None
    bytes_in: int
    bytes_out: int
    duration_ms: float
    upstream_ms: float | None
    user_agent: str


class AccessLog:
    """Writes `AccessEntry` lines from a thread, through a logger of its own (``bailiwick.access``)."""

    def __init__(self, target: str | None) -> None:
        self.enabled = target is not None
        self._logger = logging.Logger("bailiwick.access", logging.INFO)   # not registered, not propagated
        self._logger.propagate = False
        self._handler: logging.Handler | None = None
        self._listener: logging.handlers.QueueListener | None = None
        if target is None:
            return
        stream: TextIO | None = sys.stderr if target == "-" else None
        self._handler = logging.StreamHandler(stream) if stream else logging.FileHandler(target, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._logger.addHandler(logging.handlers.QueueHandler(lines))
        self._listener = logging.handlers.QueueListener(lines, self._handler)
        self._listener.start()

    def write(self, entry: AccessEntry) -> None:
        if not self.enabled:
            return
        line = {
            "time": entry.time, "request_id": entry.request_id, "source": entry.source,
            "method": entry.method, "path": entry.path.split("?", 1)[0], "status": entry.status,
            "decision": entry.decision, "error_code": entry.error_code,
            "caller_jurisdiction": entry.caller_jurisdiction, "bytes_in": entry.bytes_in,
            "bytes_out": entry.bytes_out, "duration_ms": round(entry.duration_ms, 3),
            "upstream_ms": None if entry.upstream_ms is None else round(entry.upstream_ms, 3),
            "user_agent": entry.user_agent[:_USER_AGENT_CHARS],
        }
        self._logger.info(_ENCODE(line))

    def close(self) -> None:
        """Write every queued line, stop the thread, close the file."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        for handler in list(self._logger.handlers):
            self._logger.removeHandler(handler)
        if self._handler is not None:
            self._handler.close()
            self._handler = None
        self.enabled = False
