"""List Containers answers, rewritten to name only the containers the caller may list.

An account holds containers of every dataset; listing them all would tell a
caller the names (and metadata) of data it may not reach. The proxy forwards
List Containers and removes every ``<Container>`` element the policy would
not let the caller list (`proxy.policy.engine.visible_in_listing`, asked
about ``azure://ACCOUNT/CONTAINER/``).

As for S3's ListBuckets (`proxy.s3.listing`), the answer keeps the storage
server's own bytes with only the hidden containers cut out, and an answer
that could be read two ways is a 502, never passed on unfiltered:

- the whole answer is parsed (defusedxml, no DTD), and the containers found
  by the parser at ``EnumerationResults/Containers/Container`` (each with
  exactly one ``Name``) are listed;
- the bytes are cut into tags by a strict tokenizer (comments, CDATA and
  processing instructions are refused; in well-formed XML every other ``<``
  opens a tag), which tracks the element path to find the byte span and the
  name of each ``Container`` at that same path, so a metadata item called
  ``Container`` or ``Name`` deeper down is never mistaken for one;
- the two lists must be equal, and the rewritten answer is parsed again and
  must name exactly the containers kept.

Paged listings are not passed on: a page's ``NextMarker`` names the next
container, which may be one the caller must not see, so a request for pages
(``maxresults``, ``marker``) is refused and an answer with a ``NextMarker``
(an account of more than 5,000 containers) is a 502.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.azure.names import LISTED_CONTAINER
from proxy.domain import Resource
from proxy.errors import UpstreamFailure

_UNREADABLE = "the storage server's container listing could not be read unambiguously, so it was not passed on"
_PATH = ("EnumerationResults", "Containers", "Container")
_BOM = b"\xef\xbb\xbf"
_DECLARATION = re.compile(rb"<\?xml[^?<>]*\?>")
# A start, end or empty-element tag; attribute values may hold ">" but never "<".
_TAG = re.compile(
    rb"<(/?)([A-Za-z_][A-Za-z0-9_.-]*)((?:\s+[A-Za-z_:][A-Za-z0-9_.:-]*\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>"
)
_NAME_TEXT = re.compile(rb"[$a-z0-9-]{1,64}")


def filter_list_containers(body: bytes, account: str, visible: Callable[[Resource], bool]) -> bytes:
    """`body` without the ``<Container>`` elements `visible` refuses. Raises `UpstreamFailure`."""
    parsed = _parsed_names(body)
    spans = _container_spans(body)
    if [name for name, _, _ in spans] != parsed:
        raise UpstreamFailure(_UNREADABLE)
    out = bytearray()
    position = 0
    kept: list[str] = []
    for name, start, end in spans:
        if visible(Resource("azure", account, f"{name}/")):
            kept.append(name)
        else:
            out += body[position:start]
            position = end
    out += body[position:]
    result = bytes(out)
    if _parsed_names(result) != kept:   # the cut answer must read as exactly what was kept
        raise UpstreamFailure(_UNREADABLE)
    return result


def _parsed_names(body: bytes) -> list[str]:
    """The names of the containers in a List Containers answer, as an XML parser reads it."""
    # Imported here: only listings need an XML parser.
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise UpstreamFailure(_UNREADABLE) from exc
    if root.tag != _PATH[0]:
        raise UpstreamFailure(_UNREADABLE)
    if any((marker.text or "").strip() for marker in root.findall("NextMarker")):
        raise UpstreamFailure("the account has more containers than one answer holds; a paged container listing "
                              "is not passed on, as its page marker names a container")
    names: list[str] = []
    for container in root.findall(f"{_PATH[1]}/{_PATH[2]}"):
        found = container.findall("Name")
        if len(found) != 1 or not LISTED_CONTAINER.fullmatch(found[0].text or "") or len(found[0]) != 0:
            raise UpstreamFailure(_UNREADABLE)
        names.append(found[0].text or "")
    return names


def _container_spans(body: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of each ``Container`` element at ``EnumerationResults/Containers``, from the bytes."""
    position = len(_BOM) if body.startswith(_BOM) else 0
    declaration = _DECLARATION.match(body, position)
    if declaration is not None:
        position = declaration.end()
    if b"<!" in body or body.find(b"<?", position) != -1:
        # Comments, CDATA sections, doctypes, processing instructions: no listing has them.
        raise UpstreamFailure(_UNREADABLE)
    stack: list[bytes] = []
    spans: list[tuple[str, int, int]] = []
    start = 0
    name: str | None = None
    name_start = -1
    expected = [part.encode() for part in _PATH]
    while True:
        opening = body.find(b"<", position)
        if opening == -1:
            break
        tag = _TAG.match(body, opening)
        if tag is None:
            raise UpstreamFailure(_UNREADABLE)
        closing, element, empty = tag.group(1) == b"/", tag.group(2), tag.group(4) == b"/"
        if closing and (tag.group(3) or empty):
            raise UpstreamFailure(_UNREADABLE)
        if closing:
            if not stack or stack[-1] != element:
                raise UpstreamFailure(_UNREADABLE)
            stack.pop()
            if stack == expected[:2] and element == expected[2]:
                if name is None:
                    raise UpstreamFailure(_UNREADABLE)
                spans.append((name, start, tag.end()))
            elif stack == expected and element == b"Name" and name_start >= 0:
                text = body[name_start:opening]
                if name is not None or not _NAME_TEXT.fullmatch(text):
                    raise UpstreamFailure(_UNREADABLE)
                name = text.decode("ascii")
                name_start = -1
        else:
            if stack == expected[:2] and element == expected[2]:
                start, name = opening, None
            if not empty:
                stack.append(element)
                if stack == [*expected, b"Name"]:
                    name_start = tag.end()
            elif stack == expected and element == b"Name":
                raise UpstreamFailure(_UNREADABLE)   # an empty name
            elif stack == expected[:2] and element == expected[2]:
                raise UpstreamFailure(_UNREADABLE)   # a container without a name
        position = tag.end()
    if stack:
        raise UpstreamFailure(_UNREADABLE)
    return spans
