"""A task that runs one step every interval until stopped, and outlives any error of a step.

The policy reload and the TLS listener's certificate watch each look at files on
a timer; a surprise in one look must not end the watch (the next look tries
again), and stopping must wait for the task so that nothing runs after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class Poller:
    """Runs `step` every `interval` seconds (after the first wait) between `start` and `stop`."""

    def __init__(self, interval: float, step: Callable[[], Awaitable[object]], log: logging.Logger,
                 failed: str) -> None:
        self.interval = interval
        self._step = step
        self._log = log
        self._failed = failed   # logged, with the exception, when a step raises
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._step()
            except Exception:   # never let the watch die: the next look tries again
                self._log.exception(self._failed)
