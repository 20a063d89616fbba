"""Reading JSON-lines logs (audit, access) while the proxy may still be writing them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def written_records(path: Path) -> list[dict[str, Any]]:
    """The records of the lines written whole so far: a line still being written
    (no newline yet) is left for the next look."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def wait_for_record(path: Path, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
    """The first written record `match` accepts, waiting for it to be written (lines land just after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((record for record in written_records(path) if match(record)), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"no matching record in {path}"
        time.sleep(0.01)
