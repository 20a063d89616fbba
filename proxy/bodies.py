"""Bodies the proxy reads before it decides: bounded in size, in time, and in the memory they hold together.

Most bodies are streamed to the storage server after the decision and never
held. A few requests are decided on their body (S3's multi-object delete
names its keys there, CreateBucket its region), so the proxy reads that body
whole first. Each such read is a door for a caller to make the proxy hold
memory and connections before it has decided anything, so every one:

- is refused before a byte is read when the bytes all such reads may hold at
  once (`limits.max_inspected_bytes`, per process) are spent: 503 with S3's
  ``SlowDown`` (Azure's ``ServerBusy``), the answer that tells clients to
  back off and retry. The declared ``Content-Length`` is taken from the
  budget up front; a chunked body takes it as it arrives. Whatever it
  declares, a read takes at least `PINNED_BYTES`, what one connection being
  read can pin in buffers, so that many small bodies cannot hold many
  connections either. One peer (`proxy.peers.peer_key`) may hold at most
  its share of it (``per_peer``), so that one address cannot spend the whole
  budget and leave every other caller ``SlowDown``;
- must arrive whole within `limits.body_read_timeout_seconds` of the start
  of the read, however steadily it trickles (400 ``RequestTimeout``), and
  may not stall longer than `limits.body_idle_timeout_seconds`;
- is read into one buffer of its declared size, not a list of pieces; and
  once the last such read of a burst has ended, the C allocator is asked to
  give its free memory back to the system (`release_free_memory`), because
  glibc otherwise keeps the freed pieces of megabyte bodies in its heap for
  the life of the process.

The budget is returned when the request ends, not when the decision is made:
the body is held until it has been forwarded.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from proxy.errors import BadRequest, PayloadTooLarge, SlowDown
from proxy.upstream import BodyStream

# What one connection being read can pin whatever it declares: aiohttp's read buffer (it stops
# reading from the socket past 2 x 64 KiB) and the transport's own.
PINNED_BYTES = 256 * 1024
# After a burst of reads, the allocator is asked to give memory back at most this often ...
_TRIM_EVERY_SECONDS = 1.0
# ... and only once this much was read since it last was: small reads leave nothing worth a trim.
_TRIM_AFTER_BYTES = 4 * 1024 * 1024


class BodyBudget:
    """The bytes that bodies read before the decision may hold at once, in one process.

    Each request takes its share through its own `Hold`, given back when the request ends.
    """

    def __init__(self, limit: int, *, per_peer: int | None = None, trim: Callable[[], None] | None = None) -> None:
        """`per_peer`: the most one peer may hold at once (the whole `limit` when None)."""
        self.limit = limit
        self.per_peer = limit if per_peer is None else min(per_peer, limit)
        self.held = 0
        self._by_peer: dict[str, int] = {}   # bytes held, by peer (absent: none)
        self._trim = trim if trim is not None else release_free_memory
        self._read_since_trim = 0
        self._trimmed_at = -_TRIM_EVERY_SECONDS
        self._later: asyncio.TimerHandle | None = None

    def take(self, size: int, peer: str = "") -> bool:
        """Take `size` bytes for `peer`; False (nothing taken) if that would go over the limit or its share."""
        if self.held + size > self.limit:
            return False
        by_peer = self._by_peer.get(peer, 0) + size
        if by_peer > self.per_peer:
            return False
        self._by_peer[peer] = by_peer
        self.held += size
        self._read_since_trim += size
        return True

    def hold(self, peer: str = "") -> Hold:
        """What one request of `peer` will hold of the budget (nothing yet)."""
        return Hold(self, peer)

    def give_back(self, size: int, peer: str = "") -> None:
        """Give back what `take` took; at the end of a burst of reads, memory goes back to the system."""
        left = self._by_peer.get(peer, 0) - size
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)
        self.held -= size
        if self.held == 0 and self._read_since_trim >= _TRIM_AFTER_BYTES and self._later is None:
            wait = self._trimmed_at + _TRIM_EVERY_SECONDS - time.monotonic()
            if wait <= 0:
                self._release()
            else:
                # Trimmed less than a second ago: once more when the second is over, or a burst
                # that ended just after a trim would keep its memory until the next one.
                self._later = asyncio.get_running_loop().call_later(wait, self._release)

    def _release(self) -> None:
        self._later = None
        if self.held:
            return   # a new burst: its own end trims
        # About 2 ms for a heap of a few hundred MiB, at most once a second.
        self._trimmed_at = time.monotonic()
        self._read_since_trim = 0
        self._trim()


class Hold:
    """What one request holds of a `BodyBudget`: taken as its body is read, given back once, when it ends."""

    __slots__ = ("_budget", "_peer", "size")

    def __init__(self, budget: BodyBudget, peer: str = "") -> None:
        self._budget = budget
        self._peer = peer
        self.size = 0

    def take(self, size: int) -> None:
        """Take `size` bytes more; raises `SlowDown` (nothing taken) when the budget cannot give them."""
        if not self._budget.take(size, self._peer):
            raise SlowDown("the proxy is reading as many request bodies as it may hold at once; retry later")
        self.size += size

    def release(self) -> None:
        if self.size:
            size, self.size = self.size, 0
            self._budget.give_back(size, self._peer)


async def read_inspected(
    request: web.BaseRequest,
    limit: int,
    hold: Hold,
    *,
    deadline: float,
    idle: float,
    before_reading: Callable[[], Awaitable[None]],
) -> bytearray:
    """The request's body, whole, at most `limit` bytes; raises a `RequestRefused`.

    The bytes it holds are taken through `hold`, which the caller releases
    when the request ends (also when this raises). `before_reading` is
    awaited once the budget is taken and before the first byte is read (it
    sends ``100 Continue`` when the caller waits for it).
    """
    encodings = {e.strip().lower() for v in request.headers.getall("Content-Encoding", ()) for e in v.split(",")}
    if encodings - {"identity", ""}:
        raise BadRequest("a request body the proxy must inspect may not be compressed")
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body is over the {limit}-byte limit for this operation")
    if not request.body_exists:
        return bytearray()
    hold.take(max(length or 0, PINNED_BYTES))
    await before_reading()
    body = bytearray(length) if length is not None else bytearray()
    size = 0
    view = memoryview(body) if length is not None else None
    try:
        async with asyncio.timeout(deadline):
            async for chunk in BodyStream(request, idle):
                end = size + len(chunk)
                if end > limit or (length is not None and end > length):
                    raise PayloadTooLarge(f"the request body is over the {limit}-byte limit for this operation")
                if view is not None:
                    view[size:end] = chunk
                else:
                    if end > hold.size:
                        hold.take(end - hold.size)
                    body += chunk
                size = end
    except RequestPayloadError as exc:
        raise BadRequest("the request body is malformed (its framing could not be read)") from exc
    except TimeoutError as exc:
        raise BadRequest("the request body did not arrive in time", code="RequestTimeout") from exc
    finally:
        if view is not None:
            view.release()
    if length is not None and size != length:
        raise BadRequest("the request body is shorter than its Content-Length", code="IncompleteBody")
    return body


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where there is none (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols the process already has (the interpreter links the C library): no search for
        # the library, which would run ldconfig in a subprocess.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None   # musl and other C libraries have none
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the memory the C allocator holds free back to the system (glibc only; elsewhere nothing)."""
    if _TRIM is not None:
        _TRIM()
