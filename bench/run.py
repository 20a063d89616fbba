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
and bailiwick's peak RSS, (d) the policy engine alone (bench/policy_bench.py).
Writes bench/results/report.{md,json} and the "Latest report" of bench/README.md.

Run: ``python3 bench/run.py`` (about 15 min), ``--smoke`` (short, for CI), ``--runs N``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
SIGV4 = ("AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00")
ISSUER = "https://idp.bench.invalid"
AUDIENCE = "bailiwick"
BUCKET_PATH = "/mail-eu-dublin/bench"
SMALL = f"{BUCKET_PATH}/1k"
LARGE = f"{BUCKET_PATH}/256m"
LARGE_BYTES = 256 * 1024 * 1024
PROXY_CPU = "0"  # bailiwick (1 worker) and the nginx reverse proxy under test
LOAD_CPU = "1"  # stand-in upstream and every load generator
BOTH_CPUS = "0,1"  # bailiwick --workers 2
MIB = 1024 * 1024

# The targets the report holds the figures to.
TARGET_RPS_ONE_PROCESS = 8000.0
TARGET_W2_OVER_NGINX = 0.50
TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.0
TARGET_GET_OVER_NGINX = 0.90
TARGET_PUT_OVER_DIRECT = 0.95
TARGET_RSS_MIB = 64.0
TARGET_POLICY_P99_US = 10.0


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


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- setup


def ensure_tools() -> None:
    """Install nginx and wrk when missing and we may (root, apt-get); fail clearly otherwise."""
    missing = [tool for tool in ("nginx", "wrk", "curl", "taskset") if not shutil.which(tool)
               and not (tool == "nginx" and Path("/usr/sbin/nginx").exists())]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({"nginx" if t == "nginx" else "wrk" if t == "wrk" else "curl" if t == "curl"
                           else "util-linux" for t in missing})
        log(f"installing {' '.join(packages)}")
        subprocess.run(["apt-get", "update"], check=False)  # noqa: S607
        subprocess.run(["apt-get", "install", "-y", *packages], check=True)  # noqa: S603, S607
    still = [tool for tool in ("nginx", "wrk", "curl", "taskset") if not shutil.which(tool)
             and not (tool == "nginx" and Path("/usr/sbin/nginx").exists())]
    if still:
        raise SystemExit(f"bench: missing tools: {', '.join(still)} (install them or run as root)")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Processes:
    """Every server the harness starts, each in its own process group, all stopped on exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], *, log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log_file.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Workers left behind by a master that exited first.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log_file: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback server
                return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {what} not ready after {timeout:.0f}s:\n{log_file.read_text()[-3000:]}")


@dataclass
class Bed:
    """The test bed: temp dir, ports, credentials, URLs."""

    tmp: Path
    docroot: Path
    upload_file: Path
    upstream_port: int = field(default_factory=free_port)
    nginx_port: int = field(default_factory=free_port)
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": SIGV4, "X-Bailiwick-Token": self.token}

    def header_args(self, flag: str = "-H") -> list[str]:
        return [arg for name, value in self.headers.items() for arg in (flag, f"{name}: {value}")]


def make_bed(tmp: Path) -> Bed:
    docroot = tmp / "root"
    objects = docroot / BUCKET_PATH.lstrip("/")
    (objects / "put").mkdir(parents=True)
    (objects / "1k").write_bytes(os.urandom(1024))
    with (objects / "256m").open("wb") as out:
        for _ in range(LARGE_BYTES // MIB):
            out.write(os.urandom(MIB))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (tmp / "nginx" / sub).mkdir(parents=True)
    # nginx's workers run as an unprivileged user: everything they read must be world-readable,
    # the PUT target and the temp paths world-writable.
    subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)  # noqa: S603, S607
    for writable in [objects / "put", *(tmp / "nginx" / s for s in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))]:
        writable.chmod(0o1777)
    return Bed(tmp=tmp, docroot=docroot, upload_file=objects / "256m")


def nginx_conf(bed: Bed, name: str, server_block: str) -> Path:
    base = bed.tmp / "nginx"
    conf = base / f"{name}.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {base}/{name}.pid;
error_log {base}/logs/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
{server_block}
}}
""")
    conf.chmod(0o644)
    return conf


