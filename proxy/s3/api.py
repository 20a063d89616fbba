"""S3 as a `StorageApi`: the S3 request model and error format behind the proxy's seam."""

from __future__ import annotations

from dataclasses import replace

from multidict import CIMultiDictProxy

from proxy.api import ParsedRequest
from proxy.config import S3Settings
from proxy.domain import AccessRequest
from proxy.errors import RequestRefused
from proxy.s3.delete import parse_delete_body
from proxy.s3.errors import render_error
from proxy.s3.request import parse_request


class S3Api:
    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings

    def parse(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest:
        request = parse_request(method, target, headers, self.settings)
        return ParsedRequest(
            api=self.name,
            operation=request.operation,
            request=AccessRequest((request.access,), copy_from=request.copy_from),
            body_limit=self.settings.max_delete_body_bytes if request.reads_delete_body else None,
        )

    def expand(self, parsed: ParsedRequest, body: bytes) -> ParsedRequest:
        bucket = parsed.request.accesses[0].resource.bucket
        return replace(parsed, request=AccessRequest(parse_delete_body(bucket, body)), body_limit=None)

    def render_error(self, err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return render_error(err, request_id)
