"""What an encrypted object carries beside its body, and what its keys are bound to.

Every object the proxy encrypts carries one metadata entry,
``x-amz-meta-bailiwick-encryption``, of ``;``-separated ``name=value`` pairs
in this order (ASCII; binary values in unpadded base64url)::

    v=1;seg=65536;len=<plaintext bytes>;salt=<32 bytes>;np=<7 bytes>;ks=<kind>;ref=<key reference>;wk=<wrapped key>

``v`` the format version, ``seg`` the plaintext segment size, ``len`` the
plaintext length, ``salt`` and ``np`` the HKDF salt and nonce prefix of
`proxy.crypto.segments`, ``ks`` the kind of key service (``transit``,
``pkcs11``, ``file``), ``ref`` the key-encryption key it names (no version),
``wk`` the data key as that service wrapped it.

A multipart upload's object (format ``v=2``, "parted", `proxy.crypto.parts`)
carries only what is known when the upload starts::

    v=2;seg=65536;ks=<kind>;ref=<key reference>;wk=<wrapped upload key>

its length, salts and nonce prefixes being in its parts' own headers.

None of it is trusted as read: what the keys are bound to is computed from
what the proxy itself knows of the object (the bucket and key it was asked
for, the dataset and region its policy gives them) plus the format fields.
`binding` (format 2: `parted_binding`, without a length) is the context the
data key was wrapped with; `segment_info` (format 2: `part_info`, with the
part's number and length) the HKDF ``info`` of the segment key, which leaves
the key reference out so that a rewrap leaves the body as it is. Each starts
with a label of its own (``bailiwick-encryption-v1``, ``-v2``,
``bailiwick-segments-v1``, ``-v2``), so no value of one is a value of
another. A metadata entry edited, or copied with its body onto another
object, dataset or region, no longer opens.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import NamedTuple

from proxy.crypto.segments import NONCE_PREFIX_SIZE, SALT_SIZE, SEGMENT_SIZE
from proxy.errors import EncryptedObjectInvalid

METADATA_HEADER = "x-amz-meta-bailiwick-encryption"
VERSION = 1
PARTED_VERSION = 2
_BINDING_LABEL = b"bailiwick-encryption-v1\x00"
_SEGMENTS_LABEL = b"bailiwick-segments-v1\x00"
_PARTED_BINDING_LABEL = b"bailiwick-encryption-v2\x00"
_PARTED_SEGMENTS_LABEL = b"bailiwick-segments-v2\x00"
_FIELDS = ("v", "seg", "len", "salt", "np", "ks", "ref", "wk")
_PARTED_FIELDS = ("v", "seg", "ks", "ref", "wk")
KINDS = frozenset({"transit", "pkcs11", "file"})
# What a key reference and a wrapped key may hold: printable ASCII without ";" (the separator) and space.
_TOKEN = re.compile(r"[!-:<-~]+")


class Envelope(NamedTuple):
    """The encryption parameters of one stored object."""

    plaintext_length: int
    salt: bytes
    nonce_prefix: bytes
    key_service: str
    key_ref: str
    wrapped: str
    segment_size: int = SEGMENT_SIZE
    version: int = VERSION

    def to_header(self) -> str:
        _check_storable(self)
        return (f"v={self.version};seg={self.segment_size};len={self.plaintext_length};salt={_b64(self.salt)};"
                f"np={_b64(self.nonce_prefix)};ks={self.key_service};ref={self.key_ref};wk={self.wrapped}")


class PartedEnvelope(NamedTuple):
    """The encryption parameters of an object written by a multipart upload (one upload key for its parts)."""

    key_service: str
    key_ref: str
    wrapped: str
    segment_size: int = SEGMENT_SIZE
    version: int = PARTED_VERSION

    def to_header(self) -> str:
        _check_storable(self)
        return f"v={self.version};seg={self.segment_size};ks={self.key_service};ref={self.key_ref};wk={self.wrapped}"


def _check_storable(envelope: Envelope | PartedEnvelope) -> None:
    for name, value in (("key service", envelope.key_service), ("key reference", envelope.key_ref),
                        ("wrapped key", envelope.wrapped)):
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"the {name} {value!r} cannot be written in object metadata")


def parse_header(value: str) -> Envelope:
    """Read the metadata entry of a single-PUT object (v=1); raises `EncryptedObjectInvalid` for anything not
    written as `Envelope.to_header` writes, a multipart object's included (see `parse_any`)."""
    envelope = parse_any(value)
    if isinstance(envelope, PartedEnvelope):
        raise _invalid("it is a multipart upload's object (format version 2), which this operation does not read")
    return envelope