def start_upstream(procs: Processes, bed: Bed) -> subprocess.Popen[bytes]:
    conf = nginx_conf(bed, "upstream", f"""
    server {{
        listen 127.0.0.1:{bed.upstream_port} reuseport backlog=4096;
        root {bed.docroot};
        location {BUCKET_PATH}/put/ {{
            # WebDAV PUT: the whole body is read (to a temp file) before the answer, 201 or 204.
            client_max_body_size 0;
            client_body_buffer_size 1m;
            dav_methods PUT;
            dav_access user:rw group:r all:r;
        }}
    }}""")
    log_file = bed.tmp / "nginx" / "logs" / "upstream.out"
    proc = procs.start(["taskset", "-c", LOAD_CPU, nginx_binary(), "-p", str(bed.tmp / "nginx"), "-c", str(conf)],
                       log_file=log_file)
    wait_http(f"http://127.0.0.1:{bed.upstream_port}{SMALL}", proc, "stand-in nginx", log_file)
    return proc


def start_nginx_proxy(procs: Processes, bed: Bed) -> subprocess.Popen[bytes]:
    conf = nginx_conf(bed, "proxy", f"""
    upstream standin {{
        server 127.0.0.1:{bed.upstream_port};
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{bed.nginx_port} reuseport backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://standin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            # Unbuffered, nginx moves at most this much per read; the 4k/8k default would starve it.
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            client_body_buffer_size 64k;
        }}
    }}""")
    log_file = bed.tmp / "nginx" / "logs" / "proxy.out"
    proc = procs.start(["taskset", "-c", PROXY_CPU, nginx_binary(), "-p", str(bed.tmp / "nginx"), "-c", str(conf)],
                       log_file=log_file)
    wait_http(f"http://127.0.0.1:{bed.nginx_port}{SMALL}", proc, "nginx reverse proxy", log_file)
    return proc


