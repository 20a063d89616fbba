"""Browser form uploads (S3 POST Object) held to the limits of bodies read before a decision, against moto.

The fields before the file are read under the read deadline and the inspected-body budget, the file streams
under the idle limit, and a refusal once the fields were read ends the connection: each case sends the form
over a raw socket, as slowly or partly as it needs, and asserts the answer, what reached the storage server
(the recording relay) and what it stored.
"""

from __future__ import annotations

import functools
import selectors
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import urllib3

from proxy.config.model import Limits
from proxy.harness import ProxyThread
from tests.conftest import make_token, proxy_config
from tests.s3.test_post_object import EU, FILE, POLICY, _stored, create_buckets
from tests.support.recorder import Recorder
from tests.support.serve import wait_until

UPLOADS = 6   # more form uploads at once than the inspected-body budget could hold the fields of


def _readable(conn: socket.socket, timeout: float) -> bool:
    """Whether `conn` has something to read within `timeout` s (a selector: select() fails on descriptors over
    1023, which a long test run reaches)."""
    with selectors.DefaultSelector() as selector:
        selector.register(conn, selectors.EVENT_READ)
        return bool(selector.select(timeout))


@pytest.fixture(scope="module")
def eu_bucket(direct: Any) -> str:
    create_buckets(direct)
    return EU


def _proxy(recorder: Recorder, tmp_path_factory: pytest.TempPathFactory, **limits: Any) -> ProxyThread:
    folder = tmp_path_factory.mktemp("forms-limits-policy")
    (folder / "forms.yaml").write_text(POLICY, encoding="utf-8")
    config = proxy_config(recorder.url, tmp_path_factory.mktemp("forms-limits-audit") / "audit.jsonl")
    return ProxyThread(replace(config, policies=folder, limits=replace(Limits(), **limits))).start()


@pytest.fixture(scope="module")
def small_budget_proxy(recorder: Recorder, eu_bucket: str, tmp_path_factory: pytest.TempPathFactory,
                       ) -> Iterator[ProxyThread]:
    """A proxy whose bodies read before the decision may hold 1 MiB at once: the fields of four forms."""
    running = _proxy(recorder, tmp_path_factory, max_inspected_bytes=1024 * 1024)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def impatient_proxy(recorder: Recorder, eu_bucket: str, tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[ProxyThread]:
    """A proxy that waits 0.5 s for a form's fields, and 1 s for a body that stops arriving."""
    running = _proxy(recorder, tmp_path_factory, body_read_timeout_seconds=0.5, body_idle_timeout_seconds=1.0)
    yield running
    running.stop()


def _form(key: str, data: bytes = FILE) -> tuple[bytes, str]:
    """A browser's form for `key` (its body and Content-Type)."""
    return urllib3.encode_multipart_formdata([("key", key), ("file", ("f.bin", data))])


def _send_head(proxy: ProxyThread, form: tuple[bytes, str], jurisdiction: str | None = "IE") -> socket.socket:
    """A connection to the proxy with a form's request head sent (its body is the caller's to send), with a
    token of `jurisdiction` (None: no token)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    body, content_type = form
    conn = socket.create_connection((host, int(port)), timeout=10)
    sent = f"X-Bailiwick-Token: {make_token(jurisdiction)}\r\n" if jurisdiction else ""
    conn.sendall((f"POST /{EU} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n{sent}\r\n").encode())
    return conn


def _forwarded_or_answered(recorder: Recorder, mark: int, key: str, conn: socket.socket) -> bool:
    return key.encode() in recorder.since(mark) or bool(_readable(conn, 0.01))


def test_a_form_whose_file_streams_holds_nothing_of_the_inspected_body_budget(
    small_budget_proxy: ProxyThread, recorder: Recorder, direct: Any,
) -> None:
    # Once decided, a form's file streams as a PutObject's body does: the budget bounds only what is read
    # before the decision, so long uploads cannot starve every other form of it.
    keys = [f"budget/{uuid.uuid4().hex}" for _ in range(UPLOADS)]
    forms = [_form(key) for key in keys]
    mark = recorder.mark()
    conns: list[socket.socket] = []
    try:
        for key, form in zip(keys, forms, strict=True):
            conn = _send_head(small_budget_proxy, form)
            conns.append(conn)
            conn.sendall(form[0][:-1000])
            # Decided and forwarded (not answered: refused); the end of its file is still to come.
            wait_until(functools.partial(_forwarded_or_answered, recorder, mark, key, conn), timeout=5)
            assert not _readable(conn, 0), conn.recv(65536)
        for conn, (body, _) in zip(conns, forms, strict=True):
            conn.sendall(body[-1000:])
        answers = [conn.recv(65536) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert [answer[:13] for answer in answers] == [b"HTTP/1.1 204 "] * UPLOADS, answers
    assert all(_stored(direct, EU, key) == FILE for key in keys)


@pytest.mark.parametrize(("token", "status"), [
    pytest.param("US", 403, id="refused by the policy"),
    pytest.param(None, 403, id="refused by identity"),
])
def test_a_refusal_after_the_fields_were_read_answers_once_and_closes_the_connection(
    impatient_proxy: ProxyThread, recorder: Recorder, token: str | None, status: int,
) -> None:
    # The body's rest and a request pipelined after it are never read as requests of their own.
    key = f"closed/{uuid.uuid4().hex}"
    smuggled = f"GET /{EU}/{key} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    form = _form(key, smuggled * 100)
    mark = recorder.mark()
    with _send_head(impatient_proxy, form, token) as conn:
        conn.sendall(form[0] + smuggled)
        answer = b""
        while chunk := conn.recv(65536):   # to the end: the proxy closes the connection
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(f"http/1.1 {status} ".encode()), answer
    assert b"connection: close" in head
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert recorder.since(mark) == b""


@pytest.mark.parametrize(("stop_at", "forwarded"), [
    pytest.param(lambda body: body.index(b"Content-Disposition"), False, id="the fields stall"),
    pytest.param(lambda body: len(body) // 2, True, id="the file stalls"),
])
def test_a_form_that_stops_arriving_is_refused_and_stores_nothing(
    impatient_proxy: ProxyThread, recorder: Recorder, direct: Any, stop_at: Callable[[bytes], int],
    forwarded: bool,
) -> None:
    key = f"stalled/{uuid.uuid4().hex}"
    form = _form(key)
    mark = recorder.mark()
    with _send_head(impatient_proxy, form) as conn:
        conn.sendall(form[0][:stop_at(form[0])])
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"<Code>RequestTimeout</Code>" in answer
    assert (key.encode() in recorder.since(mark)) is forwarded   # the fields: only once decided
    assert _stored(direct, EU, key) is None


def test_a_form_whose_fields_trickle_is_refused_at_the_read_deadline(
    impatient_proxy: ProxyThread, recorder: Recorder,
) -> None:
    # A byte every 0.1 s resets no deadline: the fields must all be in within 0.5 s of the first byte read.
    key = f"trickled/{uuid.uuid4().hex}"
    form = _form(key)
    body = form[0]
    mark = recorder.mark()
    with _send_head(impatient_proxy, form) as conn:
        started = time.monotonic()
        for at in range(len(body)):
            if _readable(conn, 0.1):
                break
            conn.sendall(body[at:at + 1])
        answer = conn.recv(65536)
    assert time.monotonic() - started < 2, "refused only by the minimum rate, not by the read deadline"
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"<Code>RequestTimeout</Code>" in answer
    assert recorder.since(mark) == b""
