"""SIGTERM: stop accepting, let the streams in flight finish, flush the audit log, exit 0.

`bailiwick serve` runs as a child process in front of moto. A download is
held open by a slow reader when the signal arrives: it must complete whole,
new connections must be refused from then on and ``/readyz`` must answer
503, and the audit log must hold the download's line once the process has
exited.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DUBLIN, make_token
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import serve, wait_until
from tests.test_gateway import FAKE_SIGV4
from tests.test_reload import copy_policies

BIG = 16 * 1024 * 1024


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.usefixtures("seeded")
def test_sigterm_drains_streams_in_flight_then_exits_cleanly(
    tmp_path: Path, recorder: Recorder, direct: Any,
) -> None:
    direct.put_object(Bucket=DUBLIN, Key="big/16m", Body=bytes(range(256)) * (BIG // 256))
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    process, port, admin = serve(tmp_path, recorder.url, folder, "shutdown_grace_seconds: 20\n")
    received = 0
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall((f"GET /{DUBLIN}/big/16m HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}Connection: close\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        received = len(head.split(b"\r\n\r\n", 1)[1])
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(port))          # no new connections ...
        with pytest.raises(urllib.error.HTTPError) as not_ready:   # ... and /readyz says so
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert b"shutting down" in not_ready.value.read()
        not_ready.value.close()
        while chunk := sock.recv(1 << 20):                      # ... but the stream in flight goes on
            received += len(chunk)
            time.sleep(0.001)
        sock.close()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert received == BIG
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    download = [r for r in lines if r["request"]["resource"] == f"s3://{DUBLIN}/big/16m"]
    assert [(r["decision"], r["status"]) for r in download] == [("allow", 200)]
    log = (tmp_path / "serve.log").read_text()
    assert "stopping: no new connections" in log
    assert "stopped" in log


@pytest.mark.usefixtures("seeded")
def test_streams_still_running_when_the_grace_ends_are_cut_and_audited(
    tmp_path: Path, recorder: Recorder, direct: Any,
) -> None:
    direct.put_object(Bucket=DUBLIN, Key="big/16m", Body=bytes(range(256)) * (BIG // 256))
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    process, port, _ = serve(tmp_path, recorder.url, folder, "shutdown_grace_seconds: 1\n")
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall((f"GET /{DUBLIN}/big/16m HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Bailiwick-Token: {make_token('IE')}\r\n{FAKE_SIGV4}Connection: close\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)   # and the caller reads nothing more
        assert process.wait(timeout=30) == 0
        took = time.monotonic() - signalled
        sock.close()
    finally:
        if process.poll() is None:
            process.kill()
    # The grace, then at most aiohttp's short cut-off: not the grace twice over.
    assert 1.0 <= took < 1.9
    download = [r for r in written_records(tmp_path / "audit.jsonl")
                if r["request"]["resource"] == f"s3://{DUBLIN}/big/16m"]
    assert [(r["decision"], r["error_code"]) for r in download] == [("error", "ShutdownCut")]
