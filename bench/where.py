"""Where the time goes: a sampled profile of the proxy at a fixed rate and at saturation, by phase.

Why: part (h) says how much CPU a request costs, not what it is spent on;
cutting it starts from knowing which phase of a request
(``identity -> resources -> policy -> forward -> audit/metrics``) and which
library pays. This samples the running proxy's Python stacks with py-spy
(``--gil``: only stacks holding the GIL, which leaves out threads asleep in
a queue or in ``epoll_wait``, so the samples follow the CPU the Python side
uses; the process is paused for each sample, as py-spy does by default: read
without pausing, a busy loop's stack changes while it is read and a good
share of the samples at saturation came out as frames of different moments)
while the same bed as part (h) drives it, and sorts
every sample into one phase:

* below the data port's handler (``proxy/gateway.py`` ``handle``), the
  deepest frame of the proxy's own code decides (identity, S3 or Azure
  request parsing, the policy decision, the upstream exchange, the audit
  line and metrics, the rest of the evaluation, the gateway itself); when
  the handler itself called a library (aiohttp writing the answer), that
  library is named;
* outside the handler: aiohttp reading requests and running the handler,
  the audit writer thread, and the event loop with everything else.

The CPU time the proxy used over the window (``/proc``) is given too, so a
phase's share is also µs per request.

Run: ``python3 bench/where.py --rate 1000 --seconds 10`` (fixed rate, open
loop) and ``python3 bench/where.py --saturate --seconds 10`` (wrk, 64
connections); ``--source TREE`` profiles another checkout. Needs py-spy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# Run as `python3 bench/where.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bed import BENCH, LOAD_CPU, ROOT, SMALL, Processes, bed_folder, check_get, make_bed, start_upstream
from bench.cpu import SHORT, make_credentials, request_headers, start_proxy
from bench.measure import loadavg
from bench.openloop import cpu_seconds

HANDLER = "Gateway.handle (proxy/gateway.py:"
# The proxy's own modules, by phase: the deepest of the proxy's frames in a sample names its phase.
PHASES: tuple[tuple[str, str], ...] = (
    ("proxy/identity/", "identity (token or signature check)"),
    ("proxy/s3/", "S3 request parsing"),
    ("proxy/azure/", "Azure request parsing"),
    ("proxy/policy/", "policy decision"),
    ("proxy/upstream/", "upstream exchange"),
    ("proxy/audit/", "audit line and metrics"),
    ("proxy/recording.py", "audit line and metrics"),
    ("proxy/metrics.py", "audit line and metrics"),
    ("proxy/accesslog.py", "audit line and metrics"),
    ("proxy/evaluate.py", "evaluation, other"),
    ("proxy/", "gateway and the proxy's other request handling"),
)
# Libraries the handler calls directly, by the first of their frames below the proxy's.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("aiohttp/", "aiohttp: the answer's head and body"),
    ("multidict/", "aiohttp: the answer's head and body"),
    ("prometheus_client/", "audit line and metrics"),
    ("jwt/", "identity (token or signature check)"),
    ("asyncio/", "event loop and other"),
)


def frame_file(frame: str) -> str:
    """``name (path:line)`` -> path."""
    inside = frame[frame.rfind("(") + 1:]
    return inside.rsplit(":", 1)[0]


# Where every stack of the proxy starts: the main thread, or a thread's bootstrap.
ROOTS = ("_run_module_as_main (", "Thread._bootstrap (")
TORN = "unreadable: a stack that changed while it was read"


def phase(frames: list[str]) -> str:
    """The phase one sample (its frames, outermost first) belongs to."""
    if not frames[0].startswith(ROOTS):
        return TORN
    start = next((i for i, frame in enumerate(frames) if frame.startswith(HANDLER)), None)
    if start is None:
        files = [frame_file(frame) for frame in frames]
        if any(f.startswith("proxy/audit/") for f in files):
            return "audit writer thread"
        if any(f.startswith("aiohttp/") for f in files):
            return "aiohttp: reading the request, and the answer after the handler"
        return "event loop and other"
    below = [frame_file(frame) for frame in frames[start:]]
    deepest = max((i for i, f in enumerate(below) if f.startswith("proxy/")), default=0)
    own = below[deepest]
    if deepest == 0 or own == "proxy/gateway.py":
        after = below[deepest + 1:]
        for f in after:
            for prefix, name in LIBRARIES:
                if f.startswith(prefix):
                    return name
        return "gateway and the proxy's other request handling"
    return next(name for prefix, name in PHASES if own.startswith(prefix))


def shares(raw: str) -> Counter[str]:
    """Samples per phase from py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[phase(stack.split(";"))] += int(count)
    return counts


