"""The seam between the proxy and a storage API (S3 now, Azure Blob next).

An API turns a raw HTTP request into the accesses the policy judges, and turns
a refusal into the error its own clients understand. Nothing outside the API's
package knows its URL layout, error format or signatures (re-sign mode, the
bucket a virtual-hosted request's signature names); the policy engine never
sees HTTP at all. `make_api` is the one place that picks the API from the
configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from proxy.config import Config, IdentityConfig, UpstreamApi
from proxy.domain import AccessRequest, Resource
from proxy.errors import RequestRefused

if TYPE_CHECKING:
    from proxy.s3.postform import PostForm
    from proxy.storage.accountpages import Paging


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

    `form_boundary` is set for a browser's form upload (S3's POST Object): the
    fields before the file name the key, so the proxy reads them first (and
    may identify the caller by the form's signed policy), then calls
    `StorageApi.with_form` and streams the file through.

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
    form_boundary: bytes | None = None


class UpstreamSigner(Protocol):
    """Re-sign mode: the storage server sees the proxy's signature, not the caller's.

    The gateway calls, in this order: `check` before the decision, `rewrite`
    after it and before the proxy's tags bind Host and target, `sign` last
    (nothing it signs changes after it).
    """

    def check(self, target: str, headers: MultiMapping[str]) -> None:
        """Refuse a request whose signature the proxy cannot replace. Raises `BadRequest`."""
        ...

    def rewrite(self, headers: CIMultiDict[str], target: str) -> str:
        """Set the Host to forward in `headers`; return the request-target to forward and sign."""
        ...

    def sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        """Replace the caller's signature in `headers` with the proxy's."""
        ...


class StorageApi(Protocol):
    name: str
    # The API takes Bearer tokens of its own (Azure Blob with Entra ID); see `proxy.identity.extract.token_in`.
    storage_bearer: bool
    # How its account listing is paged by the proxy (`proxy.storage.accountpages`).
    account_paging: Paging

    def parse(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest:
        """Raises `BadRequest` for anything that cannot be read unambiguously."""
        ...

    def expand(self, parsed: ParsedRequest, body: bytes | bytearray) -> ParsedRequest:
        """The same request with the accesses its body adds; raises `BadRequest`."""
        ...

    def form_upload(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest | None:
        """A form upload (`ParsedRequest.form_boundary` set), parsed: its fields are read before identity; else None.

        Raises `BadRequest` for a form upload that cannot be read unambiguously.
        """
        ...

    def with_form(self, parsed: ParsedRequest, form: PostForm) -> ParsedRequest:
        """A form upload with the accesses its form's fields make; raises `BadRequest`."""
        ...

    def render_error(self, err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of a refusal in the API's own error format."""
        ...

    def filter_account_listing(
        self, parsed: ParsedRequest, body: bytes, visible: Callable[[Resource], bool],
    ) -> bytes:
        """An account listing's answer without the entries `visible` refuses; raises `UpstreamFailure`."""
        ...

    def upstream_signer(self, config: Config) -> UpstreamSigner | None:
        """The signer re-sign mode asks for, or None (callers' signatures pass). Raises `ConfigError` at start."""
        ...

    def signed_bucket(self, identity: IdentityConfig) -> Callable[[MultiMapping[str]], str | None] | None:
        """How the bucket a virtual-hosted request names is read for a signature that signs it, or None."""
        ...


def make_api(config: Config) -> StorageApi:
    """The storage API `upstream.api` names."""
    # Imported here: an S3 proxy never loads the Azure package (and the reverse).
    if config.upstream.api is UpstreamApi.AZURE:
        from proxy.azure.api import AzureApi

        return AzureApi(config.azure)
    from proxy.s3.api import S3Api

    return S3Api(config.s3)
