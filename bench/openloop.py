"""An open-loop HTTP/1.1 load generator that does not hide queueing.

wrk and hey are closed-loop: a connection sends its next request only when the
previous answer arrived, so a slow server is simply asked less often and its
queueing delay never shows in the percentiles ("coordinated omission"). Here
requests are scheduled at fixed intervals (``rate`` per second) whatever the
server does, and each request's latency is measured from its *scheduled* send
time to the end of its response. If every connection is busy at that moment,
the request waits in a queue and the wait counts as latency.

Implementation: asyncio (uvloop when installed), N keep-alive connections over
raw asyncio streams, one dispatcher that releases requests at their scheduled
times. Event loop timers only have millisecond resolution, so the dispatcher
sleeps until ~2 ms before the next deadline and then polls the loop
(``sched_yield`` + ``sleep(0)``, so a server sharing the CPU still runs first)
so that requests leave within microseconds of their schedule;
the generator's own overhead is the same for every target, and the harness
reports latencies *over direct* to cancel it.

With ``--cpu-pid PID`` (once per process: a server's master and workers)
it also reads the CPU time (user + system, all threads) those processes
used over the measured window, from ``/proc/PID/stat``, and gives it per
request: ``vcpu_per_1000`` is the CPU a server needs for 1,000 requests per
second (0.35 = 35 % of one core). The window opens with the first request
after the warmup and closes when the last answer is in, so a server's idle
time around a run does not count. ``--method PUT --body-size N`` sends a body
of N bytes with each request.

Run: ``python3 bench/openloop.py --url http://127.0.0.1:8080/b/k --rate 2000
--duration 20 -H 'X-Token: …'``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import time
from urllib.parse import urlsplit

_SPIN_WINDOW = 0.002  # seconds before a deadline from which the dispatcher polls instead of sleeping
_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of utime and stime in /proc/PID/stat


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan if empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far (each process's line covers all its threads, ended ones too)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime: fields 14 and 15 of proc(5)
    return total / _TICKS


class OpenLoop:
    """Sends ``rate`` requests per second for ``duration`` seconds over ``connections`` connections."""

    def __init__(self, url: str, headers: list[str], rate: float, duration: float, connections: int,
                 warmup: float, cafile: str | None = None, *, method: str = "GET", body_size: int = 0,
                 cpu_pids: tuple[int, ...] = ()) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"openloop: only http:// and https:// URLs are supported, got {url!r}")
        self.host = parts.hostname
        # https: the certificate verified against `cafile` (or the system's roots), as a client would.
        self.tls = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        length = [f"Content-Length: {body_size}"] if body_size or method in ("PUT", "POST") else []
        lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", *headers, *length, "", ""]
        self.request = "\r\n".join(lines).encode("latin-1") + bytes(body_size)
        self.cpu_pids = list(cpu_pids)
        self.rate = rate
        self.duration = duration
        self.connections = connections
        self.warmup = warmup
        self.latencies: list[float] = []
        self.errors = 0
        self.non2xx = 0
        self.completed = 0
        self.queue: asyncio.Queue[float | None] = asyncio.Queue()
        self.record_from = 0.0
        self.last_done = 0.0

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value.strip())
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
        return status

    async def _worker(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            scheduled = await self.queue.get()
            if scheduled is None:
                break
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
                status = await self._exchange(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                self.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            done = time.perf_counter()
            self.completed += 1
            if not 200 <= status < 300:
                self.non2xx += 1
            if scheduled >= self.record_from:
                self.latencies.append(done - scheduled)
                self.last_done = max(self.last_done, done)
        if writer is not None:
            writer.close()

    async def run(self) -> dict[str, float | int | str]:
        workers = [asyncio.create_task(self._worker()) for _ in range(self.connections)]
        interval = 1.0 / self.rate
        total = int((self.warmup + self.duration) * self.rate)
        start = time.perf_counter() + 0.05
        self.record_from = start + self.warmup
        first_measured = math.ceil(self.warmup * self.rate)
        cpu_from = wall_from = 0.0
        for i in range(total):
            deadline = start + i * interval
            while True:
                ahead = deadline - time.perf_counter()
                if ahead <= 0:
                    break
                if ahead > 2 * _SPIN_WINDOW:
                    await asyncio.sleep(ahead - _SPIN_WINDOW)
                else:
                    # Poll, but let a server sharing this CPU run first: spinning must not delay it.
                    os.sched_yield()
                    await asyncio.sleep(0)
            if i == first_measured and self.cpu_pids:
                cpu_from, wall_from = cpu_seconds(self.cpu_pids), time.perf_counter()
            self.queue.put_nowait(deadline)
        sent_until = time.perf_counter()
        for _ in workers:
            self.queue.put_nowait(None)
        await asyncio.wait(workers, timeout=30)
        cpu: dict[str, float] = {}
        values = sorted(self.latencies)
        measured = len(values)
        if self.cpu_pids and measured:
            used, wall = cpu_seconds(self.cpu_pids) - cpu_from, time.perf_counter() - wall_from
            cpu = {"cpu_seconds": used, "cpu_window_seconds": wall, "cpu_busy": used / wall,
                   "cpu_us_per_request": used / measured * 1e6, "vcpu_per_1000": used / measured * 1000}
        return {
            "method": self.request.split(b" ", 1)[0].decode(),
            "target_rate": self.rate,
            "scheduled": total,
            "completed": self.completed,
            "errors": self.errors,
            "non2xx": self.non2xx,
            "measured": measured,
            # Answers per second over the measured window, or over the time they took when that was longer
            # (a server that cannot keep up answers at its own pace, behind the schedule).
            "achieved_rate": measured / max(self.duration, self.last_done - self.record_from) if measured else 0.0,
            "schedule_lag_ms": max(0.0, (sent_until - (start + (total - 1) * interval)) * 1e3),
            "p50_ms": percentile(values, 0.50) * 1e3,
            "p90_ms": percentile(values, 0.90) * 1e3,
            "p99_ms": percentile(values, 0.99) * 1e3,
            "p999_ms": percentile(values, 0.999) * 1e3,
            "max_ms": (values[-1] * 1e3) if values else float("nan"),
            **cpu,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (default: 20)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default: 1)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default: 64)")
    parser.add_argument("-H", "--header", action="append", default=[], help="extra header, 'Name: value'")
    parser.add_argument("--cafile", help="https: the CA bundle the server's certificate is verified with")
    parser.add_argument("--method", default="GET", help="GET (default), PUT, …")
    parser.add_argument("--body-size", type=int, default=0, help="bytes of body sent with each request (default: 0)")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[],
                        help="a process whose CPU time over the measured window is reported (repeat for several)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(OpenLoop(args.url, args.header, args.rate, args.duration, args.connections, args.warmup,
                             args.cafile, method=args.method, body_size=args.body_size,
                             cpu_pids=tuple(args.cpu_pid)).run())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
