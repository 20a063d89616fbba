"""Where a shipped chain lives in its bucket: the chain's id and the keys of its pieces.

The layout (docs/operations.md, "Shipping the audit log"), shared by the shipper and
``bailiwick audit verify s3://``: a chain (one worker's audit chain) lives under
``PREFIX<chain-id>/`` as pieces ``<seq>.jsonl``, numbered from 1 without a gap, each the
exact bytes of consecutive complete lines. The chain's id is the UTC time of its first
line and the start of that line's hash, so that listing a prefix sorts chains by start.
"""

from __future__ import annotations

import json
import re

SEQ_DIGITS = 10
PIECE = re.compile(r"^(?P<seq>\d{10})\.jsonl$")


def chain_id(first_line: bytes) -> str:
    """``YYYYMMDDTHHMMSSZ-<16 hex digits>`` from the chain's first line (its ``time`` and ``hash``).

    Raises ValueError for a line that is not an audit line.
    """
    record = json.loads(first_line)
    stamp, digest = record["time"], record["hash"]
    if not isinstance(stamp, str) or not isinstance(digest, str) or len(stamp) < 19 or len(digest) < 16:
        raise ValueError("the chain's first line has no time or hash")
    whole = stamp[:19].replace("-", "").replace(":", "")   # 2026-12-06T19:22:37 -> 20261206T192237
    return f"{whole}Z-{digest[:16]}"


def piece_key(prefix: str, chain: str, seq: int) -> str:
    return f"{prefix}{chain}/{seq:0{SEQ_DIGITS}d}.jsonl"


def piece_seq(key: str, chain_prefix: str) -> int | None:
    """The seq of a piece's key under ``PREFIX<chain-id>/``; None for any other key."""
    if not key.startswith(chain_prefix):
        return None
    match = PIECE.match(key[len(chain_prefix):])
    return int(match["seq"]) if match else None
