"""CopyObject from or into an encrypted dataset, carried out by the proxy.

The storage server can neither open an encrypted source nor seal a copy for
its new name, so such a copy is a read and a write through the proxy: the
source is read (`proxy.crypto.sources`: opened with its own data key,
released for its own dataset, whichever format it is stored in), and the copy
written sealed under a fresh data key bound to its name. As S3
does: the source's content headers, user metadata and tags come along unless
the caller replaces them, ``x-amz-copy-source-if-*`` apply to the source,
and the answer is S3's ``CopyObjectResult``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote
from xml.sax.saxutils import unescape

from aiohttp import web
from multidict import CIMultiDict

from proxy.crypto.bindings import bind, same_key, segments_of
from proxy.crypto.digests import sealed
from proxy.crypto.envelope import METADATA_HEADER, Envelope
from proxy.crypto.etags import presented
from proxy.crypto.keyservice import Justification
from proxy.crypto.plan import Copy
from proxy.crypto.segments import NONCE_PREFIX_SIZE, SALT_SIZE, Sealer, SegmentCipher, ciphertext_length
from proxy.crypto.sources import Plaintext, read_plaintext, source_headers
from proxy.errors import (
    RequestRefused,
    UpstreamFailure,
)
from proxy.storage.xmltext import xml_text
from proxy.upstream import Answered, Transfer

if TYPE_CHECKING:   # the stage makes a Copier of itself
    from proxy.crypto.stage import EncryptionStage, KeyUse

# What a copy carries over from its source unless x-amz-metadata-directive is REPLACE (as S3 does).
_COPIED = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control",
           "Expires", "x-amz-website-redirect-location")
_MAX_TAGGING_BYTES = 64 * 1024
_TAG = re.compile(rb"<Tag>\s*<Key>([^<]*)</Key>\s*<Value>([^<]*)</Value>\s*</Tag>")


def _tag_set(body: bytes) -> str:
    pairs = [(unescape(k.decode()), unescape(v.decode())) for k, v in _TAG.findall(body)]
    if body.count(b"<Tag>") != len(pairs):
        raise UpstreamFailure("the copy's source tags could not be read unambiguously")
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _copy_headers(request: CIMultiDict[str], source: Mapping[str, str], plan: Copy) -> CIMultiDict[str]:
    """The destination's write: the copy request's headers without the copy's own, and the source's
    metadata unless the caller replaces it."""
    write: CIMultiDict[str] = CIMultiDict()
    for name, value in request.items():
        lower = name.lower()
        if lower.startswith("x-amz-copy-source") or lower in ("x-amz-metadata-directive", "x-amz-tagging-directive",
                                                              "content-length", "x-amz-content-sha256",
                                                              "content-md5") or lower == METADATA_HEADER:
            continue
        if not plan.replace_metadata and (lower.startswith("x-amz-meta-") or lower in _COPIED_LOWER):
            continue
        if not plan.replace_tags and lower == "x-amz-tagging":
            continue
        write.add(name, value)
    if not plan.replace_metadata:
        for name, value in source.items():
            lower = name.lower()
            if (lower.startswith("x-amz-meta-") and lower != METADATA_HEADER) or lower in _COPIED_LOWER:
                write.add(name, value)
    write["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    return write


_COPIED_LOWER = frozenset(name.lower() for name in _COPIED)


async def copy_result(answer: Answered, copied_version: str | None, etag_of: Callable[[str], str],
                       element: str = "CopyObjectResult") -> web.StreamResponse:
    """S3's answer to a copy (`element`: or to UploadPartCopy's, CopyPartResult), made from the destination's
    write (its errors passed on as they are)."""
    head = answer.head
    if head.status != 200:
        return await answer.pass_on()
    etag = etag_of(head.headers.get("ETag", ""))
    await answer.read_whole(_MAX_TAGGING_BYTES)   # a write's answer has no body to speak of
    modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{element} xmlns="http://s3.amazonaws.com/doc/'
            f'2006-03-01/"><LastModified>{modified}</LastModified><ETag>{xml_text(etag)}</ETag></{element}>'
            ).encode()
    headers: CIMultiDict[str] = CIMultiDict()
    for name in ("x-amz-version-id", "x-amz-server-side-encryption", "x-amz-request-id", "x-amz-id-2"):
        value = head.headers.get(name)
        if value is not None:
            headers[name] = value
    if copied_version is not None:
        headers["x-amz-copy-source-version-id"] = copied_version
    headers["Content-Type"] = "application/xml"
    return web.Response(status=200, headers=headers, body=body)


class PipedBody:
    """A body the proxy makes (a copy's), forwarded as it streams (`proxy.upstream.body.StreamedBody`)."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self._pieces = pieces
        self.received = 0

    async def _counted(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces:
            self.received += len(piece)
            yield piece

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._counted()

    @staticmethod
    def refusal() -> RequestRefused | None:
        return None


class Copier:
    """The copies of one encryption stage (its key service, signer and storage server)."""

    def __init__(self, stage: EncryptionStage) -> None:
        self.stage = stage

    async def copy(
        self, request: web.BaseRequest, plan: Copy, target: str, headers: CIMultiDict[str], transfer: Transfer,
        peer: str, why: Justification, use: KeyUse,
    ) -> web.StreamResponse:
        """CopyObject as the proxy does it: read the source (opened if encrypted), write the destination
        (sealed if its dataset is encrypted), answer as S3 answers a copy."""
        async def write(plain: Plaintext) -> web.StreamResponse:
            return await self._write(plain, request, plan, target, headers, transfer, peer, why, use)

        return await read_plaintext(self.stage, request, plan.source_target, plan.source, plan.source_encrypted,
                                    source_headers(headers), None, transfer, peer, why, use, write)

    async def _write(
        self, plain: Plaintext, request: web.BaseRequest, plan: Copy, target: str, headers: CIMultiDict[str],
        transfer: Transfer, peer: str, why: Justification, use: KeyUse,
    ) -> web.StreamResponse:
        """The destination written from the source's plaintext (sealed if its dataset is encrypted)."""
        source = plain.headers
        length = plain.length
        write = _copy_headers(headers, source, plan)
        if plan.replace_tags is False and int(source.get("x-amz-tagging-count", "0") or 0):
            write["x-amz-tagging"] = await self._source_tags(request, plan, headers.get("Host", ""), transfer, peer)
        body = PipedBody(plain.pieces)
        if plan.dest_encrypted:
            service = self.stage.service
            envelope = Envelope(length, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE), service.kind,
                                service.key_ref, "")
            dest_bound = bind(envelope, plan.obj)
            made = await self.stage.call("generate", lambda: service.generate(dest_bound, why), use)
            same_key(service, envelope)
            envelope = envelope._replace(wrapped=made.wrapped)
            write[METADATA_HEADER] = envelope.to_header()
            write["Content-Length"] = str(ciphertext_length(length))
            sealer = Sealer(SegmentCipher(made.plaintext, envelope.salt, envelope.nonce_prefix,
                                          segments_of(envelope, plan.obj)), length)
            body = PipedBody(sealed(plain.pieces, sealer, {}))
        else:
            write["Content-Length"] = str(length)
        self.stage.sign("PUT", target, write)
        copied_version = source.get("x-amz-version-id")

        async def written(answer: Answered) -> web.StreamResponse:
            return await copy_result(answer, copied_version, presented if plan.dest_encrypted else str)

        return await self.stage.upstream.forward(request, write, body, transfer, None, peer, target=target,
                                           answered=written, method="PUT")

    async def _source_tags(self, request: web.BaseRequest, plan: Copy, host: str, transfer: Transfer,
                           peer: str) -> str:
        """The source's tags, for a copy that keeps them (S3's default), as an x-amz-tagging value."""
        path, _, query = plan.source_target.partition("?")
        tagging = f"{path}?tagging" + (f"&{query}" if query else "")
        ask: CIMultiDict[str] = CIMultiDict(Host=host)
        ask["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self.stage.sign("GET", tagging, ask)

        found: list[str] = []

        async def tags(answer: Answered) -> web.StreamResponse:
            if answer.head.status != 200:
                raise UpstreamFailure(f"the copy's source tags could not be read (the storage server answered "
                                      f"{answer.head.status})")
            found.append(_tag_set(await answer.read_whole(_MAX_TAGGING_BYTES)))
            return web.Response()   # read by the proxy: never sent

        await self.stage.upstream.forward(request, ask, None, Transfer(), None, peer, target=tagging, answered=tags,
                                    method="GET")
        return found[0]

