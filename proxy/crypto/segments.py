"""The stored form of an encrypted object: segments sealed with AES-256-GCM, after Tink's streaming AEAD.

This follows Tink's AES-GCM-HKDF streaming AEAD (``AesGcmHkdfStreaming``),
so its properties are Tink's, not ours to argue for:

* the object's data key (fresh per object, 32 bytes) is never used directly:
  the segment key is ``HKDF-SHA256(ikm=data key, salt=salt, info=binding)``,
  with a random 32-byte salt, and ``binding`` the canonical encoding of what
  the object is (`proxy.crypto.envelope.segment_info`: format version,
  dataset, region, bucket, object key, segment size, plaintext length), so
  the same ciphertext under another name, dataset or region derives another
  key and fails to open;
* the plaintext is cut into segments of ``segment_size`` bytes (the last one
  shorter; an empty object is one empty segment), each sealed on its own:
  ``AES-256-GCM(segment key, nonce, segment)`` with no associated data and a
  16-byte tag, so a reader verifies each segment before it hands on a byte;
* the 12-byte nonce is ``nonce prefix (7 random bytes) || segment index
  (4 bytes, big-endian) || last flag (1 byte: 1 for the last segment, else
  0)``, so segments cannot be reordered, dropped, or the object truncated at
  a segment boundary without a tag failing. A key derived for one object is
  used for that object only, so nonces never repeat under a key.

Unlike Tink, no header is written into the body: the salt and nonce prefix
travel in the object's metadata with the wrapped data key
(`proxy.crypto.envelope`), so a ranged read fetches only the segments it
needs, and the stored length is a function of the plaintext length alone
(`ciphertext_length`), which lets listings show plaintext sizes. (A multipart
upload's object seals each part so, under a key of its own, after a 52-byte
part header that carries that part's salt and nonce prefix:
`proxy.crypto.parts`.) Everything here is pure: no I/O, bytes in and bytes
out.
"""

from __future__ import annotations

from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.errors import EncryptedObjectInvalid

SEGMENT_SIZE = 64 * 1024   # plaintext bytes per segment (Tink's default ciphertext segment is 1 MiB; see docs)
TAG_SIZE = 16
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
DATA_KEY_SIZE = 32
MAX_SEGMENTS = 2**32      # the index is 4 bytes


