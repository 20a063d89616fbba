"""Disk space reserved ahead of the audit file, so that a full disk stops requests before it cuts a line.

Why: the proxy forwards a request and writes its audit line afterwards,
from a thread. Without a reserve, a disk that fills up in between leaves a
forwarded request with half a line (or none). So the writer thread keeps
`target` bytes allocated beyond the end of the current file
(``fallocate(FALLOC_FL_KEEP_SIZE)``: blocks belong to the file, its size
does not change, and writes into them cannot fail for want of space), and
renews the reserve as lines consume it. The event loop admits a request only
when the reserve left covers every line owed (`proxy.audit.writer`,
`AuditLog.admit`); when renewing fails for want of space the reserve is
*exhausted*, new requests are refused, and the writer tries again at most
once a second until it succeeds.

Python 3.11 has no ``os.fallocate`` (``os.posix_fallocate`` changes the
file's size, which would leave zeros in the log), so glibc's (or musl's)
``fallocate`` is called through ctypes. Where it is missing (not Linux) or
the filesystem does not support it, `Reserve.supported` is False and the
writer works as before the reserve existed: a full disk can then cut the
last line (the proxy warns at start).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger("bailiwick.audit")

_KEEP_SIZE = 0x01    # FALLOC_FL_KEEP_SIZE
_PUNCH_HOLE = 0x02   # FALLOC_FL_PUNCH_HOLE (always with KEEP_SIZE)
# What a release frees beyond the end when the reserve's own end is unknown (a previous process's).
_RELEASE_UNKNOWN = 1 << 32
RETRY_SECONDS = 1.0
# Renew once a quarter of the reserve is used: one system call per many batches, not per batch.
_RENEW_FRACTION = 4
# Errors that mean "this filesystem (or system) cannot reserve": fall back to writing without a reserve.
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV}


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _load_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Linux fallocate(2); OSError on failure (ENOSYS where the C library has none)."""
    if _fallocate is None:
        raise OSError(errno.ENOSYS, "fallocate is not available on this system")
    if _fallocate(fd, mode, offset, length) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def keep_size(fd: int, offset: int, length: int) -> None:
    """Allocate `length` bytes from `offset` to the file, without changing its size."""
    fallocate(fd, _KEEP_SIZE, offset, length)


def release_beyond(fd: int, size: int, length: int = _RELEASE_UNKNOWN) -> None:
    """Give back what is allocated beyond `size` (the end of the data), best effort."""
    try:
        fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, size, length)
    except OSError as err:
        log.debug("could not release the audit file's reserve beyond its end: %s", err)


class Reserve:
    """The space reserved ahead of one writer's current file (used on the writer thread only).

    `left` (bytes allocated beyond the data) and `exhausted` are read from the
    event loop too: each is one attribute, replaced whole.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.supported = target > 0 and _fallocate is not None
        if target > 0 and _fallocate is None:
            log.warning("this system has no fallocate, so no space can be reserved ahead of the audit log: a full "
                        "disk may cut its last line and leave forwarded requests unaudited")
        self.left = 0
        self.exhausted = False
        self._end = 0          # offset up to which the current file's blocks are reserved
        self._tried_at = 0.0   # when renewing last failed (monotonic)

    def start(self, fd: int, size: int) -> None:
        """Reserve ahead of a file just opened at start."""
        if not self.supported:
            return
        self._end = size
        self._renew(fd, size, first=True)

    def move(self, old_fd: int, old_size: int, fd: int, size: int) -> None:
        """The file was rotated: reserve ahead of the new file `fd`, then give back the old file's reserve.

        In that order, so that the lines still owed never lack room: another writer on the disk could take
        what the old file gave back. Only when the whole target cannot be had beside the old reserve is the
        old one given back first, for the new file to take at least as much.
        """
        if not self.supported:
            return
        freed = max(0, self._end - old_size)
        self._end = size
        self._renew(fd, size, first=True)
        if freed:
            release_beyond(old_fd, old_size, freed)
        if self.exhausted and freed:
            try:
                keep_size(fd, size, freed)
            except OSError as err:
                log.error("the audit log's new file could not take over its old file's reserve: %s", err.strerror)
            else:
                self._end = size + freed
                self.left = freed

    def wrote(self, fd: int, size: int) -> None:
        """The file has grown to `size`: count what was used, renew when a quarter of it is gone."""
        if not self.supported:
            return
        self.left = max(0, self._end - size)
        if self.exhausted:
            if time.monotonic() - self._tried_at >= RETRY_SECONDS:
                self._renew(fd, size)
        elif self.left * _RENEW_FRACTION < self.target * (_RENEW_FRACTION - 1):
            self._renew(fd, size)

    def retry(self, fd: int, size: int) -> None:
        """Once a second while exhausted: try to renew again."""
        if self.supported and self.exhausted and time.monotonic() - self._tried_at >= RETRY_SECONDS:
            self._renew(fd, size)

    def release(self, fd: int, size: int) -> None:
        """Give back what is reserved beyond `size` (the file is being closed)."""
        if not self.supported:
            return
        freed = max(0, self._end - size)
        if freed:
            release_beyond(fd, size, freed)
        self._end = size

    def _renew(self, fd: int, size: int, *, first: bool = False) -> None:
        try:
            keep_size(fd, size, self.target)
        except OSError as err:
            if err.errno in _UNSUPPORTED and first:
                self.supported = False
                self.exhausted = False
                log.warning("the audit log's filesystem cannot reserve space ahead of the log (%s): a full disk "
                            "may cut its last line and leave forwarded requests unaudited", err.strerror)
                return
            self._tried_at = time.monotonic()
            self.left = max(0, self._end - size)
            if not self.exhausted:
                log.error("no space could be reserved for the audit log (%s): refusing new requests until "
                          "there is", err.strerror)
            self.exhausted = True
            return
        self._end = max(self._end, size + self.target)
        self.left = self._end - size
        if self.exhausted:
            log.warning("space for the audit log is reserved again: forwarding requests again")
        self.exhausted = False