def make_identity(bed: Bed) -> Path:
    """An RS256 key, its JWKS file, and a token for a caller in Ireland; returns the JWKS path."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwks = {"keys": [{"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
                      "n": b64(numbers.n), "e": b64(numbers.e)}]}
    path = bed.tmp / "jwks.json"
    path.write_text(json.dumps(jwks))
    path.chmod(0o644)
    bed.token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "exp": int(time.time()) + 3600, "jurisdiction": "IE"},
        key, algorithm="RS256", headers={"kid": "bench"},
    )
    return path


def workers_flag_available() -> bool:
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=False).stdout
    return "--workers" in out


@dataclass
class Bailiwick:
    proc: subprocess.Popen[bytes]
    port: int
    workers: int
    cpus: str


def start_bailiwick(procs: Processes, bed: Bed, jwks: Path, workers: int) -> Bailiwick:
    port, admin = free_port(), free_port()
    config = bed.tmp / f"bailiwick-w{workers}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"admin_listen: 127.0.0.1:{admin}\n"
        f"policies: {ROOT / 'policies'}\n"
        f"audit: {{path: {bed.tmp / f'audit-w{workers}.jsonl'}}}\n"
        # A sidecar's only peer is its app on loopback: per-address caps as large as the global ones.
        f"upstream: {{url: 'http://127.0.0.1:{bed.upstream_port}', max_connections_per_peer: 256}}\n"
        "limits: {max_connections_per_peer: 1024}\n"
        "identity:\n  jwt:\n"
        f"    - {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_file: '{jwks}', algorithms: [RS256]}}\n"
    )
    cpus = PROXY_CPU if workers == 1 else BOTH_CPUS
    args = ["taskset", "-c", cpus, sys.executable, "-m", "proxy", "serve", "--config", str(config),
            "--log-level", "WARNING"]
    if workers > 1:
        args += ["--workers", str(workers)]
    log_file = bed.tmp / f"bailiwick-w{workers}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = procs.start(args, log_file=log_file, env=env)
    wait_http(f"http://127.0.0.1:{admin}/healthz", proc, f"bailiwick (workers={workers})", log_file)
    # The data port too (workers may bind a moment after the admin port answers).
    wait_http(f"http://127.0.0.1:{port}/", proc, f"bailiwick (workers={workers}) data port", log_file)
    return Bailiwick(proc, port, workers, cpus)


def check_get(url: str, bed: Bed, what: str) -> None:
    request = urllib.request.Request(url, headers=bed.headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"bench: {what}: GET {url} answered {exc.code}: {exc.read()[:500]!r}") from exc
    if len(body) != 1024:
        raise SystemExit(f"bench: {what}: GET {url} returned {len(body)} bytes, expected 1024")


# --------------------------------------------------------------------------- process memory


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


# --------------------------------------------------------------------------- measurements


def run_wrk(url: str, bed: Bed, connections: int, seconds: int) -> dict[str, float]:
    args = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
            *bed.header_args(), url]
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


def run_openloop(url: str, bed: Bed, rate: float, prof: Profile) -> dict[str, float]:
    args = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "openloop.py"), "--url", url,
            "--rate", f"{rate:.1f}", "--duration", str(prof.openloop_seconds), "--warmup", str(prof.openloop_warmup),
            "--connections", "64", *bed.header_args()]
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


def run_policy(prof: Profile, datasets: int) -> dict[str, Any]:
    args = ["taskset", "-c", PROXY_CPU, sys.executable, str(BENCH / "policy_bench.py"), "--datasets", str(datasets),
            "--calls", str(prof.policy_calls), "--repeats", str(prof.runs)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return dict(json.loads(out))


# --------------------------------------------------------------------------- the run


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


Targets = dict[str, str]


def measure(prof: Profile, results: dict[str, Any]) -> None:
    procs = Processes()
    tmp_parent = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - tmpfs: no disk in the numbers
    tmp = Path(tempfile.mkdtemp(prefix="bailiwick-bench-", dir=tmp_parent))
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
                sample = run_openloop(url + SMALL, bed, rate, prof)
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
        sample = run_policy(prof, datasets)
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


# --------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and a == a and b == b else "n/a"


def num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value == value else "n/a"


def target_row(name: str, value: float, target: float, unit: str, higher_is_better: bool,
               digits: int = 2) -> list[str]:
    if value != value:
        return [name, "n/a", f"{'≥' if higher_is_better else '≤'} {target:g} {unit}", "not measured", ""]
    met = value >= target if higher_is_better else value <= target
    diff = value - target
    # A target that is itself a percentage misses by percentage points; others also by a relative amount.
    amount = f"{abs(diff):,.{digits}f} {'points' if unit == '%' else unit}"
    relative = f" ({diff / target:+.0%} of the goal)" if target and unit != "%" else ""
    how = (f"{'above by' if diff >= 0 else 'short by'} {amount}{relative}" if higher_is_better
           else f"{'under by' if diff <= 0 else 'over by'} {amount}{relative}")
    sign = "≥" if higher_is_better else ("<" if name.startswith(("peak", "policy")) else "≤")
    return [name, f"{value:,.{digits}f} {unit}", f"{sign} {target:,g} {unit}", "met" if met else "**not met**", how]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    small = results["small_get"]
    rows.append(target_row("small GETs, one process (best of c=10/64/256)", capacity(results, "bailiwick"),
                           TARGET_RPS_ONE_PROCESS, "req/s", True, 0))
    if "bailiwick_w2" in small:
        w2 = capacity(results, "bailiwick_w2") / capacity(results, "nginx")
        rows.append(target_row("small GETs, --workers 2 / nginx (best of each)", w2 * 100,
                               TARGET_W2_OVER_NGINX * 100, "%", True, 0))
    else:
        rows.append(["small GETs, --workers 2 / nginx", "n/a", "≥ 50 %", "not measured",
                     "`bailiwick serve` has no --workers flag yet"])
    at25 = results["latency"]["rates"]["25%"]
    rows.append(target_row("added latency p50 at 25% load (bailiwick - direct)",
                           at25["bailiwick"]["p50_ms"] - at25["direct"]["p50_ms"], TARGET_ADDED_P50_MS, "ms", False, 3))
    rows.append(target_row("added latency p99 at 25% load (bailiwick - direct)",
                           at25["bailiwick"]["p99_ms"] - at25["direct"]["p99_ms"], TARGET_ADDED_P99_MS, "ms", False, 3))
    stream = results["streaming"]
    for streams in (1, 4):
        get = stream[f"GET x{streams}"]
        rows.append(target_row(f"GET streaming, {streams} stream(s), bailiwick / nginx",
                               get["bailiwick"]["mb_s"] / get["nginx"]["mb_s"] * 100,
                               TARGET_GET_OVER_NGINX * 100, "%", True, 0))
    for streams in (1, 4):
        put = stream[f"PUT x{streams}"]
        rows.append(target_row(f"PUT streaming, {streams} stream(s), bailiwick / direct",
                               put["bailiwick"]["mb_s"] / put["direct"]["mb_s"] * 100,
                               TARGET_PUT_OVER_DIRECT * 100, "%", True, 0))
    peak = max(stream["GET x4"]["bailiwick"]["peak_rss_process_mib"],
               stream["PUT x4"]["bailiwick"]["peak_rss_process_mib"])
    rows.append(target_row("peak RSS per process, 4 concurrent 256 MiB streams", peak, TARGET_RSS_MIB, "MiB", False, 1))
    policy = results["policy"]
    if "100000" in policy:
        rows.append(target_row("policy p99 at 100,000 datasets", policy["100000"]["p99_us"],
                               TARGET_POLICY_P99_US, "µs", False, 2))
    else:
        largest = max(policy, key=int)
        rows.append(["policy p99 at 100,000 datasets", f"{policy[largest]['p99_us']:.2f} µs at {int(largest):,}",
                     "< 10 µs", "not measured", "smoke runs stop at "
                     f"{int(largest):,} datasets (loading 100,000 takes minutes); run without --smoke"])
    return rows


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# bailiwick benchmark report",
        "",
        f"- date: {results['date']} ({'smoke' if results['smoke'] else 'full'} run, "
        f"{results['runs']} run(s) per measurement, medians; took {results['elapsed_seconds']:.0f} s)",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}; "
        f"load average before / after: {results['loadavg_before']} / {results['loadavg_after']}",
        f"- versions: Python {m['python']}, aiohttp {m['aiohttp']}, nginx {m['nginx']}, {m['wrk']}, {m['curl']}",
        f"- bailiwick: `python3 -m proxy serve`, RS256 JWT per request (X-Bailiwick-Token), policies/, "
        f"audit log to a file; --workers flag: {'yes' if results['bailiwick_workers_flag'] else 'no'}",
        "- nginx reverse proxy: proxy_pass with `keepalive 256` upstream connections, `proxy_http_version 1.1`, "
        "`proxy_buffering off`, `proxy_request_buffering off`, `proxy_buffer_size 64k`, "
        "`client_body_buffer_size 64k`; stand-in: nginx, sendfile, files on tmpfs, WebDAV PUT",
        "- every request (all targets) carries the same token and a fake SigV4 `Authorization` header",
        "",
        "Pinning (taskset):",
        "",
        *table(["process", "CPUs"], [[k, v] for k, v in results["pinning"].items()]),
    ]
    # (a)
    small = results["small_get"]
    names = [n for n in ("direct", "nginx", "bailiwick", "bailiwick_w2") if n in small]
    header = ["connections", *[f"{n} req/s (errors)" for n in names], "bailiwick / nginx", "bailiwick / direct"]
    if "bailiwick_w2" in small:
        header += ["workers 2 / nginx"]
    rows = []
    for c in small["direct"]:
        row = [c, *[f"{num(small[n][c]['rps'])} ({num(small[n][c]['errors'])})" for n in names],
               ratio(small["bailiwick"][c]["rps"], small["nginx"][c]["rps"]),
               ratio(small["bailiwick"][c]["rps"], small["direct"][c]["rps"])]
        if "bailiwick_w2" in small:
            row.append(ratio(small["bailiwick_w2"][c]["rps"], small["nginx"][c]["rps"]))
        rows.append(row)
    lines += ["## (a) Small-object capacity: 1 KiB GET, wrk -t1, "
              f"{results['profile']['wrk_seconds']} s per point", "",
              "errors = non-2xx responses + socket errors.", "", *table(header, rows)]
    # (b)
    lat = results["latency"]
    lines += [f"## (b) Added latency, open loop ({results['profile']['openloop_seconds']:g} s per rate, "
              "64 connections)", "",
              f"Rates are 25 % and 50 % of bailiwick's measured capacity ({num(lat['capacity_rps'])} req/s, the best "
              "of (a)). Latency is measured from each request's scheduled send time (bench/openloop.py), so "
              "queueing shows.", ""]
    rows = []
    for label, entry in lat["rates"].items():
        for pct, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")):
            d, n, b = entry["direct"][key], entry["nginx"][key], entry["bailiwick"][key]
            rows.append([f"{label} ({num(entry['rate_rps'])} req/s)", pct, f"{d:.3f}", f"{n:.3f}", f"{b:.3f}",
                         f"{b - d:+.3f}", f"{n - d:+.3f}", ratio(b, n), ratio(b, d)])
    lines += table(["load", "percentile", "direct ms", "nginx ms", "bailiwick ms", "bailiwick - direct ms",
                    "nginx - direct ms", "bailiwick / nginx", "bailiwick / direct"], rows)
    errors = {f"{label} {name}": entry[name]["errors"] + entry[name]["non2xx"]
              for label, entry in lat["rates"].items() for name in ("direct", "nginx", "bailiwick")}
    lines += [f"Errors (median per run): {', '.join(f'{k}: {v:g}' for k, v in errors.items())}.", ""]
    # (c)
    stream = results["streaming"]
    rows = []
    for key, entry in stream.items():
        if not isinstance(entry, dict):
            continue
        d, n, b = entry["direct"]["mb_s"], entry["nginx"]["mb_s"], entry["bailiwick"]["mb_s"]
        rows.append([key, num(d), num(n), num(b), ratio(b, n), ratio(b, d),
                     f"{entry['bailiwick']['peak_rss_process_mib']:.1f}",
                     f"{entry['bailiwick']['peak_rss_total_mib']:.1f}"])
    lines += ["## (c) Streaming 256 MiB objects (curl, client side, MB = 10^6 bytes)", "",
              "Throughput = all bytes of all concurrent streams / wall time. RSS: VmRSS of a fresh bailiwick "
              "process, sampled every 50 ms during the transfers (max over runs); "
              f"idle before the transfers: {stream['idle_rss_process_mib']:.1f} MiB. "
              + (f"The process that took the capacity and latency runs (up to 256 connections at once) was at "
                 f"{stream['rss_after_load_mib']:.1f} MiB afterwards." if "rss_after_load_mib" in stream else ""),
              "",
              *table(["transfer", "direct MB/s", "nginx MB/s", "bailiwick MB/s", "bailiwick / nginx",
                      "bailiwick / direct", "bailiwick peak RSS / process MiB", "bailiwick peak RSS total MiB"], rows)]
    slower = [key for key, entry in stream.items()
              if isinstance(entry, dict) and entry["direct"]["mb_s"] < entry["bailiwick"]["mb_s"]]
    if slower:
        lines += [f"Note: direct was slower than through bailiwick for {', '.join(slower)}. Direct, the curls and "
                  f"the stand-in share CPU {LOAD_CPU}; through a proxy part of the work moves to CPU {PROXY_CPU}. "
                  "Ratios over direct above 1 there say more about the test bed than about the proxy.", ""]
    # (d)
    rows = [[f"{int(k):,}", num(v["decisions_per_second"]), f"{v['p50_us']:.2f}", f"{v['p99_us']:.2f}",
             f"{v['load_seconds']:.1f}"] for k, v in results["policy"].items()]
    lines += ["## (d) Policy engine alone (`decide`, reads of random buckets, pinned to CPU 0)", "",
              f"{results['profile']['policy_calls']:,} calls per round, median of {results['runs']} round(s); "
              "time per call with perf_counter_ns.", "",
              *table(["datasets", "decisions/s", "p50 µs", "p99 µs", "policy load s"], rows)]
    lines += ["## Targets", "", *table(["target", "measured", "goal", "status", "margin"], targets(results))]
    lines += ["Numbers from a machine shared with other work are provisional; compare ratios within one report "
              "rather than absolutes across reports.", ""]
    return "\n".join(lines)


def update_readme(report: str) -> None:
    readme = BENCH / "README.md"
    heading = "## Latest report"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\nRun `python3 bench/run.py`.\n"
    before = text.split(heading, 1)[0].rstrip() + "\n\n"
    demoted = "\n".join("##" + line if line.startswith("#") else line for line in report.splitlines())
    readme.write_text(before + heading + "\n\n" + demoted.strip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short run for CI (about 2 min)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement, median reported "
                        "(default: 3; 1 with --smoke)")
    parser.add_argument("--output", type=Path, default=RESULTS, metavar="DIR",
                        help=f"where report.md and report.json go (default: {RESULTS.relative_to(BENCH.parent)}); "
                        "a full run also updates bench/README.md, a smoke run never does")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only rewrite report.md and the README from a report.json written by a run")
    args = parser.parse_args(argv)
    if args.render is not None:
        report = render(json.loads(args.render.read_text()))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "report.md").write_text(report)
        update_readme(report)
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
        "machine": machine(),
        "loadavg_before": loadavg(),
    }
    measure(prof, results)
    results["loadavg_after"] = loadavg()
    results["elapsed_seconds"] = time.monotonic() - started
    report = render(results)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (output / "report.md").write_text(report)
    written = f"{output / 'report.md'} and {output / 'report.json'}"
    if not args.smoke:
        update_readme(report)
        written += f" and {BENCH / 'README.md'}"
    log(f"wrote {written} in {results['elapsed_seconds']:.0f} s")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
