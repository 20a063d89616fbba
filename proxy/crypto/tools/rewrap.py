"""`bailiwick rewrap`: every encrypted object's data key wrapped again under the key's latest version.

After the region's key-encryption key is rotated (a new version of the
Transit key), objects written before still carry data keys wrapped under
older versions, which stay readable as long as those versions are kept.
Rewrapping moves each one to the latest version, so the old versions can be
retired (Transit's ``min_decryption_version``), without rewriting any body:

    HEAD -> envelope -> key service rewrap (same data key, same binding) ->
    CopyObject onto itself (x-amz-metadata-directive: REPLACE, new envelope)

A multipart upload's object (format 2) is copied onto itself part by part
instead (CreateMultipartUpload with the new envelope, UploadPartCopy of each
stored part, CompleteMultipartUpload): a CopyObject would make it one part,
and its ETag would no longer say how many parts listings must count, nor
could it copy more than 5 GiB.

Only the envelope's ``wk`` field changes; the body stays byte for byte (a
single PUT's ETag too), and every other metadata entry, content header and
tag is sent again unchanged. The copy carries ``x-amz-copy-source-if-match`` with the
ETag the HEAD saw, so an object rewritten meanwhile is not given a stale
envelope (storage servers that ignore the header, such as moto, leave that
window open). An envelope wrapped under the latest version already (Transit:
``vault:vN:``, learnt from the key service's first answer) is left; key
services without versions (PKCS#11, key file) rewrap every object.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.crypto.bindings import bind, bind_parted
from proxy.crypto.envelope import METADATA_HEADER, Envelope, PartedEnvelope, parse_any
from proxy.crypto.parts import HEADER_SIZE, layout, part_stored_length, read_part_header
from proxy.crypto.tools.batch import Outcome, run_batch
from proxy.crypto.tools.encrypt import MAX_PUT_BYTES, kept_headers, scope
from proxy.crypto.tools.store import Storage, StoreError, copy_source, element_text, failure, object_target
from proxy.crypto.tools.toolbox import Toolbox
from proxy.crypto.tools.uploading import asked, in_parts, part_target

_VERSION = re.compile(r"vault:v([0-9]{1,9}):")


def key_version(wrapped: str) -> int | None:
    """The key version a Transit-wrapped key names (``vault:v3:...`` -> 3); None for other kinds."""
    match = _VERSION.match(wrapped)
    return int(match[1]) if match else None


class _Latest:
    """The latest key version seen in the key service's answers (None until one is seen)."""

    def __init__(self) -> None:
        self.version: int | None = None

    def saw(self, version: int | None) -> None:
        if version is not None and (self.version is None or version > self.version):
            self.version = version


async def rewrap_objects(box: Toolbox, storage: Storage, bucket: str, prefix: str, *, dry_run: bool) -> int:
    """Rewrap every encrypted object under the prefix of this region's datasets; 0 when all are done."""
    latest = _Latest()
    return await run_batch(box, storage, bucket, prefix, "rewrap", dry_run,
                           lambda bucket, key: _rewrap_one(box, storage, bucket, key, latest, dry_run))


