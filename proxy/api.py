"""The seam between the proxy and a storage API (S3 now, Azure Blob next).

An API turns a raw HTTP request into the accesses the policy judges, and turns
a refusal into the error its own clients understand. Nothing outside the API's
package knows its URL layout or error format; the policy engine never sees
HTTP at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDictProxy

from proxy.domain import AccessRequest, Resource
from proxy.errors import RequestRefused


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What a request does, in the policy's terms.

    `body_limit` is set when the accesses depend on the body (S3's
    multi-object delete, CreateBucket's region, the destinations a restore or
    a bucket configuration names): the proxy reads at most that many bytes, calls
    `StorageApi.expand`, and forwards exactly the bytes it read.

    With `body_names_keys`, the body replaces the accesses' keys (the
    accesses name the bucket, with key ""): the request is refused unread when
    every key it could name would be (`proxy.policy.engine.refused_whatever_the_keys`).
    Without it, the body only adds to the request (CreateBucket's region), so
    a refusal of the request as parsed stands whatever the body says.

    `account_listing` is set for a listing of the account's buckets or
    containers: the proxy forwards it and passes the answer through
    `StorageApi.filter_account_listing`.
    """

    api: str
    operation: str
    request: AccessRequest
    body_limit: int | None = None
    account_listing: bool = False
    body_names_keys: bool = False


class StorageApi(Protocol):
    name: str

    def parse(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest:
        """Raises `BadRequest` for anything that cannot be read unambiguously."""
        ...

    def expand(self, parsed: ParsedRequest, body: bytes | bytearray) -> ParsedRequest:
        """The same request with the accesses its body adds; raises `BadRequest`."""
        ...

    def render_error(self, err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of a refusal in the API's own error format."""
        ...

    def filter_account_listing(
        self, parsed: ParsedRequest, body: bytes, visible: Callable[[Resource], bool],
    ) -> bytes:
        """An account listing's answer without the entries `visible` refuses; raises `UpstreamFailure`."""
        ...
