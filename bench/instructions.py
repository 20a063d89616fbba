"""Instructions per request: what a change does to the work of a request, whatever else the machine runs.

Why: at moderate rates the CPU time of a request swings 30-50 % with what
else the machine runs (part (h), bench/cpu.py), more than most single
changes move it. The number of instructions a request executes does not:
valgrind's callgrind counts them exactly (user space, every thread), so a
change is measured by comparing those counts, tree against tree, on the same
bed.

How: part (h)'s bed (the nginx stand-in, the RS256 JWKS, the HS256 secret,
the access key; bench/cpu.py) and, for each source tree, one bailiwick
process under ``valgrind --tool=callgrind --instr-atstart=no``: counting is
switched on once the proxy answers, a few seconds of requests warm it up,
the counters are zeroed, `--requests` requests go at `--rate` per second
over two keep-alive connections (bench/openloop.py), and the counters are
dumped. The idle loop's instructions over the same wall time (measured for
`--idle` seconds with no request) are taken off; what is left, per request,
is printed per kind. Under callgrind the proxy runs some fifty times slower,
hence the low rate: one request per turn of the loop, as at moderate rates.

Run: ``python3 bench/instructions.py --source before=/path/to/main --source after=.``
(about a minute and a half per tree); prints one JSON object per tree.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run as `python3 bench/instructions.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bed import BENCH, SMALL, Bed, Processes, bed_folder, make_bed, start_upstream
from bench.cpu import KINDS, PUT_PATH, SHORT, Credentials, make_credentials, request_headers, start_proxy


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)  # noqa: S603, S607


def _total(dump: Path) -> int:
    """The total instruction count (Ir) of one callgrind dump."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no total in the callgrind dump {dump}")


def _dump(pid: int, out: str) -> int:
    """Dump the counters since the last zeroing; their total (Ir)."""
    before = set(glob.glob(out + ".*"))
    _control(pid, "-d")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(glob.glob(out + ".*")) - before)
        if new:
            time.sleep(0.5)   # written whole once callgrind_control returned; a margin all the same
            return _total(Path(new[-1]))
        time.sleep(0.1)
    raise SystemExit(f"bench: no callgrind dump in {out}.*")


def _drive(url: str, method: str, headers: list[str], rate: float, seconds: float) -> dict[str, Any]:
    args = [sys.executable, str(BENCH / "openloop.py"), "--url", url, "--rate", str(rate), "--duration", str(seconds),
            "--warmup", "0", "--connections", "2", "--method", method,
            *(["--body-size", "1024"] if method == "PUT" else []), *(a for h in headers for a in ("-H", h))]
    result = dict(json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout))  # noqa: S603
    if result["errors"] or result["non2xx"]:
        raise SystemExit(f"bench: {url}: {result['errors']} errors, {result['non2xx']} answers other than 2xx")
    return result


def measure(name: str, source: Path, kinds: list[str], rate: float, requests: int, idle: float, procs: Processes,
            bed_args: tuple[Bed, Path, Credentials]) -> dict[str, float]:
    """Instructions per request of each kind for the tree `source`, and of the idle loop per second."""
    bed, jwks, creds = bed_args
    out = str(bed.tmp / f"callgrind-{name}")
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proxy = start_proxy(procs, bed, jwks, creds, name, source, wrap=valgrind, ready_seconds=600)
    pid = proxy.proc.pid
    _control(pid, "-i", "on")
    counted: dict[str, tuple[int, int, float]] = {}
    for kind in kinds:
        method = KINDS[SHORT[kind]]
        url = f"http://127.0.0.1:{proxy.port}" + (PUT_PATH if method == "PUT" else SMALL)
        headers = request_headers(SHORT[kind], url, creds)
        _drive(url, method, headers, rate, 3.0)
        _control(pid, "-z")
        started = time.monotonic()
        done = _drive(url, method, headers, rate, requests / rate)
        counted[kind] = (_dump(pid, out), int(done["completed"]), time.monotonic() - started)
    _control(pid, "-z")
    started = time.monotonic()
    time.sleep(idle)
    idle_rate = _dump(pid, out) / (time.monotonic() - started)
    procs.stop(proxy.proc)
    result = {kind: (total - idle_rate * wall) / n for kind, (total, n, wall) in counted.items()}
    result["idle_per_second"] = idle_rate
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, metavar="NAME=TREE")
    parser.add_argument("--kinds", default="hs256,sigv4,put", help=f"of {', '.join(SHORT)} (comma-separated)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s (default: 10)")
    parser.add_argument("--requests", type=int, default=150, help="counted requests per kind (default: 150)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle loop measured (default: 10)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("bench: valgrind is not installed")
    tmp = bed_folder("bailiwick-bench-instructions-")
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        start_upstream(procs, bed)
        jwks, creds = make_credentials(bed)
        for item in args.source:
            name, _, tree = item.partition("=")
            if not tree:
                parser.error(f"--source {item!r}: expected NAME=TREE")
            result = measure(name, Path(tree).resolve(), args.kinds.split(","), args.rate, args.requests,
                             args.idle, procs, (bed, jwks, creds))
            print(json.dumps({"tree": name, **{k: round(v) for k, v in result.items()}}), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
