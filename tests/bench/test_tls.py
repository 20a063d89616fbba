"""Part (f) of the benchmark: its certificates make real handshakes, and its report sets TLS beside plain HTTP."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.report import render
from bench.tls import make_certificates, time_setups, tls_profile

# Part (f) of a real smoke run (`python3 bench/run.py --smoke --only tls`), trimmed to what the report reads.
TLS_PART: dict[str, Any] = {
    "profile": {"runs": 1, "wrk_seconds": 2, "connections": 64, "new_connections": 16, "setups": 50,
                "openloop_seconds": 2.0, "openloop_warmup": 0.5},
    "plain": {"new_rps": 916.54, "new_errors": 0.0, "keepalive_rps": 1482.65, "keepalive_errors": 0.0,
              "setup_p50_ms": 0.0617, "setup_p99_ms": 4.917,
              "latency": {"errors": 0, "non2xx": 0, "p50_ms": 2.5, "p99_ms": 10.0}},
    "tls": {"new_rps": 398.31, "new_errors": 0.0, "keepalive_rps": 1221.52, "keepalive_errors": 0.0,
            "setup_p50_ms": 2.183, "setup_p99_ms": 8.337,
            "latency": {"errors": 0, "non2xx": 1, "p50_ms": 3.0, "p99_ms": 15.0}},
    "latency_rate": 741.325,
}
MACHINE = {"nproc": 2, "cpu_model": "test", "kernel": "test", "python": "3.11", "aiohttp": "3", "nginx": "nginx",
           "wrk": "wrk", "curl": "curl"}


def test_the_report_sets_tls_beside_plain_http() -> None:
    report = render({"date": "2026-12-06 21:08 UTC", "smoke": True, "runs": 1, "only": "tls", "machine": MACHINE,
                     "loadavg_before": "0", "loadavg_after": "0", "elapsed_seconds": 16.0, "tls": TLS_PART})
    assert "## (f) TLS on the data port: the same proxy over plain HTTP and over TLS" in report
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in report.splitlines()
            if line.startswith("| ")}
    assert rows["new connections/s, one 1 KiB GET each (16 clients, `Connection: close`)"] == [
        "917 /s", "398 /s", "43% |"]
    assert rows["1 KiB GETs on 64 keep-alive connections"] == ["1,483 req/s", "1,222 req/s", "82% |"]
    assert rows["latency at 741 req/s (open loop), p99"] == ["10.00 ms", "15.00 ms", "150% |"]
    assert "Errors in this part: 1." in report


def test_the_smoke_profile_is_short() -> None:
    smoke, full = tls_profile(True, None), tls_profile(False, None)
    assert smoke.runs == 1
    assert 2 * 2 * smoke.wrk_seconds + 2 * (smoke.openloop_seconds + smoke.openloop_warmup) < 15
    assert full.wrk_seconds > smoke.wrk_seconds
    assert full.setups > smoke.setups


@pytest.mark.parametrize("trusted", [True, False])
def test_the_bench_certificate_makes_a_verified_handshake(tmp_path: Path, trusted: bool) -> None:
    tls = make_certificates(tmp_path / "tls")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.certificate, tls.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    count = 3

    def serve() -> None:
        for _ in range(count):
            connection, _ = listener.accept()
            try:
                with server.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                connection.close()
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        if trusted:
            timed = time_setups(port, tls.client_context(), count)
            assert 0 < timed["p50_ms"] <= timed["p99_ms"]
        else:   # another client's roots: the certificate is refused, never waved through
            with pytest.raises(ssl.SSLCertVerificationError):
                time_setups(port, ssl.create_default_context(), 1)
    finally:
        listener.close()
        thread.join(timeout=5)
