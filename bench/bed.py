"""The benchmark's test bed: the servers it measures, started and stopped on 127.0.0.1.

* stand-in upstream: nginx serving a 1 KiB and a 256 MiB object from a temp
  root (tmpfs when available) and accepting PUTs (WebDAV PUT: nginx reads the
  whole body into a temp file before it answers; the harness also checks the
  stored size);
* nginx reverse proxy: proxy_pass to the stand-in, HTTP/1.1 keep-alive
  upstream connections, no buffering either way (it streams, like bailiwick);
* bailiwick: ``python3 -m proxy serve`` with RS256 JWTs from a JWKS file and
  the repository's policies/ (and ``--workers 2`` when the flag exists).

Each server runs in its own process group, pinned with taskset so that the proxy
under test and the load generators (bench/load.py) do not share a core.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    can be taken as the source port of an outgoing connection before the server that was given it binds it
    (a bench starts several servers at once, and each makes connections). Never the same port twice."""
    low = _ephemeral_floor()
    if low <= 11_000:   # no room below it: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = secrets.randbelow(low - 10_000) + 10_000
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port between 10000 and {low}")


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bed_folder(prefix: str) -> Path:
    """A fresh temp folder for a test bed, on tmpfs when there is one (no disk in the numbers)."""
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - tmpfs on purpose
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


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

    def start(self, args: list[str], *, log_file: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log_file.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=cwd,
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


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log_file: Path, timeout: float = 30.0,
              context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):  # noqa: S310 - our own loopback server
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


def make_bed(tmp: Path, *, large: bool = True) -> Bed:
    """The stand-in's objects (the 256 MiB one only when `large`) and nginx's folders under `tmp`."""
    docroot = tmp / "root"
    objects = docroot / BUCKET_PATH.lstrip("/")
    (objects / "put").mkdir(parents=True)
    (objects / "1k").write_bytes(os.urandom(1024))
    with (objects / "256m").open("wb") as out:
        for _ in range(LARGE_BYTES // MIB if large else 0):
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
    return _start_nginx(procs, bed, conf, LOAD_CPU, bed.upstream_port, "stand-in nginx")


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
    return _start_nginx(procs, bed, conf, PROXY_CPU, bed.nginx_port, "nginx reverse proxy")


def _start_nginx(procs: Processes, bed: Bed, conf: Path, cpus: str, port: int, what: str) -> subprocess.Popen[bytes]:
    """nginx with `conf`, pinned to `cpus`, once it serves the small object on `port`."""
    log_file = bed.tmp / "nginx" / "logs" / f"{conf.stem}.out"
    proc = procs.start(["taskset", "-c", cpus, nginx_binary(), "-p", str(bed.tmp / "nginx"), "-c", str(conf)],
                       log_file=log_file)
    wait_http(f"http://127.0.0.1:{port}{SMALL}", proc, what, log_file)
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


@dataclass(frozen=True)
class ServerTls:
    """`listen_tls` for a bailiwick under test: its PEM files, and a client context that trusts its CA."""

    certificate: Path
    key: Path
    ca: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def start_bailiwick(procs: Processes, bed: Bed, jwks: Path, workers: int, tls: ServerTls | None = None,
                    cpus: str | None = None) -> Bailiwick:
    """bailiwick with `workers` processes, on `cpus` (default: the proxy CPU for one, both CPUs for more)."""
    port, admin = free_port(), free_port()
    name = f"w{workers}" + ("-tls" if tls else "")
    config = bed.tmp / f"bailiwick-{name}.yaml"
    listen_tls = "" if tls is None else f"listen_tls: {{certificate: '{tls.certificate}', key: '{tls.key}'}}\n"
    config.write_text(
        listen_tls +
        f"listen: 127.0.0.1:{port}\n"
        f"admin_listen: 127.0.0.1:{admin}\n"
        f"policies: {ROOT / 'policies'}\n"
        f"audit: {{path: {bed.tmp / f'audit-{name}.jsonl'}}}\n"
        # A sidecar's only peer is its app on loopback: per-address caps as large as the global ones.
        f"upstream: {{url: 'http://127.0.0.1:{bed.upstream_port}', max_connections_per_peer: 256}}\n"
        "limits: {max_connections_per_peer: 1024}\n"
        "identity:\n  jwt:\n"
        f"    - {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_file: '{jwks}', algorithms: [RS256]}}\n"
    )
    cpus = cpus or (PROXY_CPU if workers == 1 else BOTH_CPUS)
    args = ["taskset", "-c", cpus, sys.executable, "-m", "proxy", "serve", "--config", str(config),
            "--log-level", "WARNING"]
    if workers > 1:
        args += ["--workers", str(workers)]
    log_file = bed.tmp / f"bailiwick-{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = procs.start(args, log_file=log_file, env=env)
    wait_http(f"http://127.0.0.1:{admin}/healthz", proc, f"bailiwick (workers={workers})", log_file)
    # The data port too (workers may bind a moment after the admin port answers).
    wait_http(f"{'https' if tls else 'http'}://127.0.0.1:{port}/", proc, f"bailiwick ({name}) data port", log_file,
              context=None if tls is None else tls.client_context())
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
