"""Denial of service through the bodies the proxy reads before it decides.

A multi-object delete names its keys in its body, so the proxy reads and
parses that body (up to ``s3.max_delete_body_bytes``, 2 MiB) before deciding.
Each case runs `bailiwick serve` as a subprocess (its own event loop, its own
memory, measured through /proc) in front of the session's moto, behind a
recording relay, and attacks it from loopback sockets with bounded loops:

- a caller with no right to delete anything in the bucket is refused before a
  byte of its body is read: it is answered 403 though it never sends the body;
- worst-case bodies from an allowed caller do not hold up other callers: a
  legitimate GET keeps its latency while they are parsed;
- slow senders are cut at the total read deadline, and the bytes such reads
  hold are bounded: beyond the budget they are answered 503 SlowDown at once,
  so they cannot take every connection;
- the memory they held goes back to the system when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.localstore import MotoServer
from tests.attacks.conftest import SIGV4, Served, serve_process
from tests.conftest import DUBLIN, ROOT, make_token
from tests.support.recorder import Recorder

pytestmark = pytest.mark.usefixtures("seeded")

TWO_MIB = 2 * 1024 * 1024
MAX_KEYS = 1000


@contextlib.contextmanager
def serve(moto: MotoServer, home: Path, **limits: Any) -> Iterator[tuple[Served, Recorder]]:
    """`bailiwick serve` with these limits, behind a relay recording what reaches moto."""
    relay = Recorder(moto.port)
    try:
        with serve_process(home, relay.url, {"limits": limits, "reload": {"interval_seconds": 0}},
                           secret_env="DOS_HS256_SECRET", log_level="WARNING",
                           environ={"PYTHONPATH": str(ROOT)}) as served:
            yield served, relay
    finally:
        relay.close()


def delete_head(port: int, jurisdiction: str, length: int, *, sub: str, chunked: bool = False,
                extra: str = "") -> bytes:
    """`extra`: more header lines, each ending in CRLF."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    return (f"POST /{DUBLIN}?delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-Bailiwick-Token: {make_token(jurisdiction, sub=sub, exp_in=600)}\r\n"
            f"Content-Type: application/xml\r\n{SIGV4}{extra}{framing}\r\n\r\n").encode()


