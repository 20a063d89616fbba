"""The worker supervisor: `bailiwick serve` with `workers` processes on the same ports.

The first process forks the others before any event loop exists; each runs
`proxy.lifecycle.serve_forever` on its own uvloop loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from proxy.config import Config
from proxy.lifecycle import serve_forever
from proxy.memory import tune_allocator
from proxy.metrics import process_exited, use_multiprocess_dir


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(config: Config) -> None:
    """Serve with `config.workers` processes until SIGTERM or SIGINT.

    Extra workers are forked before any event loop exists; each serves the
    same ports (SO_REUSEPORT) with its own loop, upstream pool and audit
    chain, and writes its metrics to a shared directory (prometheus-client's
    multiprocess mode: ``$PROMETHEUS_MULTIPROC_DIR`` if set, else a temporary
    one) so that ``/metrics`` on any of them reports the sum. The first
    process stops the others when it is told to stop.
    """
    tune_allocator()   # before the forks: every worker inherits it
    children: list[int] = []
    worker: int | None = 0 if config.workers > 1 else None
    made_metrics_dir: str | None = None
    if config.workers > 1:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            for stale in Path(metrics_dir).glob("*.db"):   # figures of an earlier run
                stale.unlink()
        else:
            metrics_dir = made_metrics_dir = tempfile.mkdtemp(prefix="bailiwick-metrics-")
        use_multiprocess_dir(metrics_dir)
    for number in range(1, config.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                install_uvloop()
                asyncio.run(serve_forever(config, number))
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    try:
        install_uvloop()
        asyncio.run(serve_forever(config, worker, tuple(children)))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)
            process_exited(pid)
        if made_metrics_dir is not None:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)
