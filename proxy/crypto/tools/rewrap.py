"""`bailiwick rewrap`: every encrypted object's data key wrapped again under the key's latest version.

After the region's key-encryption key is rotated (a new version of the
Transit key), objects written before still carry data keys wrapped under
older versions, which stay readable as long as those versions are kept.
Rewrapping moves each one to the latest version, so the old versions can be
retired (Transit's ``min_decryption_version``), without rewriting any body:

    HEAD -> envelope -> key service rewrap (same data key, same binding) ->
    CopyObject onto itself (x-amz-metadata-directive: REPLACE, new envelope)

Only the envelope's ``wk`` field changes; the body, and so its ETag, stays
byte for byte, and every other metadata entry and content header is sent
again unchanged. The copy carries ``x-amz-copy-source-if-match`` with the
ETag the HEAD saw, so an object rewritten meanwhile is not given a stale
envelope (storage servers that ignore the header, such as moto, leave that
window open). An envelope wrapped under the latest version already (Transit:
``vault:vN:``, learnt from the key service's first answer) is left; key
services without versions (PKCS#11, key file) rewrap every object.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict

from proxy.crypto.bindings import bind
from proxy.crypto.envelope import METADATA_HEADER, parse_header
from proxy.crypto.tools.batch import Outcome, run_batch
from proxy.crypto.tools.encrypt import MAX_PUT_BYTES, kept_headers, scope
from proxy.crypto.tools.store import Storage, StoreError, copy_source, failure, object_target
from proxy.crypto.tools.toolbox import Toolbox

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
    envelope = parse_header(value)
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
    if int(stored) > MAX_PUT_BYTES:
        return Outcome.FAILED, f"{stored} bytes is more than one CopyObject may copy ({MAX_PUT_BYTES})"
    # Also in a dry run while the latest version is not known: the key service's answer tells it, and a rewrap
    # changes nothing until the new envelope is written.
    context = bind(envelope, located.obj)
    wrapped = await box.call(lambda: box.service.rewrap(envelope.wrapped, context))
    new_version = key_version(wrapped)
    latest.saw(new_version)
    if version is not None and new_version is not None and new_version <= version:
        return Outcome.DONE_BEFORE, f"key version {version}"
    if dry_run:
        return Outcome.WOULD_REWRAP, f"key version {version} -> {new_version}"
    headers = kept_headers(head)
    headers[METADATA_HEADER] = envelope._replace(wrapped=wrapped).to_header()
    headers["x-amz-copy-source"] = copy_source(bucket, key)
    headers["x-amz-copy-source-if-match"] = etag
    headers["x-amz-metadata-directive"] = "REPLACE"
    answer = await storage.request("PUT", object_target(bucket, key), CIMultiDict(headers))
    async with answer:
        if answer.status != 200:
            raise await failure(answer, where)
        # A CopyObject can fail after its 200 has begun: the error is then the answer's root element.
        document = await answer.content.read(64 * 1024)
        if b"<Error>" in document:
            raise StoreError(f"{where}: the storage server failed the copy: "
                             f"{document[:300].decode('utf-8', 'replace')}")
    return Outcome.REWRAPPED, "" if new_version is None else f"key version {version} -> {new_version}"
