"""CORS through the proxy: preflights answered from the policy, and the answer headers of actual requests.

A browser page on another origin can call the storage through the proxy when
the dataset it reaches has a ``cors:`` section (docs/policies.md; the rules
and their matching are `proxy.policy.cors`). The policy is the one source of
truth, so that nothing about the storage server leaks through CORS:

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  carries no credentials. For a dataset with ``cors:`` it is answered here,
  from the rules alone, and never forwarded: whether the bucket or container
  exists upstream changes nothing. A preflight no rule allows gets the storage
  API's own refusal (S3: 403 ``AccessForbidden``, "CORSResponse: This CORS
  request is not allowed..."; Azure: 403 ``CorsPreflightFailure``). A
  preflight to no dataset, or to one without ``cors:``, is left to the usual
  path, which refuses it as before (no identity, or a method not supported).
- Every other request with an ``Origin`` gets, when a rule of its dataset
  allows that origin and method, ``Access-Control-Allow-Origin`` (the origin
  itself, never ``*``), ``Access-Control-Allow-Credentials`` (unless the
  origin came in through ``*`` alone) and ``Access-Control-Expose-Headers``,
  on an answer passed on from the storage server and on the proxy's own
  refusal alike, so that a page can read why it was refused. An origin no rule
  allows is not refused for that (the browser enforces CORS; the policy is the
  access control): its answer simply carries none of these.
- Whatever ``Access-Control-*`` headers the storage server sent are dropped,
  on every answer.

The headers are set in one place: `HookedRequest`'s response hook, which
aiohttp calls for every answer on the data port just before its head is sent
(one passed on from the storage server, streamed or whole, one the encryption
stage made, a refusal, an answered preflight). The gateway only says, per
request, what its answer gets (`answer_with`); no answer path adds CORS
headers of its own. The data port's server makes its requests with
`make_request` (`proxy.lifecycle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import StorageApi
from proxy.domain import Resource
from proxy.errors import RequestRefused
from proxy.policy.cors import CORS_METHODS, CorsMatch, CorsRule, match, requested_headers
from proxy.policy.model import Policy
from proxy.storage.refusal import CODE_HEADER, REASON_HEADER

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader

PREFLIGHT = "OPTIONS"
ORIGIN = "Origin"
REQUEST_METHOD = "Access-Control-Request-Method"
REQUEST_HEADERS = "Access-Control-Request-Headers"
_PREFIX = "access-control-"
_REQUEST_PREFIX = "access-control-request-"

# Exposed on every answer to an allowed origin, whatever the rule says: what a page needs to read a refusal
# (the code and reason headers, and the request id that is the audit log's decision id).
ALWAYS_EXPOSED: Mapping[str, tuple[str, ...]] = {
    "s3": (CODE_HEADER, REASON_HEADER, "x-amz-request-id"),
    "azure": (CODE_HEADER, REASON_HEADER, "x-ms-request-id", "x-ms-error-code"),
}
# The message each storage API refuses a preflight no rule allows with, as its own servers do; the code is S3's
# AccessForbidden, which Azure's error format names CorsPreflightFailure (`proxy.azure.errors`).
_REFUSALS: Mapping[str, str] = {
    "s3": "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request "
          "method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the "
          "resource's CORS spec.",
    "azure": "CORS not enabled or no matching rule found for this request.",
}


@dataclass(frozen=True, slots=True)
class AnsweredPreflight:
    """A preflight the proxy answered from a dataset's rule: what the audit line names (nothing was forwarded)."""

    response: web.Response
    dataset: str
    rule: str            # the rule's id, else its place in the list ("#2")
    resource: Resource   # what the preflight asked about


class PreflightRefused(RequestRefused):
    """A preflight that no CORS rule of its dataset allows."""

    status = 403
    default_code = "AccessForbidden"


@dataclass(frozen=True, slots=True)
class CorsAnswer:
    """The CORS headers one answer gets (for the response hook): already worked out, only copied in."""

    headers: tuple[tuple[str, str], ...]


