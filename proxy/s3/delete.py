"""The keys of a multi-object delete (``POST /BUCKET?delete``), read from its XML body.

DeleteObjects names its targets in the body, so each key is a resource the
policy must judge. The body comes from the caller: it is parsed with DTDs,
entity declarations and external references forbidden, and read in one
linear pass that stops at the first thing the format cannot hold (too deep,
too many elements, one construct too long), and
anything S3 and this parser might read differently is refused rather than
guessed: comments or processing instructions inside the document, unknown
elements, text where none belongs, a second ``<Key>`` in one ``<Object>``, an
encoding other than UTF-8.
"""

from __future__ import annotations

import codecs
import re
import time
from typing import TYPE_CHECKING, Any

from proxy.domain import Access, Action, Resource
from proxy.errors import BadRequest
from proxy.storage.keys import check_key

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

MAX_KEYS = 1000  # S3's own limit per request
# <Delete><Object><Key>: no element of the format is deeper (one more level is left for the walk
# below to refuse in its own words), and an <Object> holds at most five.
DELETE_DEPTH = 4
DELETE_ELEMENTS = 2 + 6 * MAX_KEYS
# Any other body S3 reads as XML (bucket configurations): no S3 configuration nests half this deep.
XML_DEPTH = 32
XML_ELEMENTS = 50_000
# The most bytes read without any event: a start tag with all its attributes,
# a name, a comment. S3's own elements need a few dozen bytes; text is passed on as it is read.
MAX_CONSTRUCT_BYTES = 16 * 1024
_SLICE = 4096
# A large body is parsed on a worker thread: every so often it lets the event loop's thread take
# the interpreter (time.sleep(0) releases it), rather than holding it for the whole switch interval.
# A body no larger than this is parsed where it is (on the event loop) and never yields.
_YIELD_EVERY_BYTES = 16 * 1024
_YIELD_EVERY_KEYS = 128
_CODE = "MalformedXML"
_NAMESPACES = frozenset({"", "{http://s3.amazonaws.com/doc/2006-03-01/}"})
_OBJECT_CHILDREN = frozenset({"Key", "VersionId", "ETag", "LastModifiedTime", "Size"})
_DECLARED_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")


def parse_delete_body(bucket: str, body: bytes | bytearray) -> tuple[Access, ...]:
    """One ``Access(DELETE, Resource("s3", bucket, key))`` per ``<Object><Key>``, in order.

    Raises `BadRequest` for malformed XML, a DTD or entities, no keys, more than
    1000 keys, or a key the path rules refuse (empty, dot segments, ...).
    """
    root = parse_xml_body(body, max_depth=DELETE_DEPTH, max_elements=DELETE_ELEMENTS)
    large = len(body) > _YIELD_EVERY_BYTES
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
            if large and len(accesses) % _YIELD_EVERY_KEYS == _YIELD_EVERY_KEYS - 1:
                time.sleep(0)
            accesses.append(Access(Action.DELETE, Resource("s3", bucket, key)))
        else:
            raise BadRequest(f"unexpected element <{name}> in the delete request body", code=_CODE)
    if not accesses:
        raise BadRequest("the delete request body names no keys", code=_CODE)
    return tuple(accesses)


