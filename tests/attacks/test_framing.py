"""Class 4: HTTP framing, under both of aiohttp's parsers (C/llhttp in-process, pure Python in a subprocess).

Every ambiguous message hides a second request for Dublin mail without a
valid identity behind an allowed one; whichever way it is read, nothing may
reach the storage server.

Refused by aiohttp's parser itself (plain-text 400, or the connection closed, no
audit line; ``A`` below), under both parsers: CL.TE and TE.CL, Transfer-Encoding
other than one final "chunked" (also on HTTP/1.0), malformed or conflicting
Content-Length, bare LF and bare CR, obs-fold, whitespace before the colon, NUL/CR
in values, a header line without a colon, over-long header lines, the HTTP/2
preface, malformed chunks. Under llhttp only: a Content-Length over 2**64, a
lower-case method, an HTTP/1.2 request line, and a request hidden after an ignored
``Content_Length`` (parsed at once, answered first). Under the pure-Python parser
only: an HTTP/0.9 request line.
Refused by our handler (S3 XML error, audited; ``P``): Upgrade/h2c, CONNECT and
other methods, HTTP/1.0 without Host, HTTP versions other than 1.0 and 1.1 that the
parser let through, bodies on GET/HEAD/DELETE, a Content-Length over S3's 5 GiB, a
header name with "_", and a refused upload that asked for 100-continue (no 100 sent).
Transfer codings the parsers accept but the proxy would drop when it re-frames the
body (``gzip, chunked``, ``identity, chunked``, ``chunked, chunked``, ``Chunked``,
parameters, repeated headers): refused by our handler with 400 under both parsers,
or by the parser first where it already refuses them.
"""

from __future__ import annotations

import uuid

import pytest

from tests.attacks.conftest import Target, assert_refused, audit_line, forwarded_audit_line, send
from tests.conftest import ARCHIVE, DUBLIN, US

ALLOWED = f"/{DUBLIN}/framing/k"
# No token: a template placeholder would change the length of the body it hides in.
SMUGGLED = f"GET /{DUBLIN}/alice/inbox/1.eml?smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def put(headers: str, body: bytes = b"", path: str = ALLOWED) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{{SIGV4}}"
            f"{headers}\r\n").encode() + body


CHUNKED_THEN_SMUGGLED = b"0\r\n\r\n" + SMUGGLED
CL = f"Content-Length: {len(CHUNKED_THEN_SMUGGLED)}\r\n"


def cl_te(te_line: str) -> bytes:
    return put(f"{CL}{te_line}", CHUNKED_THEN_SMUGGLED)