def parse_any(value: str) -> Envelope | PartedEnvelope:
    """Read the metadata entry of either format; raises `EncryptedObjectInvalid` for anything not written as
    `to_header` writes it."""
    pairs = value.strip().split(";")
    names = tuple(pair.partition("=")[0] for pair in pairs)
    if any("=" not in pair for pair in pairs) or names not in (_FIELDS, _PARTED_FIELDS):
        raise _invalid("its fields are not the ones the format names, in its order")
    fields = dict(pair.split("=", 1) for pair in pairs)
    expected = VERSION if names == _FIELDS else PARTED_VERSION
    if fields["v"] != str(expected):
        raise _invalid(f"format version {fields['v']!r} is not one this proxy reads with these fields (it reads "
                       f"{VERSION} and {PARTED_VERSION})")
    try:
        segment_size = _number(fields["seg"])
        if expected == VERSION:
            length = _number(fields["len"])
            salt = _unb64(fields["salt"], SALT_SIZE)
            prefix = _unb64(fields["np"], NONCE_PREFIX_SIZE)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    if segment_size != SEGMENT_SIZE:
        raise _invalid(f"segment size {segment_size} is not the format's {SEGMENT_SIZE}")
    for name in ("ks", "ref", "wk"):
        if not _TOKEN.fullmatch(fields[name]):
            raise _invalid(f"its {name} field is empty or not printable ASCII")
    if fields["ks"] not in KINDS or not fields["ref"].startswith(fields["ks"] + ":"):
        raise _invalid(f"the key service kind {fields['ks']!r} is not one the format names, or not the one its "
                       "key reference names")
    if expected == PARTED_VERSION:
        return PartedEnvelope(fields["ks"], fields["ref"], fields["wk"], segment_size)
    return Envelope(length, salt, prefix, fields["ks"], fields["ref"], fields["wk"], segment_size)


def binding(envelope: Envelope, *, dataset: str, region: str, bucket: str, key: str) -> bytes:
    """The canonical bytes the data key is wrapped for (the key service's context): each field
    length-prefixed, then the numbers."""
    return _canonical(_BINDING_LABEL, (dataset, region, envelope.key_ref, bucket, key), envelope)


def segment_info(envelope: Envelope, *, dataset: str, region: str, bucket: str, key: str) -> bytes:
    """The HKDF info of the segment key: the binding without the KEK's reference, so that wrapping the data
    key again under another KEK (a rewrap) leaves the body as it is. The KEK is bound by the wrapping itself."""
    return _canonical(_SEGMENTS_LABEL, (dataset, region, bucket, key), envelope)


def parted_binding(envelope: PartedEnvelope, *, dataset: str, region: str, bucket: str, key: str) -> bytes:
    """The key-service context of a multipart upload's key: as `binding`, without a length (unknown when the
    upload starts; each part binds its own)."""
    return _texts(_PARTED_BINDING_LABEL, (dataset, region, envelope.key_ref, bucket, key)) + struct.pack(
        ">II", envelope.version, envelope.segment_size)


def part_info(envelope: PartedEnvelope, *, dataset: str, region: str, bucket: str, key: str, number: int,
              length: int) -> bytes:
    """The HKDF info of part `number`'s segment key: the object (without the KEK's reference, as
    `segment_info`), the part's number and its plaintext length, so a part opens only in its own place."""
    return _texts(_PARTED_SEGMENTS_LABEL, (dataset, region, bucket, key)) + struct.pack(
        ">IIIQ", envelope.version, envelope.segment_size, number, length)


def _canonical(label: bytes, texts: tuple[str, ...], envelope: Envelope) -> bytes:
    return _texts(label, texts) + struct.pack(">IIQ", envelope.version, envelope.segment_size,
                                              envelope.plaintext_length)


def _texts(label: bytes, texts: tuple[str, ...]) -> bytes:
    parts = [label]
    for text in texts:
        raw = text.encode("utf-8")   # strict: a name that is not UTF-8 binds to nothing (never two alike)
        parts.append(struct.pack(">I", len(raw)) + raw)
    return b"".join(parts)


def storable(value: str) -> bool:
    """Whether `value` can be a metadata field as it is (`ks`, `ref`, `wk`): printable ASCII, no space or ";"."""
    return _TOKEN.fullmatch(value) is not None


def _invalid(why: str) -> EncryptedObjectInvalid:
    return EncryptedObjectInvalid(f"the object's encryption metadata ({METADATA_HEADER}) cannot be read: {why}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, size: int) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("a binary field is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("a binary field is not base64url") from None
    if len(raw) != size or _b64(raw) != text:
        raise ValueError(f"a binary field is not {size} bytes written canonically")
    return raw


def _number(text: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", text):
        raise ValueError(f"{text!r} is not a number written canonically")
    return int(text)
