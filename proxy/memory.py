"""The C allocator's thresholds for body buffers, set once at start (glibc only).

Bodies move through the proxy in pieces of 64 KiB to a few hundred KiB (a
storage server's reads, an encrypted object's verified segments joined per
piece). glibc serves an allocation above its mmap threshold (128 KiB at
first) with fresh pages from the kernel, a page fault every 4 KiB, and moves
that threshold up and down as such blocks are freed, so the same transfer
costs one price or another depending on what came before it: part (e) of the
benchmark measured an encrypted GET at 1.3-1.5 ms of CPU per MiB in some runs
and 2.3-2.4 in others. Fixed thresholds (allocations under 4 MiB from the
heap; the heap's top given back past 16 MiB free) made every run the cheap
one, with RSS still flat in object size (bench/README.md).

An operator's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` win:
glibc has read them, and nothing is changed. Elsewhere than glibc this does
nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("bailiwick.memory")

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024
_M_TRIM_THRESHOLD = -1   # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module's text); whether they were set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        # The process's own symbols, libc's among them: no library search (which would start `ldconfig`).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    if not done:
        log.warning("the C allocator's thresholds could not be set; bodies may cost more CPU")
    return done
