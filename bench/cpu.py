"""(h) CPU at fixed rates: vCPU per 1,000 requests/s and the latency added, beside nginx.

Why this unit: a sidecar is sized by the CPU it takes at the rate its app
runs, and that is how service meshes publish their proxy's cost (Istio:
"vCPU per 1000 requests per second going through the proxy"). Capacity at
saturation (part (a)) hides the work that batching amortises under full load
(event-loop wake-ups, one request per turn of the loop, hand-offs between
threads, timers), so here the rate is fixed and the CPU is measured.

How: the open-loop generator (bench/openloop.py) sends 1 KiB requests at
250, 1,000 and 2,500 per second over 64 keep-alive connections and reads,
from ``/proc/PID/stat``, the CPU time (user + system, every thread) the
server under test used over the measured window: per request, and as
vCPU per 1,000 req/s. The same run measures the stand-in directly (the
latency baseline) and nginx as a reverse proxy (its master and worker).
Kinds of request, each with its own identity check in bailiwick:

* GET with an RS256 JWT (the rest of the bench's token), and with an HS256 JWT;
* GET signed with an access key (SigV4, verified by the proxy: the signature
  is made with botocore at the start of each sample, for the exact Host and
  path, and stays valid for the proxy's 15 minutes of allowed skew);
* PUT of 1 KiB with the RS256 JWT (the stand-in's WebDAV PUT).

One bailiwick process (one worker) serves them all, pinned to the proxy CPU
like nginx; the stand-in and the generator are on the load CPU. Samples are
interleaved (every target and kind at one rate, then the next rate, then the
next run), so a drift of the machine touches all alike; medians over runs.

`python3 bench/cpu.py --source base=/path/to/checkout --source new=.` runs
the same measurement for several source trees side by side (each a bailiwick
process of its own, interleaved): how a change was measured before it was kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as `python3 bench/cpu.py`, the harness's own package is found from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bed import (
    AUDIENCE,
    BENCH,
    BUCKET_PATH,
    ISSUER,
    LOAD_CPU,
    PROXY_CPU,
    ROOT,
    SIGV4,
    SMALL,
    Bed,
    Processes,
    bed_folder,
    check_get,
    free_port,
    log,
    make_bed,
    make_identity,
    start_nginx_proxy,
    start_upstream,
    wait_http,
)
from bench.load import group_pids
from bench.measure import loadavg, median

HS_ISSUER = "https://hs.bench.invalid"
HS_SECRET_ENV = "BAILIWICK_BENCH_HS256"  # noqa: S105 - the name of a variable, not a secret
ACCESS_KEY_ID = "BENCHAKID"
ACCESS_KEY_ENV = "BAILIWICK_BENCH_ACCESS_KEY"
REGION = "us-east-1"
PUT_PATH = f"{BUCKET_PATH}/put/small"
BODY_BYTES = 1024
# What the report compares bailiwick with: Istio's published cost of its Envoy sidecar.
ISTIO = {
    "vcpu_per_1000": 0.35,
    "added_p90_ms": 2.65,
    "version": "Istio 1.16.2",
    "url": "https://istio.io/v1.16/docs/ops/deployment/performance-and-scalability/",
}
# The kinds of request (name -> method); "direct" and "nginx" take the same requests (per method).
KINDS = {"GET, JWT RS256": "GET", "GET, JWT HS256": "GET", "GET, access key (SigV4)": "GET",
         "PUT 1 KiB, JWT RS256": "PUT"}
SHORT = {"rs256": "GET, JWT RS256", "hs256": "GET, JWT HS256", "sigv4": "GET, access key (SigV4)",
         "put": "PUT 1 KiB, JWT RS256"}


@dataclass(frozen=True)
class CpuProfile:
    """How long and how often."""

    runs: int
    seconds: float
    warmup: float
    rates: tuple[int, ...]
    kinds: tuple[str, ...]


def cpu_profile(smoke: bool, runs: int | None) -> CpuProfile:
    if smoke:   # one short point each: about a minute in all
        return CpuProfile(runs or 1, 2.0, 0.5, (250, 1_000, 2_500), tuple(KINDS))
    return CpuProfile(runs or 3, 10.0, 1.0, (250, 1_000, 2_500), tuple(KINDS))


@dataclass
class Credentials:
    """The tokens and the access key every kind of request is made with."""

    rs256: str
    hs256: str
    hs_secret: str
    access_secret: str


def make_credentials(bed: Bed) -> tuple[Path, Credentials]:
    """The RS256 key and token of the bench (bench/bed.py), an HS256 secret and token, an access key."""
    import jwt

    jwks = make_identity(bed)
    hs_secret = secrets.token_hex(32)
    hs256 = jwt.encode({"iss": HS_ISSUER, "aud": AUDIENCE, "sub": "bench-hs", "exp": int(time.time()) + 3600,
                        "jurisdiction": "IE"}, hs_secret, algorithm="HS256")
    return jwks, Credentials(bed.token, hs256, hs_secret, secrets.token_hex(20))


def sigv4_headers(url: str, method: str, secret: str) -> list[str]:
    """Authorization, X-Amz-Date and X-Amz-Content-SHA256 of `method` `url` signed now with the bench's key."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as AwsCredentials

    request = AWSRequest(method=method, url=url, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(AwsCredentials(ACCESS_KEY_ID, secret), "s3", REGION).add_auth(request)
    return [f"{name}: {request.headers[name]}" for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256")]


def request_headers(kind: str, url: str, creds: Credentials) -> list[str]:
    """The headers of one kind of request (the fake SigV4 header the rest of the bench sends, with a token)."""
    if kind == SHORT["sigv4"]:
        return sigv4_headers(url, "GET", creds.access_secret)
    token = creds.hs256 if kind == SHORT["hs256"] else creds.rs256
    return [f"Authorization: {SIGV4}", f"X-Bailiwick-Token: {token}"]


@dataclass
class Proxy:
    """One bailiwick process under test: its source tree, port and pid."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int


def start_proxy(procs: Processes, bed: Bed, jwks: Path, creds: Credentials, name: str, source: Path, *,
                wrap: list[str] | None = None, ready_seconds: float = 30.0) -> Proxy:
    """bailiwick from `source` (one process, pinned to the proxy CPU) with the three ways of identifying callers.

    `wrap`: a command the proxy runs under instead (valgrind: bench/instructions.py), not pinned; it is given
    `ready_seconds` to answer."""
    port, admin = free_port(), free_port()
    config = bed.tmp / f"bailiwick-cpu-{name}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"admin_listen: 127.0.0.1:{admin}\n"
        f"policies: {ROOT / 'policies'}\n"
        f"audit: {{path: {bed.tmp / f'audit-cpu-{name}.jsonl'}}}\n"
        f"upstream: {{url: 'http://127.0.0.1:{bed.upstream_port}', max_connections_per_peer: 256}}\n"
        "limits: {max_connections_per_peer: 1024}\n"
        "identity:\n"
        f"  access_key_region: {REGION}\n"
        "  jwt:\n"
        f"    - {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_file: '{jwks}', algorithms: [RS256]}}\n"
        f"    - {{issuer: '{HS_ISSUER}', audience: {AUDIENCE}, hs256_secret_env: {HS_SECRET_ENV}}}\n"
        "  access_keys:\n"
        f"    - {{access_key_id: {ACCESS_KEY_ID}, jurisdiction: IE, secret_access_key_env: {ACCESS_KEY_ENV}}}\n"
    )
    log_file = bed.tmp / f"bailiwick-cpu-{name}.log"
    # `python3 -m` puts the working directory first on the path: the process runs in its source tree.
    env = {**os.environ, "PYTHONPATH": str(source), HS_SECRET_ENV: creds.hs_secret,
           ACCESS_KEY_ENV: creds.access_secret}
    runner = ["taskset", "-c", PROXY_CPU] if wrap is None else wrap
    proc = procs.start([*runner, sys.executable, "-m", "proxy", "serve", "--config", str(config),
                        "--log-level", "WARNING"], log_file=log_file, env=env, cwd=source)
    wait_http(f"http://127.0.0.1:{admin}/healthz", proc, f"bailiwick ({name})", log_file, timeout=ready_seconds)
    return Proxy(name, proc, port)


def run_sample(url: str, headers: list[str], method: str, rate: float, prof: CpuProfile,
               pids: list[int]) -> dict[str, Any]:
    """One open-loop sample, with the CPU time of `pids` over its measured window."""
    args = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "openloop.py"), "--url", url,
            "--rate", f"{rate:.1f}", "--duration", str(prof.seconds), "--warmup", str(prof.warmup),
            "--connections", "64", "--method", method,
            *(["--body-size", str(BODY_BYTES)] if method == "PUT" else []),
            *(arg for header in headers for arg in ("-H", header)),
            *(arg for pid in pids for arg in ("--cpu-pid", str(pid)))]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return dict(json.loads(out))


KEYS = ("vcpu_per_1000", "cpu_us_per_request", "p50_ms", "p90_ms", "p99_ms", "achieved_rate", "errors", "non2xx")


def measure_cpu(prof: CpuProfile, results: dict[str, Any], sources: dict[str, Path] | None = None,
                nginx: bool = True) -> None:
    """Part (h) into results["cpu"]: per kind, rate and target, the medians over the runs.

    `sources`: the bailiwick source trees to measure (name -> tree; default: this one, as "bailiwick")."""
    sources = sources or {"bailiwick": ROOT}
    tmp = bed_folder("bailiwick-bench-cpu-")
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        start_upstream(procs, bed)
        nginx_pids = group_pids(start_nginx_proxy(procs, bed).pid) if nginx else []
        jwks, creds = make_credentials(bed)
        proxies = [start_proxy(procs, bed, jwks, creds, name, source) for name, source in sources.items()]
        base = {"direct": f"http://127.0.0.1:{bed.upstream_port}",
                **({"nginx": f"http://127.0.0.1:{bed.nginx_port}"} if nginx else {}),
                **{p.name: f"http://127.0.0.1:{p.port}" for p in proxies}}
        pids: dict[str, list[int]] = {"direct": [], "nginx": nginx_pids, **{p.name: [p.proc.pid] for p in proxies}}
        for name, url in base.items():
            check_get(url + SMALL, bed, name)
        samples: dict[str, dict[int, dict[str, list[dict[str, Any]]]]] = {
            kind: {rate: {} for rate in prof.rates} for kind in prof.kinds}
        for run in range(prof.runs):
            for rate in prof.rates:
                for kind in prof.kinds:
                    method = KINDS[kind]
                    # direct and nginx do not check identity: measured once per method (with the first kind's).
                    plain = kind == next(k for k in prof.kinds if KINDS[k] == method)
                    for target, url in base.items():
                        if target in ("direct", "nginx") and not plain:
                            continue
                        full = url + (PUT_PATH if method == "PUT" else SMALL)
                        sample = run_sample(full, request_headers(kind, full, creds), method, rate, prof,
                                            pids[target])
                        samples[kind][rate].setdefault(target, []).append(sample)
                        log(f"(h) run {run + 1}/{prof.runs} {rate}/s {kind} {target}: "
                            f"{sample.get('vcpu_per_1000', float('nan')):.3f} vCPU/1k req/s, "
                            f"p50 {sample['p50_ms']:.3f} p99 {sample['p99_ms']:.3f} ms, "
                            f"{sample['errors'] + sample['non2xx']} errors, load {loadavg()}")
        out: dict[str, Any] = {"profile": prof.__dict__, "targets": list(base), "istio": ISTIO, "kinds": {}}
        for kind in prof.kinds:
            method = KINDS[kind]
            first = next(k for k in prof.kinds if KINDS[k] == method)
            out["kinds"][kind] = {}
            for rate in prof.rates:
                entry: dict[str, Any] = {}
                for target in base:
                    runs = samples[first if target in ("direct", "nginx") else kind][rate][target]
                    entry[target] = {key: median([float(s.get(key, float("nan"))) for s in runs]) for key in KEYS}
                    entry[target]["runs"] = runs
                out["kinds"][kind][str(rate)] = entry
        results["cpu"] = out
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", default=[], metavar="NAME=TREE",
                        help="a bailiwick source tree to measure (repeat to compare; default: this one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per sample (default: 10)")
    parser.add_argument("--rates", default="250,1000,2500", help="requests/s, comma-separated")
    parser.add_argument("--kinds", default=",".join(SHORT), help=f"of {', '.join(SHORT)} (comma-separated)")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out (faster A/B runs)")
    parser.add_argument("--output", type=Path, help="write the results (JSON) here")
    args = parser.parse_args(argv)
    sources = {}
    for item in args.source:
        name, _, tree = item.partition("=")
        if not tree or name in ("direct", "nginx"):
            parser.error(f"--source {item!r}: expected NAME=TREE (NAME not direct or nginx)")
        sources[name] = Path(tree).resolve()
    prof = CpuProfile(args.runs, args.seconds, 1.0, tuple(int(r) for r in args.rates.split(",")),
                      tuple(SHORT[k] for k in args.kinds.split(",")))
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "loadavg_before": loadavg()}
    measure_cpu(prof, results, sources or None, nginx=not args.no_nginx)
    results["loadavg_after"] = loadavg()
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import render_cpu

    print("\n".join(render_cpu(results["cpu"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
