"""A browser's form upload as it arrives: its fields read before the decision, then its file streamed through.

S3's POST Object names the object's key, its settings and (with access keys)
the caller's signed POST policy in form fields that come before the file.
The proxy reads those first, with the bounds of every body read before a
decision (`proxy.bodies`: the inspected-body budget, the read deadline, the
idle and minimum-rate limits; and at most the 20 KiB of fields S3 reads,
`proxy.s3.postform.MAX_FORM_BYTES`), then, once the request is allowed,
forwards the bytes read and the rest of the body unchanged as they arrive.
What the fields took of the inspected-body budget is given back once they
have been forwarded: from then on the file streams as a PutObject's body
does, so long uploads do not hold the budget that bounds reads before a
decision (nor leave every other form refused with ``SlowDown``).

What follows the file is watched (`proxy.s3.posttail.FileTail`): a part
after the file, or a body that does not end with the form's closing
boundary, is refused before its last bytes are released, so the storage
server never receives a whole body the proxy refused (the upload is cut
short and stores nothing). A POST policy the proxy verified may bound the
file's size (``content-length-range``); that is held to the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from proxy.api import ParsedRequest, StorageApi
from proxy.bodies import PINNED_BYTES, Hold
from proxy.config import Limits
from proxy.cors import ORIGIN, answer_at
from proxy.domain import Resource
from proxy.errors import BadRequest, InternalError, RequestRefused
from proxy.identity.accesskeys import SignedForm
from proxy.identity.postpolicy import PolicyLimits
from proxy.policy.model import Policy
from proxy.s3.postform import INVALID_ARGUMENT_CODE, FormReader, FormRefused, PostForm
from proxy.s3.posttail import FileTail
from proxy.upstream import BodyStream

TOO_LARGE_CODE = "EntityTooLarge"   # S3's answers to a file outside the policy's content-length-range
TOO_SMALL_CODE = "EntityTooSmall"


class FormUpload:
    """A form upload whose fields were read: the form, and the rest of the caller's body still to come.

    `signed` is what its POST policy (if any) is verified against (`proxy.identity.accesskeys`).
    """

    def __init__(self, form: PostForm, bucket: str, stream: BodyStream, chunks: AsyncIterator[bytes],
                 hold: Hold) -> None:
        self.form = form
        self.signed = SignedForm(form.fields, bucket)
        self._stream = stream
        self._chunks = chunks
        self._hold = hold

    def body(self, limits: PolicyLimits | None) -> FormBody:
        """The body to forward: exactly the caller's bytes, the file held to the size `limits` allow (a POST policy
        the proxy verified; None: any).

        What the fields took of the budget (`read_form`'s `hold`) is released once they are forwarded."""
        low, high = (0, None) if limits is None else (limits.min_length, limits.max_length)
        return FormBody(self.form, self._stream, self._chunks, self._hold, low, high)


class FormBody:
    """The form's body as forwarded (a `proxy.upstream.StreamedBody`): what was read, then the rest, watched."""

    def __init__(self, form: PostForm, stream: BodyStream, chunks: AsyncIterator[bytes], hold: Hold,
                 min_length: int, max_length: int | None) -> None:
        self._form = form
        self._stream = stream
        self._chunks = chunks
        self._hold = hold
        self._min = min_length
        self._max = max_length

    @property
    def received(self) -> int:
        return self._stream.received

    def refusal(self) -> BadRequest | None:
        return self._stream.refusal()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        form = self._form
        tail = FileTail(form.boundary)
        yield form.head
        self._hold.release()   # the fields are forwarded: what is left streams, as any upload's body
        size = 0
        piece = tail.feed(form.rest)
        while True:
            size += len(piece)
            if self._max is not None and size > self._max:
                raise BadRequest(f"the file is larger than the {self._max} bytes the form's policy allows",
                                 code=TOO_LARGE_CODE)
            yield piece
            chunk = await anext(self._chunks, None)
            if chunk is None:
                break
            piece = tail.feed(chunk)
        end = tail.finish()
        if size < self._min:
            raise BadRequest(f"the file is smaller than the {self._min} bytes the form's policy requires",
                             code=TOO_SMALL_CODE)
        yield end


async def read_form(
    request: web.BaseRequest, boundary: bytes, bucket: str, hold: Hold, *, deadline: float, idle: float,
    min_rate: float, window: float, before_reading: Callable[[], Awaitable[None]],
) -> FormUpload:
    """Read a form upload's fields, up to its file's first byte; raises a `RequestRefused`.

    `hold` takes what one connection being read can pin (released once the fields are forwarded, or by the
    caller when the request ends);
    `before_reading` is awaited before the first byte is read (it sends ``100 Continue`` when asked for).
    """
    encodings = {e.strip().lower() for v in request.headers.getall("Content-Encoding", ()) for e in v.split(",")}
    if encodings - {"identity", ""}:
        raise BadRequest("a form upload's body may not be compressed: the proxy reads its fields")
    if not request.body_exists:
        raise FormRefused("POST requires exactly one file upload per request.", code=INVALID_ARGUMENT_CODE)
    hold.take(PINNED_BYTES)
    await before_reading()
    stream = BodyStream(request, idle, min_rate=min_rate, window=window)
    chunks = aiter(stream)
    reader = FormReader(boundary)
    try:
        async with asyncio.timeout(deadline):
            while True:
                chunk = await anext(chunks, None)
                if chunk is None:
                    reader.end()   # the body ended before its file: refused
                form = reader.feed(chunk)
                if form is not None:
                    return FormUpload(form, bucket, stream, chunks, hold)
    except RequestPayloadError as exc:
        raise BadRequest("the request body is malformed (its framing could not be read)") from exc
    except TimeoutError as exc:
        refusal = stream.refusal()
        if refusal is not None:
            raise refusal from exc
        raise BadRequest("the form's fields did not arrive in time", code="RequestTimeout") from exc


async def read_upload(
    request: web.BaseRequest, parsed: ParsedRequest, hold: Hold, api: StorageApi, policy: Policy,
    limits: Limits, before_reading: Callable[[], Awaitable[None]],
) -> tuple[FormUpload, ParsedRequest]:
    """A form upload's fields read (`read_form`, with the request limits), and the request as the audit line names
    it: the object the form asks for, or, for a form that cannot be judged, its bucket (the decision reads the
    form again and refuses it). The answer's CORS headers are made for the dataset of that object, which may be
    nested under a prefix of the bucket the target names."""
    boundary = parsed.form_boundary
    if boundary is None:
        raise InternalError("a form upload without its boundary; it was not forwarded")
    bucket = parsed.request.accesses[0].resource.bucket
    upload = await read_form(
        request, boundary, bucket, hold, deadline=limits.body_read_timeout_seconds,
        idle=limits.body_idle_timeout_seconds, min_rate=limits.min_receive_rate_bytes_per_second,
        window=limits.min_rate_window_seconds, before_reading=before_reading,
    )
    with contextlib.suppress(RequestRefused):
        parsed = api.with_form(parsed, upload.form)
    headers = request.headers
    if policy.cors and ORIGIN in headers:
        answer_at(api.name, policy, request, Resource(api.name, bucket, upload.form.key), request.method,
                  headers[ORIGIN])
    return upload, parsed
