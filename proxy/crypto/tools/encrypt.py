"""`bailiwick encrypt`: a dataset's plaintext objects encrypted in place, as the proxy would have stored them.

For each object listed under ``s3://BUCKET[/PREFIX]``:

    HEAD -> (already encrypted, or not this region's encrypted dataset: left) ->
    GET (If-Match: the ETag seen) -> seal as it streams -> PUT to the same key (If-Match: the same ETag)

The object is stored exactly as a PutObject through the proxy would store it
(`proxy.crypto.stage`): a fresh data key from the region's key service bound
to the object's dataset, region, bucket and key, the body sealed segment by
segment, the envelope in its metadata. Its Content-Type, Content-Encoding,
Content-Disposition, Content-Language, Cache-Control, Expires, storage class,
server-side encryption settings, website redirect, every ``x-amz-meta-*``
entry and its tags are sent again with it (its ACL, Object Lock retention and,
in a versioned bucket, its earlier versions are not: see the docs).

Guard against lost updates: both the GET and the PUT carry ``If-Match`` with
the ETag the HEAD saw, so an object written meanwhile by someone else is not
read stale nor overwritten (the storage server answers 412 and the object is
reported as changed, to be done by a later run). Conditional writes need a
storage server that supports them (AWS S3 since 2024, MinIO, moto).

An object whose ciphertext would be larger than one PUT may store (5 GiB)
is written as a multipart upload's object is (format 2,
`proxy.crypto.parts`): an upload key in its metadata, then its plaintext
cut into parts of `PART_BYTES` (more for an object too large for 10,000 of
them), each sealed after its own header and sent as it is read, and the
upload completed with ``If-Match`` (or aborted on any failure).

Memory is flat in object size: the body streams from the GET into the PUT
(or the parts) one segment at a time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.crypto.bindings import bind, bind_parted, part_info_of, same_key, segments_of
from proxy.crypto.envelope import METADATA_HEADER, Envelope, PartedEnvelope
from proxy.crypto.parts import MAX_PARTS, fresh_header, part_stored_length
from proxy.crypto.plan import ObjectRef
from proxy.crypto.segments import (
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    SEGMENT_SIZE,
    Sealer,
    SegmentCipher,
    ciphertext_length,
)
from proxy.crypto.tools.batch import Outcome, run_batch
from proxy.crypto.tools.store import Storage, StoreError, failure, object_target, streamed
from proxy.crypto.tools.toolbox import Located, Toolbox
from proxy.crypto.tools.uploading import asked, in_parts, part_target
from proxy.policy.model import Encryption

# What describes an object besides its body and user metadata, sent again when it is rewritten.
KEPT_HEADERS = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control",
                "Expires", "x-amz-storage-class", "x-amz-website-redirect-location", "x-amz-server-side-encryption",
                "x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-bucket-key-enabled")
_KEPT_LOWER = frozenset(name.lower() for name in KEPT_HEADERS)
MAX_PUT_BYTES = 5 * 1024**3   # S3's largest single PutObject (and CopyObject)
PART_BYTES = 64 * 1024**2     # the plaintext of each part of an object written in parts (a multiple of 64 KiB)


def kept_headers(head: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The object's content headers and user metadata, as a write must send them to keep them."""
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in head.items():
        if name.lower().startswith("x-amz-meta-") or name.lower() in _KEPT_LOWER:
            kept.add(name, value)
    return kept


def scope(box: Toolbox, located: Located, verb: str) -> str | None:
    """Why an object is not this batch's to touch (None: it is): only this region's encrypted datasets are."""
    obj = located.obj
    if obj is None:
        return "in no dataset of the policy"
    if located.encryption is Encryption.NONE:
        return f"dataset {obj.dataset!r} is not encrypted"
    if not located.ours:
        return f"dataset {obj.dataset!r} is of region {obj.region}, not this proxy's ({box.config.region}): " \
               f"{verb} it with that region's proxy configuration"
    return None


async def encrypt_objects(box: Toolbox, storage: Storage, bucket: str, prefix: str, *, dry_run: bool) -> int:
    """Encrypt every plaintext object under the prefix that is this region's to encrypt; 0 when all are done."""
    return await run_batch(box, storage, bucket, prefix, "encrypt", dry_run,
                           lambda bucket, key: _encrypt_one(box, storage, bucket, key, dry_run))


async def _encrypt_one(box: Toolbox, storage: Storage, bucket: str, key: str, dry_run: bool) -> tuple[Outcome, str]:
    located = box.locate(bucket, key)
    outside = scope(box, located, "encrypt")
    if outside is not None or located.obj is None:
        return Outcome.SKIPPED, outside or ""
    head = await storage.head(bucket, key)
    if METADATA_HEADER in head:
        return Outcome.DONE_BEFORE, ""
    etag = head.get("ETag")
    length = head.get("Content-Length", "")
    if not etag or not length.isdigit():
        raise StoreError(f"s3://{bucket}/{key}: the storage server's HEAD has no ETag or Content-Length")
    plaintext = int(length)
    if dry_run:
        return Outcome.WOULD_ENCRYPT, ""
    obj = located.obj
    if ciphertext_length(plaintext) > MAX_PUT_BYTES:
        await _encrypt_in_parts(box, storage, obj, head, etag, plaintext)
        return Outcome.ENCRYPTED, "in parts"
    service = box.service
    envelope = Envelope(plaintext, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE), service.kind,
                        service.key_ref, "")
    context = bind(envelope, obj)
    why = box.justification("encrypt", obj)
    data_key = await box.call(lambda: service.generate(context, why))
    same_key(service, envelope)
    envelope = envelope._replace(wrapped=data_key.wrapped)
    sealer = Sealer(SegmentCipher(data_key.plaintext, envelope.salt, envelope.nonce_prefix,
                                  segments_of(envelope, obj)), plaintext)
    where = f"s3://{bucket}/{key}"
    async with _rewriting(storage, head, bucket, key, etag, plaintext, envelope.to_header()) as (body, headers):
        headers["Content-Length"] = str(ciphertext_length(plaintext))
        headers["If-Match"] = etag
        written = await storage.request("PUT", object_target(bucket, key), headers, _sealed(body, sealer, where))
        async with written:
            if written.status != 200:
                raise await failure(written, where)
    return Outcome.ENCRYPTED, ""