def parse_xml_body(
    body: bytes | bytearray | memoryview,
    what: str = "the delete request body",
    *,
    max_depth: int = XML_DEPTH,
    max_elements: int = XML_ELEMENTS,
) -> ET.Element:
    """A caller's XML body, parsed as S3 would read it or refused (`BadRequest`, MalformedXML).

    UTF-8 only; no DTD, entities or external references; comments and processing
    instructions are kept in the tree so that `local_name` refuses them.
    The body is read with expat in slices, building the tree as it goes, and
    refused as soon as it goes beyond what S3's format can hold: elements
    nested deeper than `max_depth`, more than `max_elements` elements and
    comments, more than `MAX_CONSTRUCT_BYTES` read without anything ending
    (a start tag with thousands of attributes, a long name, a long comment:
    expat would scan it again with every slice), or a text longer than that
    between two tags. So the work is linear in the body's size and
    stops early on a hostile one, whatever its shape.
    """
    # Imported here: only requests with an XML body need a parser, and it is about 1 MiB
    # of memory in every process otherwise.
    import xml.etree.ElementTree as ET
    from xml.parsers import expat

    data = memoryview(body).cast("B")
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} must be UTF-8", code=_CODE) from None
    declared = _DECLARED_ENCODING.match(data)
    if declared and declared.group(1).lower() != b"utf-8":
        raise BadRequest(f"{what} must declare UTF-8 or no encoding", code=_CODE)
    # Comments and processing instructions are kept in the tree so that they can be refused
    # where they are: dropping them would join "a<!---->b" into "ab", which another parser might not.
    reader = _Reader(ET.TreeBuilder(insert_comments=True, insert_pis=True), what, max_depth, max_elements)
    # The same separator ElementTree uses: a name in a namespace is "uri}local", made "{uri}local".
    parser = expat.ParserCreate("UTF-8", "}")
    # Adjacent text (a run of character references) comes in one call, not one per reference.
    parser.buffer_text = True
    reader.attach(parser)
    fed = 0
    try:
        for start in range(0, len(data), _SLICE):
            parser.Parse(data[start:start + _SLICE], False)
            fed = min(start + _SLICE, len(data))
            if fed - reader.progress > MAX_CONSTRUCT_BYTES:
                raise BadRequest(f"{what} holds an XML construct longer than {MAX_CONSTRUCT_BYTES} bytes",
                                 code=_CODE)
            if not fed % _YIELD_EVERY_BYTES and fed < len(data):
                time.sleep(0)
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise BadRequest(f"{what} is not well-formed XML: {exc}", code=_CODE) from None
    root: ET.Element = reader.builder.close()
    return root


class _Reader:
    """Expat's callbacks: the tree is built as the body is read, and refused at the first thing S3 would not hold."""

    def __init__(self, builder: ET.TreeBuilder, what: str, max_depth: int, max_elements: int) -> None:
        self.builder = builder
        self.what = what
        self.max_depth = max_depth
        self.elements_left = max_elements
        self.depth = 0
        self.text_run = 0   # characters of text since the last tag
        self.progress = 0   # where the last event was seen: a construct still open began after it
        self._parser: Any = None

    def attach(self, parser: Any) -> None:
        self._parser = parser
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.text
        parser.XmlDeclHandler = self.declaration
        parser.CommentHandler = self.comment
        parser.ProcessingInstructionHandler = self.instruction
        parser.StartDoctypeDeclHandler = self.doctype
        parser.EntityDeclHandler = self.doctype
        parser.UnparsedEntityDeclHandler = self.doctype
        parser.NotationDeclHandler = self.doctype
        parser.ExternalEntityRefHandler = self.doctype

    def start(self, name: str, _attributes: object) -> None:
        self._count()
        self.text_run = 0
        self.depth += 1
        if self.depth > self.max_depth:
            raise BadRequest(f"{self.what} nests elements deeper than its format allows", code=_CODE)
        self.builder.start("{" + name if "}" in name else name, {})

    def end(self, name: str) -> None:
        self.progress = self._parser.CurrentByteIndex
        self.text_run = 0
        self.depth -= 1
        self.builder.end("{" + name if "}" in name else name)

    def text(self, data: str) -> None:
        self.progress = self._parser.CurrentByteIndex
        self.text_run += len(data)
        if self.text_run > MAX_CONSTRUCT_BYTES:
            # No text of the format comes near (a key is at most 1024 bytes).
            raise BadRequest(f"{self.what} holds a text longer than {MAX_CONSTRUCT_BYTES} characters", code=_CODE)
        self.builder.data(data)

    def declaration(self, *_: object) -> None:
        self.progress = self._parser.CurrentByteIndex

    def comment(self, data: str) -> None:
        self._count()
        self.builder.comment(data)

    def instruction(self, target: str, data: str) -> None:
        self._count()
        self.builder.pi(target, data)

    def _count(self) -> None:
        self.progress = self._parser.CurrentByteIndex
        self.elements_left -= 1
        if self.elements_left < 0:
            raise BadRequest(f"{self.what} holds more elements than its format allows", code=_CODE)

    def doctype(self, *_: object) -> None:
        raise BadRequest(f"{self.what} must not contain a DTD, entity declarations or external references",
                         code=_CODE)


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
