"""An Azure Blob request as the policy sees it: operation, account, container, blob, access and copy source.

`RequestReader.read` takes the method, the raw request-target and the headers
and either returns an `AzureRequest` that names every resource the request
touches or raises `BadRequest`. It never guesses: a request that Azure could
read as touching other data than the proxy judged is refused (docs/policies.md,
"How a request is decided", step 2). Nothing is changed: the proxy forwards
the target and headers exactly as they came, so SharedKey and SAS
signatures still verify.

The path is ``/CONTAINER/BLOB`` under ``ACCOUNT.<suffix>``, or
``/ACCOUNT/CONTAINER/BLOB`` on a path-style endpoint (`proxy.azure.host`).
The target is read by the strict reader both APIs share (`proxy.storage.target`:
character classes, one round of percent-decoding, repeated query parameters
refused), and the path is further refused when it holds an escaped ``/``,
``.``, ``\\`` or NUL. A path that names a container alone must say
``restype``: without it Azure reads ``/NAME`` as the blob NAME of the
``$root`` container, while the proxy would have judged a container.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.azure.copysource import HEADER as COPY_SOURCE
from proxy.azure.copysource import parse_copy_source
from proxy.azure.host import AccountReader
from proxy.azure.names import check_account, check_blob, check_container, check_prefix, check_raw_path
from proxy.azure.operations import (
    COPY_BLOB_FROM_URL,
    PUT_BLOB,
    PUT_BLOB_FROM_URL,
    Level,
    Operation,
    Scope,
    classify,
)
from proxy.config import AzureSettings
from proxy.domain import Access, Resource
from proxy.errors import BadRequest
from proxy.framing import check_frame
from proxy.storage.host import Headers
from proxy.storage.target import QueryParam, parse_target
from proxy.storage.uri import percent_decode

# Azure's largest single request body: a Put Blob of 5000 MiB.
MAX_CONTENT_LENGTH = 5000 * 1024**2
# Headers that name another resource than the one judged, on operations the proxy does not support:
# Rename Container's source, a Data Lake rename source, Get Page Ranges' diff against another blob.
_UNCHECKED_SOURCES = {
    "x-ms-source-container-name": "Rename Container is not supported: its source is not checked by the policy",
    "x-ms-rename-source": "renames are not supported: their source is not checked by the policy",
    "x-ms-previous-snapshot-url": "x-ms-previous-snapshot-url is not supported: it names another blob",
}
_DELETED_CONTAINER = "x-ms-deleted-container-name"
# The restype values that make a one-segment path a container (or the service / account).
_RESTYPES = frozenset({"container", "service", "account"})
_REQUIRES_SYNC = "x-ms-requires-sync"
_BLOB_TYPE = "x-ms-blob-type"
_HEADER_CODE = "InvalidHeaderValue"



@dataclass(frozen=True, slots=True)
class AzureRequest:
    """What an Azure Blob request does, for the policy engine, the audit log and metrics."""

    operation: Operation
    account: str
    container: str | None  # None for account-level requests
    blob: str | None  # decoded; None for account- and container-level requests
    access: Access
    copy_from: Resource | None


class RequestReader:
    """Reads Azure Blob requests for one configuration (the Host reading is remembered)."""

    def __init__(self, settings: AzureSettings) -> None:
        self._hosts = AccountReader(settings)

    def read(self, method: str, target: str, headers: Headers) -> AzureRequest:
        """Read an Azure Blob request. Raises `BadRequest` for anything not readable unambiguously."""
        check_frame(method, headers, MAX_CONTENT_LENGTH, "Azure")
        for name, reason in _UNCHECKED_SOURCES.items():
            if name in headers:
                raise BadRequest(reason, code=_HEADER_CODE)
        host_account = self._hosts.account(headers)
        parsed = parse_target(target)
        params, by_name = parsed.params, parsed.by_name
        check_raw_path(parsed.raw_path)
        account, container, blob = _locate(parsed.raw_path, host_account)

        if container is None:
            level = Level.ACCOUNT
        elif blob is None:
            level = Level.CONTAINER
            restype = by_name.get("restype")
            if restype is None or restype.value not in _RESTYPES:
                raise BadRequest(
                    "a path that names only a container must carry restype (restype=container): without it "
                    "Azure reads it as a blob of the $root container; address those as /$root/BLOB",
                    code="InvalidURI",
                )
        else:
            level = Level.BLOB
        op = classify(level, method, params)
        if op.refusal is not None:
            raise BadRequest(op.refusal)
        copy_from = None
        copy_source = _one_header(headers, COPY_SOURCE)
        if copy_source is not None:
            if op.copy is None and not op.needs_copy:
                raise BadRequest(
                    f"{COPY_SOURCE} is accepted only on the operations that copy (Copy Blob, Put Blob/Block/Page "
                    "From URL, Append Block From URL, Incremental Copy Blob)",
                    code=_HEADER_CODE,
                )
            copy_from = parse_copy_source(copy_source, self._hosts)
            if op is PUT_BLOB:
                op = _put_blob_copy(op, headers)
            elif op.copy is not None:
                op = op.copy
        elif op.needs_copy:
            raise BadRequest(f"{op.name} needs an {COPY_SOURCE} header", code=_HEADER_CODE)
        deleted = headers.getall(_DELETED_CONTAINER, ())
        if deleted and (op.name != "RestoreContainer" or list(deleted) != [container]):
            raise BadRequest(
                f"{_DELETED_CONTAINER} is accepted only on Restore Container, naming the container of the path "
                "(restoring under another name is not supported: the deleted container is not checked)",
                code=_HEADER_CODE,
            )
        return AzureRequest(op, account, container, blob, _access(op, account, container, blob, by_name), copy_from)


def _locate(raw_path: str, host_account: str | None) -> tuple[str, str | None, str | None]:
    """(account, container, decoded blob) of a raw path, given the account its Host named (None: in the path)."""
    rest = raw_path[1:]
    if host_account is None:
        account, _, rest = rest.partition("/")
        if not account:
            raise BadRequest("the path must start with the storage account on this endpoint", code="InvalidURI")
        if "%" in account:
            raise BadRequest("the storage account in the path must not be percent-encoded", code="InvalidURI")
        check_account(account)
    else:
        account = host_account
    if not rest:
        return account, None, None
    raw_container, slash, raw_blob = rest.partition("/")
    if not raw_container:
        raise BadRequest("the path has an empty container segment", code="InvalidURI")
    container = percent_decode(raw_container, "the container name")
    check_container(container)
    if not slash:
        return account, container, None
    blob = percent_decode(raw_blob, "the blob name")
    check_blob(blob)
    return account, container, blob


def _access(op: Operation, account: str, container: str | None, blob: str | None,
            by_name: Mapping[str, QueryParam]) -> Access:
    scope = op.scope
    if scope is Scope.BLOB:
        return Access(op.action, Resource("azure", account, f"{container}/{blob}"))
    if scope is Scope.PREFIX:
        param = by_name.get("prefix")
        prefix = (param.value or "") if param is not None else ""
        check_prefix(prefix)
        return Access(op.action, Resource("azure", account, f"{container}/{prefix}"), listing=True)
    if scope is Scope.CONTAINER or scope is Scope.WHOLE_CONTAINER:
        # Configuration governs every blob in the container: it touches every dataset nested in it.
        return Access(op.action, Resource("azure", account, f"{container}/"),
                      listing=scope is Scope.WHOLE_CONTAINER)
    return Access(op.action, Resource("azure", account, ""), listing=scope is Scope.WHOLE_ACCOUNT)


def _put_blob_copy(op: Operation, headers: Headers) -> Operation:
    """Which copy a Put Blob with a copy source is: From URL (synchronous) forms or Copy Blob."""
    assert op.copy is not None   # PUT_BLOB has its twin, Copy Blob
    if _REQUIRES_SYNC in headers:
        return COPY_BLOB_FROM_URL
    if _BLOB_TYPE in headers:
        return PUT_BLOB_FROM_URL
    return op.copy


def _one_header(headers: Headers, name: str) -> str | None:
    values = headers.getall(name, ())
    if len(values) > 1:
        raise BadRequest(f"the {name} header is repeated", code=_HEADER_CODE)
    if values and not values[0]:
        raise BadRequest(f"the {name} header is empty", code=_HEADER_CODE)
    return values[0] if values else None


