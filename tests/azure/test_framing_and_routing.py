"""Transfer codings and routing headers through the real proxy in front of Azurite (the Azure Blob API).

The same rules as for S3 (`proxy.framing`, `proxy.storage.host`, `proxy.tags`):
any transfer coding but one ``chunked`` is refused, headers naming another
host or URL are refused, and scheme or port hints are dropped before
forwarding. Refusals reach nothing upstream and are audited.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from proxy.harness import ProxyThread
from tests.conftest import make_token
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record
from tests.test_gateway import raw_request

from .conftest import ACCOUNT, IE, US

BODY = b"%x\r\n" % len(b"Dublin mail") + b"Dublin mail" + b"\r\n0\r\n\r\n"


def request(method: str, path: str, headers: str, body: bytes = b"") -> bytes:
    return (f"{method} /{ACCOUNT}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
            f"x-ms-version: 2021-08-06\r\n{headers}Connection: close\r\n\r\n").encode() + body


def request_id(answer: bytes) -> str:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-ms-request-id":
            return value.strip()
    raise AssertionError(answer[:400])


@pytest.mark.parametrize("headers", [
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: identity, chunked\r\n",
    "Transfer-Encoding: Chunked\r\n",
    "Transfer-Encoding: chunked\r\nX-Original-URL: /devstoreaccount1/us-mail/x\r\n",
    "Transfer-Encoding: chunked\r\nX-Original-Host: devstoreaccount1.blob.core.windows.net\r\n",
    "Transfer-Encoding: chunked\r\nX-Rewrite-URL: /devstoreaccount1/us-mail/x\r\n",
    "Transfer-Encoding: chunked\r\nX-Forwarded-Server: elsewhere.example\r\n",
])
def test_codings_and_routing_headers_are_refused_before_azurite(
    azure_proxy: ProxyThread, azure_recorder: Recorder, azure_audit: Path, headers: str,
) -> None:
    mark = azure_recorder.mark()
    name = f"framing/{uuid.uuid4().hex}"
    answer = raw_request(azure_proxy, request("PUT", f"{IE}/{name}", "x-ms-blob-type: BlockBlob\r\n" + headers, BODY))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:400]
    assert azure_recorder.since(mark) == b""
    record = wait_for_record(azure_audit, lambda r: r["decision_id"] == request_id(answer))
    assert (record["status"], record["caller"]["jurisdiction"]) == (400, "IE")


@pytest.mark.parametrize("header", ["X-Forwarded-Proto: https", "X-Forwarded-Port: 8443", "Front-End-Https: on"])
def test_scheme_and_port_hints_never_reach_azurite(
    azure_proxy: ProxyThread, azure_recorder: Recorder, header: str,
) -> None:
    mark = azure_recorder.mark()
    marker = uuid.uuid4().hex
    raw_request(azure_proxy, request("GET", f"{US}/{marker}", f"{header}\r\n"))
    forwarded = azure_recorder.since(mark)
    assert marker.encode() in forwarded   # allowed (IE may read US mail) and forwarded ...
    assert header.split(":")[0].lower().encode() not in forwarded.lower()   # ... without the hint
