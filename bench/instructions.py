"""Instructions per request: bailiwick under callgrind, at a low fixed rate, beside an idle baseline.

Why: at the rates a sidecar runs at, CPU time per request swings with what
else the machine does (cold caches, other processes on the core), while the
number of instructions a request executes does not. Callgrind (valgrind's
instruction counter) counts them exactly, all threads, user space only, so
a change that removes work shows as fewer instructions even on a busy
machine; it is how each change in bench/README.md's "At a fixed rate" table
was measured before it was kept.

How: part (h)'s bed (bench/cpu.py: nginx stand-in, the HS256 token), one
bailiwick process per source tree under ``valgrind --tool=callgrind``. Per
kind of request (a 1 KiB GET, a 1 KiB PUT), 100 warm-up requests, then the
counters are zeroed, N requests are sent one by one on a kept-alive
connection at a fixed rate and the counters dumped; then zeroed again and
dumped after an idle pause. Instructions per request = (busy total - idle
total scaled to the busy window) / N. Repeated runs of one tree differ by up
to about 5,000 instructions for a GET and 17,000 for a PUT: compare medians
of several runs, and trust only differences larger than that.

    python3 bench/instructions.py --source before=/path/to/main --source after=.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Run as `python3 bench/instructions.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cpu
from bench.bed import SIGV4, SMALL, Processes, bed_folder, log, make_bed, start_upstream


def _total(path: Path) -> int:
    """The instructions a callgrind dump counted."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no total in {path}")


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)  # noqa: S603, S607


def _dump(pid: int, out: Path) -> int:
    """Dump the counters of `pid` and return what they counted since they were last zeroed."""
    before = set(out.glob(f"cg.{pid}.*"))
    _control("-d", pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(out.glob(f"cg.{pid}.*")) - before
        if new:
            time.sleep(0.5)   # written whole before it is read
            return _total(new.pop())
        time.sleep(0.1)
    raise SystemExit("bench: callgrind wrote no dump")


def _drive(port: int, method: str, path: str, headers: dict[str, str], count: int, rate: float) -> None:
    """`count` requests, one by one on one kept-alive connection, `rate` a second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = os.urandom(cpu.BODY_BYTES) if method == "PUT" else None
    start = time.monotonic()
    try:
        for i in range(count):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status >= 300:
                raise SystemExit(f"bench: {method} {path} answered {response.status}: {data[:300]!r}")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, metavar="NAME=TREE",
                        help="a bailiwick source tree to measure (repeat to compare)")
    parser.add_argument("--requests", type=int, default=300, help="requests counted per kind (default: 300)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s (default: 20)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle baseline (default: 10)")
    parser.add_argument("--kinds", default="get,put", help="of get, put (comma-separated)")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("bench: valgrind is not installed (apt-get install valgrind)")
    tmp = bed_folder("bailiwick-bench-instructions-")
    out = tmp / "callgrind"
    out.mkdir()
    under = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        start_upstream(procs, bed)
        jwks, creds = cpu.make_credentials(bed)
        for item in args.source:
            name, _, tree = item.partition("=")
            # Under callgrind the proxy starts about fifty times slower.
            proxy = cpu.start_proxy(procs, bed, jwks, creds, name, Path(tree).resolve(), under=under,
                                    ready_within=600)
            pid = proxy.proc.pid   # taskset execs valgrind, which runs the interpreter: the same process
            headers = {"Authorization": SIGV4, "X-Bailiwick-Token": creds.hs256}
            for kind in args.kinds.split(","):
                method, path = ("PUT", cpu.PUT_PATH) if kind == "put" else ("GET", SMALL)
                _drive(proxy.port, method, path, headers, 100, args.rate)
                time.sleep(1)
                _control("-z", pid)
                started = time.monotonic()
                _drive(proxy.port, method, path, headers, args.requests, args.rate)
                busy = _dump(pid, out)
                window = time.monotonic() - started
                _control("-z", pid)
                time.sleep(args.idle)
                idle = _dump(pid, out)
                per_request = (busy - idle * window / args.idle) / args.requests
                log(f"{name} {kind}: {busy:,} instructions over {window:.1f}s, idle {idle:,} over {args.idle:g}s")
                print(f"{name}\t{kind}\t{per_request:,.0f} instructions per request", flush=True)
            proxy.proc.terminate()
            proxy.proc.wait(60)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