async def _rewrap_one(box: Toolbox, storage: Storage, bucket: str, key: str, latest: _Latest,
                      dry_run: bool) -> tuple[Outcome, str]:
    located = box.locate(bucket, key)
    outside = scope(box, located, "rewrap")
    if outside is not None or located.obj is None:
        return Outcome.SKIPPED, outside or ""
    where = f"s3://{bucket}/{key}"
    head = await storage.head(bucket, key)
    value = head.get(METADATA_HEADER)
    if value is None:
        return Outcome.SKIPPED, "not encrypted (encrypt it first)"
    envelope = parse_any(value)
    if envelope.key_ref != box.service.key_ref:
        return Outcome.FAILED, (f"wrapped under {envelope.key_ref}, not this region's key ({box.service.key_ref}): "
                                "this key service cannot rewrap it")
    version = key_version(envelope.wrapped)
    if version is not None and latest.version is not None:
        if version >= latest.version:
            return Outcome.DONE_BEFORE, f"key version {version}"
        if dry_run:
            return Outcome.WOULD_REWRAP, f"key version {version} -> {latest.version}"
    elif dry_run and version is None:
        return Outcome.WOULD_REWRAP, ""
    etag = head.get("ETag")
    stored = head.get("Content-Length", "")
    if not etag or not stored.isdigit():
        raise StoreError(f"{where}: the storage server's HEAD has no ETag or Content-Length")
    parted = isinstance(envelope, PartedEnvelope)
    if not parted and int(stored) > MAX_PUT_BYTES:
        return Outcome.FAILED, f"{stored} bytes is more than one CopyObject may copy ({MAX_PUT_BYTES})"
    # Also in a dry run while the latest version is not known: the key service's answer tells it, and a rewrap
    # changes nothing until the new envelope is written.
    context = bind(envelope, located.obj) if isinstance(envelope, Envelope) else bind_parted(envelope, located.obj)
    wrapped = await box.call(lambda: box.service.rewrap(envelope.wrapped, context))
    new_version = key_version(wrapped)
    latest.saw(new_version)
    if version is not None and new_version is not None and new_version <= version:
        return Outcome.DONE_BEFORE, f"key version {version}"
    if dry_run:
        return Outcome.WOULD_REWRAP, f"key version {version} -> {new_version}"
    headers = kept_headers(head)
    headers[METADATA_HEADER] = envelope._replace(wrapped=wrapped).to_header()
    if parted:
        await _copy_parts(storage, bucket, key, head, headers, etag, int(stored))
        return Outcome.REWRAPPED, "" if new_version is None else f"key version {version} -> {new_version}"
    headers["x-amz-copy-source"] = copy_source(bucket, key)
    headers["x-amz-copy-source-if-match"] = etag
    headers["x-amz-metadata-directive"] = "REPLACE"
    # A CopyObject can fail after its 200 has begun: `asked` reads the whole answer for an error.
    await asked(storage, "PUT", object_target(bucket, key), CIMultiDict(headers), where)
    return Outcome.REWRAPPED, "" if new_version is None else f"key version {version} -> {new_version}"


async def _copy_parts(storage: Storage, bucket: str, key: str, head: CIMultiDictProxy[str],
                      headers: CIMultiDict[str], etag: str, stored: int) -> None:
    """A multipart upload's object copied onto itself part by part (UploadPartCopy), with `headers` (the new
    envelope): its parts, their bytes, and so its ``<hex>-<parts>`` ETag's part count (what listings read its
    size from) stay as they were. A CopyObject would make it one part."""
    where = f"s3://{bucket}/{key}"
    answer = await storage.request("GET", object_target(bucket, key),
                                   CIMultiDict({"Range": f"bytes=0-{HEADER_SIZE - 1}", "If-Match": etag}))
    async with answer:
        if answer.status != 206:
            raise await failure(answer, where)
        raw = b""
        # A read returns what has arrived: the header may come in more than one piece (one byte more is
        # read, so that an answer longer than a header is refused as one).
        while len(raw) <= HEADER_SIZE and (piece := await answer.content.read(HEADER_SIZE + 1 - len(raw))):
            raw += piece
        shape = layout(read_part_header(raw, 1), stored)
    if head.get("x-amz-tagging-count", "0") != "0":
        headers["x-amz-tagging"] = await storage.tagging(bucket, key)

    async def copy_parts(upload: str) -> list[str]:
        etags = []
        for number in range(1, shape.parts + 1):
            start = shape.part_start(number)
            end = start + part_stored_length(shape.part_length(number)) - 1
            copied, _ = await asked(storage, "PUT", part_target(bucket, key, upload, number), CIMultiDict({
                "x-amz-copy-source": copy_source(bucket, key), "x-amz-copy-source-if-match": etag,
                "x-amz-copy-source-range": f"bytes={start}-{end}"}), where)
            etags.append(element_text(copied, "ETag", f"{where}: the storage server's UploadPartCopy answer"))
        return etags

    await in_parts(storage, bucket, key, headers, copy_parts)
