"""(f) TLS on the data port: the same proxy over plain HTTP and over TLS, side by side.

Why side by side: what TLS costs is a ratio, meaningful only within one run on
one machine. Two bailiwick processes run with the same configuration; one has
`listen_tls` with a certificate made at bench time (`cryptography`: a P-256 CA
and a server certificate for 127.0.0.1, as cert-manager's ECDSA default), the
other none. Both serve the same 1 KiB object from the nginx stand-in
(bench/bed.py). Two costs are separate:

* the handshake: new connections per second, one GET each (`wrk` sending
  `Connection: close`, so every request opens a connection, and with TLS
  does a full handshake: no session resumption), and the time of one
  connection set-up alone from a Python client (TCP connect, plus the TLS
  handshake with the certificate verified against the CA);
* the per-request cost on a kept-alive connection: 1 KiB GETs over 64
  keep-alive connections (`wrk`: req/s), and the latency at one fixed rate,
  half the plain proxy's capacity, with the open-loop generator
  (bench/openloop.py, verifying the certificate as a client would): p50/p99.

The proxies run on the proxy CPU, the stand-in and the clients on the load CPU.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bed import (
    SMALL,
    Bailiwick,
    Processes,
    ServerTls,
    bed_folder,
    log,
    make_bed,
    make_identity,
    start_bailiwick,
    start_upstream,
)
from bench.load import run_openloop, run_wrk
from bench.measure import median

KINDS = ("plain", "tls")


@dataclass(frozen=True)
class TlsProfile:
    """How long and how often."""

    runs: int
    wrk_seconds: int
    connections: int                  # keep-alive connections of the capacity point
    new_connections: int              # concurrent clients of the new-connection point
    setups: int                       # connection set-ups timed one by one
    openloop_seconds: float
    openloop_warmup: float


def tls_profile(smoke: bool, runs: int | None) -> TlsProfile:
    if smoke:   # one short point each: a few seconds in all
        return TlsProfile(runs or 1, 2, 64, 16, 50, 2.0, 0.5)
    return TlsProfile(runs or 3, 10, 64, 16, 500, 20.0, 1.0)


def make_certificates(folder: Path) -> ServerTls:
    """A CA and a server certificate for 127.0.0.1 it issued (P-256, a day), written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
              ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName(
                           [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("bailiwick bench CA", "bailiwick bench CA", ca_key, ca_key, ca=True)
    server_cert = build("127.0.0.1", "bailiwick bench CA", server_key, ca_key, ca=False)
    folder.mkdir(parents=True, exist_ok=True)
    tls = ServerTls(certificate=folder / "tls.crt", key=folder / "tls.key", ca=folder / "ca.crt")
    tls.certificate.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return tls


def time_setups(port: int, context: ssl.SSLContext | None, count: int) -> dict[str, float]:
    """`count` connection set-ups one after the other (connect, and the TLS handshake with `context`): ms."""
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if context is None:
                times.append(time.perf_counter() - started)
                continue
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                times.append(time.perf_counter() - started)
    times.sort()
    p99 = times[min(len(times) - 1, len(times) * 99 // 100)]
    return {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": p99 * 1000}


def measure_tls(prof: TlsProfile, results: dict[str, Any]) -> None:
    """Part (f) into results["tls"]: per kind, medians over the runs."""
    tmp = bed_folder("bailiwick-bench-tls-")
    procs = Processes()
    try:
        bed = make_bed(tmp, large=False)
        tls = make_certificates(tmp / "tls")
        start_upstream(procs, bed)
        jwks = make_identity(bed)
        proxies: dict[str, Bailiwick] = {"plain": start_bailiwick(procs, bed, jwks, 1),
                                         "tls": start_bailiwick(procs, bed, jwks, 1, tls=tls)}
        urls = {"plain": f"http://127.0.0.1:{proxies['plain'].port}{SMALL}",
                "tls": f"https://127.0.0.1:{proxies['tls'].port}{SMALL}"}
        contexts = {"plain": None, "tls": tls.client_context()}
        samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
        for run in range(prof.runs):
            for kind in KINDS:   # interleaved, so that a drift of the machine touches both
                log(f"(f) run {run + 1}/{prof.runs}: {kind}")
                new = run_wrk(urls[kind], bed, prof.new_connections, prof.wrk_seconds, ("Connection: close",))
                kept = run_wrk(urls[kind], bed, prof.connections, prof.wrk_seconds)
                setup = time_setups(proxies[kind].port, contexts[kind], prof.setups)
                for name, value in (("new_rps", new["rps"]), ("new_errors", new["errors"]),
                                    ("keepalive_rps", kept["rps"]), ("keepalive_errors", kept["errors"]),
                                    ("setup_p50_ms", setup["p50_ms"]), ("setup_p99_ms", setup["p99_ms"])):
                    samples[kind].setdefault(name, []).append(float(value))
        out: dict[str, Any] = {"profile": prof.__dict__,
                               **{kind: {name: median(values) for name, values in samples[kind].items()}
                                  for kind in KINDS}}
        rate = out["plain"]["keepalive_rps"] / 2
        out["latency_rate"] = rate
        for kind in KINDS:
            lat = run_openloop(urls[kind], bed, rate, prof.openloop_seconds, prof.openloop_warmup,
                               cafile=tls.ca if kind == "tls" else None)
            out[kind]["latency"] = lat
        results["tls"] = out
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
