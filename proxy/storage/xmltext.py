"""Text that goes into an XML error answer, or into a header beside it, made safe to carry.

A refusal's message and resource may echo what the caller sent (a bucket, a
key, the raw target), so every value is XML-escaped and stripped of
characters XML 1.0 cannot carry: a client must always be able to parse the
answer, and the answer must never carry markup the caller injected. Both
APIs' error answers (`proxy.s3.errors`, `proxy.azure.errors`) are written
with these.
"""

from __future__ import annotations

import re

# Everything outside the XML 1.0 Char production (and lone surrogates, which
# cannot be encoded): C0 controls other than tab, newline, carriage return, U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A value that goes into a header too (a request id, an error code): visible ASCII only.
_NOT_HEADER_TOKEN = re.compile(r"[^\x21-\x7e]")


def xml_text(value: str) -> str:
    """`value` as XML character data: escaped, with characters XML cannot carry replaced by U+FFFD."""
    # xml.sax.saxutils.escape, without importing xml.sax into every process.
    return _NOT_XML_CHAR.sub("\ufffd", value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def header_token(value: str) -> str:
    """`value` with everything but visible ASCII removed, fit for a header."""
    return _NOT_HEADER_TOKEN.sub("", value)
