"""The form of an S3 POST Object upload (a browser's presigned POST), read up to its file as S3 reads it.

A browser uploads to S3 with a ``multipart/form-data`` body: the object's key,
its ``x-amz-*`` settings and the signed POST policy are fields, and the file
is the last part. The proxy must judge the key and the settings before any of
the file reaches the storage server, so it reads the fields first and then
streams the file part through unchanged. This module is that reading, with no
I/O: `FormReader` is fed the body's bytes as they arrive and says, once it has
read the file part's headers, what the form holds and where the file's bytes
begin (`PostForm`); `proxy.s3.posttail` then watches the rest of the body.

It reads as S3 documents its HTML form uploads:

- field names are case-insensitive (``kEy`` is ``key``); values are UTF-8;
- the form data and boundaries before the file's contents may not exceed
  20 KiB (S3 answers ``MaxPostPreDataLengthExceeded``);
- ``${filename}`` in the key is replaced by the file part's file name, of
  which only the text after the last ``/`` is kept;
- the form must name a ``key`` before the file, and hold exactly one file.

Whatever a storage server could read another way than S3, or than the proxy,
is refused rather than guessed: a repeated field (S3 joins repeated values,
other servers take the first), a preamble, transport padding, header folding,
bare LF line ends, the boundary (``--BOUNDARY``) in a value or the file
other than as its CRLF delimiter (werkzeug, moto's parser, and others end
a part at one after a bare LF or CR), part headers other than
Content-Disposition and Content-Type, RFC 2231 parameters (``filename*``,
``charset*0``), a field declared in another charset than UTF-8 (or
us-ascii, when it is ASCII), backslashes in quoted values, a ``%`` in a
field name, and a
``${filename}`` that servers would fill differently (a file name with a
backslash or a ``%``, or no file name at all). Every refusal is a
`FormRefused` with the code S3 gives for that input, or ``InvalidRequest``
where S3 would have accepted what the proxy will not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn

from proxy.errors import BadRequest

# S3: "The form data and boundaries (excluding the contents of the file) cannot exceed 20 KB."; its
# refusal names the bound (<MaxPostPreDataLengthBytes>20480</MaxPostPreDataLengthBytes>).
MAX_FORM_BYTES = 20 * 1024
# The proxy's own bound on the parts before the file (S3 documents none; the byte bound allows ~500).
MAX_FIELDS = 128
# RFC 2046 section 5.1.1: a boundary is 1 to 70 characters of these, not ending in a space.
MAX_BOUNDARY = 70
_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
FILE_FIELD = "file"
KEY_FIELD = "key"
FILENAME_VARIABLE = "${filename}"

MALFORMED_CODE = "MalformedPOSTRequest"          # S3: "not well-formed multipart/form-data"
TOO_LARGE_CODE = "MaxPostPreDataLengthExceeded"   # S3's code on the wire (its list spells it ...Error)
NOT_MULTIPART_CODE = "RequestIsNotMultiPartContent"
INVALID_ARGUMENT_CODE = "InvalidArgument"
NOT_READ_CODE = "InvalidRequest"                 # S3 would accept it; the proxy will not read it one way

# RFC 9110 token characters: names of headers, parameters and (here) form fields.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_OWS = re.compile(rb"[ \t]*")
_QUOTED = re.compile(rb'"([^"\\\x00-\x1f\x7f]*)"')   # no quote, backslash or control character
_BARE_OR_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")   # what part headers may not hold but CRLF
_QUOTED_PAIR = re.compile(rb'"[^"\\\x00-\x1f\x7f]*\\')  # a quoted string up to its first backslash


class FormRefused(BadRequest):
    """A POST form the proxy will not forward: not one S3 reads, or not one it reads one way."""

    default_code = MALFORMED_CODE


@dataclass(frozen=True, slots=True)
class PostForm:
    """What a POST Object form says before its file, and where the file begins.

    `fields` maps each lower-cased field name to its value (the key as the
    form wrote it, before ``${filename}``); `key` is the object key S3 will
    store, with ``${filename}`` replaced. `head` is the body up to the first
    byte of the file (`len(head)` is that byte's offset) and `rest` what was
    fed after it: the caller forwards `head`, `rest` and then the remaining
    body, all unchanged.
    """

    fields: Mapping[str, str]
    names: tuple[str, ...]          # the field names as the form wrote them, in order
    key: str
    filename: str | None            # the file part's filename parameter as sent (None: none)
    content_type: str | None        # the file part's Content-Type (None: none)
    boundary: bytes
    head: bytes = field(repr=False)
    rest: bytes = field(repr=False)

    @property
    def file_offset(self) -> int:
        return len(self.head)


def form_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; raises `FormRefused`."""
    raw = content_type.encode("latin-1", "replace")
    if raw.partition(b";")[0].strip(b" \t").lower() != b"multipart/form-data":
        raise FormRefused("Bucket POST must be of the enclosure-type multipart/form-data", code=NOT_MULTIPART_CODE)
    _, params = _header_value(raw, MALFORMED_CODE)
    boundary = params.get(b"boundary")
    if boundary is None:
        raise FormRefused("a multipart/form-data Content-Type without a boundary parameter")
    if not 1 <= len(boundary) <= MAX_BOUNDARY or boundary.endswith(b" ") or not set(boundary) <= _BCHARS:
        raise FormRefused(f"the boundary is not 1 to {MAX_BOUNDARY} characters RFC 2046 allows")
    return boundary


def _header_value(raw: bytes, code: str) -> tuple[bytes, dict[bytes, bytes]]:
    """A header value's first item and its ``; name=value`` parameters (lower-cased names), each once.

    Values are tokens or quoted strings without backslashes (a backslash is a quoted-pair to RFC 9110
    and a plain character to browsers, so its reading depends on the server).
    """
    match = re.compile(rb"[ \t]*([^;\s]+)[ \t]*").match(raw)
    if match is None:
        raise FormRefused("an empty header value in the form", code=code)
    first, pos = match.group(1), match.end()
    params: dict[bytes, bytes] = {}
    while pos < len(raw):
        if raw[pos:pos + 1] != b";":
            raise FormRefused("a header value in the form that is not written as RFC 7578 describes", code=code)
        pos = _OWS.match(raw, pos + 1).end()  # type: ignore[union-attr]
        name = _TOKEN.match(raw, pos)
        if name is None or raw[name.end():name.end() + 1] != b"=":
            raise FormRefused("a header parameter in the form that is not name=value", code=code)
        key = name.group().lower()
        pos = name.end() + 1
        value = _QUOTED.match(raw, pos) or _TOKEN.match(raw, pos)
        if value is None and _QUOTED_PAIR.match(raw, pos):
            raise FormRefused(f"a backslash in the form's quoted {key.decode()} parameter: a quoted-pair to"
                              " RFC 9110, a plain character to browsers", code=NOT_READ_CODE)
        if value is None:
            raise FormRefused(f"the form's {key.decode()} parameter is not a token or a plain quoted string",
                              code=code)
        if key in params or b"*" in key:
            # RFC 2231's name*0 and name*: werkzeug (moto) joins or decodes them into `name`.
            raise FormRefused(f"the form's {key.decode()} parameter is repeated or in RFC 2231's form", code=code)
        params[key] = value.group(1) if value.re is _QUOTED else value.group()
        pos = _OWS.match(raw, value.end()).end()  # type: ignore[union-attr]
    return first, params


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    filename: str | None
    content_type: str | None


def _part_headers(block: bytes) -> _Part:
    """The Content-Disposition and Content-Type of one part's header block (without its blank line)."""
    if _BARE_OR_CONTROL.search(block.replace(b"\r\n", b"")):
        raise FormRefused("a part's headers with a line not ended by CRLF, or a control character")
    headers: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n") if block else ():
        if line[:1] in (b" ", b"\t"):
            raise FormRefused("a folded header line in the form")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise FormRefused("a part's header line that is not 'Name: value'")
        lowered = name.lower()
        if lowered not in (b"content-disposition", b"content-type"):
            # Content-Transfer-Encoding above all: RFC 7578 deprecates it and servers differ on it.
            raise FormRefused(f"a form part with a {name.decode()} header, which the proxy does not read",
                              code=NOT_READ_CODE)
        if lowered in headers:
            raise FormRefused(f"a form part with two {name.decode()} headers")
        headers[lowered] = value.strip(b" \t")
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        raise FormRefused("a form part without Content-Disposition")
    kind, params = _header_value(disposition, MALFORMED_CODE)
    if kind.lower() != b"form-data" or set(params) - {b"name", b"filename"}:
        raise FormRefused("a form part whose Content-Disposition is not form-data with a name and a filename")
    name = params.get(b"name", b"")
    if not name or _TOKEN.fullmatch(name) is None:
        raise FormRefused("a form part without a name the proxy can read (a token)")
    if b"%" in name:
        # Browsers write a quote in a name as %22, and werkzeug (moto) reads a quoted %22 back as one.
        raise FormRefused("a form field name with a %, which servers decode differently", code=NOT_READ_CODE)
    filename = params.get(b"filename")
    content_type = headers.get(b"content-type")
    return _Part(
        name=name.decode("ascii"),
        filename=None if filename is None else _utf8(filename, "a file name"),
        content_type=None if content_type is None else _utf8(content_type, "a Content-Type"),
    )


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FormRefused(f"{what} in the form that is not UTF-8") from None


class FormReader:
    """Reads a POST Object form, fed in pieces, up to the first byte of its file.

    `feed` returns None while it needs more, the `PostForm` once it has read
    the file part's headers; `end` says the body ended before that. Both raise
    `FormRefused`. The result does not depend on how the body is cut: only
    the first `limit` bytes are ever read, and a part is judged once it is
    whole.
    """

    def __init__(self, boundary: bytes, *, limit: int = MAX_FORM_BYTES, max_fields: int = MAX_FIELDS) -> None:
        self._boundary = boundary
        self._first = b"--" + boundary + b"\r\n"
        self._dash = b"--" + boundary      # a delimiter is CRLF and this
        self._limit = limit
        self._max_fields = max_fields
        self._buf = bytearray()
        self._pos = 0                     # where the next unread part (or, at 0, the first line) begins
        self._started = False
        self._part: _Part | None = None   # a field whose headers are read, its value not yet
        self._value_at = 0                # where that value begins
        self._search_at = 0               # where the search for what ends the current element resumes
        self._fields: dict[str, str] = {}
        self._names: list[str] = []
        self._ascii = False               # the current field is declared us-ascii
        self._done = False

    def feed(self, data: bytes) -> PostForm | None:
        if self._done:
            raise RuntimeError("the form was already read")
        self._buf += data
        # Nothing past the bound is looked at, so a cut of the body cannot change what is read.
        form = self._read(min(len(self._buf), self._limit))
        if form is not None:
            self._done = True
            return form
        if len(self._buf) > self._limit:
            raise FormRefused("Your POST request fields preceding the upload file were too large.", code=TOO_LARGE_CODE)
        return None

    def end(self) -> NoReturn:
        """The body ended before the file part's headers were read: always a refusal."""
        raise FormRefused("the form ended before its file part")

    def _read(self, stop: int) -> PostForm | None:
        """Read on from where the last call stopped, up to `stop`: None when more is needed."""
        view = self._buf
        if not self._started:
            if stop < len(self._first):
                if not self._first.startswith(view[:stop]):
                    raise FormRefused("the form does not begin with its boundary", code=NOT_READ_CODE)
                return None
            if not view.startswith(self._first):
                raise FormRefused("the form does not begin with its boundary", code=NOT_READ_CODE)
            self._started = True
            self._pos = len(self._first)
            self._search_at = self._pos - 2
        while True:
            if self._part is None:
                # The header block ends at the first blank line; it may be empty (the CRLF that ended
                # the boundary line is then the first half of the blank line).
                end = view.find(b"\r\n\r\n", self._search_at, stop)
                if end < 0:
                    self._search_at = max(self._pos - 2, stop - 3)
                    return None
                part = _part_headers(bytes(view[self._pos:end]) if end >= self._pos else b"")
                content = end + 4
                if part.name.lower() == FILE_FIELD:
                    return self._form(part, content)
                self._check_field(part)
                self._part, self._value_at = part, content
                self._search_at = content
            # The value ends at the first "--BOUNDARY" in it, as the storage servers read it: after a CRLF (the
            # blank line's own, when the value is empty) it is the delimiter; after a bare LF or CR it is one to
            # werkzeug (moto), Go and others, and is refused; anywhere else it is never data a client meant.
            at = view.find(self._dash, self._search_at, stop)
            if at < 0 or stop < at + len(self._dash) + 2:
                self._search_at = max(self._value_at, stop - len(self._dash) + 1) if at < 0 else at
                return None
            if view[at - 2:at] != b"\r\n":
                raise FormRefused("the form's boundary inside a value, or after a line end other than CRLF, which"
                                  " servers read differently", code=NOT_READ_CODE)
            end = at - 2
            after = bytes(view[at + len(self._dash): at + len(self._dash) + 2])
            self._store(self._part, bytes(view[self._value_at:max(end, self._value_at)]))
            if after == b"--":
                raise FormRefused("POST requires exactly one file upload per request.", code=INVALID_ARGUMENT_CODE)
            if after[:1] in (b" ", b"\t"):
                raise FormRefused("transport padding after a boundary, which servers read differently",
                                  code=NOT_READ_CODE)
            if after != b"\r\n":
                raise FormRefused("a boundary line with more than the boundary on it, or not ended by CRLF")
            self._part = None
            self._pos = at + len(self._dash) + 2
            self._search_at = self._pos - 2

    def _check_field(self, part: _Part) -> None:
        name = part.name.lower()
        if name in self._fields:
            raise FormRefused(f"the form field {name!r} is given twice", code=INVALID_ARGUMENT_CODE)
        if len(self._names) >= self._max_fields:
            raise FormRefused(f"more than {self._max_fields} form fields before the file", code=TOO_LARGE_CODE)
        if part.content_type is not None:
            _, params = _header_value(part.content_type.encode("utf-8"), MALFORMED_CODE)
            charset = params.get(b"charset", b"utf-8").lower()
            if charset not in (b"utf-8", b"us-ascii"):
                raise FormRefused("a form field in another character set than UTF-8", code=NOT_READ_CODE)
            # werkzeug (moto) decodes a us-ascii field as ASCII, each other byte becoming U+FFFD.
            self._ascii = charset == b"us-ascii"
        else:
            self._ascii = False

    def _store(self, part: _Part, value: bytes) -> None:
        if self._ascii and not value.isascii():
            raise FormRefused(f"the value of {part.name!r} is declared us-ascii but is not: servers decode it"
                              " differently", code=NOT_READ_CODE)
        text = _utf8(value, f"the value of {part.name!r}")
        name = part.name.lower()
        if FILENAME_VARIABLE in text and name != KEY_FIELD:
            raise FormRefused(f"${{filename}} in the form field {part.name!r}: S3 fills it in every field,"
                              " other storage servers only in the key", code=NOT_READ_CODE)
        self._fields[name] = text
        self._names.append(part.name)

    def _form(self, part: _Part, content: int) -> PostForm:
        key = self._fields.get(KEY_FIELD)
        if key is None:
            raise FormRefused("Bucket POST must contain a field named 'key'.  If it is specified, please check"
                              " the order of the fields.", code=INVALID_ARGUMENT_CODE)
        return PostForm(
            fields=MappingProxyType(dict(self._fields)),
            names=tuple(self._names),
            key=substitute_filename(key, part.filename),
            filename=part.filename,
            content_type=part.content_type,
            boundary=self._boundary,
            head=bytes(self._buf[:content]),
            rest=bytes(self._buf[content:]),
        )


def substitute_filename(key: str, filename: str | None) -> str:
    """`key` with each ``${filename}`` replaced as S3 does: by the text after the file name's last slash.

    Refused where storage servers would fill it differently: S3 also cuts at a
    backslash and empties it when there is no file name, other servers keep
    both; a ``%`` may stand for a quote a browser escaped.
    """
    if FILENAME_VARIABLE not in key:
        return key
    if filename is None or "\\" in filename or "%" in filename:
        raise FormRefused("a key with ${filename} and a file name that storage servers read differently"
                          " (none, or one with a backslash or a %)", code=NOT_READ_CODE)
    return key.replace(FILENAME_VARIABLE, filename.rpartition("/")[2])
