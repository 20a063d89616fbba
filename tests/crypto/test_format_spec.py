"""The stored format as docs/encryption.md writes it down: a second reader and writer, from the text alone.

`SpecReader` and `spec_seal` are written from the sections "The stored
format" and "Binding" of docs/encryption.md with `cryptography`'s primitives,
and nothing of `proxy.crypto.segments` or `proxy.crypto.envelope`: if the
document were incomplete or wrong, objects the real proxy writes would not
open here, or objects sealed here would not open through the proxy. The data
key is unwrapped as the text says too: straight from the key file
(AES-256-GCM, additional data SHA-256 of the binding), and from OpenBao's
Transit (`transit/decrypt` with the derivation context the text gives) for
a proxy with a Transit key.

Every failure the document promises is checked against this reader too: a
flipped byte anywhere, truncation at every segment boundary (down to the
start of the last segment, and to nothing), an object given another name, and
headers that are not in their one canonical form.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.config.model import EncryptionConfig, KeyServiceKind, Pkcs11Settings, TransitSettings
from proxy.crypto.keyfile import write_key_file
from proxy.crypto.keyservice import Justification
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.conftest import make_token, s3_client
from tests.crypto.test_encrypted_objects import encrypting_config, plant, raw_get, stored
from tests.support.encrypting import encrypting_proxy_config
from tests.support.iam import SignedStore, signed_store
from tests.support.keyservices import (  # noqa: F401  (the fixtures "bao" and "softhsm")
    KEY,
    Bao,
    SoftHsm,
    bao_fixture,
    softhsm_fixture,
)
from tests.support.recorder import Recorder

BUCKET, DATASET, REGION = "mail-eu-dublin", "dublin-mail", "eu-west-1"   # the example policies' Dublin mail
S, TAG = 65536, 16
FIELDS = ("v", "seg", "len", "salt", "np", "ks", "ref", "wk")


class Refused(Exception):
    """The spec reader will not open this object."""


def unb64url(text: str) -> bytes:
    """Unpadded base64url, refusing any other spelling (padding, other alphabets, non-zero trailing bits)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise Refused(f"not unpadded base64url: {text!r}")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise Refused(f"not the canonical base64url of its bytes: {text!r}")
    return raw