# Nothing to add; the storage server's Access-Control-* are still dropped.
NO_ANSWER = CorsAnswer(())


def is_preflight(method: str, headers: CIMultiDictProxy[str]) -> bool:
    return method == PREFLIGHT and ORIGIN in headers and REQUEST_METHOD in headers


def rules_for(api: StorageApi, policy: Policy, method: str, target: str,
              headers: CIMultiDictProxy[str]) -> tuple[CorsRule, ...]:
    """The CORS rules of the dataset a request to `target` with `method` reaches (none: no such dataset, or it
    has no ``cors:``). The target is read as the storage API reads it (virtual hosts, accounts), for `method`,
    else as a GET of the same target (a form upload's POST to a bucket reaches the bucket's dataset)."""
    return _reached(api, policy, method, target, headers)[2]


def _reached(api: StorageApi, policy: Policy, method: str, target: str,
             headers: CIMultiDictProxy[str]) -> tuple[str, Resource | None, tuple[CorsRule, ...]]:
    """`rules_for`, with the dataset's name and the resource read."""
    if not policy.cors:
        return "", None, ()
    resource = _resource(api, method, target, headers)
    if resource is None:
        return "", None, ()
    hit = policy.index.lookup(resource)
    return (hit[0].name, resource, hit[0].cors) if hit is not None else ("", resource, ())


def _resource(api: StorageApi, method: str, target: str, headers: CIMultiDictProxy[str]) -> Resource | None:
    for asked in dict.fromkeys((method, "GET")):
        try:
            accesses = api.parse(asked, target, headers).request.accesses
        except RequestRefused:
            continue
        return accesses[0].resource if accesses else None
    return None


def preflight(api_name: str, rules: tuple[CorsRule, ...], headers: CIMultiDictProxy[str]) -> tuple[CorsAnswer, str]:
    """The CORS headers of the answer to an allowed preflight, and the rule that allowed it (its id, else its
    place); raises `PreflightRefused` for one no rule allows."""
    origin = headers.get(ORIGIN, "")
    method = headers.get(REQUEST_METHOD, "")
    asked = requested_headers(",".join(headers.getall(REQUEST_HEADERS, ())))
    found = match(rules, origin, method, asked) if method in CORS_METHODS else None
    if found is None:
        raise PreflightRefused(_REFUSALS.get(api_name, _REFUSALS["s3"]))
    out = [*_allowed(api_name, found, origin),
           ("Access-Control-Allow-Methods", ", ".join(m for m in CORS_METHODS if m in found.rule.methods))]
    if asked:
        out.append(("Access-Control-Allow-Headers", ", ".join(asked)))
    if found.rule.max_age is not None:
        out.append(("Access-Control-Max-Age", str(found.rule.max_age)))
    out.append(("Vary", f"{ORIGIN}, {REQUEST_HEADERS}, {REQUEST_METHOD}"))
    return CorsAnswer(tuple(out)), found.rule.id or f"#{rules.index(found.rule) + 1}"


def cors_answer(api: StorageApi, policy: Policy, request: web.BaseRequest, method: str, target: str,
                headers: CIMultiDictProxy[str]) -> AnsweredPreflight | None:
    """For a request with an Origin: say what CORS headers its answer gets, and answer it if it is a preflight
    to a dataset with CORS rules (None: it goes on). Raises `PreflightRefused` for a preflight no rule allows."""
    if is_preflight(method, headers):
        # Read as the request it asks about, which has no Access-Control-Request-* headers (S3's reading
        # refuses a header whose name says it carries a method).
        asked = CIMultiDictProxy(CIMultiDict((n, v) for n, v in headers.items()
                                             if not n.lower().startswith(_REQUEST_PREFIX)))
        dataset, resource, rules = _reached(api, policy, headers[REQUEST_METHOD], target, asked)
        if not rules or resource is None:
            return None   # no dataset, or no CORS rules: refused on the usual path, as any OPTIONS is
        answer, rule = preflight(api.name, rules, headers)
        answer_with(request, answer)
        return AnsweredPreflight(web.Response(status=200), dataset, rule, resource)
    rules = rules_for(api, policy, method, target, headers)
    answer_with(request, answer_for(api.name, rules, method, headers[ORIGIN]))
    return None


