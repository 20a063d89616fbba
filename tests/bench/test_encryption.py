"""The encryption scenario (bench/encryption.py): a tiny real run, and how key-service calls are counted.

The run is the scenario's own code on the real parts (the stand-in S3
server, two re-signing proxies, OpenBao when installed, curl) with objects of
a few hundred KiB, so it takes seconds; its figures are not asserted, only
that every part was measured and the key-service counts are the design's.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from bench.bed import MIB
from bench.encryption import EncryptionProfile, measure_encryption, round_trips
from bench.report import render

RELEASES = "bailiwick_key_releases_total"
HITS = "bailiwick_key_cache_lookups_total"


def series(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@pytest.mark.parametrize(("after", "expected"), [
    # No cache: every release is a round trip.
    ({series(RELEASES, operation="unwrap", result="released"): 3.0}, 3.0),
    # A proxy that counts a cache hit as released: the hits are taken off.
    ({series(RELEASES, operation="unwrap", result="released"): 3.0, series(HITS, result="hit"): 2.0}, 1.0),
    # A proxy that counts a cache hit as cached: released is already the round trips.
    ({series(RELEASES, operation="unwrap", result="released"): 1.0,
      series(RELEASES, operation="unwrap", result="cached"): 2.0, series(HITS, result="hit"): 2.0}, 1.0),
])
def test_round_trips_leave_out_releases_the_cache_answered(after: dict[Any, float], expected: float) -> None:
    assert round_trips({}, after, "unwrap")["round_trips"] == expected


def test_round_trips_are_deltas_between_two_scrapes() -> None:
    key = series(RELEASES, operation="generate", result="released")
    assert round_trips({key: 5.0}, {key: 7.0}, "generate")["round_trips"] == 2.0


TINY = EncryptionProfile(runs=1, stream_bytes=MIB, streams=(1, 2), rss_bytes=(256 * 1024, MIB), key_objects=2,
                         key_object_bytes=64 * 1024)


@pytest.fixture(scope="module")
def tiny_run() -> dict[str, Any]:
    missing = [tool for tool in ("curl", "taskset") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the benchmark needs {', '.join(missing)}")
    results: dict[str, Any] = {}
    measure_encryption(TINY, results)
    return dict(results["encryption"])


def test_a_tiny_run_measures_every_transfer_both_ways(tiny_run: dict[str, Any]) -> None:
    assert list(tiny_run["throughput"]) == ["PUT x1", "PUT x2", "GET x1", "GET x2"]
    for entry in tiny_run["throughput"].values():
        assert set(entry) == {"direct", "unencrypted", "encrypted"}
        assert all(entry[kind]["mb_s"] > 0 for kind in entry)
        assert entry["encrypted"]["peak_rss_mib"] > 0
        assert entry["encrypted"]["cpu_ms_per_mib"] >= 0
    assert list(tiny_run["memory"]) == [str(256 * 1024), str(MIB)]


def test_a_tiny_run_counts_one_key_call_per_object_and_none_from_the_cache(tiny_run: dict[str, Any]) -> None:
    services = tiny_run["key_service"]
    expected = ["file", "file, cache", "transit", "transit, cache"] if tiny_run["transit"] else ["file", "file, cache"]
    assert list(services) == expected
    for name, entry in services.items():
        cached = "cache" in name
        assert entry["per_object"] == {"write": 1.0, "read": 1.0, "read again": 0.0 if cached else 1.0}, name
        assert entry["latency"]["unwrap"]["calls"] == TINY.key_objects
        assert entry["latency"]["generate"]["mean_ms"] > 0


def test_a_tiny_runs_report_has_the_encryption_part_and_its_targets(tiny_run: dict[str, Any]) -> None:
    results = {"date": "2026-12-06 15:00 UTC", "smoke": True, "only": "encryption", "runs": 1,
               "elapsed_seconds": 1.0, "loadavg_before": "0 0 0", "loadavg_after": "0 0 0", "encryption": tiny_run,
               "machine": {"nproc": 2, "cpu_model": "x", "kernel": "k", "python": "3", "aiohttp": "3", "nginx": "n",
                           "wrk": "w", "curl": "c"}}
    report = render(results)
    headings = [line.split(":")[0] for line in report.splitlines() if line.startswith("#")]
    assert headings == ["# bailiwick benchmark report", "## (e) Encryption at rest", "## Targets"]
    assert "part encryption only" in report
    for transfer in ("PUT x1", "PUT x2", "GET x1", "GET x2"):
        assert f"| encrypted / unencrypted, {transfer} |" in report
    assert "| file, cache: key-service calls per object read again (cache on) | 0.00 calls |" in report

