"""Multipart uploads made by the tools, straight on the storage server: start, complete, abort.

`bailiwick rewrap` copies a multipart upload's object onto itself part by
part, and `bailiwick encrypt` writes an object too large for one PUT in
parts (format 2, `proxy.crypto.parts`); both start an upload, send parts,
then complete it, or abort it on any failure so that no parts are left
behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import quote

from multidict import CIMultiDict

from proxy.crypto.tools.store import Storage, StoreError, element_text, failure, object_target, whole_document
from proxy.storage.xmltext import xml_text


async def asked(storage: Storage, method: str, target: str, headers: CIMultiDict[str], where: str,
                body: bytes | AsyncIterator[bytes] | None = None) -> tuple[bytes, CIMultiDict[str]]:
    """The answer's document and headers to a request that must succeed (an error inside a 200 too, as S3
    may send one for a copy or a completion)."""
    data = _once(body) if isinstance(body, bytes) else body
    answer = await storage.request(method, target, headers, data)
    async with answer:
        if answer.status != 200:
            raise await failure(answer, where)
        document = await whole_document(answer, where)
        said = CIMultiDict(answer.headers)
    if b"<Error>" in document:
        raise StoreError(f"{where}: the storage server failed: {document[:300].decode('utf-8', 'replace')}")
    return document, said


def part_target(bucket: str, key: str, upload: str, number: int) -> str:
    return object_target(bucket, key, f"partNumber={number}&uploadId={quote(upload, safe='')}")


async def in_parts(storage: Storage, bucket: str, key: str, headers: CIMultiDict[str],
                   send_parts: Callable[[str], Awaitable[Sequence[str]]],
                   completing: CIMultiDict[str] | None = None) -> None:
    """Start an upload of s3://bucket/key with `headers` (its metadata), have `send_parts(upload id)` send its
    parts 1..n and return their ETags, then complete it (with `completing`'s headers: a condition); abort it
    if anything fails."""
    where = f"s3://{bucket}/{key}"
    document, _ = await asked(storage, "POST", object_target(bucket, key, "uploads"), headers, where)
    upload = element_text(document, "UploadId", f"{where}: the storage server's CreateMultipartUpload answer")
    query = f"uploadId={quote(upload, safe='')}"
    try:
        etags = await send_parts(upload)
        parts = "".join(f"<Part><PartNumber>{number}</PartNumber><ETag>{xml_text(etag)}</ETag></Part>"
                        for number, etag in enumerate(etags, 1))
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        finish = CIMultiDict(completing or {})
        finish["Content-Length"] = str(len(body))
        await asked(storage, "POST", object_target(bucket, key, query), finish, where, body)
    except BaseException:
        # The upload's parts are removed; a failure to remove them does not hide why the upload failed.
        with contextlib.suppress(StoreError):
            aborted = await storage.request("DELETE", object_target(bucket, key, query))
            aborted.release()
        raise


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
