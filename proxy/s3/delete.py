"""The keys of a multi-object delete (``POST /BUCKET?delete``), read from its XML body.

DeleteObjects names its targets in the body, so each key is a resource the
policy must judge. The body comes from the caller: it is parsed with DTDs,
entity declarations and external references forbidden (defusedxml), and
anything S3 and this parser might read differently is refused rather than
guessed: comments or processing instructions inside the document, unknown
elements, text where none belongs, a second ``<Key>`` in one ``<Object>``, an
encoding other than UTF-8.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from proxy.domain import Access, Action, Resource
from proxy.errors import BadRequest
from proxy.s3.names import check_key

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

MAX_KEYS = 1000  # S3's own limit per request
_CODE = "MalformedXML"
_NAMESPACES = frozenset({"", "{http://s3.amazonaws.com/doc/2006-03-01/}"})
_OBJECT_CHILDREN = frozenset({"Key", "VersionId", "ETag", "LastModifiedTime", "Size"})
_DECLARED_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")


def parse_delete_body(bucket: str, body: bytes) -> tuple[Access, ...]:
    """One ``Access(DELETE, Resource("s3", bucket, key))`` per ``<Object><Key>``, in order.

    Raises `BadRequest` for malformed XML, a DTD or entities, no keys, more than
    1000 keys, or a key the path rules refuse (empty, dot segments, ...).
    """
    root = parse_xml_body(body)
    if _local(root) != "Delete":
        raise BadRequest("the delete request body must be a <Delete> element", code=_CODE)
    _no_text(root.text)
    accesses: list[Access] = []
    quiet_seen = False
    for child in root:
        name = _local(child)
        _no_text(child.tail)
        if name == "Quiet":
            if quiet_seen or len(child):
                raise BadRequest("<Quiet> must appear once and hold only text", code=_CODE)
            quiet_seen = True
        elif name == "Object":
            if len(accesses) == MAX_KEYS:
                raise BadRequest(f"a delete request may name at most {MAX_KEYS} keys", code=_CODE)
            key = _object_key(child)
            accesses.append(Access(Action.DELETE, Resource("s3", bucket, key)))
        else:
            raise BadRequest(f"unexpected element <{name}> in the delete request body", code=_CODE)
    if not accesses:
        raise BadRequest("the delete request body names no keys", code=_CODE)
    return tuple(accesses)


def parse_xml_body(body: bytes, what: str = "the delete request body") -> ET.Element:
    """A caller's XML body, parsed as S3 would read it or refused (`BadRequest`, MalformedXML).

    UTF-8 only; no DTD, entities or external references; comments and processing
    instructions are kept in the tree so that `local_name` refuses them.
    """
    # Imported here: only requests with an XML body need a parser, and it is about 1 MiB
    # of memory in every process otherwise.
    import xml.etree.ElementTree as ET

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} must be UTF-8", code=_CODE) from None
    declared = _DECLARED_ENCODING.match(body)
    if declared and declared.group(1).lower() != b"utf-8":
        raise BadRequest(f"{what} must declare UTF-8 or no encoding", code=_CODE)
    # Comments and processing instructions are kept in the tree so that they can be
    # refused: dropping them would join "a<!---->b" into "ab", which another parser might not.
    builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(body)
        root: ET.Element = parser.close()
    except DefusedXmlException:
        raise BadRequest(
            f"{what} must not contain a DTD, entity declarations or external references", code=_CODE,
        ) from None
    except ET.ParseError as exc:
        raise BadRequest(f"{what} is not well-formed XML: {exc}", code=_CODE) from None
    return root


def _object_key(element: ET.Element) -> str:
    _no_text(element.text)
    key: str | None = None
    seen: set[str] = set()
    for child in element:
        name = _local(child)
        _no_text(child.tail)
        if name not in _OBJECT_CHILDREN:
            raise BadRequest(f"unexpected element <{name}> in <Object>", code=_CODE)
        if name in seen:
            raise BadRequest(f"<{name}> appears more than once in one <Object>", code=_CODE)
        seen.add(name)
        for inner in child:
            _local(inner)  # names a comment or processing instruction as such
            raise BadRequest(f"<{name}> must hold only text", code=_CODE)
        if name == "Key":
            key = child.text or ""
    if key is None:
        raise BadRequest("an <Object> in the delete request body has no <Key>", code=_CODE)
    if not key:
        raise BadRequest("an <Object> in the delete request body has an empty <Key>", code=_CODE)
    check_key(key, "a key in the delete request body", code="InvalidRequest")
    return key


def _local(element: ET.Element) -> str:
    return local_name(element)


def local_name(element: ET.Element, what: str = "the delete request body") -> str:
    """The element's name without S3's namespace. Refuses comments, processing instructions, other namespaces."""
    tag = element.tag
    if not isinstance(tag, str):  # a comment or processing instruction (their tag is a factory)
        raise BadRequest(f"{what} must not contain comments or processing instructions", code=_CODE)
    namespace, brace, local = tag.rpartition("}")
    if namespace + brace not in _NAMESPACES:
        raise BadRequest(f"unexpected XML namespace in <{local}>", code=_CODE)
    return local


def _no_text(text: str | None, what: str = "the delete request body") -> None:
    if text and text.strip():
        raise BadRequest(f"{what} has text outside the elements that hold it", code=_CODE)
