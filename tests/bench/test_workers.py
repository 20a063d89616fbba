"""Part (i) of the benchmark: the /proc readers it relies on, its profiles and its table."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from bench.report import render
from bench.workers import KEYS, context_switches, machine_ticks, workers_profile

MACHINE = {"nproc": 2, "cpu_model": "test", "kernel": "test", "python": "3.11", "aiohttp": "3", "nginx": "nginx",
           "wrk": "wrk", "curl": "curl"}


def point(rps: float, proxy_vcpu: float, busiest: float, idlest: float) -> dict[str, float]:
    values = {"rps": rps, "errors": 0.0, "proxy_vcpu": proxy_vcpu, "busiest_worker_vcpu": busiest,
              "idlest_worker_vcpu": idlest, "proxy_cpu_us_per_request": proxy_vcpu / rps * 1e6,
              "upstream_vcpu": 0.1, "wrk_vcpu": 0.05, "idle_share": 0.25, "context_switches_per_request": 0.5}
    assert set(values) == set(KEYS)
    return values


def results() -> dict[str, Any]:
    part = {"profile": {"runs": 1, "seconds": 2, "workers": [1, 2]}, "cpus": 2, "proxy_cpus": "0,1",
            "connections": 64,
            "by_workers": {"1": point(5000.0, 1.0, 1.0, 1.0), "2": point(7500.0, 1.6, 0.9, 0.7)}}
    return {"date": "2026-12-07 05:00 UTC", "smoke": True, "runs": 1, "only": "workers", "machine": MACHINE,
            "loadavg_before": "0", "loadavg_after": "0", "elapsed_seconds": 10.0, "workers": part}


def cells(report: str, first: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize(("workers", "expected"), [
    ("1", ["5,000 (0)", "1.00x", "1.00", "1.00 / 1.00", "200", "0.05", "0.10", "25%", "0.50"]),
    ("2", ["7,500 (0)", "1.50x", "1.60", "0.90 / 0.70", "213", "0.05", "0.10", "25%", "0.50"]),
])
def test_the_table_gives_capacity_and_where_the_cpu_went(workers: str, expected: list[str]) -> None:
    report = render(results())
    assert "## (i) Workers: 1 KiB GET capacity with 1, 2 worker processes" in report
    assert cells(report, workers)[1:] == expected


def test_the_smoke_profile_is_short_and_the_full_one_has_four_workers() -> None:
    smoke, full = workers_profile(True, None), workers_profile(False, None)
    assert smoke.workers == (1, 2)
    assert full.workers == (1, 2, 4)
    assert smoke.seconds * len(smoke.workers) * smoke.runs <= 10
    assert full.runs == 3


def test_the_machine_ticks_move_forward_and_idle_is_part_of_the_total() -> None:
    idle, total = machine_ticks()
    time.sleep(0.05)
    idle2, total2 = machine_ticks()
    assert 0 <= idle <= total
    assert total2 > total
    assert 0 <= idle2 - idle <= total2 - total


def test_context_switches_count_this_process_sleeping() -> None:
    before = context_switches([os.getpid()])
    for _ in range(5):
        time.sleep(0.001)   # each sleep gives the CPU up: a voluntary switch
    assert context_switches([os.getpid()]) - before >= 5
    assert context_switches([2 ** 22 + 1]) == 0   # a process that is not there counts nothing
