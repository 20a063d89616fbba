"""Object listings that show plaintext sizes for the objects of encrypted datasets.

ListObjects, ListObjectsV2 and ListObjectVersions report each object's
stored size; for an object the proxy encrypted, that is the ciphertext's
(`proxy.crypto.segments.ciphertext_length`). The stored length is a function
of the plaintext length alone (for a multipart upload's object, of it and
the part count its ETag ``<hex>-<parts>`` ends with: `proxy.crypto.parts`),
so the listing is rewritten, entry by entry,
to the plaintext size, without asking the key service or the storage server
anything more. Only entries in datasets that *require* encryption are
rewritten: a migrating dataset holds plaintext objects too, whose sizes are
already right, and a listing cannot tell the two apart (docs/encryption.md).

The answer keeps the storage server's bytes except the ``<Size>`` values.
An entry that cannot be read unambiguously (no key, two keys or sizes)
makes the listing a 502 rather than a guess; a size that no encrypted
object has is left as stored (a plaintext object, which reads refuse).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote
from xml.sax.saxutils import unescape

from proxy.crypto.etags import MARK
from proxy.crypto.parts import listed_length
from proxy.crypto.segments import plaintext_length
from proxy.errors import UpstreamFailure

LISTINGS_WITH_SIZES = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions"})
_ENTRY = re.compile(rb"<(Contents|Version)>(.*?)</\1>", re.DOTALL)
_KEY = re.compile(rb"<Key>([^<]*)</Key>")
_SIZE = re.compile(rb"<Size>([0-9]{1,19})</Size>")
_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")
_CLOSING_QUOTE = re.compile(rb'(?:&quot;|&#34;|&#x22;|")?\Z')
_URL_ENCODED = re.compile(rb"<EncodingType>\s*url\s*</EncodingType>")
_MULTIPART_ETAG = re.compile(r'"?[0-9A-Fa-f]+-([0-9]{1,5})"?')
_CHAR_REF = re.compile(r"&#(x[0-9A-Fa-f]+|[0-9]+);")


def _text(raw: bytes) -> str:
    text = _CHAR_REF.sub(lambda m: chr(int(m[1][1:], 16) if m[1][0] == "x" else int(m[1])), raw.decode("utf-8"))
    return unescape(text, {"&quot;": '"', "&apos;": "'"})


def _presented_xml(stored: bytes) -> bytes:
    """`presented` on a listing's ETag, which is XML text (its quotes may be written ``&quot;`` or ``&#34;``)."""
    return _CLOSING_QUOTE.sub(lambda m: MARK.encode() + m[0], stored.rstrip(), count=1)


def _plaintext_size(stored: int, entry: bytes) -> int | None:
    """The plaintext size of an entry: a multipart upload's object (its ETag ``<hex>-<parts>``) has a part
    header per part (`proxy.crypto.parts.listed_length`), a single PUT's none."""
    etag = _ETAG.search(entry)
    parts = _MULTIPART_ETAG.fullmatch(_text(etag[1]).strip()) if etag is not None else None
    if parts is not None:
        return listed_length(stored, int(parts[1]))
    return plaintext_length(stored)


def plaintext_sizes(body: bytes, encrypted: Callable[[str], bool]) -> bytes:
    """The listing `body` with the size of every entry whose key `encrypted` names replaced by its plaintext's."""
    url_encoded = _URL_ENCODED.search(body) is not None

    def entry(match: re.Match[bytes]) -> bytes:
        inner = match[2]
        keys, sizes = _KEY.findall(inner), _SIZE.findall(inner)
        if len(keys) != 1 or len(sizes) > 1:
            raise UpstreamFailure("the storage server's listing has an entry the proxy cannot read unambiguously")
        key = _text(keys[0])
        if url_encoded:
            key = unquote(key)
        if not sizes or not encrypted(key):
            return match[0]
        size = _plaintext_size(int(sizes[0]), inner)
        if size is None:
            # Not an object the proxy encrypted: its size is left as stored (reading it is refused).
            return match[0]
        rewritten = _SIZE.sub(b"<Size>%d</Size>" % size, inner, count=1)
        rewritten = _ETAG.sub(lambda m: b"<ETag>%s</ETag>" % _presented_xml(m[1]), rewritten, count=1)
        return b"<%s>%s</%s>" % (match[1], rewritten, match[1])

    return _ENTRY.sub(entry, body)
