"""The segmented format: sizes, spans, and that only authentic segments ever open."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.crypto.envelope import Envelope, binding, parse_header
from proxy.crypto.segments import (
    TAG_SIZE,
    Opener,
    Sealer,
    SegmentCipher,
    ciphertext_length,
    plaintext_length,
    segment_count,
    span,
)
from proxy.errors import EncryptedObjectInvalid

SMALL = 16   # a small segment size keeps the property tests fast and crosses many boundaries


def _cipher(segment_size: int = SMALL, *, key: bytes = b"k" * 32, info: bytes = b"object") -> SegmentCipher:
    """A cipher with fixed parameters (the salt and nonce prefix do not matter to these tests)."""
    return SegmentCipher(key, b"s" * 32, b"p" * 7, info, segment_size)


def _seal(data: bytes, segment_size: int = SMALL, **kwargs: bytes) -> bytes:
    sealer = Sealer(_cipher(segment_size, **kwargs), len(data))
    out = b""
    for i in range(0, len(data), 5):   # pieces that never line up with segments
        out += sealer.feed(data[i:i + 5])
    return out + sealer.finish()


def _open(stored: bytes, length: int, segment_size: int = SMALL, **kwargs: bytes) -> bytes:
    opener = Opener(_cipher(segment_size, **kwargs), segment_count(length, segment_size))
    out = b""
    for i in range(0, len(stored), 7):
        out += opener.feed(stored[i:i + 7])
    return out + opener.finish()


@pytest.mark.parametrize(
    ("plain", "stored"),
    [(0, 16), (1, 17), (SMALL - 1, SMALL - 1 + 16), (SMALL, SMALL + 16), (SMALL + 1, SMALL + 1 + 32),
     (3 * SMALL, 3 * SMALL + 48)],
)
def test_lengths(plain: int, stored: int) -> None:
    assert ciphertext_length(plain, SMALL) == stored
    assert plaintext_length(stored, SMALL) == plain


def test_stored_lengths_no_plaintext_has() -> None:
    made = {ciphertext_length(length, SMALL) for length in range(200)}
    for stored in range(made.__len__()):
        assert (plaintext_length(stored, SMALL) is None) == (stored not in made)
    assert plaintext_length(15, SMALL) is None
    assert plaintext_length(SMALL + TAG_SIZE + 16, SMALL) is None   # a second segment of just its tag


@given(st.integers(0, 10**7))
def test_length_inverse(length: int) -> None:
    assert plaintext_length(ciphertext_length(length)) == length


@settings(max_examples=200)
@given(st.binary(max_size=5 * SMALL + 3))
def test_round_trip(data: bytes) -> None:
    stored = _seal(data)
    assert len(stored) == ciphertext_length(len(data), SMALL)
    assert _open(stored, len(data)) == data


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=5 * SMALL + 3), st.data())
def test_every_range_equals_the_plaintext_slice(data: bytes, draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data) - 1))
    end = draw.draw(st.integers(start, len(data) - 1))
    stored = _seal(data)
    where = span(start, end, len(data), SMALL)
    opener = Opener(_cipher(), segment_count(len(data), SMALL), where.first, where.last)
    plain = opener.feed(stored[where.stored_start:where.stored_end + 1]) + opener.finish()
    assert plain[where.skip:where.skip + end - start + 1] == data[start:end + 1]


def _flip(stored: bytes, at: int) -> bytes:
    return stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1:]


DATA = os.urandom(3 * SMALL + 5)
STORED = _seal(DATA)


@pytest.mark.parametrize(
    ("name", "stored", "kwargs"),
    [
        ("one byte flipped in the first segment", _flip(STORED, 0), {}),
        ("one byte flipped in a tag", _flip(STORED, SMALL + 3), {}),
        ("one byte flipped in the last segment", _flip(STORED, len(STORED) - 1), {}),
        ("truncated at a segment boundary", STORED[: 3 * (SMALL + TAG_SIZE)], {}),
        ("truncated inside a segment", STORED[:-3], {}),
        ("two segments swapped", STORED[SMALL + 16: 2 * (SMALL + 16)] + STORED[: SMALL + 16]
         + STORED[2 * (SMALL + 16):], {}),
        ("another object's binding", STORED, {"info": b"another object"}),
        ("another data key", STORED, {"key": b"x" * 32}),
    ],
)
def test_tampering_is_refused_before_a_byte_of_it_is_handed_on(name: str, stored: bytes,
                                                                 kwargs: dict[str, bytes]) -> None:
    opener = Opener(_cipher(SMALL, key=kwargs.get("key", b"k" * 32), info=kwargs.get("info", b"object")),
                    segment_count(len(DATA), SMALL))
    handed: list[bytes] = []

    def read_all() -> None:
        for i in range(0, len(stored), 7):
            handed.append(opener.feed(stored[i:i + 7]))
        handed.append(opener.finish())

    with pytest.raises(EncryptedObjectInvalid):
        read_all()
    # Whatever was handed on before the failure is authentic plaintext, in order.
    assert DATA.startswith(b"".join(handed))


def test_a_dropped_last_segment_is_refused() -> None:
    # The object cut after a whole segment: the remaining "last" one was sealed as not last.
    opener = Opener(_cipher(), segment_count(2 * SMALL, SMALL))
    stored = _seal(DATA[: 3 * SMALL])[: 2 * (SMALL + TAG_SIZE)]
    assert opener.feed(stored) == DATA[:SMALL]
    with pytest.raises(EncryptedObjectInvalid):
        opener.finish()


@pytest.mark.parametrize(
    ("first", "last", "segments_fed"),
    [(0, 2, 1), (0, 2, 2), (1, 2, 1), (1, 3, 0)],   # the range's stored bytes ended early, at a segment boundary
)
def test_a_range_whose_segments_end_early_is_refused(first: int, last: int, segments_fed: int) -> None:
    # Only `finish` can tell: every segment fed authenticated, the ones after them never came.
    opener = Opener(_cipher(), segment_count(len(DATA), SMALL), first, last)
    fed = STORED[first * (SMALL + TAG_SIZE):(first + segments_fed) * (SMALL + TAG_SIZE)]
    assert opener.feed(fed) == DATA[first * SMALL:(first + segments_fed) * SMALL]
    with pytest.raises(EncryptedObjectInvalid, match="ended before its last segment"):
        opener.finish()


def test_sealer_refuses_a_body_of_another_length() -> None:
    sealer = Sealer(_cipher(), 10)
    sealer.feed(b"x" * 9)
    with pytest.raises(ValueError, match="9 of its 10"):
        sealer.finish()
    with pytest.raises(ValueError, match="longer"):
        Sealer(_cipher(), 3).feed(b"xxxx")


ENVELOPE = Envelope(5, b"s" * 32, b"p" * 7, "transit", "transit:transit/eu", "vault:v1:abc+/=")


def test_envelope_round_trip() -> None:
    assert parse_header(ENVELOPE.to_header()) == ENVELOPE


@pytest.mark.parametrize(
    "header",
    [
        "",
        ENVELOPE.to_header().replace("v=1", "v=2"),
        ENVELOPE.to_header().replace("len=5", "len=05"),
        ENVELOPE.to_header().replace("seg=65536", "seg=1024"),
        ENVELOPE.to_header().replace(";np=", ";xx="),
        ENVELOPE.to_header() + ";extra=1",
        ENVELOPE.to_header().replace("salt=", "salt=AA"),
        ENVELOPE.to_header().replace("ks=transit", "ks="),
    ],
)
def test_envelope_refuses_what_it_did_not_write(header: str) -> None:
    with pytest.raises(EncryptedObjectInvalid, match="x-amz-meta-bailiwick-encryption"):
        parse_header(header)


@given(st.binary(max_size=200))
def test_envelope_parser_never_fails_otherwise(raw: bytes) -> None:
    with contextlib.suppress(EncryptedObjectInvalid):
        parse_header(raw.decode("latin-1"))


@pytest.mark.parametrize(
    "changed",
    [{"dataset": "other"}, {"region": "us-east-1"}, {"bucket": "b2"}, {"key": "k2"}, {"key": "k/"}],
)
def test_binding_names_the_object(changed: dict[str, str]) -> None:
    where = {"dataset": "eu", "region": "eu-west-1", "bucket": "b", "key": "k"}
    assert binding(ENVELOPE, **where) != binding(ENVELOPE, **{**where, **changed})
    assert binding(ENVELOPE, **where) != binding(ENVELOPE._replace(plaintext_length=6), **where)
    assert binding(ENVELOPE, **where) != binding(ENVELOPE._replace(key_ref="transit:transit/us"), **where)


@settings(max_examples=200)
@given(st.binary(max_size=6 * SMALL + 5), st.lists(st.integers(1, 3 * SMALL + 40), min_size=1, max_size=20))
def test_any_split_of_the_pieces_gives_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    """Pieces of any sizes (smaller, larger, across segments): the same stored bytes, the same plaintext back."""
    def pieces(whole: bytes) -> list[bytes]:
        out, at, i = [], 0, 0
        while at < len(whole):
            out.append(whole[at:at + cuts[i % len(cuts)]])
            at += cuts[i % len(cuts)]
            i += 1
        return out

    sealer = Sealer(_cipher(), len(data))
    stored = b"".join(sealer.feed(piece) for piece in pieces(data)) + sealer.finish()
    assert stored == _seal(data)
    opener = Opener(_cipher(), segment_count(len(data), SMALL))
    assert b"".join(opener.feed(piece) for piece in pieces(stored)) + opener.finish() == data
