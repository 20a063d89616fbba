"""The measurements: which samples are taken, how often, and the medians kept.

(a) 1 KiB GET capacity with wrk, (b) added latency at 25 % and 50 % of
bailiwick's capacity with the open-loop generator, (c) 256 MiB GET/PUT
streaming throughput and bailiwick's peak RSS, (d) the policy engine alone.
Each is taken against the direct upstream, nginx and bailiwick alike, so the
report can give ratios; the results are one JSON-able dict that bench/report.py
renders.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bed import (
    BOTH_CPUS,
    LOAD_CPU,
    PROXY_CPU,
    SMALL,
    Bailiwick,
    Bed,
    Processes,
    bed_folder,
    check_get,
    log,
    make_bed,
    make_identity,
    nginx_binary,
    start_bailiwick,
    start_nginx_proxy,
    start_upstream,
    workers_flag_available,
)
from bench.load import RssSampler, group_pids, rss_kib, run_openloop, run_policy, run_transfer, run_wrk


@dataclass(frozen=True)
class Profile:
    """How long and how often each measurement runs."""

    runs: int
    wrk_seconds: int
    connections: tuple[int, ...]
    openloop_seconds: float
    openloop_warmup: float
    policy_datasets: tuple[int, ...]
    policy_calls: int


def profile(smoke: bool, runs: int | None) -> Profile:
    if smoke:
        # 100,000 datasets take about two minutes just to load (PyYAML), too long for a smoke run.
        return Profile(runs or 1, 3, (10, 64, 256), 5.0, 0.5, (10, 1_000, 10_000), 20_000)
    return Profile(runs or 3, 10, (10, 64, 256), 20.0, 1.0, (10, 1_000, 100_000), 200_000)


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    nginx_v = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True,  # noqa: S603
                             check=False).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)  # noqa: S607
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx_v.removeprefix("nginx version: "),
        "wrk": " ".join((wrk_v.stdout + wrk_v.stderr).split()[:2]),
        "curl": " ".join(curl_v.stdout.split()[:2]),
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def measure(prof: Profile, results: dict[str, Any]) -> None:
    procs = Processes()
    tmp = bed_folder("bailiwick-bench-")
    try:
        log(f"test bed in {tmp}")
        bed = make_bed(tmp)
        jwks = make_identity(bed)
        start_upstream(procs, bed)
        start_nginx_proxy(procs, bed)
        bw1 = start_bailiwick(procs, bed, jwks, 1)
        has_workers = workers_flag_available()
        results["bailiwick_workers_flag"] = has_workers
        urls = {
            "direct": f"http://127.0.0.1:{bed.upstream_port}",
            "nginx": f"http://127.0.0.1:{bed.nginx_port}",
            "bailiwick": f"http://127.0.0.1:{bw1.port}",
        }
        for name, url in urls.items():
            check_get(url + SMALL, bed, name)
        results["pinning"] = {
            "stand-in upstream (nginx, 1 worker)": f"CPU {LOAD_CPU}",
            "load generators (wrk -t1, openloop.py, curl)": f"CPU {LOAD_CPU}",
            "nginx reverse proxy (1 worker)": f"CPU {PROXY_CPU}",
            "bailiwick (1 process)": f"CPU {PROXY_CPU}",
            "bailiwick --workers 2": f"CPUs {BOTH_CPUS} (shared with the upstream and the load generator)"
            if has_workers else "not measured: `serve --help` has no --workers flag",
            "policy engine benchmark": f"CPU {PROXY_CPU}",
        }

        small_get(prof, bed, urls, procs, jwks, has_workers, results)
        latency(prof, bed, urls, results)
        streaming(prof, bed, urls, procs, jwks, bw1, results)
        procs.stop_all()
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    policy_engine(prof, results)


def small_get(prof: Profile, bed: Bed, urls: dict[str, str], procs: Processes, jwks: Path, has_workers: bool,
              results: dict[str, Any]) -> None:
    log(f"(a) 1 KiB GETs, wrk -t1, {prof.wrk_seconds}s each, connections {prof.connections}, {prof.runs} run(s)")
    targets = dict(urls)
    bw2: Bailiwick | None = None
    if has_workers:
        bw2 = start_bailiwick(procs, bed, jwks, 2)
        targets["bailiwick_w2"] = f"http://127.0.0.1:{bw2.port}"
        check_get(targets["bailiwick_w2"] + SMALL, bed, "bailiwick --workers 2")
    raw: dict[str, dict[int, list[dict[str, float]]]] = {t: {c: [] for c in prof.connections} for t in targets}
    try:
        for run in range(prof.runs):
            for connections in prof.connections:
                for name, url in targets.items():
                    sample = run_wrk(url + SMALL, bed, connections, prof.wrk_seconds)
                    raw[name][connections].append(sample)
                    log(f"  run {run + 1} c={connections} {name}: {sample['rps']:.0f} req/s, "
                        f"{sample['errors']} errors")
    finally:
        if bw2 is not None:
            procs.stop(bw2.proc)
    results["small_get"] = {
        name: {str(c): {"rps": median([s["rps"] for s in samples]),
                        "errors": median([s["errors"] for s in samples]),
                        "runs": samples}
               for c, samples in by_c.items()}
        for name, by_c in raw.items()
    }


def capacity(results: dict[str, Any], name: str) -> float:
    return float(max(v["rps"] for v in results["small_get"][name].values()))


def latency(prof: Profile, bed: Bed, urls: dict[str, str], results: dict[str, Any]) -> None:
    cap = capacity(results, "bailiwick")
    rates = {"25%": cap * 0.25, "50%": cap * 0.50}
    log(f"(b) open-loop latency at {', '.join(f'{k} = {v:.0f} req/s' for k, v in rates.items())} "
        f"of bailiwick's {cap:.0f} req/s, {prof.openloop_seconds:g}s each")
    out: dict[str, Any] = {"capacity_rps": cap, "rates": {}}
    for label, rate in rates.items():
        raw: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
        for run in range(prof.runs):
            for name, url in urls.items():
                sample = run_openloop(url + SMALL, bed, rate, prof.openloop_seconds, prof.openloop_warmup)
                raw[name].append(sample)
                log(f"  run {run + 1} {label} {name}: p50 {sample['p50_ms']:.3f} ms, p99 {sample['p99_ms']:.3f} ms, "
                    f"p99.9 {sample['p999_ms']:.3f} ms, errors {sample['errors'] + sample['non2xx']}")
        out["rates"][label] = {
            "rate_rps": rate,
            **{name: {key: median([s[key] for s in samples])
                      for key in ("p50_ms", "p99_ms", "p999_ms", "achieved_rate", "errors", "non2xx")}
               | {"runs": samples}
               for name, samples in raw.items()},
        }
    results["latency"] = out


def streaming(prof: Profile, bed: Bed, urls: dict[str, str], procs: Processes, jwks: Path, bw1: Bailiwick,
              results: dict[str, Any]) -> None:
    """Streams through a fresh bailiwick process, so that its peak RSS is what the streams cost.

    The process that took the capacity and latency runs (up to 256 connections at
    once) keeps part of that memory; its RSS is reported on its own.
    """
    log(f"(c) 256 MiB streams, GET and PUT, 1 and 4 at once, {prof.runs} run(s)")
    after_load = max([rss_kib(pid) for pid in group_pids(bw1.proc.pid)], default=0) / 1024
    log(f"  RSS of the bailiwick that took the capacity and latency runs: {after_load:.1f} MiB")
    procs.stop(bw1.proc)
    fresh = start_bailiwick(procs, bed, jwks, 1)
    urls = {**urls, "bailiwick": f"http://127.0.0.1:{fresh.port}"}
    check_get(urls["bailiwick"] + SMALL, bed, "bailiwick (fresh, for streaming)")
    idle = [rss_kib(pid) for pid in group_pids(fresh.proc.pid)]
    out: dict[str, Any] = {"idle_rss_process_mib": max(idle, default=0) / 1024, "rss_after_load_mib": after_load}
    log(f"  fresh bailiwick idle RSS before the transfers: {out['idle_rss_process_mib']:.1f} MiB")
    bw1 = fresh
    for method in ("GET", "PUT"):
        for streams in (1, 4):
            key = f"{method} x{streams}"
            entry: dict[str, Any] = {}
            for name, url in urls.items():
                samples = []
                for _ in range(prof.runs):
                    sampler = RssSampler(bw1.proc.pid) if name == "bailiwick" else None
                    samples.append(run_transfer(url, bed, method, streams, sampler))
                entry[name] = {"mb_s": median([s["mb_s"] for s in samples]), "runs": samples}
                if name == "bailiwick":
                    entry[name]["peak_rss_process_mib"] = max(s["peak_rss_process_mib"] for s in samples)
                    entry[name]["peak_rss_total_mib"] = max(s["peak_rss_total_mib"] for s in samples)
                log(f"  {key} {name}: {entry[name]['mb_s']:.0f} MB/s")
            out[key] = entry
    results["streaming"] = out


def policy_engine(prof: Profile, results: dict[str, Any]) -> None:
    log(f"(d) policy engine, {prof.policy_calls} decisions x {prof.runs} round(s), datasets {prof.policy_datasets}")
    out: dict[str, Any] = {}
    for datasets in prof.policy_datasets:
        sample = run_policy(datasets, prof.policy_calls, prof.runs)
        rounds = sample["rounds"]
        out[str(datasets)] = {
            "decisions_per_second": median([r["decisions_per_second"] for r in rounds]),
            "p50_us": median([r["p50_us"] for r in rounds]),
            "p99_us": median([r["p99_us"] for r in rounds]),
            "load_seconds": sample["load_seconds"],
            "rounds": rounds,
        }
        log(f"  {datasets} datasets: {out[str(datasets)]['decisions_per_second']:.0f}/s, "
            f"p99 {out[str(datasets)]['p99_us']:.1f} us (loaded in {sample['load_seconds']:.1f}s)")
    results["policy"] = out
