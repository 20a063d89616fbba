"""The checks every storage API makes of a request's method and body framing, before reading it.

Both APIs (`proxy.s3.request`, `proxy.azure.request`) accept the same five
methods, refuse the headers that ask a server to perform another method than
the one judged, refuse a body on methods that take none (a server that
ignores it would read it as the next request), refuse every transfer coding
but a lone ``chunked``, and cap a declared length at the API's own largest
request. Only the cap differs.

Transfer codings: aiohttp's parsers (llhttp and the pure-Python one) frame a
body as chunked whenever ``chunked`` is the final coding, and leave any coding
before it (``gzip, chunked``) to the application, which the proxy is not: it
re-frames the body it forwards, so such a coding would be dropped silently and
the storage server would store other bytes than the caller sent. Exactly one
``Transfer-Encoding`` header whose value is exactly ``chunked`` (what every
HTTP client sends) is accepted; anything else (other codings, a repeated
header or coding, parameters, another spelling) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import BadRequest, MethodNotAllowed, PayloadTooLarge

Headers = CIMultiDictProxy[str] | CIMultiDict[str]

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
# Headers that ask a server to perform another method than the one the proxy judged.
METHOD_OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE"})


def check_frame(method: str, headers: Headers, max_length: int, api: str) -> None:
    """Refuse an unsupported method, a method override, a body where none belongs, or one over `max_length`.

    Raises `MethodNotAllowed` (S3's 405 for a method it has no operation for), `BadRequest` (InvalidRequest: the
    proxy's own refusals, which S3 would not make) or `PayloadTooLarge`; `api` names the API in the message
    ("S3", "Azure").
    """
    if method not in METHODS:
        raise MethodNotAllowed(f"the method {method!r} is not supported", resource=method)
    for name in METHOD_OVERRIDES:
        if name in headers:
            raise BadRequest(f"the {name} header is not accepted")
    codings = headers.getall("Transfer-Encoding", ())
    if codings and (len(codings) > 1 or codings[0] != "chunked"):
        raise BadRequest(
            "the only transfer coding accepted is a single Transfer-Encoding: chunked "
            "(no other coding, no repeat, no parameters)"
        )
    lengths = headers.getall("Content-Length", ())
    if method in _NO_BODY_METHODS and declares_body(headers, lengths):
        # No operation reads one; a server that ignores it would read it as the next request.
        raise BadRequest(f"a {method} request must not have a body")
    for value in lengths:
        # aiohttp's pure-Python parser takes any number; each API caps a single request.
        if value.strip().isdigit() and int(value) > max_length:
            raise PayloadTooLarge(f"the request body is over {api}'s {max_length}-byte limit")


def declares_body(headers: Headers, lengths: Sequence[str]) -> bool:
    """Whether the headers frame a body: any Transfer-Encoding, or a Content-Length (`lengths`) but "0"."""
    if "Transfer-Encoding" in headers:
        return True
    return bool(lengths) and any(value.strip() != "0" for value in lengths)
