"""Account listings the proxy pages itself: S3's ListBuckets with ``max-buckets`` / ``continuation-token``,
Azure's List Containers with ``maxresults`` / ``marker``.

The storage server's pages cannot be passed on: its marker names the next
bucket or container of the account, which may be one the caller must not see.
So the proxy asks the storage server for its pages itself (its own page size,
its own markers), keeps of each page what the caller may list (exactly the
filter of unpaged listings, `proxy.storage.listing.read_page`), and answers
with at most the caller's page size and a token of its own
(`proxy.storage.pagetoken`): sealed, bound to the caller's jurisdiction and
the listing's parameters, and opened only by the proxy; the storage server
never sees it. A token that does not open is refused before anything is
forwarded.

The storage server lists in name order (S3 and Azure do), and a page is
resumed after the last name handed out: entries added or removed between
two requests move nothing else. A page out of order is a 502, and so is a
refusal of a page request that carried the storage server's marker (its
answer may echo the marker); the refusal of a first page is passed on, as
for an unpaged listing.

Memory: one storage-server page at a time, plus the entries kept for the
caller's page. Work: at most `MAX_UPSTREAM_PAGES` storage-server pages per
caller request; a caller who sees few of many buckets gets a shorter (even
empty) page and a token to go on from where the proxy stopped.

The page requests are the caller's request with only the paging parameters
changed, so a signature over the query would no longer verify: the proxy
pages only requests whose query is not signed, or whose signature it can make
again (S3: re-sign mode, where the proxy signs each page request itself; the
caller's own access key, whose SigV4 header signature the proxy verified and
signs again for each page, `proxy.identity.ownsignature`; a caller that does
not sign; Azure: a SAS, which does not sign these parameters, or a bearer
token), and refuses the others with 400.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict

from proxy.domain import Resource
from proxy.errors import BadRequest, UpstreamFailure
from proxy.storage.listing import ListingPage, ListingShape, read_page
from proxy.storage.pagetoken import PageTokens, Position, TokenRefused
from proxy.storage.target import parse_target
from proxy.upstream.client import Upstream
from proxy.upstream.relay import Transfer

# Storage-server pages read for one caller request, at most (of `Paging.upstream_page` entries each).
MAX_UPSTREAM_PAGES = 10


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A caller's request for a page: how many, from where, and what its token is bound to."""

    limit: int
    position: Position
    binding: tuple[str, ...]
    raw_path: str
    kept_query: tuple[str, ...]  # every other query parameter, as the caller wrote it
    params: Mapping[str, str]  # the bound parameters (prefix, ...), decoded
    token: str | None  # the caller's token, as given


@dataclass(frozen=True, slots=True)
class Paging:
    """How one API pages its account listing, and how the proxy writes its own pages."""

    api: str
    shape: ListingShape
    limit_param: str
    resume_param: str
    max_limit: int  # the most entries the API hands out in one page (and the default)
    clamp_limit: bool  # a larger page size asks for `max_limit` (Azure) rather than being refused (S3)
    upstream_page: int  # the page size the proxy asks the storage server for
    bound_params: tuple[str, ...]  # listing parameters a token is bound to
    bad_limit_code: str
    bad_resume: str  # the refusal of a token that does not open
    bad_resume_code: str
    signed_query_code: str  # the refusal of a page request whose query the caller's signature covers
    # Authorization schemes (lower case) known not to sign the query; any other scheme is read as signing it.
    query_safe_schemes: frozenset[str]
    signing_params: frozenset[str]  # query parameters (lower case) that carry a signature over the query
    resource: Callable[[str, str], Resource]  # (account, name) -> what the policy is asked about
    # (first page, kept entries' bytes, the next token or None, the request) -> the caller's page
    render: Callable[[ListingPage, Sequence[bytes], str | None, PageRequest], bytes]


def page_request(
    paging: Paging, target: str, jurisdiction: str, account: str, tokens: PageTokens,
) -> PageRequest | None:
    """The caller's request for a page, or None for an unpaged listing. Raises `BadRequest`."""
    parsed = parse_target(target)
    limit_value: str | None = None
    token: str | None = None
    kept: list[str] = []
    params: dict[str, str] = {}
    raw_query = parsed.raw_query.split("&") if parsed.raw_query else []
    for param, raw in zip(parsed.params, raw_query, strict=True):
        name = param.name.lower()
        if name == paging.limit_param:
            limit_value = param.value or ""
        elif name == paging.resume_param:
            token = param.value or ""
        else:
            kept.append(raw)
            if name in paging.bound_params:
                params[name] = param.value or ""
    if limit_value is None and token is None:
        return None
    limit = paging.max_limit
    if limit_value is not None:
        digits = limit_value.isascii() and limit_value.isdigit()
        number = int(limit_value[-12:]) if digits and len(limit_value.lstrip("0")) <= 12 else (
            paging.max_limit + 1 if digits else 0)
        if number < 1 or (number > paging.max_limit and not paging.clamp_limit):
            raise BadRequest(f"{paging.limit_param} must be a whole number from 1 to {paging.max_limit}",
                             code=paging.bad_limit_code)
        limit = min(number, paging.max_limit)
    binding = (paging.api, account, jurisdiction, *(f"{n}={params.get(n, '')}" for n in paging.bound_params))
    position = Position(None, None)
    if token is not None:
        try:
            position = tokens.open(token, binding)
        except TokenRefused as exc:
            raise BadRequest(paging.bad_resume, code=paging.bad_resume_code) from exc
    return PageRequest(limit, position, binding, parsed.raw_path, tuple(kept), params, token)


