"""Benchmark harness: the upstream directly, nginx as a reverse proxy, and bailiwick, side by side.

Why: a proxy's cost only means something next to the alternatives, so every
measurement is taken against the same stand-in storage server three ways and
the report gives ratios (bailiwick/nginx, bailiwick/direct), not only
absolutes. Everything is started and stopped here, on 127.0.0.1, with CPU
pinning so the proxy under test and the load generator do not share a core:

* stand-in upstream: nginx serving a 1 KiB and a 256 MiB object from a temp
  root (tmpfs when available) and accepting PUTs (WebDAV PUT: nginx reads the
  whole body into a temp file before it answers; the harness also checks the
  stored size);
* nginx reverse proxy: proxy_pass to the stand-in, HTTP/1.1 keep-alive
  upstream connections, no buffering either way (it streams, like bailiwick);
* bailiwick: ``python3 -m proxy serve`` with RS256 JWTs from a JWKS file and
  the repository's policies/ (and ``--workers 2`` when the flag exists).

Measurements (median of ``--runs`` runs): (a) 1 KiB GET capacity with wrk,
(b) added latency at 25 % and 50 % of bailiwick's capacity with the open-loop
generator bench/openloop.py, (c) 256 MiB GET/PUT streaming throughput with curl
and bailiwick's peak RSS, (d) the policy engine alone (bench/policy_bench.py),
(e) encryption at rest: the same re-signing proxy on the same objects,
unencrypted and encrypted, and its key-service calls (bench/encryption.py),
(f) TLS on the data port: handshakes and per-request cost beside plain HTTP
(bench/tls.py), (g) policies that grow: load time and memory per dataset at 1,000, 10,000 and 100,000
datasets, and how long a live reload holds up the serving loop (bench/policy_load.py), (h) CPU at fixed
rates: vCPU per 1,000 req/s and the latency added at 250, 1,000 and 2,500 req/s, beside nginx (bench/cpu.py),
(i) workers: capacity with 1, 2 and 4 worker processes and where the machine's CPU went (bench/workers.py).
Writes report.md and report.json to --output (bench/results/ by default, not
committed); bench/README.md keeps the report someone chose to commit, replaced
only with ``--update-readme``.

Run: ``python3 bench/run.py`` (every part, 3 runs; ``--runs 1`` took 14 min), ``--smoke`` (short, for CI), ``--runs N``,
``--only encryption`` (part (e) alone, about 5 min), ``--only policy`` (part (g) alone, about 5 min),
``--only cpu`` (part (h) alone, 15-30 min; its smoke run about 90 s), ``--only workers`` (part (i), about 3 min).
The parts: bench/bed.py (the servers), bench/load.py (the load generators),
bench/measure.py (the measurements), bench/report.py (the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

# Run as `python3 bench/run.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bed import BENCH, RESULTS, ensure_tools, log
from bench.cpu import cpu_profile, measure_cpu
from bench.encryption import encryption_profile, measure_encryption
from bench.measure import loadavg, machine, measure, profile
from bench.policy_load import measure_policy_load, policy_load_profile
from bench.report import render, replace_readme_report
from bench.tls import measure_tls, tls_profile
from bench.workers import measure_workers, workers_profile


def publish(report: str, output: Path, results: dict[str, Any] | None, *, readme: Path | None = None) -> str:
    """Write the run's artifacts to `output`, and the report into `readme` when given; says what it wrote."""
    output.mkdir(parents=True, exist_ok=True)
    written = [output / "report.md"]
    if results is not None:
        (output / "report.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        written.append(output / "report.json")
    (output / "report.md").write_text(report)
    if readme is not None:
        replace_readme_report(readme, report)
        written.append(readme)
    return " and ".join(str(path) for path in written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short run for CI (about 2 min)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement, median reported "
                        "(default: 3; 1 with --smoke)")
    parser.add_argument("--output", type=Path, default=RESULTS, metavar="DIR",
                        help=f"where report.md and report.json go (default: {RESULTS.relative_to(BENCH.parent)})")
    parser.add_argument("--only", choices=["encryption", "tls", "policy", "cpu", "workers"],
                        help="run one part alone: encryption, (e), tls, (f), policy, (g), cpu, (h), or workers, "
                             "(i) (its report has that part only; default: every part)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only rewrite report.md in DIR from a report.json written by a run")
    parser.add_argument("--update-readme", action="store_true",
                        help="also make this report the one bench/README.md shows (not with --smoke)")
    args = parser.parse_args(argv)
    if args.update_readme and args.smoke:
        parser.error("--update-readme: a smoke run's figures are not the README's report")
    if args.update_readme and args.only:
        parser.error("--update-readme: a report of one part would replace the whole of the README's; "
                     "copy its section into the README by hand")
    output: Path = args.output
    readme = BENCH / "README.md" if args.update_readme else None
    if args.render is not None:
        stored: dict[str, Any] = json.loads(args.render.read_text())
        if args.update_readme and stored.get("smoke"):
            parser.error(f"--update-readme: {args.render} is a smoke run's; its figures are not the README's report")
        report = render(stored)
        publish(report, output, None, readme=readme)
        print(report)
        return 0
    prof = profile(args.smoke, args.runs)
    ensure_tools()
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": args.smoke,
        "runs": prof.runs,
        "profile": prof.__dict__,
        "only": args.only,
        "machine": machine(),
        "loadavg_before": loadavg(),
    }
    if args.only is None:
        measure(prof, results)
    if args.only in (None, "encryption"):
        measure_encryption(encryption_profile(args.smoke, args.runs), results)
    if args.only in (None, "tls"):   # in a smoke run too: one 2 s point per measurement, a few seconds in all
        measure_tls(tls_profile(args.smoke, args.runs), results)
    if args.only in (None, "policy"):   # in a smoke run too: 100 and 1,000 datasets, a few seconds
        measure_policy_load(policy_load_profile(args.smoke, args.runs), results)
    if args.only in (None, "cpu"):   # in a smoke run: one 2 s point per kind, rate and target, about a minute
        measure_cpu(cpu_profile(args.smoke, args.runs), results)
    if args.only in (None, "workers"):   # in a smoke run: 1 and 2 workers, one 2 s point each
        measure_workers(workers_profile(args.smoke, args.runs), results)
    results["loadavg_after"] = loadavg()
    results["elapsed_seconds"] = time.monotonic() - started
    report = render(results)
    written = publish(report, output, results, readme=readme)
    log(f"wrote {written} in {results['elapsed_seconds']:.0f} s")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