@asynccontextmanager
async def _rewriting(storage: Storage, head: CIMultiDictProxy[str], bucket: str, key: str, etag: str,
                     plaintext: int, entry: str) -> AsyncIterator[tuple[AsyncIterator[bytes], CIMultiDict[str]]]:
    """The object's plaintext as it streams (read with If-Match: the ETag its HEAD saw), and the headers its
    rewrite sends: its content headers, user metadata and tags kept, and the envelope `entry`."""
    where = f"s3://{bucket}/{key}"
    answer = await storage.request("GET", object_target(bucket, key), CIMultiDict({"If-Match": etag}))
    async with answer:
        if answer.status != 200:
            raise await failure(answer, where)
        if answer.content_length != plaintext:
            raise StoreError(f"{where}: the storage server's GET is {answer.content_length} bytes, its HEAD said "
                             f"{plaintext}")
        headers = kept_headers(head)
        if head.get("x-amz-tagging-count", "0") != "0":
            headers["x-amz-tagging"] = await storage.tagging(bucket, key)
        headers[METADATA_HEADER] = entry
        yield streamed(answer, where), headers


async def _sealed(pieces: AsyncIterator[bytes], sealer: Sealer, where: str) -> AsyncIterator[bytes]:
    """The GET's pieces sealed; a body of another length than the HEAD's stops the PUT short (nothing stored)."""
    try:
        async for piece in pieces:
            sealed = sealer.feed(piece)
            if sealed:
                yield sealed
        tail = sealer.finish()
    except ValueError as exc:
        raise StoreError(f"{where}: the storage server's answer is not the length its HEAD said: {exc}") from None
    yield tail


def part_size(length: int) -> int:
    """The plaintext bytes of each part of an object of `length` bytes written in parts: `PART_BYTES`, or
    the least multiple of the segment size that needs no more than S3's 10,000 parts."""
    least = -(-length // MAX_PARTS)
    return max(PART_BYTES, -(-least // SEGMENT_SIZE) * SEGMENT_SIZE)


async def _encrypt_in_parts(box: Toolbox, storage: Storage, obj: ObjectRef, head: CIMultiDictProxy[str],
                            etag: str, plaintext: int) -> None:
    """The object sealed as a multipart upload's object: the GET's body cut into parts as it streams."""
    bucket, key = obj.bucket, obj.key
    where = f"s3://{bucket}/{key}"
    service = box.service
    envelope = PartedEnvelope(service.kind, service.key_ref, "")
    context = bind_parted(envelope, obj)
    why = box.justification("encrypt", obj)
    upload_key = await box.call(lambda: service.generate(context, why))
    same_key(service, envelope)
    envelope = envelope._replace(wrapped=upload_key.wrapped)
    size = part_size(plaintext)
    lengths = [min(size, plaintext - start) for start in range(0, plaintext, size)]
    async with _rewriting(storage, head, bucket, key, etag, plaintext, envelope.to_header()) as (read, headers):
        body = _Cutter(read, where)

        async def send_parts(upload: str) -> list[str]:
            etags = []
            for number, length in enumerate(lengths, 1):
                header = fresh_header(number, length)
                cipher = SegmentCipher(upload_key.plaintext, header.salt, header.nonce_prefix,
                                       part_info_of(envelope, obj, number, length))
                sent = CIMultiDict({"Content-Length": str(part_stored_length(length))})
                _, said = await asked(storage, "PUT", part_target(bucket, key, upload, number), sent, where,
                                      _part(header.to_bytes(), body.take(length), Sealer(cipher, length), where))
                if "ETag" not in said:
                    raise StoreError(f"{where}: the storage server's answer to part {number} has no ETag")
                etags.append(said["ETag"])
            await body.ended()
            return etags

        await in_parts(storage, bucket, key, headers, send_parts, CIMultiDict({"If-Match": etag}))


async def _part(header: bytes, pieces: AsyncIterator[bytes], sealer: Sealer, where: str) -> AsyncIterator[bytes]:
    yield header
    async for sealed in _sealed(pieces, sealer, where):
        yield sealed


class _Cutter:
    """One GET's body handed on as consecutive parts of given lengths."""

    def __init__(self, pieces: AsyncIterator[bytes], where: str) -> None:
        self._pieces = pieces
        self._left = b""
        self._where = where

    async def take(self, length: int) -> AsyncIterator[bytes]:
        while length:
            if not self._left:
                self._left = await anext(self._pieces, b"")
                if not self._left:
                    return   # shorter than its HEAD said: the part's sealer refuses it
            piece, self._left = self._left[:length], self._left[length:]
            length -= len(piece)
            yield piece

    async def ended(self) -> None:
        if self._left or await anext(self._pieces, b""):
            raise StoreError(f"{self._where}: the storage server's answer is longer than its HEAD said")
