"""Reading JSON-lines logs (audit, access) while the proxy may still be writing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def written_records(path: Path) -> list[dict[str, Any]]:
    """The records of the lines written whole so far: a line still being written
    (no newline yet) is left for the next look."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]
