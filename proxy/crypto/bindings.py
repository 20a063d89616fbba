"""What an object's keys are bound to, from the policy's view of it (shared by reads, writes and copies)."""

from __future__ import annotations

from proxy.crypto.envelope import Envelope, binding, segment_info
from proxy.crypto.keyservice import KeyService
from proxy.crypto.plan import ObjectRef
from proxy.errors import KeyServiceUnavailable


def same_key(service: KeyService, envelope: Envelope) -> None:
    """The key that wrapped the data key is the one the envelope names (a key file can change in between)."""
    if service.key_ref != envelope.key_ref:
        raise KeyServiceUnavailable(f"the region's key changed ({envelope.key_ref} -> {service.key_ref}) while "
                                    "the object was written; nothing was stored, send it again")


def bind(envelope: Envelope, obj: ObjectRef) -> bytes:
    return binding(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def segments_of(envelope: Envelope, obj: ObjectRef) -> bytes:
    return segment_info(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


