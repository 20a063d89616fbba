"""The storage server as the recovery tools reach it: signed S3 requests over aiohttp's client.

The tools talk to the storage server directly (not through a proxy), with
the proxy's own credentials and signer (`proxy.s3.resign.request_signer`):
path-style targets, every key percent-encoded once, ``Host`` the upstream's
own name, bodies sent as ``UNSIGNED-PAYLOAD`` so that they stream. Nothing
is decompressed, no redirect is followed, no answer body but a listing page
or an error document is read whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple
from urllib.parse import quote, urlencode, urlsplit
from xml.etree.ElementTree import Element

import aiohttp
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Config
from proxy.errors import ConfigError
from proxy.s3.resign import UNSIGNED_PAYLOAD, RequestSigner, request_signer
from proxy.upstream.tls import VerifiedConnector

_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_KEY_SAFE = "/-_.~"            # a key's "/" stays a path separator; everything else but the unreserved is encoded
_QUERY_SAFE = "-_.~"
_ERROR_BODY_BYTES = 64 * 1024  # more than any S3 error document
READ_BYTES = 256 * 1024        # what a body is read in


class StoreError(Exception):
    """The storage server answered with an error (or could not be reached), in plain words."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class Listed(NamedTuple):
    """One object of a listing, as stored."""

    key: str
    size: int
    etag: str


def object_target(bucket: str, key: str, query: str = "") -> str:
    target = f"/{bucket}/{quote(key, safe=_KEY_SAFE)}"
    return f"{target}?{query}" if query else target


def copy_source(bucket: str, key: str) -> str:
    """The ``x-amz-copy-source`` value naming an object (URL-encoded, as S3 reads it)."""
    return f"/{bucket}/{quote(key, safe=_KEY_SAFE)}"


