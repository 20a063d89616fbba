"""`proxy.crypto.listing`: a listing's sizes rewritten to the plaintext's, single-PUT and multipart objects alike."""

from __future__ import annotations

import pytest

from proxy.crypto.listing import plaintext_sizes
from proxy.crypto.parts import HEADER_SIZE, part_stored_length
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length

P = 80 * SEGMENT_SIZE


def _listing(size: int, etag: str) -> bytes:
    return (b"<ListBucketResult><Contents><Key>a/b.eml</Key><ETag>%s</ETag><Size>%d</Size></Contents>"
            b"</ListBucketResult>" % (etag.encode(), size))


@pytest.mark.parametrize(
    ("stored", "etag", "size"),
    [
        (ciphertext_length(0), "&quot;d41d8cd98f00b204e9800998ecf8427e&quot;", 0),
        (ciphertext_length(3 * SEGMENT_SIZE + 7), "&#34;0123456789abcdef0123456789abcdef&#34;", 3 * SEGMENT_SIZE + 7),
        # Multipart: one header per part, as many as the ETag counts.
        (part_stored_length(0), "&quot;0123456789abcdef0123456789abcdef-1&quot;", 0),
        (part_stored_length(5), '"0123456789abcdef0123456789abcdef-1"', 5),
        (2 * part_stored_length(P) + part_stored_length(100), "&quot;0123456789abcdef0123456789abcdef-3&quot;",
         2 * P + 100),
        (3 * part_stored_length(P), "&quot;0123456789abcdef0123456789abcdef-3&quot;", 3 * P),
    ],
)
def test_an_encrypted_entry_shows_its_plaintext_size(stored: int, etag: str, size: int) -> None:
    rewritten = plaintext_sizes(_listing(stored, etag), lambda key: True)
    assert b"<Size>%d</Size>" % size in rewritten
    assert b"-bwenc" in rewritten


@pytest.mark.parametrize(
    ("stored", "etag"),
    [
        (10, "&quot;0123456789abcdef0123456789abcdef&quot;"),           # shorter than a tag: plaintext
        (100, "&quot;0123456789abcdef0123456789abcdef-2&quot;"),        # less than two parts' headers and tags
        (part_stored_length(0), "&quot;0123456789abcdef0123456789abcdef-0&quot;"),        # no part at all
        (HEADER_SIZE, "&quot;0123456789abcdef0123456789abcdef-1&quot;"),  # a part header alone
    ],
)
def test_a_size_no_encrypted_object_has_is_left_as_stored(stored: int, etag: str) -> None:
    listing = _listing(stored, etag)
    assert plaintext_sizes(listing, lambda key: True) == listing


def test_an_entry_outside_encrypted_datasets_is_left_as_stored() -> None:
    listing = _listing(part_stored_length(5), "&quot;0123456789abcdef0123456789abcdef-1&quot;")
    assert plaintext_sizes(listing, lambda key: False) == listing
