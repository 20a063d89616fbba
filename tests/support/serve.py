"""`bailiwick serve` as a child process, for tests of signals, workers and reloads.

The configuration points at the given upstream, a policy folder and an audit
log in `tmp`, with HS256 tokens of the test issuer; `extra` is appended to
the YAML. Standard error goes to ``tmp/serve.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from proxy.localstore import free_port
from tests.conftest import ISSUER, SECRET


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except OSError:
        return False
    return True


def status(url: str) -> int:
    """The HTTP status `url` answers with (an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        err.close()
        return err.code


def serve(
    tmp: Path, upstream: str, policies: Path, extra: str = "",
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start it; returns the process (in a session of its own), the data port and the admin port."""
    port, admin = free_port(), free_port()
    config = tmp / "bailiwick.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\npolicies: {policies}\n"
        f"audit: {{path: {tmp / 'audit.jsonl'}}}\nupstream: {{url: '{upstream}'}}\n"
        f"identity:\n  jwt:\n    - {{issuer: '{ISSUER}', audience: bailiwick, hs256_secret_env: TEST_SECRET}}\n"
        + extra
    )
    with (tmp / "serve.log").open("wb") as log:   # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--log-level", "INFO"],
            env={**os.environ, "TEST_SECRET": SECRET}, stderr=log, start_new_session=True,
        )
    wait_until(lambda: answers(f"http://127.0.0.1:{admin}/healthz") or process.poll() is not None, timeout=20)
    assert process.poll() is None, (tmp / "serve.log").read_text()
    return process, port, admin