def segment_count(plaintext_length: int, segment_size: int = SEGMENT_SIZE) -> int:
    """How many segments a plaintext of this length is cut into (an empty one is one empty segment)."""
    return max(1, -(-plaintext_length // segment_size))


def ciphertext_length(plaintext_length: int, segment_size: int = SEGMENT_SIZE) -> int:
    """The stored length of a plaintext of `plaintext_length` bytes."""
    return plaintext_length + TAG_SIZE * segment_count(plaintext_length, segment_size)


def plaintext_length(stored_length: int, segment_size: int = SEGMENT_SIZE) -> int | None:
    """The plaintext length a stored length stands for, or None if no plaintext has that stored length."""
    if stored_length < TAG_SIZE:
        return None
    count = -(-stored_length // (segment_size + TAG_SIZE))
    length = stored_length - TAG_SIZE * count
    return length if length >= 0 and ciphertext_length(length, segment_size) == stored_length else None


class Span(NamedTuple):
    """The segments that hold a plaintext range, and where they are stored.

    `first`..`last` are segment indexes (inclusive); `stored_start` and
    `stored_end` (inclusive) the bytes of the stored object they occupy;
    `skip` how many plaintext bytes of segment `first` come before the range.
    """

    first: int
    last: int
    stored_start: int
    stored_end: int
    skip: int


def span(start: int, end: int, plaintext_length: int, segment_size: int = SEGMENT_SIZE) -> Span:
    """The stored span of plaintext bytes `start`..`end` (inclusive; 0 <= start <= end < plaintext_length)."""
    if not 0 <= start <= end < plaintext_length:
        raise ValueError(f"range {start}-{end} is not inside a plaintext of {plaintext_length} bytes")
    first, last = start // segment_size, end // segment_size
    stored = segment_size + TAG_SIZE
    stored_end = min((last + 1) * stored, ciphertext_length(plaintext_length, segment_size)) - 1
    return Span(first, last, first * stored, stored_end, start - first * segment_size)


class SegmentCipher:
    """Seals and opens the segments of one object (its segment key derived once)."""

    __slots__ = ("_aead", "_prefix", "segment_size")

    def __init__(self, data_key: bytes, salt: bytes, nonce_prefix: bytes, binding: bytes,
                 segment_size: int = SEGMENT_SIZE) -> None:
        if len(data_key) != DATA_KEY_SIZE or len(salt) != SALT_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise EncryptedObjectInvalid("the object's encryption parameters have the wrong sizes")
        key = HKDF(algorithm=hashes.SHA256(), length=DATA_KEY_SIZE, salt=salt, info=binding).derive(data_key)
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self.segment_size = segment_size

    def _nonce(self, index: int, last: bool) -> bytes:
        if not 0 <= index < MAX_SEGMENTS:
            raise EncryptedObjectInvalid("the object has more segments than the format allows")
        return self._prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")

    def seal(self, index: int, last: bool, plaintext: bytes | bytearray | memoryview) -> bytes:
        # AESGCM reads any buffer: a view of the caller's bytes is sealed without a copy of them.
        return self._aead.encrypt(self._nonce(index, last), plaintext, None)

    def open(self, index: int, last: bool, sealed: bytes | bytearray | memoryview) -> bytes:
        """The segment's plaintext; raises `EncryptedObjectInvalid` if it does not authenticate."""
        try:
            return self._aead.decrypt(self._nonce(index, last), sealed, None)
        except InvalidTag:
            raise EncryptedObjectInvalid(
                f"segment {index} of the stored object does not authenticate: it was changed, truncated, "
                "moved from another object, or sealed under another key; nothing of it was sent"
            ) from None


class Sealer:
    """Encrypts a plaintext of known length as it streams: `feed` pieces, then `finish`.

    Each full segment is handed back sealed as soon as it is complete, except
    the last one, which `finish` seals once the caller has seen the whole
    body (so a check of the whole body can still stop the upload before the
    storage server has all of it).
    """

    __slots__ = ("_buffer", "_cipher", "_count", "_index", "_length", "_received")

    def __init__(self, cipher: SegmentCipher, length: int) -> None:
        self._cipher = cipher
        self._length = length
        self._count = segment_count(length, cipher.segment_size)
        self._buffer = bytearray()
        self._index = 0
        self._received = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """The sealed segments `data` completes, joined (see `feed_segments`)."""
        return b"".join(self.feed_segments(data))

    def feed_segments(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The segments `data` completes, each sealed and apart: joining them would copy every byte once more
        (a join's result over 128 KiB is fresh memory from the system, a page fault per 4 KiB)."""
        self._received += len(data)
        if self._received > self._length:
            raise ValueError("the body is longer than its declared length")
        size = self._cipher.segment_size
        view = memoryview(data)
        taken = 0
        out: list[bytes] = []
        if self._buffer:
            # Complete the segment begun by earlier pieces first.
            taken = min(size - len(self._buffer), len(view))
            self._buffer += view[:taken]
            if len(self._buffer) == size and self._index < self._count - 1:
                out.append(self._cipher.seal(self._index, False, self._buffer))
                self._buffer = bytearray()
                self._index += 1
        # Whole segments straight from the piece, without copying them first; the last segment (even when
        # full) waits for `finish`.
        while not self._buffer and len(view) - taken >= size and self._index < self._count - 1:
            out.append(self._cipher.seal(self._index, False, view[taken:taken + size]))
            taken += size
            self._index += 1
        self._buffer += view[taken:]
        return out

    def finish(self) -> bytes:
        if self._received != self._length:
            raise ValueError(f"the body ended after {self._received} of its {self._length} bytes")
        sealed = self._cipher.seal(self._index, True, self._buffer)
        self._buffer = bytearray()
        return sealed


class Opener:
    """Decrypts stored segments `first`..`last` of an object of `count` segments as they stream.

    `feed` takes stored bytes starting at segment `first`'s first byte and
    hands back plaintext only of segments that authenticated; `finish`
    raises unless every segment asked for arrived whole.
    """

    __slots__ = ("_buffer", "_cipher", "_count", "_index", "_last")

    def __init__(self, cipher: SegmentCipher, count: int, first: int = 0, last: int | None = None) -> None:
        self._cipher = cipher
        self._count = count
        self._index = first
        self._last = count - 1 if last is None else last
        self._buffer = bytearray()

    def _stored_size(self, index: int) -> int | None:
        """Stored bytes of segment `index`, or None for the last one (whatever remains)."""
        return None if index == self._count - 1 else self._cipher.segment_size + TAG_SIZE

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """The verified plaintext of the segments `data` completes, joined (see `feed_segments`)."""
        return b"".join(self.feed_segments(data))

    def feed_segments(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The verified plaintext of each segment `data` completes, apart (no copy to join them)."""
        view = memoryview(data)
        taken = 0
        out: list[bytes] = []
        size = self._stored_size(self._index) if self._index <= self._last else None
        if self._buffer and size is not None:
            # Complete the segment begun by earlier pieces first.
            taken = min(size - len(self._buffer), len(view))
            self._buffer += view[:taken]
            if len(self._buffer) == size:
                out.append(self._cipher.open(self._index, False, self._buffer))
                self._buffer = bytearray()
                self._index += 1
        # Whole segments straight from the piece, without copying them first.
        while not self._buffer and self._index <= self._last:
            size = self._stored_size(self._index)
            if size is None or len(view) - taken < size:
                break
            out.append(self._cipher.open(self._index, False, view[taken:taken + size]))
            taken += size
            self._index += 1
        self._buffer += view[taken:]
        if self._index > self._last and self._buffer:
            raise EncryptedObjectInvalid("the stored object is longer than its segments")
        if len(self._buffer) > self._cipher.segment_size + TAG_SIZE:   # only the last segment waits here
            raise EncryptedObjectInvalid("the stored object's last segment is too long")
        return out

    def finish(self) -> bytes:
        """The plaintext of the final segment asked for (the object's last one); raises if any is missing."""
        if self._index > self._last:
            return b""
        if self._index != self._count - 1 or self._index != self._last:
            raise EncryptedObjectInvalid(
                "the stored object ended before its last segment: it was truncated; nothing unverified was sent")
        if len(self._buffer) > self._cipher.segment_size + TAG_SIZE:
            raise EncryptedObjectInvalid("the stored object's last segment is too long")
        plain = self._cipher.open(self._index, True, self._buffer)
        self._buffer = bytearray()
        self._index += 1
        return plain
