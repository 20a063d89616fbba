"""Where an audit log's lines are: its files, current and rotated, in chain order.

Why rotation keeps the chain: a file is only where the lines land. When the
next lines would take the current file past ``max_bytes``, the writer renames
it to ``STEM.YYYYMMDDTHHMMSS.mmmZ.SUFFIX`` (UTC time of the rotation, made
unique and increasing, so names sort in order) and opens a new current file
whose first line's ``prev`` is the last hash of the renamed one. Rotated files
are never deleted here; shipping them away is the log collector's job. This
module names rotated files, reads them back in order (`log_files`, for
`proxy.audit.verify` and the command line) and reads a file's last complete
line (where a restarted writer continues the chain).
"""

from __future__ import annotations

import calendar
import glob
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

# A rotated file: STEM.<UTC time of its rotation, to the millisecond>SUFFIX.
_ROTATED = re.compile(r"^(?P<stem>.+)\.(?P<stamp>\d{8}T\d{6}\.\d{3}Z)(?P<suffix>(?:\.[^.]*)?)$")
_STAMP_FORMAT = "%Y%m%dT%H%M%S"


def rotated_name(file: Path, stamp_ms: int) -> Path:
    """The name `file` takes when rotated at `stamp_ms` (Unix time in milliseconds)."""
    seconds, millis = divmod(stamp_ms, 1000)
    stamp = time.strftime(_STAMP_FORMAT, time.gmtime(seconds)) + f".{millis:03d}Z"
    return file.with_name(f"{file.stem}.{stamp}{file.suffix}")


def rotated_at_ms(file: Path) -> int:
    """When a rotated file was rotated (Unix time in milliseconds), from its name; 0 for a current file."""
    match = _ROTATED.match(file.name)
    if match is None:
        return 0
    whole, _, millis = match["stamp"].rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, _STAMP_FORMAT)) * 1000 + int(millis)


def newest_rotated(file: Path) -> Path | None:
    pattern = f"{glob.escape(file.stem)}.*{glob.escape(file.suffix)}"
    rotated = [p for p in file.parent.glob(pattern) if chain_key(p) == (file.parent, file.name)]
    return max(rotated, key=lambda p: p.name) if rotated else None


def last_complete_line(file: Path) -> bytes:
    """The file's last non-blank line that ends with a newline (b"" if none), read from its end.

    A partial line at the end (cut short by a full disk or a crash) is not one.
    """
    with file.open("rb") as fh:
        position = fh.seek(0, os.SEEK_END)
        block = b""
        while position > 0:
            step = min(65536, position)
            position -= step
            fh.seek(position)
            block = fh.read(step) + block
            body = block[:block.rfind(b"\n") + 1].rstrip()   # b"" while no newline is in sight
            newline = body.rfind(b"\n")
            if newline >= 0 or (position == 0 and body):
                return body[newline + 1:].strip()
        return b""


def ends_with_newline(file: Path) -> bool:
    with file.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def chain_key(file: Path) -> tuple[Path, str]:
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
        folder, name = chain_key(file)
        logs.setdefault(folder / name, []).append(file)
    for files in logs.values():
        # Rotated files first, by name (fixed-width UTC times sort as they happened); the current file last.
        files.sort(key=lambda p: (_ROTATED.match(p.name) is None, p.name))
    return dict(sorted(logs.items()))
