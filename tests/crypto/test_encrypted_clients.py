"""Real S3 clients on an encrypted dataset: boto3, the AWS CLI and rclone through the re-signing proxy.

The proxy runs in re-sign mode (encryption requires it) with the region's
OpenBao Transit key, in front of moto checking every signature. The command
line clients cannot send the token header, so callers are identified by
their address (`identity.networks`: 127.0.0.1/32 is Irish); what they sign
with is replaced by the proxy's own signature.

Each client uploads a file (77 KB, two segments; and 3 MiB + 5 bytes, 49
segments), downloads it byte for byte, lists it with its plaintext size, and
reads a range across segment boundaries where the client can ask for one.
The storage server holds only ciphertext. Every file stays under the
clients' multipart thresholds (boto3 and the AWS CLI: 8 MiB; rclone: 200
MiB); multipart uploads by the same clients are tests/crypto/test_multipart.py.

The command-line clients are installed by ``scripts/test``; when one is
missing here its tests are skipped, unless ``BAILIWICK_REQUIRE_CLIENTS=1``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.config import NetworkRule
from proxy.config.model import EncryptionConfig, KeyServiceKind, TransitSettings
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.harness import ProxyThread
from tests.support.encrypting import audit_line, encrypting_proxy_config, relay_fixture  # noqa: F401  ("relay")
from tests.support.iam import SignedStore, signed_store
from tests.support.keyservices import KEY, Bao, bao_fixture  # noqa: F401  (the fixture "bao")
from tests.support.recorder import Recorder
from tests.test_client_matrix import AwsCli, Client, Rclone

DUBLIN = "mail-eu-dublin"
MARKER = b"CLIENT-MARKER-0b7e"
S = SEGMENT_SIZE
SMALL = MARKER + bytes(range(256)) * 300 + b"\r\n\x00end"             # 77 KB: two segments
LARGE = (MARKER + bytes(range(251)) * 41) * 300 + b"tail!"               # 3 MiB and a bit: 49 segments
FILES = {"small": SMALL, "large": LARGE}
RANGE = (S - 3, 2 * S + 4)   # first and last byte: across two segment boundaries


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-clients", {DUBLIN: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="module")
def encrypting(store: SignedStore, relay: Recorder, bao: Bao, folder: Path) -> Iterator[ProxyThread]:
    """Dublin's proxy: re-signing, Transit, callers from 127.0.0.1 Irish; path-style only."""
    transit = TransitSettings(address=bao.address, key=KEY, token=bao.token)
    config = encrypting_proxy_config(folder, store, relay.url, "eu-west-1",
                                     EncryptionConfig(key_service=KeyServiceKind.TRANSIT, transit=transit))
    identity = replace(config.identity, networks=(NetworkRule(ipaddress.ip_network("127.0.0.1/32"), "IE"),))
    running = ProxyThread(replace(config, identity=identity, s3=replace(config.s3, virtual_hosts=()))).start()
    yield running
    running.stop()


class EncryptedBoto3(Client):
    """boto3 without a token: identified by its address; its own signature is replaced by the proxy's."""

    def __init__(self, endpoint: str, key: str, tmp: Path) -> None:
        super().__init__(endpoint, key, tmp, secret="client-secret-not-known-to-anyone")
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id=key,
                               aws_secret_access_key=self.secret,
                               config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def put(self, bucket: str, key: str, data: bytes) -> None:
        source = self.tmp / "upload"
        source.write_bytes(data)
        self.s3.upload_file(str(source), bucket, key)   # s3transfer: one PutObject under 8 MiB

    def get(self, bucket: str, key: str) -> bytes:
        target = self.tmp / "download"
        self.s3.download_file(bucket, key, str(target))
        return target.read_bytes()

    def sizes(self, bucket: str, prefix: str) -> dict[str, int]:
        listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: o["Size"] for o in listed}

    def ranged(self, bucket: str, key: str, first: int, last: int) -> bytes:
        return bytes(self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"].read())


class EncryptedAwsCli(AwsCli):
    def sizes(self, bucket: str, prefix: str) -> dict[str, int]:
        out = self.aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix,
                       "--query", "Contents[].[Key,Size]", "--output", "text").stdout.decode()
        return {key: int(size) for key, size in (line.split("\t") for line in out.splitlines() if "\t" in line)}

    def ranged(self, bucket: str, key: str, first: int, last: int) -> bytes:
        target = self.tmp / "ranged"
        self.aws("s3api", "get-object", "--bucket", bucket, "--key", key, "--range", f"bytes={first}-{last}",
                 str(target))
        return target.read_bytes()


