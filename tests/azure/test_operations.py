"""Method + level + restype/comp -> Azure Blob operation, policy action and the resource it is judged on."""

from __future__ import annotations

import pytest

from proxy.azure.operations import (
    OPERATIONS,
    ORDINARY_PARAMS,
    SELECTORS,
    UNKNOWN_ACCOUNT,
    UNKNOWN_CONTAINER,
    Level,
    Scope,
    classify,
    table,
)
from proxy.domain import Action
from proxy.storage.target import parse_target

from .helpers import ACCOUNT, parse

R, L, W, D, A = Action.READ, Action.LIST, Action.WRITE, Action.DELETE, Action.ADMIN
P = f"/{ACCOUNT}"
SAS = "sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00%3A00%3A00Z&st=2024-01-01T00%3A00%3A00Z&spr=https" \
      "&sig=abc%2Bdef%2F%3D"


@pytest.mark.parametrize(
    ("method", "target", "operation", "action", "key", "listing"),
    [
        # blobs: the blob of the path
        ("GET", f"{P}/ie-mail/alice/1.eml", "GetBlob", R, "ie-mail/alice/1.eml", False),
        ("GET", f"{P}/ie-mail/a?snapshot=2024-01-01T00%3A00%3A00.0000000Z", "GetBlob", R, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?versionid=2024-01-01T00%3A00%3A00.0000000Z&timeout=30", "GetBlob", R,
         "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?rscc=no-cache&rsct=text%2Fplain&rscd=x&rsce=gzip&rscl=en", "GetBlob", R,
         "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?{SAS}&sr=b", "GetBlob", R, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?skoid=o&sktid=t&skt=x&ske=y&sks=b&skv=2024-08-04&sig=s&sv=2024-08-04&sr=b&sp=r"
                "&se=2030-01-01&saoid=a&scid=c", "GetBlob", R, "ie-mail/a", False),
        ("HEAD", f"{P}/ie-mail/a", "GetBlobProperties", R, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a", "PutBlob", W, "ie-mail/a", False),
        ("DELETE", f"{P}/ie-mail/a", "DeleteBlob", D, "ie-mail/a", False),
        ("DELETE", f"{P}/ie-mail/a?snapshot=x&deletetype=permanent", "DeleteBlob", D, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=block&blockid=QUFB", "PutBlock", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=blocklist", "PutBlockList", W, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?comp=blocklist&blocklisttype=all", "GetBlockList", R, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=page", "PutPage", W, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?comp=pagelist&prevsnapshot=x", "GetPageRanges", R, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=appendblock", "AppendBlock", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=seal", "SealAppendBlob", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=copy&copyid=123", "AbortCopyBlob", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=undelete", "UndeleteBlob", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=properties", "SetBlobProperties", W, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?comp=metadata", "GetBlobMetadata", R, "ie-mail/a", False),
        ("HEAD", f"{P}/ie-mail/a?comp=metadata", "GetBlobMetadata", R, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=metadata", "SetBlobMetadata", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=lease", "LeaseBlob", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=snapshot", "SnapshotBlob", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=tier&versionid=v", "SetBlobTier", W, "ie-mail/a", False),
        ("GET", f"{P}/ie-mail/a?comp=tags", "GetBlobTags", R, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=tags", "SetBlobTags", W, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=immutabilityPolicies", "SetBlobImmutabilityPolicy", A, "ie-mail/a", False),
        ("DELETE", f"{P}/ie-mail/a?comp=immutabilityPolicies", "DeleteBlobImmutabilityPolicy", A,
         "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=legalhold", "SetBlobLegalHold", A, "ie-mail/a", False),
        ("PUT", f"{P}/ie-mail/a?comp=expiry", "SetBlobExpiry", D, "ie-mail/a", False),
        ("POST", f"{P}/ie-mail/a?comp=query", "QueryBlobContents", R, "ie-mail/a", False),
        # containers: the container itself, or everything in it
        ("PUT", f"{P}/ie-mail?restype=container", "CreateContainer", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container", "GetContainerProperties", L, "ie-mail/", False),
        ("HEAD", f"{P}/ie-mail?restype=container", "GetContainerProperties", L, "ie-mail/", False),
        ("DELETE", f"{P}/ie-mail?restype=container", "DeleteContainer", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=metadata", "GetContainerMetadata", L, "ie-mail/", False),
        ("PUT", f"{P}/ie-mail?restype=container&comp=metadata", "SetContainerMetadata", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=acl", "GetContainerACL", A, "ie-mail/", True),
        ("PUT", f"{P}/ie-mail?comp=acl&restype=container", "SetContainerACL", A, "ie-mail/", True),
        ("PUT", f"{P}/ie-mail?restype=container&comp=lease", "LeaseContainer", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=list", "ListBlobs", L, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=list&prefix=alice%2Finbox%2F&delimiter=%2F&maxresults=5"
                "&marker=m&include=metadata,snapshots&showonly=files", "ListBlobs", L, "ie-mail/alice/inbox/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=blobs&where=%22a%22%3D%27b%27", "FindBlobsByTags", L,
         "ie-mail/", True),
        ("GET", f"{P}/$root?restype=container", "GetContainerProperties", L, "$root/", False),
        ("GET", f"{P}/%24root/x", "GetBlob", R, "$root/x", False),
        # account: List Containers is the account listing; configuration reaches every container
        ("GET", f"{P}?comp=list", "ListContainers", L, "", False),
        ("GET", f"{P}/?comp=list&prefix=ie&include=metadata", "ListContainers", L, "", False),
        ("GET", f"{P}/?restype=service&comp=properties", "GetBlobServiceProperties", A, "", True),
        ("PUT", f"{P}/?restype=service&comp=properties", "SetBlobServiceProperties", A, "", True),
        ("GET", f"{P}/?restype=service&comp=stats", "GetBlobServiceStats", A, "", True),
        ("POST", f"{P}/?restype=service&comp=userdelegationkey", "GetUserDelegationKey", A, "", True),
        ("GET", f"{P}/?comp=blobs&where=%22a%22%3D%27b%27", "FindBlobsByTags", L, "", True),
        ("GET", f"{P}/?restype=account&comp=properties", "GetAccountInformation", L, "", True),
        ("HEAD", f"{P}/ie-mail?restype=account&comp=properties", "GetAccountInformation", L, "", True),
        ("GET", f"{P}/ie-mail/a?restype=account&comp=properties", "GetAccountInformation", L, "", True),
        # unknown: fail closed, admin over the whole container (or account)
        ("GET", f"{P}/ie-mail/a?comp=foo", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail/a?foo=1", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail/a?comp=Tags", "Unknown", A, "ie-mail/", True),   # values compare exactly
        ("GET", f"{P}/ie-mail/a?Comp=tags", "Unknown", A, "ie-mail/", True),   # and so do names
        ("GET", f"{P}/ie-mail/a?comp", "Unknown", A, "ie-mail/", True),
        ("PUT", f"{P}/ie-mail/a?comp=blocklist&comp2=x", "Unknown", A, "ie-mail/", True),
        ("POST", f"{P}/ie-mail/a", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail/a?restype=container", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail/a?restype=container&comp=list", "Unknown", A, "ie-mail/", True),
        ("PUT", f"{P}/ie-mail/a?comp=tags&deletetype=permanent", "Unknown", A, "ie-mail/", True),
        ("DELETE", f"{P}/ie-mail/a?deletetype=soft", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=container&comp=stats", "Unknown", A, "ie-mail/", True),
        ("POST", f"{P}/ie-mail?restype=container", "Unknown", A, "ie-mail/", True),
        ("GET", f"{P}/ie-mail?restype=service&comp=properties", "Unknown", A, "", True),
        ("PUT", f"{P}/ie-mail/a?restype=service&comp=properties&x=1", "Unknown", A, "", True),
        ("GET", f"{P}/?comp=list&restype=container", "Unknown", A, "", True),
        ("GET", f"{P}/", "Unknown", A, "", True),
        ("PUT", f"{P}/?comp=list", "Unknown", A, "", True),
        ("GET", f"{P}/?comp=list&startFrom=x", "Unknown", A, "", True),
    ],
)
def test_operations(method: str, target: str, operation: str, action: Action, key: str, listing: bool) -> None:
    request = parse(method, target)
    assert request.operation.name == operation
    assert request.access.action is action
    assert request.access.resource.scheme == "azure"
    assert request.access.resource.bucket == ACCOUNT
    assert request.access.resource.key == key
    assert request.access.listing is listing


@pytest.mark.parametrize(("level", "unknown"), [
    (Level.BLOB, UNKNOWN_CONTAINER), (Level.CONTAINER, UNKNOWN_CONTAINER), (Level.ACCOUNT, UNKNOWN_ACCOUNT),
])
def test_an_unknown_parameter_is_unknown_whatever_else_is_there(level: Level, unknown: object) -> None:
    for method in ("GET", "HEAD", "PUT", "POST", "DELETE"):
        assert classify(level, method, parse_target("/x?comp=list&bogus").params) is unknown
    assert unknown in (UNKNOWN_CONTAINER, UNKNOWN_ACCOUNT)


def test_selectors_and_ordinary_parameters_do_not_overlap() -> None:
    assert SELECTORS.isdisjoint(ORDINARY_PARAMS)
    assert all(name == name.lower() for name in ORDINARY_PARAMS)


def test_every_operation_in_the_table_has_a_scope_fitting_its_level() -> None:
    allowed = {
        Level.BLOB: {Scope.BLOB, Scope.WHOLE_ACCOUNT},
        Level.CONTAINER: {Scope.CONTAINER, Scope.WHOLE_CONTAINER, Scope.PREFIX, Scope.WHOLE_ACCOUNT},
        Level.ACCOUNT: {Scope.ACCOUNT, Scope.WHOLE_ACCOUNT},
    }
    for (level, _, _), op in table().items():
        assert op.scope in allowed[level], op
    # Writes and deletes only ever reach one blob; configuration is admin, listings are list.
    for op in OPERATIONS:
        if op.action in (W, D):
            assert op.scope is Scope.BLOB, op
        if op.scope in (Scope.PREFIX, Scope.ACCOUNT):
            assert op.action is L, op
