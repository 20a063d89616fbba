"""Format 2 (objects written by a multipart upload) as docs/encryption.md writes it down, read and written here
from the text alone ("Objects written by a multipart upload (format 2)"), with `cryptography`'s primitives and
the format-1 helpers of `tests.crypto.test_format_spec`, nothing of `proxy.crypto`.

The proxy's multipart uploads open here; uploads sealed here open through the proxy, whole and by ranges; the
listing shows the length the text says a listing computes; and the tampering the text says is detected is.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.harness import ProxyThread
from tests.crypto.test_format_spec import (
    BUCKET,
    DATASET,
    REGION,
    TAG,
    Refused,
    S,
    count_of,
    field,
    irish,
    unwrap_from_key_file,
    wrap_for_key_file,
)
from tests.crypto.test_format_spec import key_file as key_file
from tests.crypto.test_format_spec import proxy as proxy
from tests.crypto.test_format_spec import store as store
from tests.support.iam import SignedStore

HEADER = struct.Struct(">BIQ32s7s")     # 0x02 | u32(j) | u64(P_j) | salt_j | np_j
MIB = 1024 * 1024
PART = 5 * MIB                          # moto, as S3, wants parts of 5 MiB but the last


def parse_v2(value: str) -> tuple[str, str, str]:
    """The five fields: the key service kind, `ref`, `wk`."""
    names = ("v", "seg", "ks", "ref", "wk")
    parts = value.split(";")
    if [part.partition("=")[0] for part in parts] != list(names):
        raise Refused(f"not the fields of format 2: {value!r}")
    fields = dict(part.split("=", 1) for part in parts)
    if (fields["v"], fields["seg"]) != ("2", str(S)):
        raise Refused("not version 2 with 64 KiB segments")
    return fields["ks"], fields["ref"], fields["wk"]


def context(ref: str, *, bucket: str, key: str, dataset: str = DATASET, region: str = REGION) -> bytes:
    return (b"bailiwick-encryption-v2\x00" + field(dataset) + field(region) + field(ref) + field(bucket) + field(key)
            + struct.pack(">II", 2, S))


def part_info(j: int, length: int, *, bucket: str, key: str, dataset: str = DATASET, region: str = REGION) -> bytes:
    return (b"bailiwick-segments-v2\x00" + field(dataset) + field(region) + field(bucket) + field(key)
            + struct.pack(">IIIQ", 2, S, j, length))


def part_key(upload_key: bytes, salt: bytes, info: bytes) -> AESGCM:
    """HKDF-SHA256(ikm=UK, salt=salt_j, info=part info of j), 32 bytes."""
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(upload_key))


def stored_part(length: int) -> int:
    return HEADER.size + length + TAG * count_of(length)


def spec_open_parted(key_file: Path, metadata: str, body: bytes, *, bucket: str, key: str) -> bytes:
    _, ref, wrapped = parse_v2(metadata)
    upload_key = unwrap_from_key_file(key_file, wrapped, context(ref, bucket=bucket, key=key))
    version, first, size, _, _ = HEADER.unpack(body[:HEADER.size])
    total = len(body)
    if (version, first) != (2, 1):
        raise Refused("part 1's header is not where the object starts")
    if total == stored_part(size):
        lengths = [size]
    else:
        parts = math.ceil(total / stored_part(size))
        rest = total - (parts - 1) * stored_part(size)
        segments = math.ceil((rest - HEADER.size) / (S + TAG))
        last = rest - HEADER.size - TAG * segments
        if size % S or not 1 <= last <= size or stored_part(last) != rest:
            raise Refused("no layout gives this stored length")
        lengths = [size] * (parts - 1) + [last]
    plaintext, at = bytearray(), 0
    for j, length in enumerate(lengths, 1):
        version, number, said, salt, prefix = HEADER.unpack(body[at:at + HEADER.size])
        if (version, number, said) != (2, j, length):
            raise Refused(f"part {j}'s header is not part {j} of {length} bytes")
        info = part_info(j, length, bucket=bucket, key=key)
        cipher = part_key(upload_key, salt, info)
        count = count_of(length)
        at += HEADER.size
        for index in range(count):
            sealed = body[at:at + min(S + TAG, length - index * S + TAG)]
            at += len(sealed)
            nonce = prefix + struct.pack(">I", index) + (b"\x01" if index == count - 1 else b"\x00")
            try:
                plaintext += cipher.decrypt(nonce, sealed, None)
            except InvalidTag:
                raise Refused(f"segment {index} of part {j} does not authenticate") from None
    return bytes(plaintext)


def spec_seal_parted(key_file: Path, plaintext: bytes, part_size: int, *, bucket: str,
                     key: str) -> tuple[list[bytes], str]:
    """A writer from the same text: the stored parts and the metadata entry."""
    kek_id = hashlib.sha256(bytes.fromhex(key_file.read_text().strip())).hexdigest()[:16]
    ref = f"file:{kek_id}"
    upload_key = os.urandom(32)
    pieces = [plaintext[at:at + part_size] for at in range(0, len(plaintext), part_size)] or [b""]
    parts = []
    for j, piece in enumerate(pieces, 1):
        salt, prefix = os.urandom(32), os.urandom(7)
        cipher = part_key(upload_key, salt, part_info(j, len(piece), bucket=bucket, key=key))
        count = count_of(len(piece))
        sealed = b"".join(
            cipher.encrypt(prefix + struct.pack(">I", i) + (b"\x01" if i == count - 1 else b"\x00"),
                           piece[i * S:(i + 1) * S], None) for i in range(count))
        parts.append(HEADER.pack(2, j, len(piece), salt, prefix) + sealed)
    wrapped = wrap_for_key_file(key_file, upload_key, context(ref, bucket=bucket, key=key))
    metadata = f"v=2;seg={S};ks=file;ref={ref};wk={wrapped}"
    return parts, metadata


def upload_past_the_proxy(store: SignedStore, key: str, parts: list[bytes], metadata: str) -> None:
    client = store.client()
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, Metadata={"bailiwick-encryption": metadata})
    done = [{"PartNumber": j, "ETag": client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                                         PartNumber=j, Body=part)["ETag"]}
            for j, part in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": done})


@pytest.fixture(scope="module")
def sealed_here(store: SignedStore, key_file: Path) -> tuple[str, bytes]:
    # Top-level: moto refuses its own signature check of a listing prefix with "/" (see test_encrypted_clients).
    key, data = "spec-parted-sealed.eml", os.urandom(2 * PART + 3 * S + 11)
    parts, metadata = spec_seal_parted(key_file, data, PART, bucket=BUCKET, key=key)
    upload_past_the_proxy(store, key, parts, metadata)
    return key, data


def test_the_spec_reader_opens_a_multipart_upload_the_proxy_wrote(proxy: ProxyThread, store: SignedStore,
                                                                  key_file: Path) -> None:
    key, data = "alice/spec-parted.eml", os.urandom(2 * PART + S + 5)
    irish(proxy).upload_fileobj(_Reader(data), BUCKET, key,
                                Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART))
    answer = store.client().get_object(Bucket=BUCKET, Key=key)
    body, metadata = answer["Body"].read(), answer["Metadata"]["bailiwick-encryption"]
    assert answer["ETag"].strip('"').endswith("-3")
    assert spec_open_parted(key_file, metadata, body, bucket=BUCKET, key=key) == data
    with pytest.raises(Refused):
        spec_open_parted(key_file, metadata, body, bucket=BUCKET, key=key + "-moved")


@pytest.mark.parametrize(("first", "last"), [
    (0, None), (PART - 2, PART + 1), (2 * PART - 1, 2 * PART + S), (2 * PART + 3 * S, None), (S - 1, 2 * PART + 3),
])
def test_the_proxy_opens_a_multipart_upload_the_spec_writer_sealed(proxy: ProxyThread,
                                                                   sealed_here: tuple[str, bytes], first: int,
                                                                   last: int | None) -> None:
    key, data = sealed_here
    kwargs: dict[str, Any] = {}
    if (first, last) != (0, None):
        kwargs["Range"] = f"bytes={first}-{'' if last is None else last}"
    got = irish(proxy).get_object(Bucket=BUCKET, Key=key, **kwargs)
    assert got["Body"].read() == data[first:None if last is None else last + 1]


def test_a_listing_and_a_head_show_the_length_the_text_gives(proxy: ProxyThread,
                                                             sealed_here: tuple[str, bytes]) -> None:
    key, data = sealed_here
    client = irish(proxy)
    assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(data)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="spec-parted-sealed")["Contents"]
    assert [(entry["Key"], entry["Size"]) for entry in listed] == [(key, len(data))]


@pytest.mark.parametrize("how", ["parts swapped", "a part renumbered", "a byte flipped", "cut inside the last part"])
def test_the_spec_reader_refuses_what_the_text_says_is_detected(key_file: Path, how: str) -> None:
    key = "alice/spec-parted-tampered.eml"
    parts, metadata = spec_seal_parted(key_file, os.urandom(2 * S + 9), S, bucket=BUCKET, key=key)
    if how == "parts swapped":
        parts[0], parts[1] = parts[1], parts[0]
    elif how == "a part renumbered":
        parts[1] = parts[1][:1] + struct.pack(">I", 1) + parts[1][5:]
        parts[0], parts[1] = parts[1], parts[0]
    elif how == "a byte flipped":
        parts[1] = parts[1][:60] + bytes([parts[1][60] ^ 1]) + parts[1][61:]
    else:
        parts[2] = parts[2][:-1]
    with pytest.raises(Refused):
        spec_open_parted(key_file, metadata, b"".join(parts), bucket=BUCKET, key=key)


def test_the_spec_reader_opens_what_the_spec_writer_sealed(key_file: Path) -> None:
    """The two halves of this file agree with each other before either is held against the proxy."""
    key, data = "alice/spec-parted-self.eml", os.urandom(2 * S + 9)
    parts, metadata = spec_seal_parted(key_file, data, S, bucket=BUCKET, key=key)
    assert len(b"".join(parts)) == 2 * stored_part(S) + stored_part(9)
    assert spec_open_parted(key_file, metadata, b"".join(parts), bucket=BUCKET, key=key) == data


class _Reader:
    """A file-like body boto3's transfer manager reads in parts."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        piece, self._at = self._data[self._at:end], min(end, len(self._data))
        return piece

