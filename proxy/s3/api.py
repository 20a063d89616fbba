"""S3 as a `StorageApi`: the S3 request model and error format behind the proxy's seam.

`S3Api.parse` runs on every request: it reads with one `RequestReader` made
at construction (so what it remembers, such as accepted Host values, lasts)
and builds the `ParsedRequest` from the reader's `S3Request`. Re-sign
mode (`proxy.s3.resign`) and the bucket a SigV2 signature signs are S3's too,
so the gateway asks this object for them and never asks which API it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import cast

from multidict import CIMultiDictProxy, MultiMapping

from proxy.api import ParsedRequest, UpstreamSigner
from proxy.config import Config, IdentityConfig, S3Settings
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import RequestRefused
from proxy.s3.delete import parse_delete_body
from proxy.s3.destinations import BODY_RULES, body_destinations
from proxy.s3.errors import render_error
from proxy.s3.host import HostReader
from proxy.s3.listing import PAGING, filter_list_buckets
from proxy.s3.operations import LIST_BUCKETS
from proxy.s3.placement import MAX_CREATE_BUCKET_BODY, placement_of
from proxy.s3.postform import PostForm
from proxy.s3.postobject import form_accesses
from proxy.s3.request import RequestReader


class S3Api:
    name = "s3"
    storage_bearer = False
    account_paging = PAGING

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._reader = RequestReader(settings)

    def parse(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest:
        request = self._reader.read(method, target, headers)
        op, access = request.operation, request.access
        # An ACL or lock set by headers is judged as PutObjectAcl / PutObjectRetention would be.
        accesses = (access, Access(Action.ADMIN, access.resource)) if request.governs else (access,)
        body_rule = BODY_RULES.get(op.name)
        return ParsedRequest(
            self.name,
            op.name,
            AccessRequest(accesses, request.copy_from, remotes=request.remotes),
            (self.settings.max_delete_body_bytes if op.reads_delete_body
             else MAX_CREATE_BUCKET_BODY if op.reads_placement
             else body_rule.limit if body_rule is not None else None),
            op is LIST_BUCKETS,
            op.reads_delete_body,
            request.form_boundary,
        )

    def form_upload(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest | None:
        # Only a multipart body is parsed before identity: any other POST's refusals keep their order.
        if method != "POST" or not headers.get("Content-Type", "").lstrip(" \t")[:10].lower().startswith("multipart/"):
            return None
        parsed = self.parse(method, target, headers)
        return parsed if parsed.form_boundary is not None else None

    def with_form(self, parsed: ParsedRequest, form: PostForm) -> ParsedRequest:
        bucket = parsed.request.accesses[0].resource.bucket
        accesses, remotes = form_accesses(bucket, form)
        request = replace(parsed.request, accesses=accesses, remotes=parsed.request.remotes + remotes)
        return replace(parsed, request=request)

    def expand(self, parsed: ParsedRequest, body: bytes | bytearray) -> ParsedRequest:
        if parsed.operation == "CreateBucket":
            request = replace(parsed.request, placement=placement_of(body))
            return replace(parsed, request=request, body_limit=None)
        if parsed.operation in BODY_RULES:
            # A body that names other buckets, keys or notification targets (proxy.s3.destinations).
            target = parsed.request.accesses[0]
            key = None if target.listing else target.resource.key
            flows, remotes = body_destinations(parsed.operation, target.resource.bucket, key, body)
            request = replace(parsed.request, flows=flows, remotes=parsed.request.remotes + remotes)
            return replace(parsed, request=request, body_limit=None)
        bucket = parsed.request.accesses[0].resource.bucket
        deletes = parse_delete_body(bucket, body)
        if any(access.action is Action.ADMIN for access in parsed.request.accesses):
            # x-amz-bypass-governance-retention: every key's lock is overridden, an admin act on each.
            deletes += tuple(Access(Action.ADMIN, access.resource) for access in deletes)
        return replace(parsed, request=AccessRequest(deletes), body_limit=None)

    def render_error(self, err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return render_error(err, request_id)

    def filter_account_listing(
        self, parsed: ParsedRequest, body: bytes, visible: Callable[[Resource], bool],
    ) -> bytes:
        return filter_list_buckets(body, visible)

    def upstream_signer(self, config: Config) -> UpstreamSigner | None:
        from proxy.s3.resign import request_signer

        return request_signer(config)

    def signed_bucket(self, identity: IdentityConfig) -> Callable[[MultiMapping[str]], str | None] | None:
        # Only access-key callers sign (SigV2 signs a virtual-hosted request's bucket); a reader of its own.
        if not identity.access_keys:
            return None
        reader = HostReader(self.settings)
        return lambda headers: reader.bucket(cast(CIMultiDictProxy[str], headers))
