"""ListBuckets answers, rewritten to name only the buckets the caller may list.

An account holds buckets of every region; listing them all would tell a
caller the names (and, in newer answers, the regions) of data it may not
reach. The proxy forwards ListBuckets and removes every ``<Bucket>`` element
the policy would not let the caller list (`proxy.policy.engine.visible_in_listing`).
Paged listings are not passed on: a request for pages (``max-buckets``,
``continuation-token``) is refused, and an answer that still ends in a
continuation token is a 502.

Why bytes rather than a rebuilt document: the answer keeps the storage
server's own bytes (namespace, declaration, order, pagination elements) with
only the hidden buckets cut out. The whole answer is parsed first, and the
buckets found by the parser must be exactly the ``<Bucket>`` spans cut from
the bytes, in order; an answer that could be read two ways is a 502, never
passed on unfiltered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.domain import Resource
from proxy.errors import UpstreamFailure

if TYPE_CHECKING:
    from xml.etree import ElementTree

_BUCKET = re.compile(rb"<Bucket>(.*?)</Bucket>", re.DOTALL)
_DECLARATION = re.compile(rb"\s*<\?xml[^?<>]*\?>")
_NAME = re.compile(rb"<Name>([a-z0-9.\-]{1,255})</Name>")
_UNREADABLE = "the storage server's bucket listing could not be read unambiguously, so it was not passed on"


def filter_list_buckets(body: bytes, visible: Callable[[Resource], bool]) -> bytes:
    """`body` without the ``<Bucket>`` elements of buckets `visible` refuses. Raises `UpstreamFailure`."""
    # Imported here: only listings need an XML parser (about 1 MiB of memory otherwise).
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    # Comments, CDATA, DTDs and processing instructions have no place in a bucket list, and a
    # "<Bucket>" hidden in one would send the span search below across the rest of the body.
    if b"<!" in body or b"<?" in _after_declaration(body):
        raise UpstreamFailure("the storage server's bucket listing holds comments, CDATA, a DTD or processing "
                              "instructions, so it was not passed on")
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise UpstreamFailure(_UNREADABLE) from exc
    parsed = [_text(element.find(_same_ns(element, "Name")))
              for element in root.iter() if _local(element.tag) == "Bucket"]
    spans = list(_BUCKET.finditer(body))
    names: list[str] = []
    for span in spans:
        found = _NAME.findall(span.group(1))
        if len(found) != 1:
            raise UpstreamFailure(_UNREADABLE)
        names.append(found[0].decode("ascii"))
    if names != parsed:
        raise UpstreamFailure(_UNREADABLE)
    if any((token.text or "").strip() for token in root.iter() if _local(token.tag) == "ContinuationToken"):
        raise UpstreamFailure("the account has more buckets than one answer holds; a paged bucket listing "
                              "is not passed on, as its continuation token may stand for a hidden bucket")
    out = bytearray()
    position = 0
    for span, name in zip(spans, names, strict=True):
        if not visible(Resource("s3", name, "")):
            out += body[position:span.start()]
            position = span.end()
    out += body[position:]
    return bytes(out)


def _after_declaration(body: bytes) -> bytes:
    declaration = _DECLARATION.match(body.lstrip(b"\xef\xbb\xbf"))
    return body.lstrip(b"\xef\xbb\xbf")[declaration.end():] if declaration else body


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _same_ns(element: ElementTree.Element, name: str) -> str:
    namespace = element.tag[:element.tag.index("}") + 1] if element.tag.startswith("{") else ""
    return namespace + name


def _text(element: ElementTree.Element | None) -> str | None:
    return None if element is None else (element.text or "")
