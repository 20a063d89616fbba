"""Azure Blob Storage as a `StorageApi`: the Blob service's request model and error format behind the seam.

`AzureApi.parse` runs on every request with one `RequestReader` made at
construction (so the Host values it accepted are remembered). No Azure
operation needs its body read for the decision (blob batches, whose body
holds sub-requests, are refused), so `expand` is never called, and it has
no form uploads (`form_upload` is None). List
Containers is an account listing: its answer goes through
`filter_account_listing`. Azure has no re-sign mode (`upstream_signer` is
None) and its signatures name no bucket read from the Host.
"""

from __future__ import annotations

from collections.abc import Callable

from multidict import CIMultiDictProxy, MultiMapping

from proxy.api import ParsedRequest, UpstreamSigner
from proxy.azure.errors import render_error
from proxy.azure.listing import PAGING, filter_list_containers
from proxy.azure.operations import LIST_CONTAINERS
from proxy.azure.request import RequestReader
from proxy.config import AzureSettings, Config, IdentityConfig
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import ConfigError, InternalError, RequestRefused

# Headers with which a write also sets what Set Legal Hold / Set Immutability Policy set (admin).
GOVERNING_HEADERS = ("x-ms-legal-hold", "x-ms-immutability-policy-until-date", "x-ms-immutability-policy-mode")


class AzureApi:
    name = "azure"
    storage_bearer = True
    account_paging = PAGING

    def __init__(self, settings: AzureSettings) -> None:
        self.settings = settings
        self._reader = RequestReader(settings)

    def parse(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest:
        request = self._reader.read(method, target, headers)
        op = request.operation
        access = request.access
        accesses: tuple[Access, ...] = (access,)
        if request.blob is not None and access.action is Action.WRITE and any(h in headers for h in GOVERNING_HEADERS):
            # A legal hold or immutability policy set with the write: what ?comp=legalhold does (admin).
            accesses = (access, Access(Action.ADMIN, access.resource))
        return ParsedRequest(
            self.name, op.name, AccessRequest(accesses, request.copy_from),
            account_listing=op is LIST_CONTAINERS,
        )

    def expand(self, parsed: ParsedRequest, body: bytes | bytearray) -> ParsedRequest:
        raise InternalError("no Azure operation is decided on its body; the request was not forwarded")

    def form_upload(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> ParsedRequest | None:
        return None   # the Blob service has no form uploads

    def with_form(self, parsed: ParsedRequest, form: object) -> ParsedRequest:
        raise InternalError("the Blob service has no form uploads; the request was not forwarded")

    def render_error(self, err: RequestRefused, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return render_error(err, request_id)

    def filter_account_listing(
        self, parsed: ParsedRequest, body: bytes, visible: Callable[[Resource], bool],
    ) -> bytes:
        if not parsed.account_listing or parsed.api != self.name:
            raise InternalError("only a List Containers answer can be filtered; it was not passed on")
        return filter_list_containers(body, parsed.request.accesses[0].resource.bucket, visible)

    def upstream_signer(self, config: Config) -> UpstreamSigner | None:
        if config.s3.sign is not None:
            raise ConfigError(f"s3.sign: re-sign mode signs S3 requests; upstream.api is {str(config.upstream.api)!r}")
        return None

    def signed_bucket(self, identity: IdentityConfig) -> Callable[[MultiMapping[str]], str | None] | None:
        return None
