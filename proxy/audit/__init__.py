"""The audit log: one JSON line per decision, hash-chained so edits show (docs/operations.md, "Audit log").

One idea a module:

- ``record``: the line of one decision as a value (`AuditRecord`, `AuditOutcome`), to and from JSON;
- ``chain``: the canonical encoding, the chain's hash and the checkpoints' MAC;
- ``writer``: `AuditLog`, which chains lines and writes them from a thread, rotating files;
- ``files``: where a log's lines are (current and rotated files, in chain order);
- ``verification``: `verify`, the walk of a chain that ``bailiwick audit verify`` runs;
- ``clock``: `UtcClock`, the lines' timestamps.
- ``ship``: `Shipper`, which uploads the chain to a bucket with Object Lock (``audit.ship``) from a
  thread; ``shiplines`` reads its lines back from the files, ``shipstore`` is the bucket (botocore),
  ``shiplayout`` the keys. Imported from their own modules (they import `proxy.metrics`, which imports this package).

The names below are the package's interface; import them from here.
"""

from __future__ import annotations

from proxy.audit.chain import CHECKPOINT_CLOSE, CHECKPOINT_INTERVAL, GENESIS, canonical, chain_hash, checkpoint_mac
from proxy.audit.clock import UtcClock
from proxy.audit.files import log_files
from proxy.audit.record import (
    AuditOutcome,
    AuditRecord,
    RecordedCaller,
    RecordedKeyRelease,
    RecordedRequest,
    deciding_access,
    outcome_of,
)
from proxy.audit.verification import VerifyResult, verify
from proxy.audit.writer import MAX_BACKLOG, STALL_SECONDS, AuditLog

__all__ = [
    "CHECKPOINT_CLOSE",
    "CHECKPOINT_INTERVAL",
    "GENESIS",
    "MAX_BACKLOG",
    "STALL_SECONDS",
    "AuditLog",
    "AuditOutcome",
    "AuditRecord",
    "RecordedCaller",
    "RecordedKeyRelease",
    "RecordedRequest",
    "UtcClock",
    "VerifyResult",
    "canonical",
    "chain_hash",
    "checkpoint_mac",
    "deciding_access",
    "log_files",
    "outcome_of",
    "verify",
]
