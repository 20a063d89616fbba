"""(i) Workers that scale: small-GET capacity with 1, 2 and 4 worker processes, and where the CPU went.

Why: `bailiwick serve --workers N` forks N processes that share the data port
(SO_REUSEPORT), each with its own event loop, so capacity should grow with
the cores the proxy is given, and stop growing when there are none left. A
capacity figure alone cannot tell "the proxy does not scale" from "the
machine is full", so every sample also reads where the CPU went over its
window:

* the proxy: user + system time of every process in its process group (all
  workers, all threads), from ``/proc/PID/stat``; from it, the CPU time per
  request and how many cores the proxy used;
* the load generator (wrk, one thread) and the stand-in upstream (nginx, one
  worker): wrk's from ``getrusage`` of the finished child, the stand-in's
  from ``/proc``;
* each worker's own CPU (the busiest and the idlest): the kernel hands each
  connection to one worker's socket by hash, so with few connections the
  workers are not evenly loaded;
* the machine: the share of all CPUs that stayed idle (``/proc/stat``);
* context switches per request of the proxy's processes (voluntary and not,
  from ``/proc/PID/status``): with more workers than free cores, the kernel
  time-slices them.

Layout: the stand-in and wrk stay pinned to the load CPU as in part (a);
bailiwick may run on every CPU (``taskset -c 0,1`` here) whatever its number
of workers, so the only thing that changes between samples is N. Samples are
interleaved (1, 2, 4, then the next run), medians over runs. wrk keeps 64
keep-alive connections (part (a)'s best point): the kernel spreads them over
the workers' listening sockets by hash of the client port.

Run alone: ``python3 bench/run.py --only workers`` (about 3 min) or
``python3 bench/workers.py --runs 3`` (prints the table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as `python3 bench/workers.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bed import (
    BOTH_CPUS,
    SMALL,
    Bailiwick,
    Processes,
    bed_folder,
    check_get,
    log,
    make_bed,
    make_identity,
    start_bailiwick,
    start_upstream,
)
from bench.load import group_pids, run_wrk
from bench.measure import loadavg, median
from bench.openloop import cpu_seconds

CONNECTIONS = 64


@dataclass(frozen=True)
class WorkersProfile:
    """How many workers, how long and how often."""

    runs: int
    seconds: int
    workers: tuple[int, ...]


def workers_profile(smoke: bool, runs: int | None) -> WorkersProfile:
    if smoke:
        return WorkersProfile(runs or 1, 2, (1, 2))
    return WorkersProfile(runs or 3, 10, (1, 2, 4))


def context_switches(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def machine_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]   # idle + iowait
    return idle, sum(fields[:8])   # guest time is already counted in user


def sample(bailiwick: Bailiwick, upstream_pids: list[int], bed: Any, seconds: int) -> dict[str, float]:
    """One wrk run against `bailiwick`, with the CPU each party used over it."""
    proxy_pids = group_pids(bailiwick.proc.pid)
    per_worker = [cpu_seconds([pid]) for pid in proxy_pids]
    before = (cpu_seconds(proxy_pids), cpu_seconds(upstream_pids), context_switches(proxy_pids),
              resource.getrusage(resource.RUSAGE_CHILDREN), machine_ticks())
    started = time.monotonic()
    result = run_wrk(f"http://127.0.0.1:{bailiwick.port}{SMALL}", bed, CONNECTIONS, seconds)
    wall = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle, total = machine_ticks()
    proxy_cpu = cpu_seconds(proxy_pids) - before[0]
    upstream_cpu = cpu_seconds(upstream_pids) - before[1]
    # wrk (and the taskset that exec'd it) is the only child reaped during the window.
    wrk_cpu = (children.ru_utime + children.ru_stime) - (before[3].ru_utime + before[3].ru_stime)
    requests = max(int(result["requests"]), 1)
    spent = [cpu_seconds([pid]) - was for pid, was in zip(proxy_pids, per_worker, strict=True)]
    return {
        "rps": result["rps"],
        "errors": result["errors"],
        "proxy_processes": len(proxy_pids),
        "proxy_vcpu": proxy_cpu / wall,
        # How evenly the kernel spread the connections (SO_REUSEPORT hashes each to one worker's socket).
        "busiest_worker_vcpu": max(spent) / wall,
        "idlest_worker_vcpu": min(spent) / wall,
        "proxy_cpu_us_per_request": proxy_cpu / requests * 1e6,
        "upstream_vcpu": upstream_cpu / wall,
        "wrk_vcpu": wrk_cpu / wall,
        "idle_share": (idle - before[4][0]) / max(total - before[4][1], 1),
        "context_switches_per_request": (context_switches(proxy_pids) - before[2]) / requests,
    }


KEYS = ("rps", "errors", "proxy_vcpu", "busiest_worker_vcpu", "idlest_worker_vcpu", "proxy_cpu_us_per_request",
        "upstream_vcpu", "wrk_vcpu", "idle_share", "context_switches_per_request")


def measure_workers(prof: WorkersProfile, results: dict[str, Any]) -> None:
    """Part (i) into results["workers"]: per worker count, the medians over the runs."""
    tmp = bed_folder("bailiwick-bench-workers-")
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        upstream = start_upstream(procs, bed)
        upstream_pids = group_pids(upstream.pid)
        jwks = make_identity(bed)
        proxies = {n: start_bailiwick(procs, bed, jwks, n, cpus=BOTH_CPUS) for n in prof.workers}
        for n, proxy in proxies.items():
            check_get(f"http://127.0.0.1:{proxy.port}{SMALL}", bed, f"bailiwick --workers {n}")
        raw: dict[int, list[dict[str, float]]] = {n: [] for n in prof.workers}
        for run in range(prof.runs):
            for n, proxy in proxies.items():
                point = sample(proxy, upstream_pids, bed, prof.seconds)
                raw[n].append(point)
                log(f"(i) run {run + 1}/{prof.runs} workers {n}: {point['rps']:.0f} req/s, proxy "
                    f"{point['proxy_vcpu']:.2f} vCPU ({point['proxy_cpu_us_per_request']:.0f} µs/request), "
                    f"wrk {point['wrk_vcpu']:.2f}, stand-in {point['upstream_vcpu']:.2f}, "
                    f"idle {point['idle_share']:.0%}, load {loadavg()}")
        results["workers"] = {
            "profile": prof.__dict__,
            "cpus": os.cpu_count(),
            "proxy_cpus": BOTH_CPUS,
            "connections": CONNECTIONS,
            "by_workers": {str(n): {key: median([s[key] for s in samples]) for key in KEYS} | {"runs": samples}
                           for n, samples in raw.items()},
        }
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per worker count, medians reported (default: 3)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of wrk per sample (default: 10)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (default: 1,2,4)")
    parser.add_argument("--output", type=Path, help="write the results (JSON) here (default: print only)")
    args = parser.parse_args(argv)
    prof = WorkersProfile(args.runs, args.seconds, tuple(int(n) for n in args.workers.split(",")))
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "loadavg_before": loadavg()}
    measure_workers(prof, results)
    results["loadavg_after"] = loadavg()
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import render_workers

    print("\n".join(render_workers(results["workers"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
