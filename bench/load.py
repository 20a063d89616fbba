"""The load generators: each takes one sample against one URL of the bed and returns its figures.

wrk (small-object capacity), bench/openloop.py (latency from each request's
scheduled send time), concurrent curls (256 MiB streams, with the proxy's RSS
sampled meanwhile) and bench/policy_bench.py (the policy engine alone). Every
generator is pinned to the load CPU (the policy engine to the proxy's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.bed import BENCH, BUCKET_PATH, LARGE, LARGE_BYTES, LOAD_CPU, PROXY_CPU, Bed


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS of every process in a process group every 50 ms: peak per process and peak sum."""

    def __init__(self, pgid: int, interval: float = 0.05) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak_process_kib = 0
        self.peak_total_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = group_pids(self.pgid)
        last_scan = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_scan > 1.0:
                pids, last_scan = group_pids(self.pgid), time.monotonic()
            values = [rss_kib(pid) for pid in pids]
            # taskset execs the interpreter, so the group is bailiwick and its workers only.
            self.peak_process_kib = max(self.peak_process_kib, *values, 0)
            self.peak_total_kib = max(self.peak_total_kib, sum(values))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_wrk(url: str, bed: Bed, connections: int, seconds: int, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """wrk's req/s and errors; `extra`: more headers ("Connection: close": a new connection per request)."""
    args = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
            *bed.header_args(), *(arg for header in extra for arg in ("-H", header)), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise SystemExit(f"bench: cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(g) for g in sockets.groups()) if sockets else 0
    return {"rps": float(rate.group(1)), "requests": int(total.group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": socket_errors,
            "errors": (int(non2xx.group(1)) if non2xx else 0) + socket_errors}


def run_openloop(url: str, bed: Bed, rate: float, seconds: float, warmup: float,
                 cafile: Path | None = None) -> dict[str, float]:
    """bench/openloop.py's latencies; `cafile`: the CA an https:// URL's certificate is verified with."""
    args = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "openloop.py"), "--url", url,
            "--rate", f"{rate:.1f}", "--duration", str(seconds), "--warmup", str(warmup),
            "--connections", "64", *bed.header_args(), *(["--cafile", str(cafile)] if cafile else [])]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return dict(json.loads(out))


def run_transfer(url: str, bed: Bed, method: str, streams: int, sampler: RssSampler | None) -> dict[str, float]:
    """`streams` concurrent curls of 256 MiB; throughput = all bytes / wall time, client side."""
    procs = []
    started = time.perf_counter()
    with sampler if sampler is not None else contextlib.nullcontext():
        for i in range(streams):
            args = ["taskset", "-c", LOAD_CPU, "curl", "-sS", "-o", "/dev/null", "-w",
                    "%{http_code} %{size_download} %{size_upload}", *bed.header_args(), "-H", "Expect:"]
            if method == "GET":
                args.append(url + LARGE)
            else:
                args += ["-T", str(bed.upload_file), f"{url}{BUCKET_PATH}/put/obj-{i}"]
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True))  # noqa: S603
        outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    moved = 0
    for i, text in enumerate(outputs):
        code, down, up = text.split()
        size = int(float(down if method == "GET" else up))
        if not code.startswith("2") or size != LARGE_BYTES:
            raise SystemExit(f"bench: {method} {url} stream {i}: HTTP {code}, {size} bytes")
        if method == "PUT":
            stored = bed.docroot / BUCKET_PATH.lstrip("/") / "put" / f"obj-{i}"
            if stored.stat().st_size != LARGE_BYTES:
                raise SystemExit(f"bench: PUT {url}: the stand-in stored {stored.stat().st_size} bytes")
        moved += size
    result = {"mb_s": moved / wall / 1e6, "seconds": wall}
    if sampler is not None:
        result["peak_rss_process_mib"] = sampler.peak_process_kib / 1024
        result["peak_rss_total_mib"] = sampler.peak_total_kib / 1024
        result["rss_samples"] = sampler.samples
    return result


def run_policy(datasets: int, calls: int, repeats: int) -> dict[str, Any]:
    args = ["taskset", "-c", PROXY_CPU, sys.executable, str(BENCH / "policy_bench.py"), "--datasets", str(datasets),
            "--calls", str(calls), "--repeats", str(repeats)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return dict(json.loads(out))
