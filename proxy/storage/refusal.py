"""A refusal's code and reason in two response headers, so that a refused HEAD says why.

An answer to HEAD has no body, so the XML error (`proxy.s3.errors`,
`proxy.azure.errors`) never reaches the caller, and clients such as the AWS
CLI show only ``403 Forbidden``. Every refusal therefore also carries:

- ``X-Bailiwick-Error-Code``: the error code the body names (S3's, or
  Azure's for the Azure API), visible ASCII only;
- ``X-Bailiwick-Reason``: the body's message, percent-encoded (RFC 3986) as
  UTF-8: space and visible ASCII other than ``%`` are kept as they are, every
  other byte (a control character, CR, LF, anything not ASCII) and ``%`` is
  written ``%XX``, and a space at either end is ``%20`` (a header value's
  edges would lose it). ``urllib.parse.unquote`` gives the text back. A value
  longer than `REASON_LIMIT` characters is cut at a character boundary and
  ends with ``%E2%80%A6`` (…); the body of a GET has it whole.

A reason may echo the caller's own names (a key, a bucket), which may hold
any character: encoded, none can end the header or start another. Both
headers say only what the body already says.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from proxy.storage.xmltext import header_token

CODE_HEADER = "X-Bailiwick-Error-Code"
REASON_HEADER = "X-Bailiwick-Reason"
# Long enough for a reason that names two 1024-byte keys' worth of ASCII; well under the 8 KiB most clients and
# intermediaries accept for one header line.
REASON_LIMIT = 2048
_CUT = "%E2%80%A6"   # "…", said when the reason was cut
# Kept as they are: visible ASCII and space, but "%" (which starts an escape).
_SURROGATE = re.compile("[\ud800-\udfff]")
_KEPT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


def encode_reason(reason: str) -> str:
    """`reason` as a header value: percent-encoded UTF-8 outside visible ASCII, at most `REASON_LIMIT` long."""
    # One piece per character, so that a cut never splits a character's escapes. Lone surrogates cannot be
    # UTF-8: U+FFFD stands in for them, as in the XML body.
    pieces = [quote(_SURROGATE.sub("\ufffd", char), safe=_KEPT) for char in reason]
    for edge in (0, -1):
        if pieces and pieces[edge] == " ":
            pieces[edge] = "%20"
    encoded = "".join(pieces)
    if len(encoded) <= REASON_LIMIT:
        return encoded
    kept: list[str] = []
    room = REASON_LIMIT - len(_CUT)
    for piece in pieces:
        room -= len(piece)
        if room < 0:
            break
        kept.append(piece)
    return "".join(kept) + _CUT


def refusal_headers(code: str, reason: str) -> dict[str, str]:
    """The two headers every refusal carries: its code (as the body names it) and its reason, encoded."""
    return {CODE_HEADER: header_token(code), REASON_HEADER: encode_reason(reason)}
