"""The proxy on its own event loop in a background thread, in this process (for the demo and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from proxy.config import Config
from proxy.lifecycle import RunningProxy, start_proxy
from proxy.policy.model import Policy


class ProxyThread:
    """The proxy on its own event loop in a background thread (for the demo and tests)."""

    def __init__(self, config: Config, policy: Policy | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the loop to run on (None: a new asyncio loop; `serve` runs on uvloop's, which tests pass here)."""
        self._config = config
        self._policy = policy
        self._loop = loop or asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bailiwick", daemon=True)
        self.running: RunningProxy | None = None

    def start(self) -> ProxyThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_proxy(self._config, self._policy), self._loop)
        self.running = future.result(timeout=30)
        return self

    @property
    def url(self) -> str:
        assert self.running is not None
        host, port = self.running.data_address
        return f"http://{host}:{port}"

    @property
    def admin_url(self) -> str:
        assert self.running is not None
        host, port = self.running.admin_address
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(timeout=30)
            self.running = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(RuntimeError):
            self._loop.close()
