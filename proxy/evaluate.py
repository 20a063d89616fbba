"""What to do with a request, decided from plain values: no socket, no aiohttp, nothing awaited.

    head (+ identity) -> ReadBody | Forward | Refuse
    head + body read  ->            Forward | Refuse

The gateway (`proxy.gateway`) reads the request head into a `RequestHead`,
identifies the caller, and asks an `Evaluator`; what it gets back says what
to do, in the order the proxy's rules require:

- `Refuse` before any byte of the body is read when the request is refused
  whatever its body says (`ReadBody` is returned only otherwise);
- `100 Continue` only once the request may go on: before reading a body the
  decision depends on (`ReadBody.send_continue`), else after the decision
  (`Forward.send_continue`), so a refused upload never gets it;
- in re-sign mode, Host and target are rewritten path-style before the
  signed tag binds them, and the tags are set before the proxy signs (the
  signature is the last change to what is forwarded).

Every step is synchronous and depends only on its arguments and the
configuration, so the rules are table-tested in microseconds
(tests/test_evaluate.py), and a large body's evaluation can run on a thread.
A refusal is returned, not raised: `Refuse` carries what the audit line
needs (the request as parsed, the decision when there was one), and the
gateway stays the one place where it becomes an HTTP response.

The head and the outcomes are immutable named tuples, not frozen dataclasses:
two are made for every request, and a frozen dataclass costs four times as
much to build (each field set through ``object.__setattr__``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import ParsedRequest, StorageApi, UpstreamSigner
from proxy.config import Config
from proxy.crypto.envelope import METADATA_HEADER
from proxy.crypto.listing import LISTINGS_WITH_SIZES, plaintext_sizes
from proxy.crypto.plan import Plan, touches_encrypted
from proxy.crypto.plan import plan as plan_encryption
from proxy.domain import Caller, Resource
from proxy.errors import AccessDenied, BadRequest, InternalError, RequestRefused
from proxy.identity.resolver import Identified
from proxy.peercert import PeerCertificate
from proxy.policy.decision import Decision
from proxy.policy.engine import decide, encryption_of, refused_whatever_the_keys, visible_in_listing
from proxy.policy.model import ACCOUNT_LISTING, Encryption, Policy
from proxy.s3.postform import PostForm
from proxy.storage.accountpages import AccountPager, check_unsigned_query, page_request
from proxy.storage.pagetoken import page_tokens
from proxy.tags import TagSigner, add_tags, check_connection, request_headers

log = logging.getLogger("bailiwick.server")

_HTTP_VERSIONS = frozenset({(1, 0), (1, 1)})


class RequestHead(NamedTuple):
    """A request as received, before anything is judged: the target and headers exactly as sent."""

    method: str
    target: str                          # the raw request-target
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]
    peer: str                            # the socket's address ("" if unknown)
    body_exists: bool
    expects_continue: bool               # `expects_continue`: HTTP/1.1 with "Expect: 100-continue"
    # The client certificate the TLS handshake verified (`listen_tls.client_ca`); None: none.
    peer_certificate: PeerCertificate | None = None


class ReadBody(NamedTuple):
    """Read the body (at most `limit` bytes) and evaluate again with it: the decision depends on it."""

    parsed: ParsedRequest
    limit: int
    send_continue: bool                  # answer "100 Continue" before reading


class Forward(NamedTuple):
    """Send the request upstream: `target` and `headers` as they go, the answer through `rewrite`."""

    parsed: ParsedRequest
    decision: Decision
    target: str
    headers: CIMultiDict[str]
    rewrite: Callable[[bytes], bytes] | None
    body: bytearray | None               # the body read for the decision, forwarded as read
    stream_body: bool                    # the caller's body (unread) is streamed upstream
    send_continue: bool                  # answer "100 Continue" before streaming the body
    decided_in: float                    # seconds the policy took
    # An object of an encrypted dataset: what `proxy.crypto.stage` does, which then signs the request.
    seal: Plan | None = None
    # A paged account listing: the proxy pages the storage server itself (`proxy.storage.accountpages`).
    pager: AccountPager | None = None


class Refuse(NamedTuple):
    """Answer `error`; the request as far as it was parsed and decided, for the audit line."""

    error: RequestRefused
    parsed: ParsedRequest | None = None
    decision: Decision | None = None
    decided_in: float | None = None      # seconds the policy took, if it was asked


def expects_continue(version: tuple[int, int], headers: CIMultiDictProxy[str]) -> bool:
    """Whether the caller waits for "100 Continue" before sending its body (HTTP/1.0 never does)."""
    return version >= (1, 1) and headers.get("Expect", "").lower() == "100-continue"


def internal_failure(decision_id: str) -> InternalError:
    """What an unexpected exception becomes, logged with its traceback: a 500, and nothing forwarded."""
    log.exception("internal error on request %s", decision_id)
    return InternalError("the proxy failed to handle this request; it was not forwarded")


def check_version(head: RequestHead) -> None:
    """Refuse what is not HTTP/1.0 or HTTP/1.1 (before identity is asked). Raises `BadRequest`."""
    if head.version not in _HTTP_VERSIONS:
        # llhttp reads "HTTP/0.9" and "HTTP/2.0" request lines as HTTP/1.x; nothing else would.
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 requests are accepted")


class Evaluator:
    """Evaluates requests for one configuration: its storage API, tag signer and upstream signer."""

    def __init__(
        self, config: Config, api: StorageApi, signer: TagSigner | None, resigner: UpstreamSigner | None,
    ) -> None:
        self.config = config
        self.api = api
        self.signer = signer
        # Re-sign mode: the storage server sees the proxy's signature, not the caller's.
        self.resigner = resigner
        # Whether the region's key service is configured (objects of encrypted datasets need it).
        self.has_key_service = config.encryption.key_service is not None
        # What seals the tokens of paged account listings: every worker's, or every replica's with a key file.
        self.page_tokens = page_tokens(config.listing_token_key_file)

    def evaluate(
        self, head: RequestHead, identified: Identified, policy: Policy, decision_id: str,
        form: PostForm | None = None,
    ) -> ReadBody | Forward | Refuse:
        """What to do with an identified caller's request, before any byte of its body is read (but for a form
        upload's fields, `form`, read first: `proxy.formupload`)."""
        parsed: ParsedRequest | None = None
        try:
            check_connection(head.headers)
            parsed = self.api.parse(head.method, head.target, head.headers)
            if (form is None) != (parsed.form_boundary is None):
                raise InternalError("a form upload's fields were not read before its decision; it was not forwarded")
            if form is not None:
                parsed = self.api.with_form(parsed, form)
            if self.resigner is not None:
                self.resigner.check(head.target, head.headers)
            if parsed.body_limit is not None:
                refused = self._refused_before_body(policy, identified.caller, parsed)
                if refused is not None:
                    # Whatever the body says, the request is refused: it is never read.
                    error = AccessDenied(refused.reason, resource=str(refused.deciding.access.resource))
                    return Refuse(error, parsed, refused)
                return ReadBody(parsed, parsed.body_limit, head.expects_continue)
        except RequestRefused as err:
            return Refuse(err, parsed)
        except Exception:
            # Still a refusal, but one whose audit line keeps what was parsed.
            return Refuse(internal_failure(decision_id), parsed)
        return self._decide(head, identified, policy, decision_id, parsed, None)

    def evaluate_body(
        self, head: RequestHead, identified: Identified, policy: Policy, decision_id: str,
        pending: ReadBody, body: bytearray,
    ) -> Forward | Refuse:
        """What to do once the body `pending` asked for is read (whole, as it will be forwarded)."""
        parsed = pending.parsed
        try:
            # What the caller signed is checked before it is judged.
            if identified.body is not None:
                identified.body.whole(bytes(body))
            parsed = self.api.expand(parsed, body)
        except RequestRefused as err:
            return Refuse(err, parsed)
        except Exception:
            return Refuse(internal_failure(decision_id), parsed)
        return self._decide(head, identified, policy, decision_id, parsed, body)

    def _decide(
        self, head: RequestHead, identified: Identified, policy: Policy, decision_id: str,
        parsed: ParsedRequest, body: bytearray | None,
    ) -> Forward | Refuse:
        config = self.config
        caller = identified.caller
        decision: Decision | None = None
        decided_in: float | None = None
        try:
            deciding = time.perf_counter()
            decision = decide(
                policy, caller.jurisdiction, parsed.request,
                proxy_region=config.region,
                unmatched_allow=config.unmatched_allow,
                force_dry_run=config.dry_run,
                location=caller.location,
            )
            decided_in = time.perf_counter() - deciding
            if not decision.forwarded:
                raise AccessDenied(decision.reason, resource=str(decision.deciding.access.resource))
            rewrite = self._listing_filter(policy, caller, parsed, decision)
            headers = request_headers(head.headers, identified.token_headers)
            target = head.target
            resigner = self.resigner
            if resigner is not None:
                # Path-style, as every storage server reads it; before the signed tag binds Host and target.
                target = resigner.rewrite(headers, target)
            add_tags(
                headers, caller=caller, decision_id=decision_id,
                policy_version=policy.version, method=head.method,
                path=target, signer=self.signer,
            )
            pager = None if rewrite is None else self._pager(head, identified, policy, decision_id, parsed, headers)
            seal = None
            if policy.encrypted:
                seal = plan_encryption(parsed, decision, head.target, head.headers,
                                       has_key_service=self.has_key_service, body_exists=head.body_exists,
                                       region=config.region)
                rewrite = self._sizes_filter(policy, parsed, decision, rewrite)
            if seal is None and METADATA_HEADER in head.headers:
                # Only the encryption stage writes it (and replaces a caller's): a plaintext object carrying
                # it would pass for an encrypted one (e.g. to `bailiwick encrypt`, once its dataset migrates).
                raise BadRequest(f"{METADATA_HEADER} is the proxy's own metadata; it cannot be written",
                                 code="InvalidArgument")
            if resigner is not None and seal is None:
                resigner.sign(head.method, target, headers)
            stream = body is None and head.body_exists
            if body is None and not stream and identified.body is not None:
                identified.body.whole(b"")
            # A form upload's "100 Continue" went before its fields were read.
            return Forward(parsed, decision, target, headers, rewrite, body, stream,
                           stream and head.expects_continue and parsed.form_boundary is None, decided_in, seal, pager)
        except RequestRefused as err:
            return Refuse(err, parsed, decision, decided_in)
        except Exception:
            # Still a refusal, but one whose audit line keeps the request and its decision.
            return Refuse(internal_failure(decision_id), parsed, decision, decided_in)

    def _listing_filter(
        self, policy: Policy, caller: Caller, parsed: ParsedRequest, decision: Decision,
    ) -> Callable[[bytes], bytes] | None:
        """For an account listing, what its answer goes through: only what the caller may list stays."""
        if decision.rule != ACCOUNT_LISTING:
            return None
        if not parsed.account_listing:
            # Allowed only because the answer is filtered: never forwarded without the filter.
            raise InternalError("an account listing was allowed that the proxy cannot filter; it was not forwarded")
        visible = self._visible(policy, caller)
        api = self.api
        return lambda body: api.filter_account_listing(parsed, body, visible)

    def _visible(self, policy: Policy, caller: Caller) -> Callable[[Resource], bool]:
        """Whether the caller may see a bucket or container in an account listing."""
        config = self.config

        def visible(resource: Resource) -> bool:
            return visible_in_listing(policy, caller.jurisdiction, resource, proxy_region=config.region,
                                      unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run,
                                      location=caller.location)

        return visible

    def _pager(
        self, head: RequestHead, identified: Identified, policy: Policy, decision_id: str, parsed: ParsedRequest,
        headers: CIMultiDict[str],
    ) -> AccountPager | None:
        """For a paged account listing, who pages it: each page request made as the caller's would be."""
        paging = self.api.account_paging
        account = parsed.request.accesses[0].resource.bucket
        caller = identified.caller
        wanted = page_request(paging, head.target, caller.jurisdiction, account, self.page_tokens)
        if wanted is None:
            return None
        resigner = self.resigner
        # Access keys: the caller's SigV4 signature, verified, is made again for each page (its own key).
        own = identified.signature if resigner is None else None
        check_unsigned_query(paging, headers, head.target, resigned=resigner is not None or own is not None)

        def outgoing(page_target: str) -> tuple[str, CIMultiDict[str]]:
            sent = request_headers(head.headers, identified.token_headers)
            target = page_target if resigner is None else resigner.rewrite(sent, page_target)
            add_tags(sent, caller=caller, decision_id=decision_id, policy_version=policy.version,
                     method=head.method, path=target, signer=self.signer)
            if resigner is not None:
                resigner.sign(head.method, target, sent)
            elif own is not None:
                sent["Authorization"] = own.sign(head.method, target, head.headers)
            return target, sent

        visible = self._visible(policy, caller)
        return AccountPager(paging, wanted, account, self.page_tokens, outgoing, visible)

    @staticmethod
    def _sizes_filter(
        policy: Policy, parsed: ParsedRequest, decision: Decision, rewrite: Callable[[bytes], bytes] | None,
    ) -> Callable[[bytes], bytes] | None:
        """For an object listing that reaches an encrypted dataset: the sizes it shows are the plaintext's."""
        if rewrite is not None or parsed.operation not in LISTINGS_WITH_SIZES or not touches_encrypted(decision):
            return rewrite
        resource = decision.deciding.access.resource

        def encrypted(key: str) -> bool:
            return encryption_of(policy, Resource(resource.scheme, resource.bucket, key)) is Encryption.REQUIRED

        return lambda body: plaintext_sizes(body, encrypted)

    def _refused_before_body(self, policy: Policy, caller: Caller, parsed: ParsedRequest) -> Decision | None:
        """The refusal that stands whatever the body says, decided before a byte of it is read."""
        config = self.config
        jurisdiction, location = caller.jurisdiction, caller.location
        if parsed.body_names_keys:
            return refused_whatever_the_keys(
                policy, jurisdiction, parsed.request, proxy_region=config.region,
                unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run, location=location,
            )
        # The body only adds to the request (CreateBucket's region adds the placement check):
        # what the request is refused for without it, it is refused for with any body.
        decision = decide(policy, jurisdiction, parsed.request, proxy_region=config.region,
                          unmatched_allow=config.unmatched_allow, force_dry_run=config.dry_run, location=location)
        return decision if not decision.forwarded else None
