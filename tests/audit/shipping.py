"""For the shipping tests: a store that can be taken off the network, and `bailiwick serve` shipping to it.

`Switch` is a TCP relay in front of a moto server that can refuse connections (`down`) and
take them again (`up`) on the same port, so the store's data survive its being unreachable
(moto's own state is lost when its process stops).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from proxy.localstore import free_port
from tests.conftest import ISSUER, SECRET
from tests.support.serve import answers, wait_until

CHECKPOINT_KEY = "k" * 40


class Switch:
    """A relay to `port` on 127.0.0.1 that can be unplugged."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() under way, which close() does not
            listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)   # as above: wakes the pumps' recv()
            with contextlib.suppress(OSError):
                sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.close()


def serve_shipping(tmp: Path, upstream: str, policies: Path, ship: str, audit: str = "", more: str = "") -> tuple[
        subprocess.Popen[bytes], int, int]:
    """`bailiwick serve` (region eu-west-1, a checkpoint key) whose audit log is `tmp/audit.jsonl`,
    with `ship` as the audit.ship mapping's YAML (flow style), `audit` more audit keys and `more`
    more top-level lines."""
    port, admin = free_port(), free_port()
    config = tmp / "bailiwick.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\npolicies: {policies}\nregion: eu-west-1\n"
        f"audit: {{path: {tmp / 'audit.jsonl'}, checkpoint_key_env: AUDIT_KEY, ship: {ship}{audit}}}\n"
        f"upstream: {{url: '{upstream}'}}\nshutdown_grace_seconds: 1\n{more}"
        f"identity:\n  jwt:\n    - {{issuer: '{ISSUER}', audience: bailiwick, hs256_secret_env: TEST_SECRET}}\n"
    )
    env = {**os.environ, "TEST_SECRET": SECRET, "AUDIT_KEY": CHECKPOINT_KEY, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("AWS_PROFILE", None)
    with (tmp / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--log-level", "INFO"],
            env=env, stderr=log, start_new_session=True,
        )
    wait_until(lambda: answers(f"http://127.0.0.1:{admin}/healthz") or process.poll() is not None, timeout=30)
    return process, port, admin


def pieces(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """The keys of the pieces under `prefix`, in order (one chain)."""
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in answer.get("Contents", ()))


def shipped(client: Any, bucket: str) -> bytes:
    return b"".join(client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in pieces(client, bucket))
