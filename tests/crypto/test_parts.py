"""The parted format (multipart uploads' objects): layout, spans and the streaming opener, pure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.crypto.envelope import (
    Envelope,
    PartedEnvelope,
    binding,
    parse_any,
    parse_header,
    part_info,
    parted_binding,
    segment_info,
)
from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.keyservice import Justification
from proxy.crypto.parts import (
    HEADER_SIZE,
    MAX_PART_LENGTH,
    MAX_PARTS,
    Layout,
    PartedOpener,
    PartHeader,
    completed_length,
    fresh_header,
    layout,
    listed_length,
    part_plaintext_length,
    part_stored_length,
    read_part_header,
)
from proxy.crypto.segments import SEGMENT_SIZE, Sealer, SegmentCipher
from proxy.errors import BadRequest, EncryptedObjectInvalid, KeyReleaseRefused

KEY = bytes(range(32))
ENVELOPE = PartedEnvelope("file", "file:test", "wrapped")
SEG = SEGMENT_SIZE


def _info(number: int, length: int, key: str = "k") -> bytes:
    return part_info(ENVELOPE, dataset="d", region="eu-west-1", bucket="b", key=key, number=number, length=length)


def _cipher(header: PartHeader, key: str = "k", data_key: bytes = KEY) -> SegmentCipher:
    return SegmentCipher(data_key, header.salt, header.nonce_prefix, _info(header.number, header.length, key))


def seal_part(number: int, plain: bytes, key: str = "k", data_key: bytes = KEY) -> bytes:
    header = fresh_header(number, len(plain))
    sealer = Sealer(_cipher(header, key, data_key), len(plain))
    return header.to_bytes() + sealer.feed(plain) + sealer.finish()


def parted(plain: bytes, part_size: int) -> list[bytes]:
    pieces = [plain[at:at + part_size] for at in range(0, len(plain), part_size)] or [b""]
    return [seal_part(number, piece) for number, piece in enumerate(pieces, 1)]


def read(stored: bytes, first: int | None = None, last: int | None = None, *, chunk: int = 7_919) -> bytes:
    """What a reader hands on for plaintext bytes first..last of `stored` (the whole object by default)."""
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    span = where.whole() if first is None or last is None else where.locate(first, last)
    start = where.part_start(span.first_part)
    header = read_part_header(stored[start:start + HEADER_SIZE], span.first_part)
    opener = PartedOpener(where, span, header, _cipher)
    body = stored[span.stored_start:span.stored_end + 1]
    out = [piece for at in range(0, len(body), chunk) for piece in opener.feed_segments(body[at:at + chunk])]
    out.append(opener.finish())
    plain = b"".join(out)
    return plain[span.skip:span.skip + (last - first + 1)] if first is not None and last is not None else plain


@pytest.mark.parametrize(("length", "part_size"), [
    (0, SEG), (1, SEG), (SEG - 1, SEG), (SEG, SEG), (SEG + 1, SEG), (3 * SEG, SEG), (3 * SEG + 5, 2 * SEG),
    (5 * SEG, 2 * SEG), (2 * SEG - 1, 2 * SEG),
])
def test_a_parted_object_reads_back_whole(length: int, part_size: int) -> None:
    plain = os.urandom(length)
    stored = b"".join(parted(plain, part_size))
    assert read(stored) == plain
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    assert where.length == length
    assert listed_length(len(stored), where.parts) == length


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5 * SEG), st.data())
def test_every_range_reads_back_as_the_plaintext_slice(segments: int, length: int, data: st.DataObject) -> None:
    plain = bytes((i * 7 + i // 251) & 0xFF for i in range(length))
    stored = b"".join(parted(plain, segments * SEG))
    first = data.draw(st.integers(0, length - 1))
    last = data.draw(st.integers(first, length - 1))
    assert read(stored, first, last, chunk=data.draw(st.integers(1, 3 * SEG))) == plain[first:last + 1]


GIB = 1024**3
MAX_S3_PART = 5 * GIB   # S3's largest part: every part size a client can send


@st.composite
def written(draw: st.DrawFn) -> tuple[int, int, int]:
    """A layout the proxy completes (part size, part count, last part's size), edges drawn often."""
    parts = draw(st.one_of(st.just(1), st.just(2), st.just(MAX_PARTS), st.integers(1, MAX_PARTS)))
    if parts == 1:
        size = draw(st.one_of(st.sampled_from([0, 1, SEG - 1, SEG, SEG + 1, MAX_S3_PART]),
                              st.integers(0, MAX_S3_PART)))
        return size, 1, size
    size = SEG * draw(st.one_of(st.sampled_from([1, 2, 80, MAX_S3_PART // SEG]), st.integers(1, MAX_S3_PART // SEG)))
    last = draw(st.one_of(st.sampled_from([1, SEG - 1, SEG, SEG + 1, size - 1, size]), st.integers(1, size))
                .filter(lambda n: 1 <= n <= size))
    return size, parts, last


@settings(max_examples=300, deadline=None)
@given(written())
def test_every_layout_written_is_read_back_exactly(shape: tuple[int, int, int]) -> None:
    size, parts, last = shape
    sizes = [part_stored_length(size)] * (parts - 1) + [part_stored_length(last)]
    stored = sum(sizes)
    length = (parts - 1) * size + last
    assert completed_length(sizes) == length                       # what Complete accepts ...
    assert layout(fresh_header(1, size), stored) == Layout(size, parts, last, stored)   # ... a read recovers
    assert listed_length(stored, parts) == length                  # ... and a listing shows


@settings(max_examples=300, deadline=None)
@given(written(), st.integers(-100, 100), st.booleans())
def test_a_stored_length_reads_as_a_layout_only_if_one_was_written_so(shape: tuple[int, int, int], off: int,
                                                                     anywhere: bool) -> None:
    """Lengths near (and far from) written ones: refused, or the one layout of exactly that length."""
    size, parts, last = shape
    stored = (parts - 1) * part_stored_length(size) + part_stored_length(last) + off
    if anywhere:
        stored = (stored * 7919) % (MAX_PARTS * part_stored_length(MAX_S3_PART))
    try:
        found = layout(fresh_header(1, size), stored)
    except EncryptedObjectInvalid:
        return
    sizes = [part_stored_length(found.part_size)] * (found.parts - 1) + [part_stored_length(found.last_size)]
    assert found.part_size == size
    assert sum(sizes) == stored == found.stored_length
    assert completed_length(sizes) == found.length == listed_length(stored, found.parts)


def test_more_parts_than_s3_holds_is_no_layout() -> None:
    stored = (MAX_PARTS + 1) * part_stored_length(SEG)
    with pytest.raises(EncryptedObjectInvalid, match="stored length"):
        layout(fresh_header(1, SEG), stored)
    with pytest.raises(BadRequest, match="1 to"):
        completed_length([part_stored_length(SEG)] * (MAX_PARTS + 1))
    assert listed_length(stored + (MAX_PARTS + 1) * HEADER_SIZE, MAX_PARTS + 1) is None


@pytest.mark.parametrize(("first", "last"), [
    (0, 0), (SEG - 1, SEG), (2 * SEG - 1, 2 * SEG), (2 * SEG, 4 * SEG - 1), (2 * SEG + 3, 2 * SEG + 3),
    (4 * SEG - 1, 4 * SEG + 9), (0, 4 * SEG + 9),
])
def test_ranges_across_part_and_segment_edges(first: int, last: int) -> None:
    plain = os.urandom(4 * SEG + 10)                 # parts of 2 segments: 2, 2 and 10 bytes
    stored = b"".join(parted(plain, 2 * SEG))
    assert read(stored, first, last) == plain[first:last + 1]


def _tampered(how: str) -> bytes:
    parts = parted(os.urandom(5 * SEG + 100), 2 * SEG)
    if how == "flipped":
        part = bytearray(parts[1])
        part[HEADER_SIZE + 10] ^= 1
        parts[1] = bytes(part)
    elif how == "swapped":
        parts[0], parts[1] = parts[1], parts[0]
    elif how == "renumbered":
        # Part 2's bytes under part 1's header number: the number is bound into its key.
        header = read_part_header(parts[1][:HEADER_SIZE], 2)
        parts[1] = header._replace(number=1).to_bytes() + parts[1][HEADER_SIZE:]
        parts[0], parts[1] = parts[1], parts[0]
    elif how == "other upload":
        other = os.urandom(2 * SEG)
        parts[1] = seal_part(2, other, data_key=bytes(32))
    elif how == "other object":
        parts[1] = seal_part(2, os.urandom(2 * SEG), key="another")
    elif how == "cut in the last part":
        parts[2] = parts[2][:-1]
    elif how == "cut in a middle part":
        parts[1] = parts[1][: HEADER_SIZE + SEG + 16]
    elif how == "length edited":
        header = read_part_header(parts[2][:HEADER_SIZE], 3)
        parts[2] = header._replace(length=header.length - 1).to_bytes() + parts[2][HEADER_SIZE:]
    return b"".join(parts)


@pytest.mark.parametrize("how", ["flipped", "swapped", "renumbered", "other upload", "other object",
                                 "cut in the last part", "cut in a middle part", "length edited"])
def test_a_tampered_parted_object_does_not_open(how: str) -> None:
    with pytest.raises(EncryptedObjectInvalid):
        read(_tampered(how))


def test_bytes_past_the_last_part_are_refused() -> None:
    # An opener handed more than its span (a storage answer longer than asked) refuses the surplus.
    stored = b"".join(parted(os.urandom(3 * SEG + 5), 2 * SEG))
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    opener = PartedOpener(where, where.whole(), read_part_header(stored[:HEADER_SIZE], 1), _cipher)
    opener.feed_segments(stored[HEADER_SIZE:])
    with pytest.raises(EncryptedObjectInvalid, match="longer than its parts"):
        opener.feed_segments(b"\x00")


@pytest.mark.parametrize("short", [1, 16, 2 * SEG + 16 + HEADER_SIZE])
def test_a_span_that_ends_early_does_not_finish(short: int) -> None:
    # The stored bytes stop before the span's end (a storage answer cut short, at any point: inside the last
    # segment, at a segment's edge, or before the last part's header): finishing is refused.
    stored = b"".join(parted(os.urandom(4 * SEG + 5), 2 * SEG))
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    opener = PartedOpener(where, where.whole(), read_part_header(stored[:HEADER_SIZE], 1), _cipher)
    opener.feed_segments(stored[HEADER_SIZE:-short])
    with pytest.raises(EncryptedObjectInvalid, match="truncated"):
        opener.finish()


def test_an_opener_is_not_started_on_another_parts_header() -> None:
    stored = b"".join(parted(os.urandom(4 * SEG + 5), 2 * SEG))
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    span = where.locate(2 * SEG + 1, 2 * SEG + 2)   # in part 2
    with pytest.raises(EncryptedObjectInvalid, match="part 1 is stored where part 2 belongs"):
        PartedOpener(where, span, read_part_header(stored[:HEADER_SIZE], 1), _cipher)


def test_only_verified_plaintext_is_handed_on_before_a_failing_segment() -> None:
    plain = os.urandom(4 * SEG)
    parts = parted(plain, 2 * SEG)
    part = bytearray(parts[1])
    part[HEADER_SIZE + SEG + 16 + 3] ^= 1          # the second segment of part 2
    stored = parts[0] + bytes(part)
    where = layout(read_part_header(stored[:HEADER_SIZE], 1), len(stored))
    opener = PartedOpener(where, where.whole(), read_part_header(stored[:HEADER_SIZE], 1), _cipher)
    handed: list[bytes] = []
    body = stored[HEADER_SIZE:]

    def feed_all() -> None:
        for at in range(0, len(body), 1000):
            handed.extend(opener.feed_segments(body[at:at + 1000]))

    with pytest.raises(EncryptedObjectInvalid, match="segment 1"):
        feed_all()
    assert b"".join(handed) == plain[:3 * SEG]       # part 1 and part 2's first segment, nothing after


@pytest.mark.parametrize(("stored", "why"), [
    (part_stored_length(2 * SEG) + 10, "not a length any layout gives"),
    (2 * part_stored_length(2 * SEG) + HEADER_SIZE + 16, "an empty last part"),
    (part_stored_length(2 * SEG) - 1, "shorter than part 1"),
    (10_001 * part_stored_length(2 * SEG), "more parts than an upload holds"),
])
def test_a_stored_length_no_layout_gives_is_refused(stored: int, why: str) -> None:
    header = fresh_header(1, 2 * SEG)
    with pytest.raises(EncryptedObjectInvalid, match="stored length"):
        layout(header, stored)


def test_a_first_part_that_is_not_segment_aligned_is_the_only_part() -> None:
    header = fresh_header(1, SEG + 1)
    assert layout(header, part_stored_length(SEG + 1)) == Layout(SEG + 1, 1, SEG + 1, part_stored_length(SEG + 1))
    with pytest.raises(EncryptedObjectInvalid):
        layout(header, 2 * part_stored_length(SEG + 1))


@pytest.mark.parametrize(("sizes", "length"), [
    ([0], 0), ([5], 5), ([SEG + 3], SEG + 3), ([2 * SEG, 2 * SEG, 1], 4 * SEG + 1), ([SEG, SEG], 2 * SEG),
    ([80 * SEG, 80 * SEG, 80 * SEG], 240 * SEG),
])
def test_completed_length_of_parts_cut_as_the_format_requires(sizes: list[int], length: int) -> None:
    assert completed_length([part_stored_length(size) for size in sizes]) == length


@pytest.mark.parametrize(("sizes", "reason"), [
    ([], "1 to"),
    ([SEG] * 10_001, "1 to"),
    ([SEG + 1, 5], "not a multiple of 64 KiB"),
    ([2 * SEG, SEG, 5], "part 2 is"),
    ([SEG, 2 * SEG], "the last part is"),
    ([SEG, 0], "the last part is"),
])
def test_completed_length_refuses_other_cuts(sizes: list[int], reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        completed_length([part_stored_length(size) for size in sizes])


def test_completed_length_refuses_a_part_the_proxy_did_not_seal() -> None:
    with pytest.raises(BadRequest, match="was not sealed by this proxy") as refused:
        completed_length([part_stored_length(SEG), 10])
    assert refused.value.code == "InvalidPart"


@pytest.mark.parametrize("parts", [0, -1, 10_001])
def test_a_listing_with_a_part_count_no_upload_has_shows_no_plaintext_length(parts: int) -> None:
    assert listed_length(10_001 * part_stored_length(SEG), parts) is None


@pytest.mark.parametrize("length", [0, 1, 15, SEG, SEG + 1, 7 * SEG - 3])
def test_part_lengths_invert(length: int) -> None:
    assert part_plaintext_length(part_stored_length(length)) == length


@pytest.mark.parametrize(("raw", "number", "match"), [
    (b"\x02" * 10, 1, "cut short"),
    (b"\x01" + bytes(51), 1, "part header"),
    (PartHeader(3, 1, bytes(32), bytes(7)).to_bytes(), 2, "part 3 is stored where part 2"),
    (PartHeader(1, MAX_PART_LENGTH + 1, bytes(32), bytes(7)).to_bytes(), 1, "a length the format does not hold"),
])
def test_read_part_header_refuses(raw: bytes, number: int, match: str) -> None:
    with pytest.raises(EncryptedObjectInvalid, match=match):
        read_part_header(raw, number)


def test_fresh_headers_never_repeat_a_salt_or_nonce_prefix() -> None:
    headers = [fresh_header(1, 10) for _ in range(200)]
    assert len({header.salt for header in headers}) == len({header.nonce_prefix for header in headers}) == 200
    assert len(headers[0].to_bytes()) == HEADER_SIZE == 52


# ---- the two formats are never taken for each other ------------------------------------------------------------

NAMES = {"dataset": "d", "region": "eu-west-1", "bucket": "b", "key": "k"}
SINGLE = Envelope(0, bytes(32), bytes(7), "file", "file:test", "wrapped")


def test_no_binding_of_one_format_starts_as_one_of_the_other() -> None:
    made = [binding(SINGLE, **NAMES), segment_info(SINGLE, **NAMES), parted_binding(ENVELOPE, **NAMES),
            part_info(ENVELOPE, **NAMES, number=1, length=0)]
    assert not [(a, b) for a in made for b in made if a is not b and b.startswith(a)]


@pytest.mark.parametrize("entry", [
    "v=2;seg=65536;len=0;salt=" + "A" * 43 + ";np=AAAAAAAAAA;ks=file;ref=file:t;wk=w",   # v=2 with v=1's fields
    "v=1;seg=65536;ks=file;ref=file:t;wk=w",                                              # v=1 with v=2's
    "v=3;seg=65536;ks=file;ref=file:t;wk=w",
])
def test_a_version_with_the_other_formats_fields_is_refused(entry: str) -> None:
    with pytest.raises(EncryptedObjectInvalid, match="format version"):
        parse_any(entry)


def test_single_put_readers_refuse_a_multipart_envelope() -> None:
    with pytest.raises(EncryptedObjectInvalid, match="format version 2"):
        parse_header(ENVELOPE.to_header())


def test_a_data_key_of_one_format_is_not_released_for_the_other(tmp_path: Path) -> None:
    # A v=1 entry put on a v=2 object (or the reverse) names the same wrapped key: its context is the other
    # format's, so the key service releases nothing.
    write_key_file(tmp_path / "k")
    service = KeyFileService(tmp_path / "k", allow_insecure=True)
    why = Justification("t", "IE", "d", "test")
    single, parted_ = SINGLE._replace(key_ref=service.key_ref), ENVELOPE._replace(key_ref=service.key_ref)
    for made_for, read_as in ((binding(single, **NAMES), parted_binding(parted_, **NAMES)),
                              (parted_binding(parted_, **NAMES), binding(single, **NAMES))):
        wrapped = service.generate(made_for, why).wrapped
        assert len(service.unwrap(wrapped, made_for, why)) == 32
        with pytest.raises(KeyReleaseRefused):
            service.unwrap(wrapped, read_as, why)
