"""Every stored encryption field has one reading: what a strict reader of docs/encryption.md refuses, so does the proxy.

Two readers that disagree about an object (one opens what the other
refuses, or two spellings open alike) are a place where what was checked is
not what is used. These are the cases the format's text promises and the
code must keep: the key-service kind is the one the reference names, a
wrapped key has one spelling, two different names never bind alike, and a
reader never buffers more of a segment than a segment can hold.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.crypto.envelope import Envelope, binding, parse_header
from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.keyservice import Justification
from proxy.crypto.segments import SEGMENT_SIZE, TAG_SIZE, Opener, Sealer, SegmentCipher
from proxy.errors import EncryptedObjectInvalid, KeyReleaseRefused

S = SEGMENT_SIZE
WHY = Justification("d-review", "IE", "dublin-mail", "7")
ENVELOPE = Envelope(10, b"\x01" * 32, b"\x02" * 7, "file", "file:0123456789abcdef", "filev1:AAAA")
NAMES = {"dataset": "dublin-mail", "region": "eu-west-1", "bucket": "mail-eu-dublin", "key": "alice/1.eml"}


@pytest.mark.parametrize(
    ("kind", "ref"),
    [
        ("bogus", "file:0123456789abcdef"),          # no such key service
        ("transit", "file:0123456789abcdef"),        # a kind the reference does not name
        ("pkcs11", "transit:transit/bailiwick"),
    ],
)
def test_the_key_service_kind_is_the_one_the_reference_names(kind: str, ref: str) -> None:
    header = ENVELOPE._replace(key_ref=ref).to_header().replace("ks=file;", f"ks={kind};")
    with pytest.raises(EncryptedObjectInvalid):
        parse_header(header)


def test_the_written_kinds_are_read() -> None:
    for kind, ref in (("file", "file:0123456789abcdef"), ("transit", "transit:transit/k"),
                      ("pkcs11", "pkcs11:bailiwick/kek")):
        envelope = ENVELOPE._replace(key_service=kind, key_ref=ref)
        assert parse_header(envelope.to_header()) == envelope


# "\udcc3\udca9" is what surrogateescape makes of the bytes C3 A9, which are the UTF-8 of "é".
@pytest.mark.parametrize("field", ["dataset", "region", "bucket", "key"])
def test_two_different_names_never_bind_alike(field: str) -> None:
    plain = binding(ENVELOPE, **{**NAMES, field: "caf\u00e9"})
    try:
        odd = binding(ENVELOPE, **{**NAMES, field: "caf\udcc3\udca9"})
    except UnicodeEncodeError:
        return   # refused: a name that is not UTF-8 is bound to nothing
    assert odd != plain


@pytest.fixture
def key_file(tmp_path: Path) -> KeyFileService:
    write_key_file(tmp_path / "k")
    return KeyFileService(tmp_path / "k", allow_insecure=True)


def test_a_wrapped_key_has_one_spelling(key_file: KeyFileService) -> None:
    """The same bytes in the standard base64 alphabet ("+", "/" for "-", "_") are not the wrapped key."""
    context = binding(ENVELOPE, **NAMES)
    for _ in range(64):   # until a wrapped key holds a character the two alphabets spell differently
        made = key_file.generate(context, WHY)
        if set(made.wrapped.removeprefix("filev1:")) & set("-_"):
            break
    else:
        pytest.fail("no wrapped key with '-' or '_' in 64 tries")
    assert key_file.unwrap(made.wrapped, context, WHY) == made.plaintext
    respelled = made.wrapped.replace("-", "+").replace("_", "/")
    with pytest.raises(KeyReleaseRefused):
        key_file.unwrap(respelled, context, WHY)


def _cipher() -> SegmentCipher:
    return SegmentCipher(os.urandom(32), os.urandom(32), os.urandom(7), b"binding")


@pytest.mark.parametrize("count", [1, 2])
def test_the_reader_never_holds_more_than_a_segment(count: int) -> None:
    """A storage server that keeps sending after the last segment is refused as it sends, not buffered."""
    cipher = _cipher()
    sealer = Sealer(cipher, (count - 1) * S + 5)
    sealed = sealer.feed(os.urandom((count - 1) * S + 5)) + sealer.finish()
    opener = Opener(cipher, count)
    with pytest.raises(EncryptedObjectInvalid):
        opener.feed(sealed + os.urandom(S + TAG_SIZE))   # more than any last segment can be
