"""`bailiwick serve --workers 2`: two processes on one port, each with its own audit chain, metrics summed."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.audit import verify
from tests.conftest import DUBLIN, make_token, s3_client
from tests.support.recorder import Recorder
from tests.support.serve import serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.usefixtures("seeded")
def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path, recorder: Recorder) -> None:
    process, port, admin = serve(tmp_path, recorder.url, ROOT / "policies", "workers: 2\n")
    try:
        s3 = s3_client(f"http://127.0.0.1:{port}", make_token("IE"))
        for _ in range(60):
            # New connections each time, so that the kernel spreads them over both workers.
            s3_client(f"http://127.0.0.1:{port}", make_token("IE")).get_object(
                Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()
        assert s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read() == b"Dublin mail"
        # Whichever worker answers a scrape, it reports the figures of both.
        for _ in range(6):
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
                text = response.read().decode()
            counted = [s for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "bailiwick_requests_total" and s.labels["decision"] == "allow"]
            assert sum(s.value for s in counted) == 61
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0
    files = sorted(tmp_path.glob("audit.worker*.jsonl"))
    assert [f.name for f in files] == ["audit.worker0.jsonl", "audit.worker1.jsonl"]
    results = [verify(f) for f in files]
    assert all(r.ok for r in results)
    assert sum(r.lines for r in results) == 61
    assert all(r.lines > 0 for r in results)