def check_unsigned_query(paging: Paging, headers: CIMultiDict[str], target: str, resigned: bool) -> None:
    """Refuse a page request the proxy could not send on changed: the caller's signature covers its query.

    `resigned`: the proxy signs its page requests itself (re-sign mode, or again with the caller's own key).
    """
    if resigned:
        return
    # Fail closed: a scheme in another case or spelling (``sharedkey``, ``SharedKeyLite``) is a signing one.
    signed = any(value.strip().partition(" ")[0].lower() not in paging.query_safe_schemes
                 for value in headers.getall("Authorization", ()))
    signed = signed or any(p.name.lower() in paging.signing_params for p in parse_target(target).params)
    if signed:
        raise BadRequest(
            f"a paged account listing ({paging.limit_param}, {paging.resume_param}) is answered by the proxy, "
            "which asks the storage server for pages of its own: it cannot do so under a signature that covers "
            "the query (S3: re-sign mode, or a SigV4 Authorization header by a key of identity.access_keys; "
            "Azure: a SAS or a bearer token)", code=paging.signed_query_code,
        )


class AccountPager:
    """Answers one caller request for a page of an account listing."""

    def __init__(
        self, paging: Paging, request: PageRequest, account: str, tokens: PageTokens,
        outgoing: Callable[[str], tuple[str, CIMultiDict[str]]], visible: Callable[[Resource], bool],
    ) -> None:
        self.paging = paging
        self.tokens = tokens
        self.request = request
        self.account = account
        self.outgoing = outgoing  # the request-target to send -> (target as sent, headers as sent)
        self.visible = visible

    def _target(self, marker: str | None) -> str:
        paging = self.paging
        query = [*self.request.kept_query, f"{paging.limit_param}={paging.upstream_page}"]
        if marker is not None:
            query.append(f"{paging.resume_param}={quote(marker, safe='')}")
        return f"{self.request.raw_path}?{'&'.join(query)}"

    def _read(self, body: bytes) -> ListingPage:
        paging, account = self.paging, self.account
        return read_page(body, paging.shape, lambda name: paging.resource(account, name), self.visible)

    async def answer(self, upstream: Upstream, request: web.BaseRequest, transfer: Transfer, peer: str,
                     ) -> web.StreamResponse:
        """The caller's page: storage-server pages read until it is full, the listing ends, or the cap."""
        paging, wanted = self.paging, self.request
        position = wanted.position
        kept: list[tuple[str, bytes]] = []
        first: ListingPage | None = None
        following: Position | None = position
        response: web.StreamResponse | None = None
        for _ in range(MAX_UPSTREAM_PAGES):
            got: list[ListingPage] = []

            def read(body: bytes, got: list[ListingPage] = got) -> bytes:
                got.append(self._read(body))
                return b""

            sent_target, headers = self.outgoing(self._target(position.marker))
            response = await upstream.forward(request, headers, None, transfer, read, peer=peer, target=sent_target)
            if not got:
                if position.marker is not None:
                    # Its answer may echo the marker it was asked with (S3's ArgumentValue, Azure's
                    # QueryParameterValue), which may name a bucket or container the caller must not see.
                    raise UpstreamFailure(f"the storage server answered {response.status} to a page request "
                                          "with a marker of its own; its answer was not passed on")
                return response   # the storage server's refusal or failure, as for an unpaged listing
            page = got[0]
            names = [name for name, _ in page.entries]
            if names != sorted(set(names)):
                # A page is resumed after the last name handed out: only an ordered listing can be.
                raise UpstreamFailure("the storage server's account listing is not in name order, "
                                      "so the proxy cannot page it")
            first = first or page
            after = position.after
            entries = [entry for entry in page.entries if after is None or entry[0] > after]
            room = wanted.limit - len(kept)
            kept += entries[:room]
            if len(entries) > room:
                following = Position(position.marker, kept[-1][0])
                break
            if page.marker is None:
                following = None
                break
            if page.marker == position.marker:
                raise UpstreamFailure("the storage server named the page it had just answered as the next one")
            position = following = Position(page.marker, None)
            if len(kept) == wanted.limit:
                break
        assert first is not None
        assert response is not None
        token = None if following is None else self.tokens.seal(following, wanted.binding)
        body = paging.render(first, [entry for _, entry in kept], token, wanted)
        check = read_page(body, paging.shape, lambda name: paging.resource(self.account, name), lambda _: True)
        if [name for name, _ in check.entries] != [name for name, _ in kept] or check.marker != token:
            raise UpstreamFailure(paging.shape.unreadable)
        headers = CIMultiDict(response.headers)
        for name in ("Content-Length", "Content-Type"):
            headers.popall(name, None)
        headers["Content-Type"] = "application/xml"
        transfer.down_bytes = len(body)
        upstream.metrics.downstream_bytes.inc(len(body))
        return web.Response(status=200, body=body, headers=headers)
