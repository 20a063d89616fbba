"""What an object's keys are bound to, from the policy's view of it (shared by reads, writes and copies)."""

from __future__ import annotations

from proxy.crypto.envelope import Envelope, PartedEnvelope, binding, part_info, parted_binding, segment_info
from proxy.crypto.keyservice import KeyService
from proxy.crypto.plan import ObjectRef
from proxy.crypto.segments import ciphertext_length
from proxy.errors import EncryptedObjectInvalid, KeyReleaseRefused, KeyServiceUnavailable


def same_key(service: KeyService, envelope: Envelope | PartedEnvelope) -> None:
    """The key that wrapped the data key is the one the envelope names (a key file can change in between)."""
    if service.key_ref != envelope.key_ref:
        raise KeyServiceUnavailable(f"the region's key changed ({envelope.key_ref} -> {service.key_ref}) while "
                                    "the object was written; nothing was stored, send it again")


def bind(envelope: Envelope, obj: ObjectRef) -> bytes:
    return binding(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def bind_parted(envelope: PartedEnvelope, obj: ObjectRef) -> bytes:
    return parted_binding(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def part_info_of(envelope: PartedEnvelope, obj: ObjectRef, number: int, length: int) -> bytes:
    return part_info(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key,
                     number=number, length=length)


def segments_of(envelope: Envelope, obj: ObjectRef) -> bytes:
    return segment_info(envelope, dataset=obj.dataset, region=obj.region, bucket=obj.bucket, key=obj.key)


def of_this_key(service: KeyService, envelope: Envelope | PartedEnvelope, what: str = "the object") -> None:
    """Refuse, before the key service is asked, an object whose data key another key wrapped."""
    if envelope.key_ref != service.key_ref:
        raise KeyReleaseRefused(f"{what} was encrypted under {envelope.key_ref}, not under this region's key "
                                f"({service.key_ref}): only the region that holds that key can open it")


def stored_as_said(stored: int | None, envelope: Envelope, what: str = "the stored object") -> None:
    """Refuse, before its key is released, a stored object of another length than its envelope stands for."""
    expected = ciphertext_length(envelope.plaintext_length)
    if stored != expected:
        raise EncryptedObjectInvalid(f"{what} is {stored} bytes, not the {expected} its encryption metadata "
                                     "stands for: it was truncated or replaced, and is not opened")
