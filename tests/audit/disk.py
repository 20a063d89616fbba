"""Filling a disk, and what a file holds of it, for the tests of a full disk (the disk: conftest's `tiny_disk`)."""

from __future__ import annotations

import os
from pathlib import Path


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on `disk`."""
    filler = disk / "filler"
    with filler.open("wb") as fh:
        while True:
            stat = os.statvfs(disk)
            free = stat.f_bavail * stat.f_frsize
            if free <= leave:
                break
            try:
                fh.write(b"\0" * min(4096, free - leave))
                fh.flush()
            except OSError:
                break
    return filler


def allocated(file: Path) -> int:
    """Bytes of disk the file holds (its blocks, reserved ones beyond its end included)."""
    return file.stat().st_blocks * 512
