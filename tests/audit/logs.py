"""Audit logs for the tests: written with the real writer, read back, rewritten as an attacker would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proxy.audit import GENESIS, AuditLog, chain_hash

KEY = b"checkpoint-key-for-tests-0123456789abcdef"


def write_log(path: Path, count: int, **options: Any) -> AuditLog:
    log = AuditLog(str(path), **options)
    for n in range(count):
        log.write({"decision_id": f"d{n}", "decision": "allow"})
    log.close()
    return log


def lines_of(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for file in files for line in file.read_text().splitlines()]


def rehash(records: list[dict[str, Any]], prev: str = GENESIS) -> list[str]:
    """What an attacker without the key can do: recompute every hash after an edit."""
    out = []
    for record in records:
        record = {k: v for k, v in record.items() if k != "hash"}
        record["prev"] = prev
        record["hash"] = prev = chain_hash(record)
        out.append(json.dumps(record))
    return out
