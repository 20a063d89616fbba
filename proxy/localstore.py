"""A local S3-compatible store for the demo and the tests: moto's server, as a child process.

moto answers unsigned requests with 403 and does not verify signatures, which
is what a demo on one machine needs. It runs as a separate process so that it
is a real HTTP peer of the proxy, exactly as a storage server would be.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """`with MotoServer() as store:` gives a running S3 server at `store.url`."""

    def __init__(self, port: int | None = None, startup_timeout: float = 30.0,
                 environ: Mapping[str, str] | None = None) -> None:
        # `environ`: moto's settings, e.g. INITIAL_NO_AUTH_ACTION_COUNT to make it verify signatures.
        self.port = port or free_port()
        self._environ = dict(environ or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        env = {**os.environ, **self._environ, "MOTO_PORT": str(self.port)}
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto's server exited at start (status {self._process.returncode})")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()  # noqa: S310
                return self
            except urllib.error.HTTPError:
                return self  # it answered: it is up
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto's server did not start on port {self.port} within {self._timeout:g}s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
