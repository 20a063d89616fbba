"""A value read from a mounted file and read again when the file changes, as a rotated Kubernetes Secret does.

Kubernetes rotates a mounted Secret by swapping a ``..data`` symbolic link, so
a file's identity (inode, modification time, size, through the link) says
whether it changed. `WatchedFile` looks at the file at most once an interval
(a second by default) and reads it again only when it changed. A file that
cannot be read, or whose reading is refused (`ConfigError`), keeps the last
good value: a Secret being swapped is briefly neither old nor new, and the
next look tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from proxy.errors import ConfigError

T = TypeVar("T")

Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp:
    """The file's identity: inode, modification time and size (following the ``..data`` link)."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


class WatchedFile(Generic[T]):
    """`read(path)`, read at start and again when the file changes. The first read's errors propagate.

    The first look at the file is `read`'s too: a file missing at start fails with `read`'s own error
    (typically a `ConfigError` naming the setting), not with the ``stat`` that precedes it.
    """

    def __init__(self, path: Path, read: Callable[[Path], T], *, clock: Callable[[], float] = time.monotonic,
                 interval: float = 1.0) -> None:
        self.path = path
        self._read = read
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        first: Stamp | None
        try:
            first = stamp(path)
        except OSError:
            first = None   # `read` says why the file cannot be used, in its owner's words
        self._value = read(path)
        self._stamp = first   # None (the file appeared meanwhile): the next look reads it again
        self._checked = clock()

    def __repr__(self) -> str:
        return f"WatchedFile({self.path})"   # never the value (it may be a secret)

    def current(self) -> T:
        now = self._clock()
        if now - self._checked < self._interval:
            return self._value
        with self._lock:
            self._checked = now
            try:
                changed = stamp(self.path)
                if changed != self._stamp:
                    self._value, self._stamp = self._read(self.path), changed
            except (OSError, ConfigError):
                pass   # a Secret being swapped: keep the last good value
        return self._value
