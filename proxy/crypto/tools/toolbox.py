"""What every recovery tool needs, made from the proxy's own configuration: the parts and the object's place.

A tool is run beside a proxy of the region, with that proxy's configuration
file: the storage server and the proxy's credentials for it
(`proxy.crypto.tools.store`), the region's key service
(`proxy.crypto.services.make_key_service`), and the policy, which says which
dataset (and so which region) each object is in. The binding of an object's
keys is the proxy's own (`proxy.crypto.bindings`): the dataset whose pattern
is the most specific match for the object, that dataset's region, the bucket
and the object key.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from proxy.config import Config
from proxy.crypto.keyservice import Justification, KeyService
from proxy.crypto.plan import ObjectRef
from proxy.crypto.services import make_key_service
from proxy.domain import Resource
from proxy.errors import ConfigError, KeyReleaseRefused, KeyServiceUnavailable
from proxy.policy.loader import load_policy
from proxy.policy.model import Encryption, Policy

T = TypeVar("T")
OPERATOR = "operator"   # the jurisdiction a key release is justified with unless told otherwise


class ToolError(Exception):
    """A tool cannot go on; its message is one plain line for the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Located:
    """Where the policy puts an object: its dataset (None: in none) and whether this region encrypts it."""

    obj: ObjectRef | None      # None when the object is in no dataset
    encryption: Encryption
    ours: bool                 # the dataset is of this proxy's region (or the proxy has none)


@dataclass
class Toolbox:
    """The configuration's policy and key service, and how to justify a release."""

    config: Config
    policy: Policy
    service: KeyService
    jurisdiction: str = OPERATOR
    err: TextIO = field(default_factory=lambda: sys.stderr)

    @classmethod
    def open(cls, config: Config, jurisdiction: str = OPERATOR, err: TextIO | None = None) -> Toolbox:
        """The toolbox of `config`; raises `ConfigError` (no key service) or `PolicyLoadError`."""
        policy = load_policy(config.policies)
        service = make_key_service(config)
        if service is None:
            raise ConfigError("the configuration names no key service (encryption.key_service): the tools use the "
                              "region's key service, as the proxy does")
        return cls(config, policy, service, jurisdiction, err or sys.stderr)

    def close(self) -> None:
        self.service.close()

    def locate(self, bucket: str, key: str) -> Located:
        hit = self.policy.index.lookup(Resource("s3", bucket, key))
        if hit is None:
            return Located(None, Encryption.NONE, False)
        dataset = hit[0]
        obj = ObjectRef(dataset.name, dataset.region, bucket, key, dataset.encryption is Encryption.MIGRATING)
        region = self.config.region
        return Located(obj, dataset.encryption, region is None or dataset.region == region)

    def justification(self, command: str, obj: ObjectRef) -> Justification:
        """Why this release: a decision id of its own (``cli-<command>-<hex>``), the operator's jurisdiction."""
        return Justification(f"cli-{command}-{secrets.token_hex(8)}", self.jurisdiction, obj.dataset,
                             self.policy.version)

    async def call(self, call: Callable[[], T]) -> T:
        """A key-service call (they block) on a thread; a failure that is not a refusal says which service."""
        try:
            return await asyncio.to_thread(call)
        except (KeyReleaseRefused, KeyServiceUnavailable):
            raise
        except Exception as exc:   # a client's own error: named, never a traceback
            raise KeyServiceUnavailable(f"the key service ({self.service.key_ref}) failed: "
                                        f"{type(exc).__name__}") from exc


def parse_location(text: str, *, whole_key: bool) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` (`whole_key`: a key is required) or ``s3://BUCKET[/PREFIX]`` as (bucket, key)."""
    rest = text.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if rest == text or not bucket:
        raise ToolError(f"{text!r} is not an S3 location: write s3://BUCKET/{'KEY' if whole_key else '[PREFIX]'}")
    if whole_key and not key:
        raise ToolError(f"{text!r} names a bucket, not an object: write s3://BUCKET/KEY")
    return bucket, key


def size(count: int) -> str:
    """A byte count for people: 0 B, 1023 B, 1.5 KiB, 12.0 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")   # pragma: no cover
