"""Strict reading of the text of a request-target: character classes and percent-decoding.

The proxy forwards the request-target byte for byte, so it must read it
exactly as the storage server will. Lenient decoders (``urllib.parse.unquote``,
``yarl``) repair what they cannot read: they keep a stray ``%``, replace bad
UTF-8 with U+FFFD, turn ``+`` into a space. Each repair is a place where the
proxy and the server could disagree about which object a request names, so
this module refuses every such case instead (`BadRequest`).

Every request goes through here, so the common case is kept cheap: the
character-class patterns are compiled once (`outside`), and `percent_decode`
recognises a text with nothing to refuse (`str.isprintable` finds no control
character) before the rule-by-rule reading (`percent_decode_rules`) is run to
name the rule broken.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from proxy.errors import BadRequest

INVALID_URI = "InvalidURI"  # S3's spelling; the Azure API says InvalidUri (`proxy.azure.errors.CODES`)

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# RFC 3986 sub-delims without "+" (a space to some servers, a plus to others) and
# ";" (path parameters to servlet containers, a query separator to older parsers).
_SUB_DELIMS = frozenset("!$&'()*,=")
# Characters allowed raw in the path: RFC 3986 pchar and "/", minus "+" and ";".
PATH_CHARS = UNRESERVED | _SUB_DELIMS | frozenset(":@/%")
# Query parameter names are plain tokens: every name either storage API knows is one.
QUERY_NAME_CHARS = UNRESERVED
# Query values: pchar minus the delimiters "&", "=" (a second "=" is read
# differently by different servers), "+" and ";"; "?" is refused as well.
QUERY_VALUE_CHARS = UNRESERVED | frozenset("!$'()*,:@/%")

# "%" not followed by two hex digits: S3 answers 400, lenient decoders keep it.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# C0 controls, DEL and C1 controls: no storage name or value may contain them.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An escape left over after one round of decoding: "%252e" decodes to "%2e".
# Anything that decodes a second time (a cache, a rewriting proxy, a file-system
# backed store) would see ".", "/" or "\" where the policy saw a name.
DOUBLE_ENCODED = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)


def first_outside(text: str, allowed: frozenset[str]) -> str | None:
    """The first character of `text` not in `allowed`, or None."""
    found = outside(allowed).search(text)
    return found.group() if found else None


@lru_cache(maxsize=32)
def outside(allowed: frozenset[str]) -> re.Pattern[str]:
    """A pattern matching one character not in `allowed` (hot paths keep it in a constant)."""
    # One compiled character class per set (a handful, all module constants).
    return re.compile("[^" + "".join(re.escape(char) for char in sorted(allowed)) + "]")


def describe(char: str) -> str:
    """A character as a caller can read it in an error message (never raw control bytes)."""
    code = ord(char)
    if 0x21 <= code <= 0x7E:
        return f'"{char}"'
    if 0xDC80 <= code <= 0xDCFF:  # a raw non-ASCII byte, surrogate-escaped by the HTTP parser
        return f"byte 0x{code - 0xDC00:02X}"
    return f"U+{code:04X}"


def percent_decode(text: str, where: str, *, code: str = INVALID_URI) -> str:
    """Decode %XX escapes exactly once, refusing anything a server could read another way.

    `where` names the piece for the error message ("the object key", ...).
    Refused: a "%" without two hex digits, bytes that are not UTF-8, and
    control characters (raw or decoded).
    """
    # The quick path: every character CONTROL matches is a non-printable one, so a printable
    # ASCII text, or one whose well-formed escapes decode to printable UTF-8, has nothing to refuse.
    if text.isascii():
        if "%" not in text:
            if text.isprintable():
                return text
        elif _BAD_ESCAPE.search(text) is None:
            try:
                decoded = unquote_to_bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if decoded.isprintable():
                    return decoded
    return percent_decode_rules(text, where, code=code)


def percent_decode_rules(text: str, where: str, *, code: str = INVALID_URI) -> str:
    """The rule-by-rule reading behind `percent_decode`'s quick path: refuse with the first rule broken."""
    if not text.isascii():
        raise BadRequest(f"{where} contains a non-ASCII character", code=code)
    if "%" in text:
        if _BAD_ESCAPE.search(text):
            raise BadRequest(f"{where} contains an invalid percent-escape", code=code)
        try:
            text = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{where} does not decode to UTF-8", code=code) from None
    bad = CONTROL.search(text)
    if bad:
        raise BadRequest(f"{where} contains a control character ({describe(bad.group())})", code=code)
    return text