def answer_at(api_name: str, policy: Policy, request: web.BaseRequest, resource: Resource, method: str,
              origin: str) -> None:
    """Say what CORS headers `request`'s answer gets once the resource it reaches is known from its body (a form
    upload's key): the rules of that resource's dataset, which may be nested under a prefix of the bucket."""
    hit = policy.index.lookup(resource)
    answer_with(request, answer_for(api_name, hit[0].cors if hit is not None else (), method, origin))


def answer_for(api_name: str, rules: tuple[CorsRule, ...], method: str, origin: str) -> CorsAnswer:
    """The CORS headers of the answer to an actual request (any but a preflight) from `origin`."""
    if not rules:
        return NO_ANSWER
    # The answer depends on the Origin wherever there are CORS rules: caches must keep origins apart.
    vary = (("Vary", ORIGIN),)
    found = match(rules, origin, method)
    if found is None:
        return CorsAnswer(vary)
    return CorsAnswer((*_allowed(api_name, found, origin), *vary))


def _allowed(api_name: str, found: CorsMatch, origin: str) -> tuple[tuple[str, str], ...]:
    exposed = dict.fromkeys((*ALWAYS_EXPOSED.get(api_name, ()), *found.rule.expose))
    headers = [("Access-Control-Allow-Origin", origin)]
    if not found.any_origin:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    headers.append(("Access-Control-Expose-Headers", ", ".join(exposed)))
    return tuple(headers)


def finish_headers(headers: CIMultiDict[str], answer: CorsAnswer | None) -> None:
    """Drop every ``Access-Control-*`` header an answer carries, then add `answer`'s (the response hook's work).

    ``Vary`` is merged with any the answer already has, so that a storage server's ``Vary`` stays.
    """
    for name in [n for n in headers if n.lower().startswith(_PREFIX)]:
        headers.popall(name, None)
    if answer is None:
        return
    for name, value in answer.headers:
        if name == "Vary":
            present = [v.strip() for v in ",".join(headers.getall("Vary", ())).split(",") if v.strip()]
            seen = {v.lower() for v in present}
            present += [v for v in (t.strip() for t in value.split(",")) if v.lower() not in seen]
            headers["Vary"] = ", ".join(present)
            continue
        headers[name] = value


class HookedRequest(web.BaseRequest):
    """aiohttp's request, with the hook every answer to it passes through just before its head is sent.

    aiohttp's `StreamResponse.prepare` calls `_prepare_hook` for every answer (it is how an application's
    ``on_response_prepare`` signal is sent; the data port's low-level server has no application). The CORS
    headers the answer gets are kept on the request itself (not in its mapping under a ``web.RequestKey``,
    which aiohttp releases before 3.14 do not have: the project supports 3.10 and later).
    """

    cors: CorsAnswer | None = None

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        finish_headers(response.headers, self.cors)


def make_request(message: RawRequestMessage, payload: StreamReader, protocol: BaseProtocol,
                 writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
    """The data port's request factory (`web.Server`'s ``request_factory``): requests with the response hook."""
    # The task's own loop: asyncio.get_running_loop() costs a getpid() a request.
    return HookedRequest(message, payload, cast(Any, protocol), writer, task, task.get_loop())


def answer_with(request: web.BaseRequest, answer: CorsAnswer) -> None:
    """Say what CORS headers `request`'s answer gets, whichever answer it turns out to be (the data port's
    requests are all `HookedRequest`s; any other has no hook to read it)."""
    if isinstance(request, HookedRequest):
        request.cors = answer
