"""Account listings (S3's ListBuckets, Azure's List Containers) cut down to what the caller may list.

An account holds buckets or containers of every dataset; listing them all
would tell a caller the names (and regions, metadata) of data it may not
reach. The proxy forwards the listing and removes every entry the policy
would not let the caller list (`proxy.policy.engine.visible_in_listing`).
Each API names the answer's elements (`ListingShape`); the reading is one.

The answer keeps the storage server's own bytes (declaration, namespace,
attributes, order, white space) with only the hidden entries cut out, and an
answer that could be read two ways is a 502 (`UpstreamFailure`), never passed
on unfiltered:

- comments, CDATA, doctypes and processing instructions have no place in a
  listing, and an entry hidden in one would be read by one side only: refused
  before anything else;
- the whole answer is parsed (defusedxml, no DTD), and the entries found by
  the parser at ROOT/LIST/ENTRY (each with exactly one ``Name`` of plain
  text) are listed;
- the bytes are cut into tags by a strict tokenizer (in well-formed XML
  without the markup above, every ``<`` opens a tag), which tracks the
  element path to find the byte span and the name of each entry at that same
  path, so an element called like an entry or ``Name`` deeper inside an entry
  (Azure metadata) is never mistaken for one; an element called like an entry
  anywhere else, any other element in the list (boto3 and azure-storage-blob
  read every child of the list as an entry, whatever it is called), or an
  entry or name with attributes, is refused;
- the two lists must be equal, and the rewritten answer is parsed again and
  must name exactly the entries kept.

An answer that names a next page is a 502 for `filter_listing`: its marker
may stand for an entry the caller must not see. The listings the proxy pages
itself (`proxy.storage.accountpages`) read each page with `read_page`
instead, which hands back the visible entries' bytes and the marker for the
proxy alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.domain import Resource
from proxy.errors import UpstreamFailure

_BOM = b"\xef\xbb\xbf"
_DECLARATION = re.compile(rb"\s*<\?xml[^?<>]*\?>")
# A start, end or empty-element tag; attribute values may hold ">" but never "<".
_TAG = re.compile(
    rb"<(/?)([A-Za-z_][A-Za-z0-9_.-]*)((?:\s+[A-Za-z_:][A-Za-z0-9_.:-]*\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>"
)
_NAME = "Name"


@dataclass(frozen=True, slots=True)
class ListingShape:
    """One API's account listing: where its entries stand, how a name is spelled, what says "more pages"."""

    path: tuple[str, str, str]  # the root, the list and the entry element (local names)
    name: re.Pattern[str]  # an entry's name exactly as its bytes must spell it (no escapes, no markup)
    paging: str  # the element whose text names the next page (outside the entries)
    namespaced: bool  # whether the root may declare a default namespace (S3's answers do)
    unreadable: str  # the refusal of an answer that could be read two ways
    markup: str  # the refusal of comments, CDATA, a DTD or processing instructions
    paged: str  # the refusal of a paged answer


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One page of an account listing as the proxy reads it: what the caller may see, and where more is."""

    entries: tuple[tuple[str, bytes], ...]  # the visible entries: name and the storage server's own bytes
    marker: str | None  # the storage server's marker of the next page (never shown to the caller)
    root: Any  # the parsed answer (an ElementTree element), for what the page's envelope says
    namespace: str  # the root's namespace, "{...}" or ""


def read_page(
    body: bytes, shape: ListingShape, resource: Callable[[str], Resource], visible: Callable[[Resource], bool],
) -> ListingPage:
    """The entries of `body` that `visible` allows, read as `filter_listing` reads. Raises `UpstreamFailure`."""
    content = _refuse_markup(body, shape)
    root, namespace, parsed, marker = _parse(body, shape)
    spans = _entry_spans(body, content, shape)
    if [name for name, _, _ in spans] != parsed:
        raise UpstreamFailure(shape.unreadable)
    entries = tuple((name, body[start:end]) for name, start, end in spans if visible(resource(name)))
    return ListingPage(entries, marker, root, namespace)


def filter_listing(
    body: bytes, shape: ListingShape, resource: Callable[[str], Resource], visible: Callable[[Resource], bool],
) -> bytes:
    """`body` without the entries whose `resource` `visible` refuses. Raises `UpstreamFailure`."""
    content = _refuse_markup(body, shape)
    parsed = _parsed_names(body, shape)
    spans = _entry_spans(body, content, shape)
    if [name for name, _, _ in spans] != parsed:
        raise UpstreamFailure(shape.unreadable)
    out = bytearray()
    position = 0
    kept: list[str] = []
    for name, start, end in spans:
        if visible(resource(name)):
            kept.append(name)
        else:
            out += body[position:start]
            position = end
    out += body[position:]
    result = bytes(out)
    if _parsed_names(result, shape) != kept:   # the cut answer must read as exactly what was kept
        raise UpstreamFailure(shape.unreadable)
    return result


def _refuse_markup(body: bytes, shape: ListingShape) -> int:
    """Refuse comments, CDATA, doctypes and processing instructions; where the content begins."""
    position = len(_BOM) if body.startswith(_BOM) else 0
    declaration = _DECLARATION.match(body, position)
    if declaration is not None:
        position = declaration.end()
    if b"<!" in body or body.find(b"<?", position) != -1:
        raise UpstreamFailure(shape.markup)
    return position


def _parsed_names(body: bytes, shape: ListingShape) -> list[str]:
    """The names of the entries of a listing, as an XML parser reads it; a paged listing is refused."""
    _, _, names, marker = _parse(body, shape)
    if marker is not None:
        raise UpstreamFailure(shape.paged)
    return names


def _parse(body: bytes, shape: ListingShape) -> tuple[Any, str, list[str], str | None]:
    """The root, its namespace, the entries' names and the next page's marker (None: none), as parsed."""
    # Imported here: only listings need an XML parser (about 1 MiB of memory otherwise).
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, LookupError, ValueError) as exc:
        # LookupError, ValueError: a declared encoding Python does not know, or expat cannot read.
        raise UpstreamFailure(shape.unreadable) from exc
    namespace = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if (namespace and not shape.namespaced) or root.tag != namespace + shape.path[0]:
        raise UpstreamFailure(shape.unreadable)
    entries = root.findall(f"{namespace}{shape.path[1]}/{namespace}{shape.path[2]}")
    inside = {id(element) for entry in entries for element in entry.iter()}
    markers = [text for element in root.iter()
               if id(element) not in inside and _local(element.tag) == shape.paging
               and (text := (element.text or "").strip())]
    if len(markers) > 1:
        raise UpstreamFailure(shape.paged)
    marker = markers[0] if markers else None
    names: list[str] = []
    for entry in entries:
        found = entry.findall(namespace + _NAME)
        if len(found) != 1 or len(found[0]) != 0:
            raise UpstreamFailure(shape.unreadable)
        names.append(found[0].text or "")
    return root, namespace, names, marker


def _entry_spans(body: bytes, position: int, shape: ListingShape) -> list[tuple[str, int, int]]:
    """(name, start, end) of each entry at ROOT/LIST/ENTRY, read from the bytes after `position`."""
    unreadable = UpstreamFailure(shape.unreadable)
    expected = [part.encode() for part in shape.path]
    parent, entry, name_tag = expected[:2], expected[2], _NAME.encode()
    stack: list[bytes] = []
    spans: list[tuple[str, int, int]] = []
    start = 0
    name: str | None = None
    name_start = -1
    while True:
        opening = body.find(b"<", position)
        if opening == -1:
            break
        tag = _TAG.match(body, opening)
        if tag is None:
            raise unreadable
        closing, element, attributes, empty = tag.group(1) == b"/", tag.group(2), tag.group(3), tag.group(4) == b"/"
        if closing and (attributes or empty):
            raise unreadable
        if closing:
            if not stack or stack[-1] != element:
                raise unreadable
            stack.pop()
            if stack == parent and element == entry:
                if name is None:
                    raise unreadable
                spans.append((name, start, tag.end()))
            elif stack == expected and element == name_tag and name_start >= 0:
                text = body[name_start:opening]
                if name is not None or not text.isascii() or not shape.name.fullmatch(text.decode("ascii")):
                    raise unreadable
                name = text.decode("ascii")
                name_start = -1
        else:
            in_list = stack == parent
            at_entry = in_list and element == entry
            if in_list and not at_entry:
                raise unreadable   # clients read every child of the list as an entry, whatever its name
            if element == entry and not at_entry and stack[:3] != expected:
                raise unreadable   # named like an entry, outside the list: read one way only by each side
            if attributes and (at_entry or (stack == expected and element == name_tag)):
                raise unreadable   # no listing puts attributes on an entry or its name
            if at_entry:
                start, name = opening, None
            if not empty:
                stack.append(element)
                if stack == [*expected, name_tag]:
                    name_start = tag.end()
            elif stack == expected and element == name_tag:
                raise unreadable   # an empty name
            elif at_entry:
                raise unreadable   # an entry without a name
        position = tag.end()
    if stack:
        raise unreadable
    return spans


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
