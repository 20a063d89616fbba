"""UploadPartCopy touching an encrypted dataset, carried out by the proxy.

As for CopyObject (`proxy.crypto.copying`), the storage server can neither
open an encrypted source nor seal a part, so the proxy reads the source (the
``x-amz-copy-source-range`` of it, or all of it; `proxy.crypto.sources`:
an encrypted source of either format opened with its own data key, released
for its own dataset, fetching only the stored segments that hold the range;
a plaintext one, of a dataset that is not encrypted or one migrating, as it
is) and writes it as the part.
The part is sealed under the upload's key when the destination's dataset is
encrypted (as UploadPart seals one, `proxy.crypto.multipart`), and the
caller gets S3's ``CopyPartResult``, with the part's ETag as the storage
server gave it (the caller names it again to complete the upload).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.copying import PipedBody, copy_result
from proxy.crypto.digests import sealed
from proxy.crypto.keyservice import Justification
from proxy.crypto.parted import carried_headers
from proxy.crypto.parts import fresh_header, part_stored_length
from proxy.crypto.plan import CopyPart, Wanted
from proxy.crypto.sources import Plaintext, read_plaintext, source_headers
from proxy.crypto.uploads import with_upload_id
from proxy.errors import BadRequest
from proxy.upstream import Answered, Transfer

if TYPE_CHECKING:
    from proxy.crypto.multipart import Multiparts
    from proxy.crypto.stage import KeyUse


async def copy_part(
    parts: Multiparts, request: web.BaseRequest, plan: CopyPart, target: str, headers: CIMultiDict[str],
    transfer: Transfer, peer: str, why: Justification, use: KeyUse,
) -> web.StreamResponse:
    """Read the source (opened if encrypted), write it as part `plan.number` (sealed if the upload's dataset is
    encrypted), answer as S3 answers an UploadPartCopy."""
    stage = parts.stage
    copy = plan.copy
    upload_key = None
    if plan.upload is not None:
        # The upload's key first: a token that does not open is refused before the source is read.
        upload_key = await parts.upload_key(plan.obj, plan.upload, why, use)
    read = source_headers(headers)
    wanted = None if plan.source_range is None else Wanted(*plan.source_range)

    async def write_part(plain: Plaintext) -> web.StreamResponse:
        if plan.source_range is not None and plain.first_byte + plain.length - 1 != plan.source_range[1]:
            raise BadRequest(f"Range specified is not valid for source object of size {plain.total}: "
                             f"bytes={plan.source_range[0]}-{plan.source_range[1]}", code="InvalidArgument")
        write = carried_headers(headers)   # Host, the proxy's tags, what the storage server needs to write it
        write["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        written = target
        if plan.upload is not None and upload_key is not None:
            envelope, key = upload_key
            header = fresh_header(plan.number, plain.length)
            sealer = parts.part_sealer(envelope, key, plan.obj, header)
            body = PipedBody(parts.after(header.to_bytes(), sealed(plain.pieces, sealer, {})))
            write["Content-Length"] = str(part_stored_length(plain.length))
            written = with_upload_id(target, plan.upload.upstream_id)
        else:
            body = PipedBody(plain.pieces)
            write["Content-Length"] = str(plain.length)
        stage.sign("PUT", written, write)
        copied_version = plain.headers.get("x-amz-version-id")

        async def part_written(answer: Answered) -> web.StreamResponse:
            # The part's ETag as the storage server gave it: the caller names it to complete the upload.
            return await copy_result(answer, copied_version, str, "CopyPartResult")

        return await stage.upstream.forward(request, write, body, transfer, None, peer, target=written,
                                            answered=part_written, method="PUT")

    return await read_plaintext(stage, request, copy.source_target, copy.source, copy.source_encrypted, read,
                                wanted, transfer, peer, why, use, write_part)