def profile(args: argparse.Namespace) -> tuple[Counter[str], dict[str, float]]:
    """Runs the bed, drives the proxy, samples it; the samples per phase and the window's figures."""
    tmp = bed_folder("bailiwick-bench-where-")
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        start_upstream(procs, bed)
        jwks, creds = make_credentials(bed)
        proxy = start_proxy(procs, bed, jwks, creds, "where", args.source)
        url = f"http://127.0.0.1:{proxy.port}{SMALL}"
        check_get(url, bed, "bailiwick")
        headers = request_headers(SHORT[args.kind], url, creds)
        warmup = 2.0
        if args.saturate:
            load = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c64", f"-d{int(warmup + args.seconds + 2)}s",
                    *(arg for header in headers for arg in ("-H", header)), url]
        else:
            load = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "openloop.py"), "--url", url,
                    "--rate", str(args.rate), "--duration", str(args.seconds + 2), "--warmup", str(warmup),
                    "--connections", "64", *(arg for header in headers for arg in ("-H", header))]
        driver = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
        time.sleep(warmup)
        out = Path(tempfile.mkdtemp(prefix="bailiwick-where-")) / "raw.txt"
        audit = bed.tmp / "audit-cpu-where.jsonl"
        lines_before = count_lines(audit)
        cpu_before, started = cpu_seconds([proxy.proc.pid]), time.monotonic()
        subprocess.run(["py-spy", "record", "-p", str(proxy.proc.pid), "-d", str(args.seconds),  # noqa: S603,S607
                        "-r", str(args.sample_rate), "-f", "raw", "--gil", "-o", str(out)],
                       check=True, capture_output=True)
        wall, cpu = time.monotonic() - started, cpu_seconds([proxy.proc.pid]) - cpu_before
        time.sleep(0.1)   # the audit writer's last batch of the window (it writes every 5 ms)
        requests = count_lines(audit) - lines_before
        driver.wait(timeout=60)
        raw = out.read_text()
        if args.keep is not None:
            shutil.copy(out, args.keep)
        shutil.rmtree(out.parent, ignore_errors=True)
        return shares(raw), {"wall": wall, "cpu": cpu, "requests": requests}
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def count_lines(audit: Path) -> int:
    """Audit lines so far: one per request answered."""
    with audit.open("rb") as lines:
        return sum(1 for _ in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--rate", type=int, default=1000, help="requests/s, open loop (default: 1000)")
    how.add_argument("--saturate", action="store_true", help="as fast as it goes: wrk, 64 connections")
    parser.add_argument("--seconds", type=int, default=10, help="seconds sampled (default: 10)")
    parser.add_argument("--sample-rate", type=int, default=500, help="py-spy samples per second (default: 500)")
    parser.add_argument("--kind", choices=["rs256", "hs256"], default="hs256",
                        help="the JWT the requests carry (default: hs256)")
    parser.add_argument("--keep", type=Path, help="also keep py-spy's raw stacks in this file (default: not kept)")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout profiled (default: this one)")
    args = parser.parse_args(argv)
    if not shutil.which("py-spy"):
        parser.error("py-spy is not installed (pip install py-spy)")
    args.source = args.source.resolve()
    before = loadavg()
    counts, window = profile(args)
    total = sum(counts.values()) or 1
    what = "saturation (wrk, 64 connections)" if args.saturate else f"{args.rate:,} req/s, open loop"
    print(f"## Where the time goes: {what}, GET 1 KiB, JWT {args.kind.upper()}\n")
    per_request = window["cpu"] / max(window["requests"], 1) * 1e6
    print(f"py-spy, {args.sample_rate} samples/s for {args.seconds} s, {total:,} samples; over the window the "
          f"proxy answered {window['requests'] / window['wall']:,.0f} req/s and used "
          f"{window['cpu'] / window['wall']:.2f} vCPU, {per_request:.0f} µs of CPU per request (/proc); "
          f"load average before: {before}.\n")
    print("| phase | share of samples | µs of CPU per request |")
    print("|---|---|---|")
    for name, count in counts.most_common():
        print(f"| {name} | {count / total:.1%} | {per_request * count / total:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