def delete_chunks(chunks: bytes) -> bytes:
    """An allowed multi-object delete (its body is read before the decision) with hand-made chunks."""
    return (f"POST /{ARCHIVE}?delete HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{{SIGV4}}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks


DELETE_XML = b"<Delete><Object><Key>ie/framing</Key></Object></Delete>"
P = "proxy"
A = "aiohttp"

# Who refuses: "proxy" or "aiohttp" (see `assert_refused`), or (under llhttp, under the pure-Python parser).
FRAMING: dict[str, tuple[bytes, str | tuple[str, str]]] = {
    # CL.TE and TE.CL
    "cl-te": (cl_te("Transfer-Encoding: chunked\r\n"), A),
    "te-cl": (put(f"Transfer-Encoding: chunked\r\n{CL}", CHUNKED_THEN_SMUGGLED), A),
    "te-cl-zero": (put("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", CHUNKED_THEN_SMUGGLED), A),
    # obfuscated Transfer-Encoding, with and without a Content-Length beside it
    "te-chunked-identity": (cl_te("Transfer-Encoding: chunked, identity\r\n"), A),
    "te-xchunked": (cl_te("Transfer-Encoding: xchunked\r\n"), A),
    "te-upper": (cl_te("Transfer-Encoding: CHUNKED\r\n"), A),
    "te-tab-value": (cl_te("Transfer-Encoding:\tchunked\r\n"), A),
    "te-trailing-space": (cl_te("Transfer-Encoding: chunked \r\n"), A),
    "te-vertical-tab": (cl_te("Transfer-Encoding: \x0bchunked\r\n"), A),
    "te-space-before-colon": (cl_te("Transfer-Encoding : chunked\r\n"), A),
    "te-tab-before-colon": (cl_te("Transfer-Encoding\t: chunked\r\n"), A),
    "te-leading-space-name": (cl_te(" Transfer-Encoding: chunked\r\n"), A),
    "te-repeated": (cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), A),
    "te-underscore": (cl_te("Transfer_Encoding: chunked\r\n"), P),
    "te-alone-xchunked": (put("Transfer-Encoding: xchunked\r\n", CHUNKED_THEN_SMUGGLED), A),
    "te-alone-chunked-identity": (put("Transfer-Encoding: chunked, identity\r\n", CHUNKED_THEN_SMUGGLED), A),
    "te-alone-identity": (put("Transfer-Encoding: identity\r\n", CHUNKED_THEN_SMUGGLED), A),
    "te-alone-gzip": (put("Transfer-Encoding: gzip\r\n", CHUNKED_THEN_SMUGGLED), A),
    "te-alone-repeated-split": (put("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                                    CHUNKED_THEN_SMUGGLED), A),
    # duplicate and malformed Content-Length
    "cl-duplicate-same": (put("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello" + SMUGGLED), A),
    "cl-duplicate-different": (put("Content-Length: 5\r\nContent-Length: 50\r\n", b"hello" + SMUGGLED), A),
    "cl-list": (put("Content-Length: 5, 5\r\n", b"hello" + SMUGGLED), A),
    "cl-plus": (put("Content-Length: +5\r\n", b"hello" + SMUGGLED), A),
    "cl-negative": (put("Content-Length: -1\r\n", b"hello" + SMUGGLED), A),
    "cl-hex": (put("Content-Length: 0x5\r\n", b"hello" + SMUGGLED), A),
    "cl-space-inside": (put("Content-Length: 5 0\r\n", b"hello" + SMUGGLED), A),
    "cl-huge": (put("Content-Length: 99999999999999999999999999\r\n", b"hello"), (A, P)),  # Python: ours, 413
    "cl-over-s3-limit": (put("Content-Length: 5368709121\r\n", b"hello"), P),
    "cl-empty": (put("Content-Length:\r\n", b"hello" + SMUGGLED), A),
    # llhttp parses the "next request" (hello...) at once and answers its 400 first
    "cl-underscore": (put("Content_Length: 5\r\n", b"hello" + SMUGGLED), (A, P)),
    # bare LF, bare CR, obs-fold
    "bare-lf": (f"GET {ALLOWED} HTTP/1.1\nHost: 127.0.0.1\nX-Bailiwick-Token: {{IE}}\n\n".encode(), A),
    "bare-lf-one-line": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\nX-Bailiwick-Token: {{IE}}\r\n\r\n"
                         .encode(), A),
    "bare-cr": (f"GET {ALLOWED} HTTP/1.1\rHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n".encode(), A),
    "obs-fold-host": (f"GET /alice/inbox/1.eml HTTP/1.1\r\nHost: {US}.localhost\r\n {DUBLIN}.localhost\r\n"
                      "X-Bailiwick-Token: {US}\r\n\r\n".encode(), A),
    "obs-fold-copy-source": (put(f"x-amz-copy-source: /{US}/bob/inbox/1.eml\r\n\t/{DUBLIN}/alice/inbox/1.eml\r\n"
                                 "Content-Length: 0\r\n", path=f"/{US}/stolen"), A),
    "obs-fold-te": (put(f"{CL}Transfer-Encoding: identity\r\n chunked\r\n", CHUNKED_THEN_SMUGGLED), A),
    "nul-in-value": (put("X-Junk: a\x00b\r\nContent-Length: 0\r\n"), A),
    "cr-in-value": (put("X-Junk: a\rb\r\nContent-Length: 0\r\n"), A),
    "no-colon": (put("X-Junk\r\nContent-Length: 0\r\n"), A),
    "header-too-long": (put("X-Junk: " + "a" * 70000 + "\r\nContent-Length: 0\r\n"), A),
    # malformed chunks in a body the proxy reads before deciding
    "chunk-size-invalid": (delete_chunks(b"zz\r\n" + DELETE_XML + b"\r\n0\r\n\r\n"), A),
    "chunk-size-overflow": (delete_chunks(b"ffffffffffffffffffffff\r\n" + DELETE_XML + b"\r\n0\r\n\r\n"), A),
    "chunk-size-negative": (delete_chunks(b"-37\r\n" + DELETE_XML + b"\r\n0\r\n\r\n"), A),
    "chunk-size-prefixed": (delete_chunks(b"0x37\r\n" + DELETE_XML + b"\r\n0\r\n\r\n"), A),
    "chunk-bare-lf": (delete_chunks(b"%x\n" % len(DELETE_XML) + DELETE_XML + b"\n0\n\n"), A),
    "chunk-missing-crlf": (delete_chunks(b"%x\r\n" % len(DELETE_XML) + DELETE_XML + b"0\r\n\r\n"), A),
    "chunk-too-long": (delete_chunks(b"%x\r\n" % (len(DELETE_XML) - 5) + DELETE_XML + b"\r\n0\r\n\r\n"), A),
    # protocol switches and other request forms
    "upgrade-websocket": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                          "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode() + SMUGGLED, P),
    "upgrade-h2c": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                    "\r\n".encode(), P),
    "upgrade-without-connection": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                                   "Upgrade: h2c\r\n\r\n".encode(), P),
    "connection-upgrade-only": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                                "Connection: upgrade\r\n\r\n".encode(), P),
    "http2-settings-only": (f"GET {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".encode(), P),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", A),
    "connect": (f"CONNECT {DUBLIN}.localhost:443 HTTP/1.1\r\nHost: {DUBLIN}.localhost:443\r\n"
                "X-Bailiwick-Token: {IE}\r\n\r\n".encode() + SMUGGLED, P),
    "connect-no-token": (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n" + SMUGGLED, P),
    "options-asterisk": (b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {IE}\r\n\r\n", P),
    "trace": (f"TRACE {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n".encode(), P),
    "lower-case-method": (f"get {ALLOWED} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n"
                          .encode(), A),
    "http10-chunked": (f"PUT {ALLOWED} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{CL}"
                       "Transfer-Encoding: chunked\r\n\r\n".encode() + CHUNKED_THEN_SMUGGLED, A),
    "http10-chunked-only": (f"PUT {ALLOWED} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n".encode() + CHUNKED_THEN_SMUGGLED, A),
    "http10-no-host": (f"GET {ALLOWED} HTTP/1.0\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n".encode(), P),
    "http09": (f"GET {ALLOWED}\r\n\r\n".encode(), (P, A)),  # llhttp reads it, the pure-Python parser does not
    "http20-request-line": (f"GET {ALLOWED} HTTP/2.0\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n"
                            .encode(), P),
    "http12-request-line": (f"GET {ALLOWED} HTTP/1.2\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n"
                            .encode(), (A, P)),
    "http-version-garbage": (f"GET {ALLOWED} HTTP/1.x\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n\r\n"
                             .encode(), A),
    # bodies where no S3 operation takes one: a server that ignores them reads the next request
    "get-with-body": (f"GET /{US}/bob/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{US}}\r\n"
                      f"Content-Length: {len(SMUGGLED)}\r\n\r\n".encode() + SMUGGLED, P),
    "head-with-chunked-body": (f"HEAD /{US}/bob/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "X-Bailiwick-Token: {US}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                               + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n", P),
    "delete-with-body": (f"DELETE /{US}/framing-nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{US}}\r\n"
                         f"Content-Length: {len(SMUGGLED)}\r\n\r\n".encode() + SMUGGLED, P),
}


# Known differences of aiohttp's pure-Python parser the proxy cannot see from its handler.
PY_KNOWN = {
    # It upper-cases the method: "get" is served as GET (and forwarded as the GET that was judged).
    "lower-case-method": "the pure-Python parser upper-cases methods",
    # It takes any chunk size; the proxy then waits for a body that never comes (nothing is forwarded).
    "chunk-size-overflow": "the pure-Python parser accepts chunk sizes over 2**64 and waits for the data",
}


def _framing_params() -> list[object]:
    params: list[object] = []
    for name, (template, by) in FRAMING.items():
        for parser in ("c", "python"):
            known = PY_KNOWN.get(name) if parser == "python" else None
            marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
            who = by if isinstance(by, str) else by[0 if parser == "c" else 1]
            params.append(pytest.param(parser, template, who, id=f"{parser}-{name}", marks=marks))
    return params


@pytest.mark.parametrize(("parser", "template", "by"), _framing_params())
def test_framing(request: pytest.FixtureRequest, parser: str, template: bytes, by: str) -> None:
    target: Target = request.getfixturevalue("c_target" if parser == "c" else "py_target")
    assert_refused(target, template, by=by)


def test_refused_put_with_expect_gets_no_100_continue(any_parser: Target) -> None:
    request = (f"PUT /{DUBLIN}/framing/expect HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{US}}\r\n"
               "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n").encode()  # the body is never sent
    answer = assert_refused(any_parser, request, by=P)
    assert answer.status == 403
    assert b"100 Continue" not in answer.raw


def test_oversized_delete_with_expect_gets_no_100_continue(any_parser: Target) -> None:
    request = (f"POST /{ARCHIVE}?delete HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
               "Content-Length: 104857600\r\nExpect: 100-continue\r\n\r\n").encode()
    answer = assert_refused(any_parser, request, by=P)
    assert answer.status == 413
    assert b"100 Continue" not in answer.raw


@pytest.mark.parametrize(
    "second",
    [
        SMUGGLED,  # a caller the policy refuses
        f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),  # no identity at all
        f"DELETE /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{DE}}\r\n\r\n"
        .encode(),
    ],
    ids=["us-token", "no-token", "de-delete"],
)
def test_pipelined_request_without_its_own_identity(any_parser: Target, second: bytes) -> None:
    """Only the first of two pipelined requests carries an allowed token: the second is judged on its own."""
    marker = uuid.uuid4().hex
    first = (f"GET /{DUBLIN}/alice/inbox/1.eml?x-id={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "X-Bailiwick-Token: {IE}\r\n{SIGV4}\r\n").encode()
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(first + second), responses=2)
    assert not answer.timed_out, answer.raw[:400]
    assert answer.statuses() == [200, 403], answer.raw[:600]
    sent = any_parser.recorder.since(mark)
    assert sent.count(b" HTTP/1.1\r\n") == 1, sent  # only the first request reached the storage server
    assert sent.startswith(f"GET /{DUBLIN}/alice/inbox/1.eml?x-id={marker} HTTP/1.1\r\n".encode())
    second_id = answer.raw.rsplit(b"<RequestId>", 1)[1].split(b"</RequestId>", 1)[0].decode()
    assert audit_line(any_parser, second_id)["status"] == 403


@pytest.mark.parametrize("length_header", ["content-length", "chunked"])
def test_body_of_a_refused_request_is_never_read_as_a_request(any_parser: Target, length_header: str) -> None:
    """A refused upload whose body is an allowed request: the body is dropped, never served."""
    marker = uuid.uuid4().hex
    inner = any_parser.render(f"GET /{DUBLIN}/alice/inbox/1.eml?x-id={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "X-Bailiwick-Token: {IE}\r\n{SIGV4}\r\n".encode())
    if length_header == "chunked":
        framing, body = "Transfer-Encoding: chunked\r\n", b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
    else:
        framing, body = f"Content-Length: {len(inner)}\r\n", inner
    outer = (f"PUT /{DUBLIN}/framing/refused HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{US}}\r\n"
             f"{framing}\r\n").encode() + body
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(outer), responses=2)
    assert answer.statuses() == [403], answer.raw[:600]
    assert not answer.timed_out  # the proxy closed the connection after its refusal
    assert any_parser.recorder.since(mark) == b""
    assert audit_line(any_parser, str(answer.request_id))["status"] == 403


# Transfer codings: only one Transfer-Encoding header whose value is exactly "chunked" is read. Any
# other coding (gzip, deflate, compress, identity, a repeated chunked, parameters) is refused before
# anything is forwarded: the proxy re-frames the body itself, so a coding it let through would be
# dropped silently and the storage server would store bytes the caller did not mean to send.
CODED_BODY = b"%x\r\n" % len(b"coded body") + b"coded body" + b"\r\n0\r\n\r\n"


def coded_put(te_lines: str, *, version: str = "1.1", extra: str = "", body: bytes = CODED_BODY,
              path: str = ALLOWED) -> bytes:
    return (f"PUT {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{{SIGV4}}"
            f"{te_lines}{extra}Connection: close\r\n\r\n").encode() + body


TRANSFER_CODINGS: dict[str, bytes] = {
    "gzip-chunked": coded_put("Transfer-Encoding: gzip, chunked\r\n"),
    "deflate-chunked": coded_put("Transfer-Encoding: deflate, chunked\r\n"),
    "compress-chunked": coded_put("Transfer-Encoding: compress, chunked\r\n"),
    "x-gzip-chunked": coded_put("Transfer-Encoding: x-gzip, chunked\r\n"),
    "br-chunked": coded_put("Transfer-Encoding: br, chunked\r\n"),
    "identity-chunked": coded_put("Transfer-Encoding: identity, chunked\r\n"),
    "chunked-chunked": coded_put("Transfer-Encoding: chunked, chunked\r\n"),
    "gzip-chunked-no-space": coded_put("Transfer-Encoding: gzip,chunked\r\n"),
    "gzip-chunked-spaces": coded_put("Transfer-Encoding: gzip ,  chunked\r\n"),
    "empty-element-chunked": coded_put("Transfer-Encoding: , chunked\r\n"),
    "gzip-chunked-mixed-case": coded_put("Transfer-Encoding: GZip, Chunked\r\n"),
    "chunked-capitalised": coded_put("Transfer-Encoding: Chunked\r\n"),
    "chunked-upper": coded_put("Transfer-Encoding: CHUNKED\r\n"),
    "chunked-parameter": coded_put("Transfer-Encoding: chunked;foo=bar\r\n"),
    "gzip-parameter-chunked": coded_put("Transfer-Encoding: gzip;q=1, chunked\r\n"),
    "repeated-gzip-then-chunked": coded_put("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
    "repeated-chunked": coded_put("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    "repeated-identity-then-chunked": coded_put("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"),
    "deflate-alone": coded_put("Transfer-Encoding: deflate\r\n"),
    "compress-alone": coded_put("Transfer-Encoding: compress\r\n"),
    "gzip-chunked-http10": coded_put("Transfer-Encoding: gzip, chunked\r\n", version="1.0"),
    "gzip-chunked-with-length": coded_put("Transfer-Encoding: gzip, chunked\r\n",
                                          extra=f"Content-Length: {len(CODED_BODY)}\r\n"),
    "gzip-chunked-expect": coded_put("Transfer-Encoding: gzip, chunked\r\n", extra="Expect: 100-continue\r\n"),
    "chunked-q-parameter": coded_put("Transfer-Encoding: chunked;q=1\r\n"),
    "chunked-empty-parameter": coded_put("Transfer-Encoding: chunked;\r\n"),
    "chunked-trailing-comma": coded_put("Transfer-Encoding: chunked,\r\n"),
    "chunked-then-empty-element": coded_put("Transfer-Encoding: chunked, \r\n"),
    "empty-value": coded_put("Transfer-Encoding:\r\n"),
    "empty-value-then-chunked": coded_put("Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n"),
    "chunked-then-empty-value": coded_put("Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n"),
    "chunked-quoted": coded_put('Transfer-Encoding: "chunked"\r\n'),
    "chunked-tab-then-gzip": coded_put("Transfer-Encoding: chunked\t, gzip\r\n"),
    "gzip-tab-chunked": coded_put("Transfer-Encoding: gzip,\tchunked\r\n"),
}


@pytest.mark.parametrize("name", list(TRANSFER_CODINGS))
def test_transfer_codings_other_than_chunked_are_refused(any_parser: Target, name: str) -> None:
    answer = assert_refused(any_parser, TRANSFER_CODINGS[name])
    if answer.request_id is not None:   # the proxy refused it (not aiohttp's parser): say why
        assert answer.status == 400, answer.raw[:400]
        assert b"Transfer-Encoding" in answer.raw, answer.raw[:400]


def test_a_lone_chunked_coding_is_still_forwarded(any_parser: Target) -> None:
    marker = uuid.uuid4().hex
    body = b"%x\r\n" % len(marker) + marker.encode() + b"\r\n0\r\n\r\n"
    mark = any_parser.recorder.mark()
    template = coded_put("Transfer-Encoding: chunked\r\n", body=body, path=f"/{DUBLIN}/framing/{marker}")
    answer = send(any_parser, any_parser.render(template))
    assert answer.status == 200, answer.raw[:400]
    forwarded = any_parser.recorder.since(mark)
    assert marker.encode() in forwarded
    line = forwarded_audit_line(any_parser, forwarded)
    assert (line["decision"], line["caller"]["jurisdiction"], line["request"]["resource"]) == (
        "allow", "IE", f"s3://{DUBLIN}/framing/{marker}")


def chunked_put(te: str, marker: str, trailer: str = "") -> bytes:
    body = b"%x\r\n" % len(marker) + marker.encode() + f"\r\n0\r\n{trailer}\r\n".encode()
    return coded_put(f"Transfer-Encoding: {te}\r\n", body=body, path=f"/{DUBLIN}/framing/{marker}")


# Whitespace around a lone "chunked" is optional whitespace both parsers strip: the same single coding.
@pytest.mark.parametrize("te", ["chunked\t", "\tchunked", " chunked\t "])
def test_a_lone_chunked_with_optional_whitespace_is_read_as_chunked(any_parser: Target, te: str) -> None:
    marker = uuid.uuid4().hex
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(chunked_put(te, marker)))
    forwarded = any_parser.recorder.since(mark)
    if answer.status != 200:
        assert forwarded == b"", forwarded[:400]
        return
    assert marker.encode() in forwarded
    assert forwarded.lower().count(b"transfer-encoding") <= 1


# A field in a chunked body's trailer section is never a header of the request: a Transfer-Encoding,
# Host or copy source there must not reach the storage server.
@pytest.mark.parametrize("trailer", [
    "Transfer-Encoding: gzip\r\n", f"Host: {DUBLIN}.localhost\r\n",
    f"x-amz-copy-source: /{DUBLIN}/alice/inbox/1.eml\r\n", "X-Forwarded-Host: elsewhere.localhost\r\n",
])
def test_trailer_fields_never_reach_the_storage_server(any_parser: Target, trailer: str) -> None:
    marker = uuid.uuid4().hex
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(chunked_put("chunked", marker, trailer)))
    forwarded = any_parser.recorder.since(mark)
    assert trailer.split(":")[1].strip().encode() not in forwarded, forwarded[-400:]
    if answer.status == 200:
        assert marker.encode() in forwarded
