"""Routing headers beside Host, under both of aiohttp's parsers: refused, or dropped before forwarding.

A front proxy, gateway or framework behind the proxy may read the request's
"real" host or URL from a header instead of Host and the request line
(``X-Original-Host``, ``X-Original-URL``, ``X-Rewrite-URL`` ...): the bucket or
key it serves is then not the one the proxy judged. Those are refused with 400,
as ``X-Forwarded-Host`` and ``Forwarded`` are, and nothing reaches the storage
server. Headers that only say which scheme or port a front proxy was reached on
(``X-Forwarded-Proto``, ``X-Forwarded-Port`` ...) are added to every request by
load balancers, so they are dropped instead: the request is served, and the
storage server never sees them.

Each case is a request the policy allows (a US caller reading US mail), with a
header pointing at Dublin mail.
"""

from __future__ import annotations

import uuid

import pytest

from tests.attacks.conftest import Target, assert_refused, audit_line, forwarded_audit_line, send
from tests.conftest import DUBLIN, US

DUBLIN_KEY = f"/{DUBLIN}/alice/inbox/1.eml"
DUBLIN_HOST = f"{DUBLIN}.localhost"

REFUSED_HEADERS = [
    ("X-Original-Host", DUBLIN_HOST),
    ("x-original-host", DUBLIN_HOST),
    ("X-Host", DUBLIN_HOST),
    ("X-Forwarded-Server", DUBLIN_HOST),
    ("X-HTTP-Host-Override", DUBLIN_HOST),
    ("X-Proxy-Host", DUBLIN_HOST),
    ("X-Envoy-Original-Host", DUBLIN_HOST),
    ("X-Original-URL", DUBLIN_KEY),
    ("X-ORIGINAL-URL", DUBLIN_KEY),
    ("X-Rewrite-URL", DUBLIN_KEY),
    ("X-Original-URI", DUBLIN_KEY),
    ("X-Forwarded-URI", DUBLIN_KEY),
    ("X-Forwarded-Path", DUBLIN_KEY),
    ("X-Forwarded-Prefix", f"/{DUBLIN}"),
    ("X-Envoy-Original-Path", DUBLIN_KEY),
    ("X-Forwarded-Host", DUBLIN_HOST),
    ("Forwarded", f"host={DUBLIN_HOST}"),
    ("X-HTTP-Method-Override", "DELETE"),
    # More of the family: other spellings a gateway or framework may honour. A CGI or WSGI server
    # reads "X_Forwarded_Host" as X-Forwarded-Host (both are HTTP_X_FORWARDED_HOST), and
    # "X_Amz_Copy_Source" as the copy source the proxy never judged.
    ("X_Forwarded_Host", DUBLIN_HOST),
    ("x_original_url", DUBLIN_KEY),
    ("X_HTTP_Method_Override", "DELETE"),
    ("X_Amz_Copy_Source", DUBLIN_KEY),
    ("Authorization_", "AWS4-HMAC-SHA256 Credential=x"),
    ("X-Original-Forwarded-Host", DUBLIN_HOST),
    ("X-Forwarded-Hostname", DUBLIN_HOST),
    ("X-Real-Host", DUBLIN_HOST),
    ("X-Backend-Host", DUBLIN_HOST),
    ("X-Forwarded-Url", DUBLIN_KEY),
    ("X-Request-URI", DUBLIN_KEY),
    ("X-Original-Path", DUBLIN_KEY),
    ("X-Script-Prefix", f"/{DUBLIN}"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Original-Method", "DELETE"),
]

DROPPED_HEADERS = [
    ("X-Forwarded-Proto", "https"),
    ("x-forwarded-proto", "gopher"),
    ("X-Forwarded-Port", "8443"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Forwarded-Protocol", "https"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Url-Scheme", "https"),
    ("X-Scheme", "https"),
    ("Front-End-Https", "on"),
]


def us_read(header: str, value: str, *, query: str = "") -> bytes:
    return (f"GET /{US}/bob/inbox/1.eml{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{US}}\r\n"
            f"{{SIGV4}}{header}: {value}\r\nConnection: close\r\n\r\n").encode()


@pytest.mark.parametrize(("header", "value"), REFUSED_HEADERS, ids=[f"{h}:{v}" for h, v in REFUSED_HEADERS])
def test_headers_naming_another_host_or_url_are_refused(any_parser: Target, header: str, value: str) -> None:
    answer = assert_refused(any_parser, us_read(header, value), by="proxy")
    assert answer.status == 400, answer.raw[:400]
    assert header.lower().encode() in answer.raw.lower(), answer.raw[:400]   # the refusal names the header
    line = audit_line(any_parser, str(answer.request_id))
    assert (line["status"], line["caller"]["jurisdiction"]) == (400, "US")


@pytest.mark.parametrize(("header", "value"), REFUSED_HEADERS[:3] + REFUSED_HEADERS[7:9])
def test_repeated_or_second_routing_header_is_refused(any_parser: Target, header: str, value: str) -> None:
    template = us_read(header, value).replace(b"Connection: close", f"{header}: {value}\r\nConnection: close".encode())
    assert assert_refused(any_parser, template, by="proxy").status == 400


@pytest.mark.parametrize(("header", "value"), DROPPED_HEADERS, ids=[f"{h}:{v}" for h, v in DROPPED_HEADERS])
def test_scheme_and_port_hints_are_dropped_before_forwarding(any_parser: Target, header: str, value: str) -> None:
    marker = uuid.uuid4().hex
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(us_read(header, value, query=f"?x-id={marker}")))
    assert answer.status == 200, answer.raw[:400]
    assert answer.raw.endswith(b"US mail")
    forwarded = any_parser.recorder.since(mark)
    assert marker.encode() in forwarded
    assert header.lower().encode() + b":" not in forwarded.lower(), forwarded[:600]
    line = forwarded_audit_line(any_parser, forwarded)
    assert (line["decision"], line["caller"]["jurisdiction"]) == ("allow", "US")
