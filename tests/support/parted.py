"""Multipart uploads' encrypted objects (format 2) made straight on moto, as the proxy's multipart upload makes them.

`seal_upload` seals a plaintext as the proxy seals an upload into the
Dublin mail dataset (an upload key from the dev key file, bound to the
object; each part a 52-byte header and its sealed segments, with a fresh
salt and nonce prefix); `store_parts` stores parts as they are (tests swap,
cut or edit them first); `put_parted` does both. `open_stored` opens what
the storage server holds of such an object, as the format says, without the
proxy. Parts are `PART_SIZE`
(5 MiB, the smallest moto takes for all but the last) unless told otherwise.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from proxy.crypto.bindings import bind_parted, part_info_of
from proxy.crypto.envelope import PartedEnvelope, parse_any
from proxy.crypto.keyfile import KeyFileService
from proxy.crypto.keyservice import Justification
from proxy.crypto.parts import HEADER_SIZE, PartedOpener, PartHeader, fresh_header, layout, read_part_header
from proxy.crypto.plan import ObjectRef
from proxy.crypto.segments import SEGMENT_SIZE, Sealer, SegmentCipher
from tests.support.iam import SignedStore

PART_SIZE = 80 * SEGMENT_SIZE
DATASET, REGION = "dublin-mail", "eu-west-1"


class Sealed(NamedTuple):
    """An upload sealed for one object: its metadata entry and its parts as stored."""

    metadata: str
    parts: list[bytes]


def seal_upload(key_file: Path, bucket: str, key: str, data: bytes, part_size: int = PART_SIZE) -> Sealed:
    """`data` sealed as a multipart upload of s3://`bucket`/`key` (in the Dublin mail dataset), in parts of
    `part_size` bytes."""
    service = KeyFileService(key_file, allow_insecure=True)
    obj = ObjectRef(DATASET, REGION, bucket, key, False)
    envelope = PartedEnvelope(service.kind, service.key_ref, "")
    why = Justification(f"test-{secrets.token_hex(4)}", "IE", obj.dataset, "test")
    made = service.generate(bind_parted(envelope, obj), why)
    envelope = envelope._replace(wrapped=made.wrapped)
    pieces = [data[at:at + part_size] for at in range(0, len(data), part_size)] or [b""]
    parts = []
    for number, piece in enumerate(pieces, 1):
        header = fresh_header(number, len(piece))
        sealer = Sealer(SegmentCipher(made.plaintext, header.salt, header.nonce_prefix,
                                      part_info_of(envelope, obj, number, len(piece))), len(piece))
        parts.append(header.to_bytes() + sealer.feed(piece) + sealer.finish())
    return Sealed(envelope.to_header(), parts)


def store_parts(store: SignedStore, bucket: str, key: str, metadata: str, parts: Sequence[bytes]) -> None:
    """A multipart upload of `parts` (as they are) straight to moto, past the proxy, with the envelope
    `metadata`, a content type and one user metadata entry (folder: inbox)."""
    client = store.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="message/rfc822",
                                            Metadata={"bailiwick-encryption": metadata, "folder": "inbox"})["UploadId"]
    done = [{"PartNumber": number, "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                              PartNumber=number, Body=part)["ETag"]}
            for number, part in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})


def put_parted(store: SignedStore, key_file: Path, bucket: str, key: str, data: bytes) -> Sealed:
    """`data` stored as a parted object at s3://`bucket`/`key`."""
    sealed = seal_upload(key_file, bucket, key, data)
    store_parts(store, bucket, key, sealed.metadata, sealed.parts)
    return sealed


def open_stored(key_file: Path, bucket: str, key: str, held: bytes, metadata: str) -> bytes:
    """The plaintext of the parted object s3://`bucket`/`key` (in the Dublin mail dataset) whose stored bytes
    are `held` and metadata entry `metadata`, opened here with the region's key file."""
    envelope = parse_any(metadata)
    assert isinstance(envelope, PartedEnvelope)
    obj = ObjectRef(DATASET, REGION, bucket, key, False)
    service = KeyFileService(key_file, allow_insecure=True)
    upload_key = service.unwrap(envelope.wrapped, bind_parted(envelope, obj),
                                Justification(f"test-{secrets.token_hex(4)}", "IE", obj.dataset, "test"))

    def cipher_of(header: PartHeader) -> SegmentCipher:
        return SegmentCipher(upload_key, header.salt, header.nonce_prefix,
                             part_info_of(envelope, obj, header.number, header.length))

    first = read_part_header(held[:HEADER_SIZE], 1)
    shape = layout(first, len(held))
    opener = PartedOpener(shape, shape.whole(), first, cipher_of)
    return opener.feed(held[HEADER_SIZE:]) + opener.finish()