def decimal(text: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", text):
        raise Refused(f"not a decimal number without leading zeros: {text!r}")
    return int(text)


@dataclass(frozen=True)
class Header:
    version: int
    segment: int
    length: int
    salt: bytes
    nonce_prefix: bytes
    kind: str
    ref: str
    wrapped: str


def parse(value: str) -> Header:
    """"The metadata entry": ASCII, the eight fields in order, `;`-separated."""
    if not value.isascii():
        raise Refused("not ASCII")
    parts = value.split(";")
    if len(parts) != len(FIELDS):
        raise Refused(f"{len(parts)} fields, not {len(FIELDS)}")
    values = {}
    for part, name in zip(parts, FIELDS, strict=True):
        found, equals, text = part.partition("=")
        if found != name or not equals:
            raise Refused(f"field {name!r} expected, found {part!r}")
        values[name] = text
    header = Header(decimal(values["v"]), decimal(values["seg"]), decimal(values["len"]), unb64url(values["salt"]),
                    unb64url(values["np"]), values["ks"], values["ref"], values["wk"])
    if header.version != 1 or header.segment != S:
        raise Refused("not version 1 with 64 KiB segments")
    if len(header.salt) != 32 or len(header.nonce_prefix) != 7:
        raise Refused("salt or nonce prefix of the wrong size")
    if header.kind not in ("transit", "pkcs11", "file") or not header.ref.startswith(header.kind + ":"):
        raise Refused(f"unknown key service {header.kind!r} or a reference not its own")
    return header


def field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def binding(header: Header, *, dataset: str, region: str, bucket: str, key: str) -> bytes:
    """"Binding": computed from what the reader was asked for, not from what is stored."""
    return (b"bailiwick-encryption-v1\x00" + field(dataset) + field(region) + field(header.ref) + field(bucket)
            + field(key) + struct.pack(">IIQ", header.version, header.segment, header.length))


def unwrap_from_key_file(path: Path, wrapped: str, bound: bytes) -> bytes:
    """The key service's part (`filev1:` + base64url(nonce || ciphertext || tag), AD = SHA-256(binding))."""
    if not wrapped.startswith("filev1:"):
        raise Refused("not a key file's wrapped key")
    raw = unb64url(wrapped.removeprefix("filev1:"))
    kek = bytes.fromhex(path.read_text().strip())
    try:
        return AESGCM(kek).decrypt(raw[:12], raw[12:], hashlib.sha256(bound).digest())
    except InvalidTag:
        raise Refused("the data key does not unwrap for this binding") from None


def wrap_for_key_file(path: Path, data_key: bytes, bound: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(bytes.fromhex(path.read_text().strip())).encrypt(nonce, data_key,
                                                                     hashlib.sha256(bound).digest())
    return "filev1:" + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def segment_info(header: Header, *, dataset: str, region: str, bucket: str, key: str) -> bytes:
    """"Binding", second part: the binding without `ref`, under its own label."""
    return (b"bailiwick-segments-v1\x00" + field(dataset) + field(region) + field(bucket) + field(key)
            + struct.pack(">IIQ", header.version, header.segment, header.length))


def segment_key(data_key: bytes, header: Header, info: bytes) -> AESGCM:
    """Step 2: HKDF-SHA256(ikm=DK, salt=salt, info=segment info), 32 bytes."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt, info=info)
    return AESGCM(hkdf.derive(data_key))


def nonce(header: Header, index: int, count: int) -> bytes:
    """Step 4: np || u32(i) || (0x01 on the last segment, else 0x00)."""
    return header.nonce_prefix + struct.pack(">I", index) + (b"\x01" if index == count - 1 else b"\x00")


def count_of(length: int) -> int:
    return max(1, -(-length // S))


def unwrap_with_transit(bao: Bao, wrapped: str, bound: bytes) -> bytes:
    """Step 1 for Transit: decrypt with the derivation context base64(SHA-256(binding)), standard base64."""
    context = base64.b64encode(hashlib.sha256(bound).digest()).decode()
    try:
        answer = bao.client().secrets.transit.decrypt_data(KEY, ciphertext=wrapped, context=context)
    except hvac.exceptions.InvalidRequest:
        raise Refused("the data key does not unwrap for this binding") from None
    return base64.b64decode(answer["data"]["plaintext"])


Unwrap = Callable[[str, bytes], bytes]


def spec_open(key_file: Path | Unwrap, metadata: str, body: bytes, *, bucket: str, key: str,
              dataset: str = DATASET, region: str = REGION) -> bytes:
    """Steps 1-5 and the reader's checks: the plaintext, or `Refused`. `key_file`: or how to unwrap."""
    header = parse(metadata)
    count = count_of(header.length)
    if len(body) != header.length + TAG * count:
        raise Refused(f"stored length {len(body)}, not {header.length + TAG * count}")
    bound = binding(header, dataset=dataset, region=region, bucket=bucket, key=key)
    unwrap = key_file if callable(key_file) else functools.partial(unwrap_from_key_file, key_file)
    info = segment_info(header, dataset=dataset, region=region, bucket=bucket, key=key)
    cipher = segment_key(unwrap(header.wrapped, bound), header, info)
    plaintext = bytearray()
    for index in range(count):
        sealed = body[index * (S + TAG):(index + 1) * (S + TAG)]
        try:
            plaintext += cipher.decrypt(nonce(header, index, count), sealed, None)
        except InvalidTag:
            raise Refused(f"segment {index} does not authenticate") from None
    return bytes(plaintext)


def spec_seal(key_file: Path, plaintext: bytes, *, bucket: str, key: str) -> tuple[bytes, str]:
    """A writer from the same text: the stored body and the metadata entry."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    kek_id = hashlib.sha256(bytes.fromhex(key_file.read_text().strip())).hexdigest()[:16]
    header = Header(1, S, len(plaintext), os.urandom(32), os.urandom(7), "file", f"file:{kek_id}", "")
    bound = binding(header, dataset=DATASET, region=REGION, bucket=bucket, key=key)
    data_key = os.urandom(32)
    cipher = segment_key(data_key, header, segment_info(header, dataset=DATASET, region=REGION, bucket=bucket,
                                                        key=key))
    count = count_of(len(plaintext))
    body = b"".join(cipher.encrypt(nonce(header, i, count), plaintext[i * S:(i + 1) * S], None)
                    for i in range(count))
    metadata = (f"v=1;seg={S};len={len(plaintext)};salt={b64(header.salt)};np={b64(header.nonce_prefix)};"
                f"ks=file;ref={header.ref};wk={wrap_for_key_file(key_file, data_key, bound)}")
    return body, metadata


# --- against the real proxy -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-spec", {BUCKET: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def unchecked(key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyThread, SignedStore]]:
    """A proxy before a moto that checks no signature: moto's own check refuses keys outside [A-Za-z0-9/ ~._-]."""
    with MotoServer() as server:
        store = SignedStore(server, "spec", "spec")
        store.client().create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        running = ProxyThread(encrypting_config(tmp_path_factory.mktemp("unchecked"), store, server.url, REGION,
                                                key_file)).start()
        yield running, store
        running.stop()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec-key") / "eu.key"
    write_key_file(path)
    return path


@pytest.fixture(scope="module")
def proxy(store: SignedStore, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    relay = Recorder(store.server.port)
    running = ProxyThread(encrypting_config(tmp_path_factory.mktemp("spec"), store, relay.url, REGION,
                                            key_file)).start()
    yield running
    running.stop()
    relay.close()


def irish(proxy: ProxyThread) -> Any:
    return s3_client(proxy.url, make_token("IE"))


def written(proxy: ProxyThread, store: SignedStore, key: str, data: bytes) -> tuple[bytes, str]:
    """`data` put through the proxy: the stored body and metadata entry, read past it."""
    irish(proxy).put_object(Bucket=BUCKET, Key=key, Body=data)
    body, metadata = stored(store, BUCKET, key)
    return body, metadata["bailiwick-encryption"]


SIZES = [0, 1, S - 1, S, S + 1, 3 * S + 7]


@pytest.mark.parametrize("size", SIZES)
def test_the_spec_reader_opens_what_the_proxy_wrote(proxy: ProxyThread, store: SignedStore, key_file: Path,
                                                    size: int) -> None:
    data = os.urandom(size)
    key = f"alice/spec-{size}.eml"
    body, metadata = written(proxy, store, key, data)
    assert spec_open(key_file, metadata, body, bucket=BUCKET, key=key) == data


# Keys S3 stores decoded: the binding holds these characters, not their percent-encoding.
@pytest.mark.parametrize("key", ["alice/caf\u00e9 \u00fc ber.eml", "alice/a+b=d&e;f.eml", "alice/\u65e5\u672c.eml",
                                 "alice/100%.eml"])
def test_the_binding_holds_the_decoded_key(unchecked: tuple[ProxyThread, SignedStore], key_file: Path,
                                           key: str) -> None:
    proxy, store = unchecked
    data = os.urandom(S + 3)
    body, metadata = written(proxy, store, key, data)
    assert spec_open(key_file, metadata, body, bucket=BUCKET, key=key) == data


@pytest.mark.parametrize("size", SIZES)
def test_the_proxy_opens_what_the_spec_writer_sealed(proxy: ProxyThread, store: SignedStore, key_file: Path,
                                                     size: int) -> None:
    data = os.urandom(size)
    key = f"alice/spec-sealed-{size}.eml"
    body, metadata = spec_seal(key_file, data, bucket=BUCKET, key=key)
    plant(store, BUCKET, key, body, {"bailiwick-encryption": metadata})
    got = irish(proxy).get_object(Bucket=BUCKET, Key=key)
    assert got["ContentLength"] == size
    assert got["Body"].read() == data
    if size > S:
        ranged = irish(proxy).get_object(Bucket=BUCKET, Key=key, Range=f"bytes={S - 2}-{S + 1}")
        assert ranged["Body"].read() == data[S - 2:S + 2]


@pytest.fixture(scope="module")
def transit_proxy(store: SignedStore, bao: Bao, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    relay = Recorder(store.server.port)
    encryption = EncryptionConfig(key_service=KeyServiceKind.TRANSIT,
                                  transit=TransitSettings(address=bao.address, key=KEY, token=bao.token))
    running = ProxyThread(encrypting_proxy_config(tmp_path_factory.mktemp("spec-transit"), store, relay.url, REGION,
                                                  encryption)).start()
    yield running
    running.stop()
    relay.close()


@pytest.mark.parametrize("size", [0, S + 1])
def test_the_spec_reader_opens_what_a_transit_proxy_wrote(transit_proxy: ProxyThread, store: SignedStore, bao: Bao,
                                                          size: int) -> None:
    data = os.urandom(size)
    key = f"alice/spec-transit-{size}.eml"
    body, metadata = written(transit_proxy, store, key, data)
    header = parse(metadata)
    assert (header.kind, header.ref) == ("transit", f"transit:transit/{KEY}")
    assert header.wrapped.startswith("vault:v")
    unwrap = functools.partial(unwrap_with_transit, bao)
    assert spec_open(unwrap, metadata, body, bucket=BUCKET, key=key) == data
    with pytest.raises(Refused, match="does not unwrap"):
        spec_open(unwrap, metadata, body, bucket=BUCKET, key=key + "-moved")


@pytest.fixture(scope="module")
def three_and_a_bit(proxy: ProxyThread, store: SignedStore) -> tuple[str, bytes, bytes, str]:
    key, data = "alice/spec-tampered.eml", os.urandom(3 * S + 7)
    return (key, data, *written(proxy, store, key, data))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


FLIPS = [0, S - 1, S, S + TAG - 1, S + TAG, 2 * (S + TAG) + 5, 3 * (S + TAG), 3 * (S + TAG) + 7,
         3 * (S + TAG) + 7 + TAG - 1]


@pytest.mark.parametrize("at", FLIPS)
def test_a_flipped_byte_anywhere_is_refused(key_file: Path, three_and_a_bit: tuple[str, bytes, bytes, str],
                                            at: int) -> None:
    key, _, body, metadata = three_and_a_bit
    with pytest.raises(Refused, match="does not authenticate"):
        spec_open(key_file, metadata, _flip(body, at), bucket=BUCKET, key=key)


# Truncated at every segment boundary, inside the last segment, at exactly the start of the last segment, to
# nothing; each rewritten with a `len` that matches its stored length, as one who can write the metadata could.
@pytest.mark.parametrize("segments", [0, 1, 2, 3])
def test_truncation_at_a_boundary_is_refused_even_with_a_matching_length(
        key_file: Path, three_and_a_bit: tuple[str, bytes, bytes, str], segments: int) -> None:
    key, _, body, metadata = three_and_a_bit
    cut = body[:segments * (S + TAG)]
    with pytest.raises(Refused):
        spec_open(key_file, metadata, cut, bucket=BUCKET, key=key)
    relabelled = re.sub(r";len=\d+;", f";len={segments * S};", metadata)
    with pytest.raises(Refused):
        # Another length is another binding: the data key itself is not released.
        spec_open(key_file, relabelled, cut, bucket=BUCKET, key=key)


def test_moving_an_object_is_refused(key_file: Path, three_and_a_bit: tuple[str, bytes, bytes, str]) -> None:
    key, data, body, metadata = three_and_a_bit
    assert spec_open(key_file, metadata, body, bucket=BUCKET, key=key) == data
    for elsewhere in ({"key": key + "x"}, {"bucket": "mail-eu-dublin2"}, {"dataset": "us-mail"},
                      {"region": "us-east-1"}):
        where = {"bucket": BUCKET, "key": key, "dataset": DATASET, "region": REGION, **elsewhere}
        with pytest.raises(Refused, match="does not unwrap"):
            spec_open(key_file, metadata, body, **where)


def test_the_written_header_is_canonical(three_and_a_bit: tuple[str, bytes, bytes, str]) -> None:
    """What the proxy writes parses here, and re-spelling any field in another form is refused."""
    _, data, _, metadata = three_and_a_bit
    header = parse(metadata)
    assert (header.version, header.segment, header.length, header.kind) == (1, S, len(data), "file")
    salt = metadata.split(";")[3].removeprefix("salt=")
    for other in (metadata.replace(f"len={len(data)}", f"len=0{len(data)}"),
                  metadata.replace(f"salt={salt}", f"salt={salt}="),
                  metadata.replace("v=1;", "v=01;"),
                  ";".join(reversed(metadata.split(";")))):
        with pytest.raises(Refused):
            parse(other)


def test_a_refusal_tells_the_caller_nothing_of_the_key_service(proxy: ProxyThread, store: SignedStore,
                                                               key_file: Path) -> None:
    """An object given another's wrapped key is refused (403); the caller learns the code, not where the
    region's key lives (the audit line and the proxy's log have the detail)."""
    _, theirs = written(proxy, store, "alice/spec-theirs.eml", b"theirs")
    body, mine = written(proxy, store, "alice/spec-mine.eml", b"mine")
    swapped = mine[:mine.index(";wk=")] + theirs[theirs.index(";wk="):]
    plant(store, BUCKET, "alice/spec-mine.eml", body, {"bailiwick-encryption": swapped})
    status, received, _ = raw_get(proxy, f"/{BUCKET}/alice/spec-mine.eml")
    assert status == 403
    assert b"<Code>KeyReleaseRefused</Code>" in received
    assert str(key_file).encode() not in received
    assert str(key_file.parent).encode() not in received


@pytest.mark.parametrize(
    ("size", "segments", "relabel", "status", "code"),
    [
        (0, 0, False, 502, b"EncryptedObjectInvalid"),       # an empty object's one (empty) segment dropped
        (3 * S + 7, 3, False, 502, b"EncryptedObjectInvalid"),  # cut at exactly the start of its last segment
        (3 * S + 7, 3, True, 403, b"KeyReleaseRefused"),        # ... and `len` changed to match: another binding
        (S, 0, True, 502, b"EncryptedObjectInvalid"),           # nothing left, `len=0` (16 bytes) claimed
    ],
)
def test_the_proxy_refuses_a_truncation_at_a_boundary(proxy: ProxyThread, store: SignedStore, size: int,
                                                      segments: int, relabel: bool, status: int, code: bytes) -> None:
    """What the spec reader refuses, the proxy refuses: before a byte of the object is sent."""
    key = f"alice/spec-cut-{size}-{segments}-{relabel}.eml"
    data = os.urandom(size)
    body, metadata = written(proxy, store, key, data)
    if relabel:
        metadata = re.sub(r";len=\d+;", f";len={segments * S};", metadata)
    plant(store, BUCKET, key, body[:segments * (S + TAG)], {"bailiwick-encryption": metadata})
    got, received, _ = raw_get(proxy, f"/{BUCKET}/{key}")
    assert (got, code in received) == (status, True)
    assert data[:16] not in received or size == 0


def test_a_new_pkcs11_key_needs_only_a_rewrap(store: SignedStore, softhsm: SoftHsm,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """PKCS#11 rotation as docs/encryption.md gives it: a new key label, and each data key wrapped again under
    it (here by hand, bound as the text says) without the body being rewritten; the proxy configured with the
    new label then reads the object."""
    old, new = (f"spec-{uuid.uuid4().hex[:8]}" for _ in range(2))
    services = {}
    for label in (old, new):
        softhsm.create_kek(label)
        services[label] = softhsm.service(label)
    relay = Recorder(store.server.port)
    started = []

    def proxy_of(label: str) -> ProxyThread:
        pkcs11 = Pkcs11Settings(module=softhsm.module, token_label=softhsm.token_label, key_label=label,
                                pin=softhsm.pin)
        config = encrypting_proxy_config(tmp_path_factory.mktemp(f"spec-{label}"), store, relay.url, REGION,
                                         EncryptionConfig(key_service=KeyServiceKind.PKCS11, pkcs11=pkcs11))
        started.append(ProxyThread(config).start())
        return started[-1]

    try:
        data, key = os.urandom(S + 9), "alice/spec-rotated.eml"
        body, metadata = written(proxy_of(old), store, key, data)
        header = parse(metadata)
        why = Justification("d-rotation", "IE", DATASET, "0")
        data_key = services[old].unwrap(header.wrapped, binding(header, dataset=DATASET, region=REGION,
                                                                 bucket=BUCKET, key=key), why)
        moved = replace(header, ref=services[new].key_ref)
        moved_bound = binding(moved, dataset=DATASET, region=REGION, bucket=BUCKET, key=key)
        rewrapped = services[new]._wrap(data_key, moved_bound)
        metadata = metadata.replace(f";ref={header.ref};", f";ref={moved.ref};").replace(
            f";wk={header.wrapped}", f";wk={rewrapped}")
        plant(store, BUCKET, key, body, {"bailiwick-encryption": metadata})   # the same body
        assert irish(proxy_of(new)).get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    finally:
        for running in started:
            running.stop()
        relay.close()
        for service in services.values():
            service.close()
