"""Proxies under attack, and the one assertion every attack case makes.

`Target` is a running proxy with its own recording relay and audit log. Two are
available: the session proxy (in-process, aiohttp's C parser, llhttp) and a
`bailiwick serve` subprocess started with ``AIOHTTP_NO_EXTENSIONS=1`` (aiohttp's
pure-Python parser), which sits behind a second relay in front of the same moto.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.harness import ProxyThread
from proxy.localstore import MotoServer, free_port
from tests.conftest import AUDIENCE, DUBLIN, EXAMPLE_POLICIES, ISSUER, ROOT, SECRET, make_token
from tests.support.recorder import Recorder
from tests.support.records import written_records

# What a refusal may look like: the proxy's own statuses, or aiohttp's parser 400.
REFUSED = frozenset({400, 401, 403, 405, 413, 431})
SIGV4 = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00\r\n")
READ_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """A running proxy under attack."""

    name: str  # "c" or "python": the HTTP parser aiohttp uses in it
    host: str
    port: int
    recorder: Recorder
    audit: Path

    def render(self, template: bytes) -> bytes:
        """Fill in {IE}, {US}, {DE} (tokens), {PORT} and {SIGV4} in a raw request template."""
        out = template.replace(b"{PORT}", str(self.port).encode()).replace(b"{SIGV4}", SIGV4.encode())
        for code in ("IE", "US", "DE"):
            out = out.replace(b"{" + code.encode() + b"}", make_token(code, sub=f"attacker-{code}").encode())
        return out


@dataclass(frozen=True, slots=True)
class Answer:
    raw: bytes
    timed_out: bool

    @property
    def status(self) -> int | None:
        if not self.raw.startswith(b"HTTP/"):
            return None
        return int(self.raw.split(b" ", 2)[1])  # whatever version the answer claims (HTTP/0.9 ...)

    @property
    def request_id(self) -> str | None:
        """The proxy's decision id (x-amz-request-id): only the proxy's own answers carry one.

        moto calls its header x-amzn-requestid, and aiohttp's parser errors have none.
        """
        head = self.raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-amz-request-id":
                return value.strip().decode()
        return None

    def statuses(self) -> list[int]:
        """The status of every response in the stream (pipelining), in order."""
        found: list[int] = []
        for piece in self.raw.split(b"HTTP/1.1 ")[1:]:
            if piece[:3].isdigit():
                found.append(int(piece[:3]))
        return found


def complete_responses(data: bytes) -> int:
    """How many whole final responses (status >= 200, body by Content-Length) `data` holds."""
    count = 0
    position = 0
    while True:
        end = data.find(b"\r\n\r\n", position)
        if end == -1:
            return count
        head = data[position:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        position = end + 4 + length
        if position > len(data):
            return count
        if head[9:10] != "1":  # 1xx responses are interim
            count += 1


def send(target: Target, data: bytes, *, responses: int = 1, timeout: float = READ_TIMEOUT) -> Answer:
    """Send raw bytes; read until `responses` whole responses came, the proxy closes, or `timeout` passes.

    A refusal of a request whose body was not read is answered at once, but aiohttp
    may keep the connection open a while to drain that body (lingering close), so
    waiting for the close would only measure that.
    """
    chunks: list[bytes] = []
    timed_out = False
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        # The proxy may refuse and close before reading everything: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        while complete_responses(b"".join(chunks)) < responses:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                timed_out = True
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return Answer(b"".join(chunks), timed_out)


def audit_line(target: Target, decision_id: str) -> dict[str, Any]:
    """The audit line of one decision. A forwarded request's line is written once the
    response has been streamed, so it may land just after the client read it: wait for it."""
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        for record in written_records(target.audit):
            if record["decision_id"] == decision_id:
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit line for decision {decision_id} in {target.audit}")
        time.sleep(0.02)


def forwarded_audit_line(target: Target, forwarded: bytes) -> dict[str, Any]:
    """The audit line of the one request in `forwarded` (what reached the storage server).

    A forwarded answer carries the storage server's request id, not the proxy's:
    the decision id is read from the X-Bailiwick-Decision tag the proxy added.
    """
    found = re.findall(rb"(?im)^x-bailiwick-decision: *([0-9a-f]+)\r$", forwarded)
    assert len(found) == 1, forwarded[:600]
    return audit_line(target, found[0].decode())


def assert_still_serving(target: Target) -> None:
    """A normal allowed request on a fresh connection still succeeds."""
    answer = send(target, target.render(
        f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "X-Bailiwick-Token: {IE}\r\n{SIGV4}Connection: close\r\n\r\n".encode()))
    assert answer.status == 200, answer.raw[:300]
    assert answer.raw.endswith(b"Dublin mail")


def assert_refused(target: Target, template: bytes, *, by: str | None = None) -> Answer:
    """The attack is refused, nothing reaches the storage server, the refusal is audited, the proxy lives.

    `by`: "proxy" (our handler refused: S3 XML error, audit line), "aiohttp" (its parser
    refused before our handler ran: plain-text 400 or a closed connection, no audit line),
    or None (either).
    """
    mark = target.recorder.mark()
    answer = send(target, target.render(template))
    assert not answer.timed_out, f"the proxy hung: {answer.raw[:300]!r}"
    assert answer.status in REFUSED or answer.raw == b"", answer.raw[:400]
    assert target.recorder.since(mark) == b"", target.recorder.since(mark)[:400]
    request_id = answer.request_id
    if by == "proxy":
        assert request_id is not None, answer.raw[:400]
    elif by == "aiohttp":
        assert request_id is None, answer.raw[:400]
    if request_id is not None:
        line = audit_line(target, request_id)
        assert line["status"] == answer.status
        assert line["decision"] in ("deny", "error")
    assert_still_serving(target)
    return answer


@pytest.fixture
def c_target(proxy: ProxyThread, recorder: Recorder, audit_path: Path) -> Target:
    host, port = proxy.url.removeprefix("http://").split(":")
    return Target("c", host, int(port), recorder, audit_path)


@dataclass(frozen=True, slots=True)
class Served:
    """A `bailiwick serve` child process and what a test reads of it."""

    process: subprocess.Popen[bytes]
    port: int
    audit: Path
    log: Path

    @property
    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def records(self) -> list[dict[str, Any]]:
        return written_records(self.audit)


@contextlib.contextmanager
def serve_process(home: Path, upstream: str, settings: dict[str, Any] | None = None, *, secret_env: str,
                  pure_python_parser: bool = False, log_level: str = "INFO",
                  environ: dict[str, str] | None = None) -> Iterator[Served]:
    """`bailiwick serve` as a child process (its own event loop and memory) in front of `upstream`.

    It reads the example policies and HS256 tokens of the test issuer (secret in `secret_env`), and
    audits to ``home/audit.jsonl``; each section of `settings` is merged into its configuration.
    aiohttp's C HTTP parser unless `pure_python_parser`. It is ready once it logs that it serves (at
    INFO or below), else once its port accepts a connection.
    """
    port, admin = free_port(), free_port()
    audit = home / "audit.jsonl"
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}",
        "policies": str(EXAMPLE_POLICIES),
        "upstream": {"api": "s3", "url": upstream},
        "identity": {"jwt": [{"issuer": ISSUER, "audience": AUDIENCE, "hs256_secret_env": secret_env}]},
        "audit": {"path": str(audit)},
    }
    for section, values in (settings or {}).items():
        config[section] = {**config.get(section, {}), **values}
    path = home / "bailiwick.yaml"
    path.write_text(json.dumps(config))   # JSON is YAML
    env = {**os.environ, secret_env: SECRET, **(environ or {})}
    if pure_python_parser:
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    else:
        env.pop("AIOHTTP_NO_EXTENSIONS", None)
    log = home / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(path), "--log-level", log_level],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )

    def ready() -> bool:
        if log_level in ("DEBUG", "INFO"):
            return "bailiwick serving" in log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False

    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            if ready():
                break
            assert time.monotonic() < deadline, "bailiwick serve did not start: " + log.read_text()
            time.sleep(0.05)
        yield Served(process, port, audit, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def py_target(moto: MotoServer, seeded: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """`bailiwick serve` in a subprocess with aiohttp's pure-Python HTTP parser."""
    home = tmp_path_factory.mktemp("py-proxy")
    relay = Recorder(moto.port)
    try:
        # as tests/conftest.py's proxy: moto serves BUCKET.localhost
        with serve_process(home, relay.url, {"s3": {"virtual_hosts": ["localhost"]}},
                           secret_env="ATTACK_HS256_SECRET", pure_python_parser=True) as served:
            # It says which parser it runs once it listens, so this cannot silently test the C parser twice.
            assert "pure-Python HTTP parser" in served.log.read_text(), served.log.read_text()
            yield Target("python", "127.0.0.1", served.port, relay, served.audit)
    finally:
        relay.close()


@pytest.fixture(params=["c", "python"])
def any_parser(request: pytest.FixtureRequest) -> Target:
    """Every attack case runs against both of aiohttp's HTTP parsers."""
    target: Target = request.getfixturevalue("c_target" if request.param == "c" else "py_target")
    return target
