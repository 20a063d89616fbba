"""Values that pass between the steps of a request: who asks, for what, on which data.

They are frozen so that a step cannot change what an earlier step decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What a request does to a resource (docs/policies.md, "datasets": Actions)."""

    READ = "read"
    LIST = "list"
    WRITE = "write"
    DELETE = "delete"
    ADMIN = "admin"


ALL_ACTIONS: frozenset[Action] = frozenset(Action)


@dataclass(frozen=True, slots=True)
class Resource:
    """A piece of stored data, as policies name it.

    `scheme` is ``"s3"`` or ``"azure"``. For S3, `bucket` is the bucket and
    `key` the object key (percent-decoded). For Azure, `bucket` is the storage
    account and `key` is ``"CONTAINER/BLOB"`` (or ``"CONTAINER/"`` for a whole
    container), so that both APIs share one index.
    """

    scheme: str
    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    @property
    def is_account(self) -> bool:
        """Whether this is a whole storage account: S3 with no bucket, Azure with no container."""
        return not self.key if self.scheme == "azure" else not self.bucket


@dataclass(frozen=True, slots=True)
class Access:
    """One action on one resource that a request performs.

    With `listing` set, `resource.key` is a listing prefix: the access reaches
    every key under it, so every dataset nested under that prefix is touched.
    """

    action: Action
    resource: Resource
    listing: bool = False


@dataclass(frozen=True, slots=True)
class Flow:
    """Data a request sends somewhere else than its targets, without it passing through the caller.

    A restore whose output goes to another bucket, a bucket's replication,
    inventory, access logs or analytics export: what `source` reaches (its
    action is what the destination learns: ``read`` for the data itself,
    ``list`` for key names and metadata) ends up in `destination`, a write.
    Judged like a copy (`proxy.policy.engine`): the caller must be allowed the
    source and the destination, and the destination's jurisdiction the source.
    """

    source: Access
    destination: Access


@dataclass(frozen=True, slots=True)
class Remote:
    """Something outside the storage a request names by region: an SSE-KMS key, a notification target.

    `what` names it in plain words for the caller (the ARN as sent); the
    engine refuses it unless `region` is the region of the data it concerns
    (rule ``remote region``).
    """

    what: str
    region: str


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """Everything a request does, as the policy engine sees it.

    `accesses` are the targets (one for most requests, one per key for a
    multi-object delete). `copy_from` is the source of a server-side copy; the
    destination is ``accesses[0].resource``. `placement` is the region a
    request creates its target in (S3's CreateBucket), checked against the
    region of every dataset the target touches. `flows` are the other places
    the request sends data to (restore output, replication, inventory, logs),
    `remotes` the keys and notification targets it names by region.
    """

    accesses: tuple[Access, ...]
    copy_from: Resource | None = None
    placement: str | None = None
    flows: tuple[Flow, ...] = ()
    remotes: tuple[Remote, ...] = ()


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller.

    `subject` is the token's ``sub``, an access key's subject (``access-key:<id>``
    by default) or ``network:<cidr>``; `jurisdiction` an ISO 3166-1 alpha-2 code;
    `source` the peer address the request came from;
    `method` how the caller was identified (``"jwt"``, ``"access_key"``, ``"network"`` or ``"geoip"``);
    `location` the country the client's address is in by `identity.geoip` (``"unknown"`` when the
    database does not know it; None without `identity.geoip`): observed, never claimed.
    """

    subject: str
    jurisdiction: str
    source: str
    method: str
    location: str | None = None