def get_request(port: int) -> bytes:
    return (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-Bailiwick-Token: {make_token('IE', sub='legit', exp_in=600)}\r\n{SIGV4}\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One whole answer (by Content-Length): its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def code_of(body: bytes) -> str:
    return body.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode() if b"<Code>" in body else ""


def worst_bodies() -> list[bytes]:
    """2 MiB bodies that cost the parser the most, each refused only once it is read whole (400)."""
    longest = b"<Delete>" + b"".join(
        b"<Object><Key>" + b"%04d" % i + b"k" * 1020 + b"</Key><VersionId>" + b"&#65;" * 204 + b"</VersionId></Object>"
        for i in range(MAX_KEYS)) + b"<Other/></Delete>"
    bodies = [
        longest,
        b"<Delete>" + b"<a>" * ((TWO_MIB - 8) // 3),
        b"<Delete><Object " + b" ".join(b"a%07d='1'" % i for i in range(TWO_MIB // 14)) + b"><Key>a</Key></Object>",
        b"<Delete>" + b"<!---->" * ((TWO_MIB - 60) // 7) + b"<Object><Key>a</Key></Object></Delete>",
    ]
    assert all(len(body) <= TWO_MIB for body in bodies)
    return bodies


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    "",
    # A header that names something by region (an SSE-KMS key) only adds to what is judged:
    # it must not make the proxy read the body of a request refused whatever the body says.
    "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:eu-west-1:123456789012:key/abc\r\n",
    "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:us-east-1:123456789012:key/abc\r\n",
], ids=["plain", "kms-key-here", "kms-key-elsewhere"])
@pytest.mark.parametrize("jurisdiction", ["US", "DE"])   # US: denied everything; DE: may read, not delete
def test_a_caller_with_no_delete_right_is_refused_before_its_body_is_read(
    moto: MotoServer, tmp_path: Path, jurisdiction: str, extra: str,
) -> None:
    senders = 20
    with serve(moto, tmp_path) as (proxy, relay):
        mark = relay.mark()
        socks = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(senders)]
        try:
            started = time.monotonic()
            for number, sock in enumerate(socks):
                # 2 MiB announced, not one byte of it sent: only an answer made without the body can come.
                sock.sendall(delete_head(proxy.port, jurisdiction, TWO_MIB, sub=f"attacker-{number}", extra=extra))
            answers = [read_answer(sock) for sock in socks]
            took = time.monotonic() - started
        finally:
            for sock in socks:
                sock.close()
        assert [status for status, _ in answers] == [403] * senders
        assert {code_of(body) for _, body in answers} == {"AccessDenied"}
        assert b"not allowed for callers in " + jurisdiction.encode() in answers[0][1]
        assert took < 5, took
        assert relay.since(mark) == b""
        deadline = time.monotonic() + 5
        while len(lines := [r for r in proxy.records() if r["request"]["operation"] == "DeleteObjects"]) < senders:
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert {line["caller"]["jurisdiction"] for line in lines} == {jurisdiction}
        assert {(line["decision"], line["status"], line["error_code"], line["dataset"]) for line in lines} == {
            ("deny", 403, "AccessDenied", "dublin-mail")}


def test_worst_case_bodies_do_not_hold_up_a_legitimate_request(moto: MotoServer, tmp_path: Path) -> None:
    bodies = worst_bodies()
    with serve(moto, tmp_path) as (proxy, _):
        stop = threading.Event()
        parsed: list[int] = []

        def attack(number: int) -> None:
            # Each sender sends worst-case bodies one after another for as long as the test measures.
            while not stop.is_set():
                for body in bodies:
                    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
                        sock.sendall(delete_head(proxy.port, "IE", len(body), sub=f"attacker-{number}") + body)
                        status, _ = read_answer(sock)
                        parsed.append(status)
                    if stop.is_set():
                        return

        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as legit:
            for _ in range(3):   # warm: the connection, the token cache, the upstream pool
                legit.sendall(get_request(proxy.port))
                assert read_answer(legit) == (200, b"Dublin mail")
            senders = [threading.Thread(target=attack, args=(n,), daemon=True) for n in range(4)]
            for sender in senders:
                sender.start()
            latencies: list[float] = []
            measure_until = time.monotonic() + 8
            while time.monotonic() < measure_until and len(latencies) < 400:
                started = time.perf_counter()
                legit.sendall(get_request(proxy.port))
                answer = read_answer(legit)
                latencies.append(time.perf_counter() - started)
                assert answer == (200, b"Dublin mail")
                time.sleep(0.01)
            stop.set()
            for sender in senders:
                sender.join(timeout=60)
        assert len(parsed) >= 8, parsed     # the bodies were really sent and parsed meanwhile
        assert set(parsed) == {400}
        median, worst = statistics.median(latencies), max(latencies)
        print(f"GET during the attack: {len(latencies)} requests, median {median * 1000:.1f} ms, "
              f"max {worst * 1000:.1f} ms; {len(parsed)} worst-case bodies parsed")
        assert median < 0.1, latencies
        assert worst < 1.0, latencies


async def _slow_sender(port: int, number: int, length: int, every: float, until: float) -> tuple[int | None, str]:
    """Announce `length` bytes, then send one byte every `every` seconds; the answer's status and code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(delete_head(port, "IE", length, sub=f"slow-{number}"))
        await writer.drain()
        answer = b""
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), every)
                if reader.at_eof() or b"</Error>" in answer:
                    break
                continue
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
        if not answer.startswith(b"HTTP/1.1 "):
            return None, ""
        return int(answer[9:12]), code_of(answer)
    except ConnectionError:
        return None, "reset"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _legit_gets(port: int, until: float) -> list[int]:
    statuses: list[int] = []
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request(port))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            statuses.append(int(head[9:12]))
            writer.close()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            statuses.append(0)
        await asyncio.sleep(0.1)
    return statuses


def test_slow_senders_are_cut_and_cannot_take_every_connection(moto: MotoServer, tmp_path: Path) -> None:
    # More slow senders than the proxy takes connections: before, each held its connection for as
    # long as it trickled, and every other caller got the connection cap's 503 meanwhile.
    connections, senders, deadline = 120, 150, 3.0
    with serve(moto, tmp_path, max_connections=connections, body_read_timeout_seconds=deadline,
               max_inspected_bytes=4 * 1024 * 1024) as (proxy, relay):
        mark = relay.mark()

        async def attack() -> tuple[list[tuple[int | None, str]], list[int]]:
            until = time.monotonic() + 3 * deadline + 2
            slow = [asyncio.ensure_future(_slow_sender(proxy.port, n, 100_000, 0.25, until)) for n in range(senders)]
            await asyncio.sleep(1.5)   # every slow sender is in (and half-way to the deadline)
            legit = await _legit_gets(proxy.port, time.monotonic() + 2 * deadline)
            return list(await asyncio.gather(*slow)), legit

        started = time.monotonic()
        slow, legit = asyncio.run(attack())
        took = time.monotonic() - started
    counted = Counter(slow)
    print(f"slow senders: {dict(counted)}; legitimate GETs meanwhile: {Counter(legit)}")
    # Within the budget (4 MiB, at least 256 KiB a read): read until the deadline cut them. Beyond it:
    # refused unread. Beyond the connection cap, at the first rush: the cap's own 503, before any request.
    assert set(counted) <= {(400, "RequestTimeout"), (503, "SlowDown"), (503, "")}, counted
    assert 1 <= counted[(400, "RequestTimeout")] <= 16, counted
    assert counted[(503, "SlowDown")] >= connections - 16 - counted[(400, "RequestTimeout")], counted
    assert legit
    assert all(status == 200 for status in legit), legit
    assert took < 3 * deadline + 10
    # Nothing of theirs reached the storage server; every one that was read is audited, as the caller it was.
    assert b"?delete" not in relay.since(mark)
    lines = [r for r in proxy.records() if r["request"]["operation"] == "DeleteObjects"]
    assert Counter((line["status"], line["error_code"]) for line in lines) == Counter(
        {answer: n for answer, n in counted.items() if answer != (503, "")})
    assert {line["caller"]["jurisdiction"] for line in lines} == {"IE"}


def test_when_the_budget_is_spent_more_bodies_are_refused_with_slowdown(moto: MotoServer, tmp_path: Path) -> None:
    # One peer may hold all of the budget here (its share is its part of the connections: all of them).
    with serve(moto, tmp_path, max_inspected_bytes=4 * 1024 * 1024, body_read_timeout_seconds=30,
               max_connections_per_peer=1024) as (proxy, relay):
        mark = relay.mark()
        holders = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(2)]
        try:
            # Two bodies of 2 MiB announced (and half sent) hold the whole budget ...
            for number, sock in enumerate(holders):
                sock.sendall(delete_head(proxy.port, "IE", TWO_MIB, sub=f"holder-{number}") + b" " * (TWO_MIB // 2))
            time.sleep(0.5)
            # ... so a third is answered at once, unread: 503 SlowDown, which S3 clients back off and retry on.
            for chunked in (False, True):
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as third:
                    third.sendall(delete_head(proxy.port, "IE", 1000, sub="third", chunked=chunked))
                    status, body = read_answer(third)
                assert (status, code_of(body)) == (503, "SlowDown"), body
                assert b"retry" in body
        finally:
            for sock in holders:
                sock.close()
        time.sleep(0.5)
        # Given back when they end: a whole delete is read, decided and forwarded again.
        body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>nothing/here</Key></Object>'
                b"</Delete>")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as again:
            again.sendall(delete_head(proxy.port, "IE", len(body), sub="later") + body)
            status, answer = read_answer(again)
        assert status == 200, answer
        upstream = relay.since(mark)
        assert upstream.count(b"?delete") == 1
        assert b"nothing/here" in upstream
        busy = [r for r in proxy.records() if r["error_code"] == "SlowDown"]
        assert len(busy) == 2
        assert {(r["status"], r["caller"]["jurisdiction"], r["caller"]["subject"]) for r in busy} == {
            (503, "IE", "third")}


def test_memory_held_by_bodies_goes_back_when_they_end(moto: MotoServer, tmp_path: Path) -> None:
    senders = 300
    body = b"<Delete>" + b" " * (TWO_MIB - 8)
    # Every sender is 127.0.0.1: the per-peer cap is lifted so that all of them reach the body read.
    with serve(moto, tmp_path, body_read_timeout_seconds=3, max_connections_per_peer=1024) as (proxy, _):
        # Warm: a few whole bodies and requests, so that what stays for good is in the baseline.
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(delete_head(proxy.port, "IE", TWO_MIB, sub="warm") + body)
                assert read_answer(sock)[0] == 400
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(get_request(proxy.port))
                assert read_answer(sock)[0] == 200
        time.sleep(1.5)
        before = proxy.rss_kib / 1024

        async def hold(number: int) -> None:
            # All of the body but its last byte, then wait for the answer (or the deadline's cut).
            with contextlib.suppress(ConnectionError, TimeoutError):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                try:
                    writer.write(delete_head(proxy.port, "IE", TWO_MIB, sub=f"holder-{number}") + body[:-1])
                    await asyncio.wait_for(writer.drain(), 10)
                    await asyncio.wait_for(reader.read(4096), 10)
                finally:
                    writer.close()

        peak = [before]

        async def attack() -> None:
            holders = [asyncio.ensure_future(hold(n)) for n in range(senders)]
            while not all(h.done() for h in holders):
                peak[0] = max(peak[0], proxy.rss_kib / 1024)
                await asyncio.sleep(0.1)

        asyncio.run(attack())
        time.sleep(2.5)   # the cut ones are released and the allocator asked to give back once the burst ends
        after = proxy.rss_kib / 1024
        assert proxy.process.poll() is None
    print(f"RSS before {before:.1f} MiB, peak {peak[0]:.1f} MiB, after {after:.1f} MiB ({senders} senders of 2 MiB)")
    assert after <= before * 1.2, (before, peak[0], after)