class Storage:
    """Signed requests to the storage server `config.upstream.url`; use as an async context manager."""

    def __init__(self, config: Config) -> None:
        if config.upstream.api != "s3":
            raise ConfigError(f"the tools work on an S3 upstream; upstream.api is {str(config.upstream.api)!r}")
        signer = request_signer(config)
        if signer is None:
            raise ConfigError("s3.sign is not configured: the tools sign their requests with the proxy's own "
                              "credentials, as re-sign mode does (and encryption requires it)")
        self._signer: RequestSigner = signer
        self._upstream = config.upstream
        self._base = config.upstream.url.rstrip("/")
        self._host = urlsplit(self._base).netloc
        self._timeout = aiohttp.ClientTimeout(total=None, connect=config.upstream.connect_timeout_seconds,
                                              sock_read=config.upstream.read_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Storage:
        # Content-Type is never added by aiohttp: an object's own is sent, or none.
        # TLS as the proxy's own (`proxy.upstream.tls`): verified always, pinned when the configuration pins.
        self._session = aiohttp.ClientSession(connector=VerifiedConnector(self._upstream), auto_decompress=False,
                                              timeout=self._timeout, skip_auto_headers=("Content-Type",))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, target: str, headers: CIMultiDict[str] | None = None,
                      body: AsyncIterator[bytes] | None = None) -> aiohttp.ClientResponse:
        """Send one signed request; the answer's body is the caller's to read (and release)."""
        assert self._session is not None, "Storage is used as an async context manager"
        sent = CIMultiDict(headers or {})
        sent["Host"] = self._host
        sent["Accept-Encoding"] = "identity"
        sent["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
        self._signer.sign(method, target, sent)
        url = yarl.URL(self._base + target, encoded=True)
        try:
            return await self._session.request(method, url, headers=sent, data=body, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            cause = exc.__cause__
            if cause is not None and not isinstance(cause, (aiohttp.ClientError, TimeoutError, OSError)):
                raise cause from None   # the body's own failure (it stopped the upload): said in its words
            raise StoreError(f"the storage server {self._base} cannot be reached: {exc or type(exc).__name__}") \
                from None

    async def head(self, bucket: str, key: str) -> CIMultiDictProxy[str]:
        """The object's headers (metadata, ETag, length, content headers)."""
        answer = await self.request("HEAD", object_target(bucket, key))
        async with answer:
            if answer.status != 200:
                raise await failure(answer, f"s3://{bucket}/{key}")
            return answer.headers

    async def tagging(self, bucket: str, key: str) -> str:
        """The object's tags as an ``x-amz-tagging`` header value (URL-encoded ``k=v&...``)."""
        where = f"s3://{bucket}/{key}"
        answer = await self.request("GET", object_target(bucket, key, "tagging"))
        async with answer:
            if answer.status != 200:
                raise await failure(answer, where)
            document = _xml(await whole_document(answer, where), f"{where}: the storage server's tag set")
        pairs = [(tag.findtext(f"{_S3}Key") or "", tag.findtext(f"{_S3}Value") or "")
                 for tag in document.iter(f"{_S3}Tag")]
        return urlencode(pairs, quote_via=quote)

    async def listing(self, bucket: str, prefix: str) -> AsyncIterator[Listed]:
        """Every object under `prefix`, page by page (ListObjectsV2), in key order."""
        token: str | None = None
        while True:
            query = "list-type=2"
            if token is not None:
                query += f"&continuation-token={quote(token, safe=_QUERY_SAFE)}"
            if prefix:
                query += f"&prefix={quote(prefix, safe=_QUERY_SAFE)}"
            answer = await self.request("GET", f"/{bucket}?{query}")
            async with answer:
                if answer.status != 200:
                    raise await failure(answer, f"s3://{bucket}/{prefix}")
                page = await answer.read()
            entries, token = _page(page, f"s3://{bucket}/{prefix}")
            for entry in entries:
                yield entry
            if token is None:
                return


def _page(page: bytes, where: str) -> tuple[list[Listed], str | None]:
    """The entries of one ListObjectsV2 page, and the token of the next (None: the last page)."""
    root = _xml(page, f"{where}: the storage server's listing")
    entries = []
    for item in root.iter(f"{_S3}Contents"):
        key, size, etag = (item.findtext(f"{_S3}{name}") for name in ("Key", "Size", "ETag"))
        if key is None or size is None or not size.isdigit():
            raise StoreError(f"{where}: the storage server's listing has an entry without a key or size")
        entries.append(Listed(key, int(size), etag or ""))
    truncated = root.findtext(f"{_S3}IsTruncated") == "true"
    token = root.findtext(f"{_S3}NextContinuationToken")
    if truncated and not token:
        raise StoreError(f"{where}: the storage server's listing is cut short without a continuation token")
    return entries, token if truncated else None


async def streamed(answer: aiohttp.ClientResponse, where: str) -> AsyncIterator[bytes]:
    """The answer's body as it arrives; an answer that breaks off is the storage server's failure."""
    pieces = answer.content.iter_chunked(READ_BYTES)
    while True:
        try:
            piece = await anext(pieces, b"")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StoreError(f"{where}: the storage server's answer broke off ({type(exc).__name__})") from None
        if not piece:
            return
        yield piece


async def whole_document(answer: aiohttp.ClientResponse, where: str, limit: int = _ERROR_BODY_BYTES) -> bytes:
    """The answer's whole body, read to its end, at most `limit` bytes: S3 may keep a slow CopyObject or
    CompleteMultipartUpload open with whitespace before its result, or its error, so a first read is not
    the answer."""
    document = b""
    while len(document) <= limit and (piece := await answer.content.read(limit + 1 - len(document))):
        document += piece
    if len(document) > limit:
        raise StoreError(f"{where}: the storage server's answer is longer than {limit} bytes")
    return document


async def failure(answer: aiohttp.ClientResponse, where: str) -> StoreError:
    """The storage server's error answer, in plain words (its code and message when it sent them)."""
    code, message = "", ""
    if answer.status >= 400 and answer.method != "HEAD":
        body = await answer.content.read(_ERROR_BODY_BYTES)   # an error is read as far as it goes: it is refused anyway
        code, message = _error_document(body)
    if not code:
        code = {404: "NoSuchKey", 403: "AccessDenied", 412: "PreconditionFailed"}.get(answer.status, "")
    said = f"{code}: {message}" if code and message else (code or answer.reason or "error")
    return StoreError(f"{where}: the storage server answered {answer.status} ({said})", answer.status, code)


def element_text(document: bytes, name: str, what: str) -> str:
    """The text of the first element `name` (S3's namespace) of an answer; `StoreError` naming `what` if none."""
    found = _xml(document, what).findtext(f".//{_S3}{name}")
    if not found:
        raise StoreError(f"{what} has no {name}")
    return found


def _error_document(body: bytes) -> tuple[str, str]:
    try:
        root = _xml(body, "")
    except StoreError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


def _xml(document: bytes, what: str) -> Element:
    """The parsed document (no DTD, no entities: defusedxml); `StoreError` naming `what` if it is not XML."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root: Element = fromstring(document, forbid_dtd=True)
    except (ParseError, DefusedXmlException):
        raise StoreError(f"{what} is not readable XML") from None
    return root
