"""The allocator's thresholds: set once at start on glibc, never over an operator's own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from proxy import memory

GLIBC = platform.libc_ver()[0] == "glibc"


def _in_a_fresh_process(env: dict[str, str]) -> str:
    """Whether `tune_allocator` set the thresholds, and the minor page faults of making and freeing 64 blocks
    each a little larger than the last (256 KiB to 1.25 MiB), as a stream's pieces may be: glibc's own moving
    threshold serves each one with fresh pages from the kernel."""
    code = (
        "import resource\n"
        "from proxy.memory import tune_allocator\n"
        "done = tune_allocator()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for i in range(64):\n"
        "    block = bytearray(256 * 1024 + i * 16 * 1024)\n"
        "    del block\n"
        "print(done, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env})
    return done.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_blocks_under_the_threshold_come_from_the_heap_once_tuned() -> None:
    done, faults = _in_a_fresh_process({}).split()
    assert done == "True"
    # Tuned, every block is taken from the heap, whose pages are touched once (about 300 faults here);
    # untuned, about 12,000.
    assert int(faults) < 2_000


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_an_operators_own_threshold_is_left_alone() -> None:
    done, faults = _in_a_fresh_process({"MALLOC_MMAP_THRESHOLD_": "131072"}).split()
    assert done == "False"
    assert int(faults) > 5_000    # glibc follows the operator's 128 KiB: fresh pages for every block


def test_elsewhere_than_glibc_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda *_: ("musl", "1.2"))
    assert memory.tune_allocator() is False