class EncryptedRclone(Rclone):
    """rclone, kept off listings with a delimiter ("/", sent as "%2F"): moto refuses its own signature
    check of those, even from boto3 straight to it (moto's quirk, not the proxy's)."""

    def get(self, bucket: str, key: str) -> bytes:
        target = self.tmp / "download"
        self.rclone("copyto", f"bw:{bucket}/{key}", str(target))   # HEAD, then GET: no listing
        return target.read_bytes()

    def sizes(self, bucket: str, prefix: str) -> dict[str, int]:
        # --fast-list: one recursive listing, without a delimiter.
        out = self.rclone("lsf", "-R", "--fast-list", "--files-only", "--format", "ps", "--separator", "\t",
                          f"bw:{bucket}").stdout.decode()
        return {name: int(size) for name, size in (line.split("\t") for line in out.splitlines())
                if name.startswith(prefix)}

    def ranged(self, bucket: str, key: str, first: int, last: int) -> bytes:
        # --files-from with --no-traverse: the object is found by HEAD, not by listing its folder.
        names = self.tmp / "names"
        names.write_text(key + "\n")
        return self.rclone("cat", "--files-from", str(names), "--no-traverse", "--offset", str(first),
                           "--count", str(last - first + 1), f"bw:{bucket}").stdout


CLIENTS: dict[str, type[Client]] = {"boto3": EncryptedBoto3, "awscli": EncryptedAwsCli, "rclone": EncryptedRclone}


def client(name: str, proxy: ProxyThread, tmp: Path) -> Any:
    # Any key id and secret: the proxy identifies the caller by address and signs upstream itself.
    if name == "boto3":
        return EncryptedBoto3(proxy.url, "AKIAANYCLIENT000", tmp)
    return CLIENTS[name](proxy.url, "AKIAANYCLIENT000", tmp, secret="client-secret-not-known-to-anyone")


@pytest.mark.parametrize("size", FILES)
@pytest.mark.parametrize("name", ["boto3", "awscli", "rclone"])
def test_a_client_round_trips_an_encrypted_file(name: str, size: str, encrypting: ProxyThread, store: SignedStore,
                                                relay: Recorder, folder: Path, tmp_path: Path) -> None:
    data = FILES[size]
    # Top-level keys with a prefix without "/": moto re-reads a listing's query decoding "%2F" and would
    # refuse the proxy's signature of it (moto's quirk, not the proxy's; see test_encrypted_objects).
    key = f"{name}-{size}-{uuid.uuid4().hex[:8]}.bin"
    caller = client(name, encrypting, tmp_path)
    mark = relay.mark()
    caller.put(DUBLIN, key, data)
    assert MARKER not in relay.since(mark)
    held = store.client().get_object(Bucket=DUBLIN, Key=key)["Body"].read()
    assert len(held) == ciphertext_length(len(data))
    assert MARKER not in held
    assert audit_line(folder, DUBLIN, key, "PutObject")["key_release"]["result"] == "released"
    assert caller.get(DUBLIN, key) == data
    assert caller.sizes(DUBLIN, key[:-4]) == {key: len(data)}
    first, last = RANGE
    assert caller.ranged(DUBLIN, key, first, last) == data[first:last + 1]


def test_the_etag_of_an_encrypted_object_is_not_taken_for_an_md5(encrypting: ProxyThread, tmp_path: Path) -> None:
    s3 = EncryptedBoto3(encrypting.url, "AKIAANYCLIENT000", tmp_path).s3
    key = f"etag-{uuid.uuid4().hex[:8]}.bin"
    put = s3.put_object(Bucket=DUBLIN, Key=key, Body=SMALL)["ETag"]
    head = s3.head_object(Bucket=DUBLIN, Key=key)["ETag"]
    listed = [o["ETag"] for o in s3.list_objects_v2(Bucket=DUBLIN, Prefix=key[:-4])["Contents"]]
    assert [put, head] == listed * 2   # one validator for the object, wherever it is shown
    assert re.fullmatch(r'"[0-9a-f]{32}"', head) is None   # not in the form clients take for an MD5
    # The validator works in conditions.
    assert s3.get_object(Bucket=DUBLIN, Key=key, IfMatch=head)["Body"].read() == SMALL
    with pytest.raises(ClientError) as unchanged:
        s3.get_object(Bucket=DUBLIN, Key=key, IfNoneMatch=head)
    assert unchanged.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.head_object(Bucket=DUBLIN, Key=key, IfMatch=head)["ContentLength"] == len(SMALL)
