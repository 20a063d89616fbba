"""Which Azure Blob operation a request is, and which policy action it performs (docs/policies.md, "datasets": Actions).

The Blob service selects the operation by the method, by whether the path
names the account, a container or a blob, and by the ``restype`` and
``comp`` query parameters (``?restype=container&comp=list`` is List Blobs,
``?comp=blocklist`` on a blob is Put or Get Block List ...). This module holds
one table from (level, method, selectors) to `Operation`
(`proxy.storage.operations.OperationTable`), built once at import; a request
is classified with one dict lookup. A copy source header
turns some operations into their "from URL" twin (`Operation.copy`); that is
the request reader's business (`proxy.azure.request`).

Fail closed, as on the S3 side: a query parameter that is neither a selector
nor a known ordinary parameter, a selector value the table does not list (the
values are compared exactly: ``comp=List`` is not ``comp=list``), or a
combination the table does not list, is the operation "Unknown" with the
action ``admin`` over the whole container, or over the whole account for
requests at the account level or with an account-level ``restype``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from proxy.domain import Action
from proxy.storage.operations import OperationTable
from proxy.storage.target import QueryParam


class Level(Enum):
    ACCOUNT = "account"  # no container in the path
    CONTAINER = "container"
    BLOB = "blob"


class Scope(Enum):
    """Which resource the access of an operation is on (`proxy.azure.request` builds it)."""

    BLOB = "blob"  # the blob of the path: "CONTAINER/BLOB"
    CONTAINER = "container"  # the container itself ("CONTAINER/"), not what is in it
    PREFIX = "prefix"  # a listing: every blob under the `prefix` query parameter
    WHOLE_CONTAINER = "whole-container"  # container configuration: it governs every blob in it
    ACCOUNT = "account"  # List Containers: the account (""), answered filtered
    WHOLE_ACCOUNT = "whole-account"  # account configuration: it governs every container


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # the REST API name without spaces, for audit and metrics
    action: Action
    scope: Scope
    # What this operation becomes with an x-ms-copy-source header (PutBlock -> PutBlockFromURL);
    # None: a copy source is refused, unless `needs_copy`.
    copy: Operation | None = None
    # The operation is valid only with a copy source, and stays itself (Incremental Copy Blob).
    needs_copy: bool = False
    # Refused outright, with this reason (blob batch, container rename).
    refusal: str | None = None


# Selectors: the query parameters whose value picks the operation.
_SELECTOR_NAMES = ("restype", "comp", "deletetype")

# Query parameters that never select an operation: timeouts, snapshot and version
# addressing, listing controls, block ids, copy ids, tag filters, response header
# overrides (rscc ...), and every parameter of a shared access signature.
ORDINARY_PARAMS = frozenset({
    "timeout", "snapshot", "versionid", "prevsnapshot",
    "prefix", "delimiter", "marker", "maxresults", "include", "showonly", "where",
    "blockid", "blocklisttype", "copyid",
    "rscc", "rscd", "rsce", "rscl", "rsct",
    # SAS: service, account and user delegation
    "sv", "ss", "srt", "sp", "se", "st", "spr", "sip", "sig", "si", "sr", "sdd", "ses",
    "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "sduoid", "skdutid",
})  # fmt: skip

R, L, W, D, A = Action.READ, Action.LIST, Action.WRITE, Action.DELETE, Action.ADMIN
_OPERATION_TABLE: OperationTable[Level, Operation] = OperationTable()
_TABLE = _OPERATION_TABLE.entries

BATCH_REFUSAL = (
    "blob batch requests are not supported: each sub-request would need its own decision; send them one by one"
)
RENAME_REFUSAL = (
    "Rename Container is not supported: its source (x-ms-source-container-name) is not checked by the policy"
)


def _add(level: Level, methods: str, selectors: str, op: Operation) -> None:
    for method in methods.split():
        _OPERATION_TABLE.add(level, method, selectors.split(), op)


def _blob(methods: str, selectors: str, name: str, action: Action, *, copy: str | None = None,
          needs_copy: bool = False) -> Operation:
    twin = Operation(copy, action, Scope.BLOB) if copy else None
    op = Operation(name, action, Scope.BLOB, copy=twin, needs_copy=needs_copy)
    _add(Level.BLOB, methods, selectors, op)
    return op


def _container(methods: str, selectors: str, name: str, action: Action, scope: Scope) -> None:
    _add(Level.CONTAINER, methods, f"restype=container {selectors}", Operation(name, action, scope))


def _account(methods: str, selectors: str, name: str, action: Action, scope: Scope) -> Operation:
    op = Operation(name, action, scope)
    _add(Level.ACCOUNT, methods, selectors, op)
    return op


# ---- blobs ------------------------------------------------------------------------
_blob("GET", "", "GetBlob", R)
_blob("HEAD", "", "GetBlobProperties", R)
# Put Blob; with x-ms-copy-source it is Copy Blob, Copy Blob From URL or Put Blob From URL
# (`proxy.azure.request` names which, from x-ms-requires-sync and x-ms-blob-type).
PUT_BLOB = _blob("PUT", "", "PutBlob", W, copy="CopyBlob")
COPY_BLOB_FROM_URL = Operation("CopyBlobFromURL", W, Scope.BLOB)  # with x-ms-requires-sync
PUT_BLOB_FROM_URL = Operation("PutBlobFromURL", W, Scope.BLOB)  # with x-ms-blob-type
_blob("DELETE", "", "DeleteBlob", D)
_blob("DELETE", "deletetype=permanent", "DeleteBlob", D)
_blob("PUT", "comp=block", "PutBlock", W, copy="PutBlockFromURL")
_blob("PUT", "comp=blocklist", "PutBlockList", W)
_blob("GET", "comp=blocklist", "GetBlockList", R)
_blob("PUT", "comp=page", "PutPage", W, copy="PutPageFromURL")
_blob("GET", "comp=pagelist", "GetPageRanges", R)
_blob("PUT", "comp=appendblock", "AppendBlock", W, copy="AppendBlockFromURL")
_blob("PUT", "comp=seal", "SealAppendBlob", W)
_blob("PUT", "comp=incrementalcopy", "IncrementalCopyBlob", W, needs_copy=True)
_blob("PUT", "comp=copy", "AbortCopyBlob", W)
_blob("PUT", "comp=undelete", "UndeleteBlob", W)
_blob("PUT", "comp=properties", "SetBlobProperties", W)
_blob("GET HEAD", "comp=metadata", "GetBlobMetadata", R)
_blob("PUT", "comp=metadata", "SetBlobMetadata", W)
_blob("PUT", "comp=lease", "LeaseBlob", W)
_blob("PUT", "comp=snapshot", "SnapshotBlob", W)
_blob("PUT", "comp=tier", "SetBlobTier", W)
_blob("GET", "comp=tags", "GetBlobTags", R)
_blob("PUT", "comp=tags", "SetBlobTags", W)
# Retention of the data is configuration: who may keep it from being changed or deleted.
_blob("PUT", "comp=immutabilityPolicies", "SetBlobImmutabilityPolicy", A)
_blob("DELETE", "comp=immutabilityPolicies", "DeleteBlobImmutabilityPolicy", A)
_blob("PUT", "comp=legalhold", "SetBlobLegalHold", A)
# An expiry deletes the blob when it comes: a delete, scheduled.
_blob("PUT", "comp=expiry", "SetBlobExpiry", D)
_blob("POST", "comp=query", "QueryBlobContents", R)

# ---- containers -----------------------------------------------------------------------
_container("PUT", "", "CreateContainer", A, Scope.WHOLE_CONTAINER)
_container("GET HEAD", "", "GetContainerProperties", L, Scope.CONTAINER)
_container("DELETE", "", "DeleteContainer", A, Scope.WHOLE_CONTAINER)
_container("GET HEAD", "comp=metadata", "GetContainerMetadata", L, Scope.CONTAINER)
_container("PUT", "comp=metadata", "SetContainerMetadata", A, Scope.WHOLE_CONTAINER)
_container("GET HEAD", "comp=acl", "GetContainerACL", A, Scope.WHOLE_CONTAINER)
_container("PUT", "comp=acl", "SetContainerACL", A, Scope.WHOLE_CONTAINER)
_container("PUT", "comp=lease", "LeaseContainer", A, Scope.WHOLE_CONTAINER)
# x-ms-deleted-container-name must name the container of the path (`proxy.azure.request`).
_container("PUT", "comp=undelete", "RestoreContainer", A, Scope.WHOLE_CONTAINER)
_container("GET", "comp=list", "ListBlobs", L, Scope.PREFIX)
# A tag query answers with blobs from anywhere in the container.
_container("GET", "comp=blobs", "FindBlobsByTags", L, Scope.WHOLE_CONTAINER)
_add(Level.CONTAINER, "PUT", "restype=container comp=rename",
     Operation("RenameContainer", A, Scope.WHOLE_CONTAINER, refusal=RENAME_REFUSAL))
_add(Level.CONTAINER, "POST", "restype=container comp=batch",
     Operation("BlobBatch", A, Scope.WHOLE_CONTAINER, refusal=BATCH_REFUSAL))

# ---- account --------------------------------------------------------------------------
LIST_CONTAINERS = _account("GET", "comp=list", "ListContainers", L, Scope.ACCOUNT)
_account("GET", "restype=service comp=properties", "GetBlobServiceProperties", A, Scope.WHOLE_ACCOUNT)
_account("PUT", "restype=service comp=properties", "SetBlobServiceProperties", A, Scope.WHOLE_ACCOUNT)
_account("GET", "restype=service comp=stats", "GetBlobServiceStats", A, Scope.WHOLE_ACCOUNT)
# A delegation key signs SAS tokens for any container of the account.
_account("POST", "restype=service comp=userdelegationkey", "GetUserDelegationKey", A, Scope.WHOLE_ACCOUNT)
_account("GET", "comp=blobs", "FindBlobsByTags", L, Scope.WHOLE_ACCOUNT)
_add(Level.ACCOUNT, "POST", "comp=batch", Operation("BlobBatch", A, Scope.WHOLE_ACCOUNT, refusal=BATCH_REFUSAL))
# Get Account Information answers at every level, about the account.
_ACCOUNT_INFORMATION = Operation("GetAccountInformation", L, Scope.WHOLE_ACCOUNT)
for _level in Level:
    _add(_level, "GET HEAD", "restype=account comp=properties", _ACCOUNT_INFORMATION)

UNKNOWN_CONTAINER = Operation("Unknown", A, Scope.WHOLE_CONTAINER)
UNKNOWN_ACCOUNT = Operation("Unknown", A, Scope.WHOLE_ACCOUNT)
_UNKNOWN = {Level.BLOB: UNKNOWN_CONTAINER, Level.CONTAINER: UNKNOWN_CONTAINER, Level.ACCOUNT: UNKNOWN_ACCOUNT}
# restype values that address the whole account, wherever they are sent.
_ACCOUNT_RESTYPES = frozenset({"restype=service", "restype=account"})

SELECTORS: frozenset[str] = frozenset(_SELECTOR_NAMES)
OPERATIONS: tuple[Operation, ...] = tuple(dict.fromkeys(_TABLE.values()))

_PLAIN = _OPERATION_TABLE.plain()


def table() -> dict[tuple[Level, str, frozenset[str]], Operation]:
    """A copy of the table, for documentation and tests."""
    return dict(_TABLE)


def classify(level: Level, method: str, params: Iterable[QueryParam]) -> Operation:
    """The operation a request performs; "Unknown" (admin) for anything not in the table."""
    if isinstance(params, tuple) and not params:
        op = _PLAIN.get((level, method))
        return op if op is not None else _UNKNOWN[level]
    tokens: set[str] = set()
    known = True
    for param in params:
        name = param.name
        if name in SELECTORS:
            tokens.add(f"{name}={param.value}" if param.value is not None else name)
        elif name not in ORDINARY_PARAMS:
            known = False
    op = _TABLE.get((level, method, frozenset(tokens))) if known else None
    if op is not None:
        return op
    return UNKNOWN_ACCOUNT if not tokens.isdisjoint(_ACCOUNT_RESTYPES) else _UNKNOWN[level]
