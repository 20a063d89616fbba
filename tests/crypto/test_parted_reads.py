"""Reading multipart uploads' encrypted objects (format 2, "parted") through the real proxy, moto behind it.

The objects are made here as the proxy's multipart upload makes them (an
upload key in the metadata, each part a 52-byte header and its sealed
segments, parts of 5 MiB but the last, as moto requires), straight on moto;
then read through a re-signing proxy of their region. What callers get must
be exactly the plaintext (whole, every range across part and segment
boundaries, its length in HEAD and listings, a copy of it), and an object
changed at rest (a flipped byte, parts swapped, a part of another upload, cut
short) must be refused with nothing unverified sent. The recovery tools read
and rewrap such objects too.
"""

from __future__ import annotations

import asyncio
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from proxy.cli import main
from proxy.crypto.envelope import PartedEnvelope, parse_any
from proxy.crypto.keyfile import write_key_file
from proxy.crypto.parted import PartedObject
from proxy.crypto.parts import HEADER_SIZE, Layout, PartHeader, part_stored_length
from proxy.crypto.segments import SEGMENT_SIZE
from proxy.crypto.stage import EncryptionStage
from proxy.harness import ProxyThread
from tests.conftest import make_token, s3_client
from tests.crypto.test_encrypted_objects import (
    DUBLIN,
    MARKER,
    US,
    body_of,
    encrypting_config,
    irish,
    raw_get,
)
from tests.crypto.test_tools import key_file_section, write_config
from tests.support.encrypting import relay_fixture  # noqa: F401  (the fixture "relay")
from tests.support.iam import SignedStore, signed_store
from tests.support.parted import PART_SIZE, put_parted, seal_upload, store_parts
from tests.support.recorder import Recorder

S = SEGMENT_SIZE
P = PART_SIZE                  # 5 MiB: the smallest part moto takes (every part but the last)
ARCHIVE = "archive"            # s3://archive/ie/: the irish-archive dataset, not encrypted
PARTED = body_of(2 * P + 3 * S + 100)
LENGTH = len(PARTED)


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-parted", {DUBLIN: "eu-west-1", US: None, ARCHIVE: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dublin proxy's folder: its key file (eu.key), policies, credentials, audit log."""
    made = tmp_path_factory.mktemp("parted")
    write_key_file(made / "eu.key")
    return made


@pytest.fixture(scope="module")
def eu_key(folder: Path) -> Path:
    return folder / "eu.key"


@pytest.fixture(scope="module")
def eu(store: SignedStore, relay: Recorder, folder: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(encrypting_config(folder, store, relay.url, "eu-west-1", folder / "eu.key"))
    yield running.start()
    running.stop()


@pytest.fixture(scope="module")
def parted(store: SignedStore, eu_key: Path) -> str:
    put_parted(store, eu_key, DUBLIN, "alice/parted.eml", PARTED)
    return "alice/parted.eml"


# ---- reads ------------------------------------------------------------------------------------------------


def test_the_object_on_moto_is_parted_ciphertext(store: SignedStore, parted: str) -> None:
    held = store.client().get_object(Bucket=DUBLIN, Key=parted)
    assert held["ETag"].endswith('-3"')
    assert isinstance(parse_any(held["Metadata"]["bailiwick-encryption"]), PartedEnvelope)
    body = held["Body"].read()
    assert len(body) == 2 * part_stored_length(P) + part_stored_length(3 * S + 100)
    assert MARKER not in body


def test_a_whole_read_is_the_plaintext(eu: ProxyThread, parted: str) -> None:
    got = irish(eu).get_object(Bucket=DUBLIN, Key=parted)
    assert got["ContentLength"] == LENGTH
    assert got["ContentType"] == "message/rfc822"
    assert got["Metadata"]["folder"] == "inbox"
    assert got["ETag"].endswith('-3-bwenc"')
    assert got["Body"].read() == PARTED


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 3 * S + 7])
def test_one_part_objects_of_every_size_read_back(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                  size: int) -> None:
    data = body_of(size)
    key = f"alice/one-part-{size}.eml"
    put_parted(store, eu_key, DUBLIN, key, data)
    client = irish(eu)
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == data
    assert client.head_object(Bucket=DUBLIN, Key=key)["ContentLength"] == size
    if size:
        got = client.get_object(Bucket=DUBLIN, Key=key, Range=f"bytes={size // 2}-")
        assert got["Body"].read() == data[size // 2:]


def test_head_shows_the_plaintext_length(eu: ProxyThread, parted: str) -> None:
    head = irish(eu).head_object(Bucket=DUBLIN, Key=parted)
    assert head["ContentLength"] == LENGTH
    assert head["ETag"].endswith('-3-bwenc"')


def test_a_listing_shows_the_plaintext_size(eu: ProxyThread, parted: str) -> None:
    listed = irish(eu).list_objects_v2(Bucket=DUBLIN, Prefix="alice")["Contents"]
    assert [(o["Size"], o["ETag"][-9:]) for o in listed if o["Key"] == parted] == [(LENGTH, '-3-bwenc"')]


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        (f"bytes={S - 1}-{S}", S - 1, S),                               # a segment edge in part 1
        (f"bytes=0-{P - 1}", 0, P - 1),                                 # exactly part 1
        (f"bytes={P - 1}-{P}", P - 1, P),                               # across parts 1 and 2
        (f"bytes={P}-{2 * P - 1}", P, 2 * P - 1),                       # exactly part 2
        (f"bytes={P + S - 1}-{P + S}", P + S - 1, P + S),               # a segment edge in part 2
        (f"bytes={P + 3}-{P + 9}", P + 3, P + 9),                       # inside part 2's first segment
        (f"bytes={P - 10}-{2 * P + 10}", P - 10, 2 * P + 10),           # three parts
        (f"bytes={2 * P - 1}-{2 * P}", 2 * P - 1, 2 * P),               # across parts 2 and 3
        (f"bytes={2 * P}-", 2 * P, LENGTH - 1),                         # open-ended: the last part
        (f"bytes={2 * P + 3 * S}-", 2 * P + 3 * S, LENGTH - 1),         # the last segment
        (f"bytes={P + 5}-", P + 5, LENGTH - 1),                         # open-ended across parts
        (f"bytes={LENGTH - 1}-{LENGTH - 1}", LENGTH - 1, LENGTH - 1),   # the last byte
        ("bytes=-1", LENGTH - 1, LENGTH - 1),                           # suffix: the last byte
        (f"bytes=-{3 * S + 101}", 2 * P - 1, LENGTH - 1),               # suffix into part 2
        (f"bytes=-{10 * P}", 0, LENGTH - 1),                            # suffix longer than the object
        (f"bytes=100-{10 * P}", 100, LENGTH - 1),                       # end past the object
    ],
)
def test_every_range_is_the_plaintext_slice(eu: ProxyThread, parted: str, asked: str, first: int,
                                            last: int) -> None:
    got = irish(eu).get_object(Bucket=DUBLIN, Key=parted, Range=asked)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {first}-{last}/{LENGTH}"
    assert got["ContentLength"] == last - first + 1
    assert got["Body"].read() == PARTED[first:last + 1]


SP, SS = part_stored_length(P), S + 16   # a whole part and a whole segment, as stored


@pytest.mark.parametrize(
    ("asked", "sub_requests"),
    [
        ("bytes=0-9", ["bytes=0-51", f"bytes=52-{52 + SS - 1}"]),
        (f"bytes={P + 3}-{P + 9}", ["bytes=0-51", f"bytes={SP}-{SP + 51}", f"bytes={SP + 52}-{SP + 52 + SS - 1}"]),
        (f"bytes={P - 1}-{P}", ["bytes=0-51", f"bytes={52 + 79 * SS}-{SP + 52 + SS - 1}"]),
    ],
)
def test_a_range_reads_only_the_headers_and_segments_it_needs(eu: ProxyThread, parted: str, relay: Recorder,
                                                              asked: str, sub_requests: list[str]) -> None:
    mark = relay.mark()
    irish(eu).get_object(Bucket=DUBLIN, Key=parted, Range=asked)["Body"].read()
    sent = relay.since(mark).lower()
    # The first request asks in a single PUT's geometry; then part 1's header, the header of the part the
    # range starts in, and exactly the segments that hold it, each of the version the first answer was.
    assert [found.decode() for found in re.findall(rb"\r\nrange: (bytes=[0-9-]+)\r\n", sent)][1:] == sub_requests
    assert sent.count(b"\r\nif-match: ") == len(sub_requests)


def test_every_sub_request_carries_what_the_read_carried(eu: ProxyThread, parted: str, relay: Recorder) -> None:
    # The proxy's tags (the storage side sees who asked) and what the storage server needs to read the object
    # at all (here: the requester pays) go with every request of a read, sub-requests included.
    mark = relay.mark()
    irish(eu).get_object(Bucket=DUBLIN, Key=parted, Range=f"bytes={P + 10}-{P + 20}", RequestPayer="requester")
    heads = [request.partition(b"\r\n\r\n")[0] + b"\r\n"
             for request in relay.since(mark).lower().split(b"get /")[1:]]
    assert len(heads) == 4   # the first answer, part 1's header, part 2's header, the segments
    for head in heads:
        assert b"\r\nx-bailiwick-jurisdiction: ie\r\n" in head
        assert b"\r\nx-amz-request-payer: requester\r\n" in head


def test_a_head_reads_part_1s_header_and_a_whole_read_nothing_more(eu: ProxyThread, parted: str,
                                                                   relay: Recorder) -> None:
    mark = relay.mark()
    irish(eu).head_object(Bucket=DUBLIN, Key=parted)
    sent = relay.since(mark).lower()
    assert re.findall(rb"\r\nrange: (bytes=[0-9-]+)\r\n", sent) == [b"bytes=0-51"]
    assert sent.startswith(b"head ")
    assert sent.count(b"\r\nif-match: ") == 1
    mark = relay.mark()
    irish(eu).get_object(Bucket=DUBLIN, Key=parted)["Body"].read()
    sent = relay.since(mark).lower()
    assert sent.count(b"get ") == 1
    assert b"\r\nrange: " not in sent   # part 1's header is the answer's first bytes


@pytest.mark.parametrize("asked", [f"bytes={LENGTH}-", f"bytes={LENGTH + 5}-{LENGTH + 9}", f"bytes={4 * P}-"])
def test_a_range_past_the_plaintext_is_unsatisfiable(eu: ProxyThread, parted: str, asked: str) -> None:
    with pytest.raises(ClientError) as refused:
        irish(eu).get_object(Bucket=DUBLIN, Key=parted, Range=asked)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_a_range_of_an_empty_object_is_unsatisfiable(eu: ProxyThread, store: SignedStore, eu_key: Path) -> None:
    put_parted(store, eu_key, DUBLIN, "alice/empty-parted.eml", b"")
    with pytest.raises(ClientError) as refused:
        irish(eu).get_object(Bucket=DUBLIN, Key="alice/empty-parted.eml", Range="bytes=-5")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


# ---- changed at rest --------------------------------------------------------------------------------------


def _flip(part: bytes, at: int) -> bytes:
    return part[:at] + bytes([part[at] ^ 0x40]) + part[at + 1:]


def refused_before_a_byte(proxy: ProxyThread, key: str, headers: dict[str, str]) -> None:
    """A read of s3://DUBLIN/`key` is refused before its answer begins: a clean 502, nothing of the object."""
    status, received, clean = raw_get(proxy, f"/{DUBLIN}/{key}", headers)
    assert (status, clean) == (502, True)
    assert b"<Code>EncryptedObjectInvalid</Code>" in received
    assert MARKER not in received


FULL = body_of(3 * P)   # three whole parts: any two may trade places and moto still completes the upload


@pytest.mark.parametrize(
    ("name", "data_name", "change"),
    [
        ("a byte flipped in part 2", "PARTED",
         lambda parts, other: [parts[0], _flip(parts[1], HEADER_SIZE + 10), parts[2]]),
        ("part 2's header edited", "PARTED",
         lambda parts, other: [parts[0], _flip(parts[1], 20), parts[2]]),
        ("parts 2 and 3 swapped", "FULL", lambda parts, other: [parts[0], parts[2], parts[1]]),
        ("part 2 of another upload of the object", "FULL", lambda parts, other: [parts[0], other[1], parts[2]]),
    ],
)
def test_a_part_changed_at_rest_cuts_the_read_after_part_1(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                          name: str, data_name: str, change: Any) -> None:
    key = "alice/changed-" + name.replace(" ", "-").replace("'", "") + ".eml"
    data = {"PARTED": PARTED, "FULL": FULL}[data_name]
    sealed = seal_upload(eu_key, DUBLIN, key, data)
    other = seal_upload(eu_key, DUBLIN, key, data)
    store_parts(store, DUBLIN, key, sealed.metadata, change(sealed.parts, other.parts))
    status, received, clean = raw_get(eu, f"/{DUBLIN}/{key}")
    # Part 1 verified and sent, then the connection cut: never a byte of part 2, never a clean short body.
    assert (status, clean) == (200, False)
    assert data.startswith(received)
    assert P // 2 <= len(received) <= P   # (the segments opened with the failing one's piece are dropped too)
    # A range inside part 2 fails before its answer begins.
    refused_before_a_byte(eu, key, {"Range": f"bytes={P + 10}-{P + 20}"})


@pytest.mark.parametrize("cut", [5, 16, S + 16])
def test_an_object_cut_inside_its_last_part_is_refused(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                       cut: int) -> None:
    key = f"alice/cut-{cut}.eml"
    sealed = seal_upload(eu_key, DUBLIN, key, PARTED)
    store_parts(store, DUBLIN, key, sealed.metadata, [*sealed.parts[:2], sealed.parts[2][:-cut]])
    # The stored length still fits a layout (a shorter last part), which part 3's own header belies: found when
    # the read reaches it, after parts 1 and 2 were verified and sent; then the connection is cut.
    status, received, clean = raw_get(eu, f"/{DUBLIN}/{key}")
    assert (status, clean) == (200, False)
    assert PARTED.startswith(received)
    assert P < len(received) <= 2 * P
    # A range in the last part is found out before its answer begins.
    refused_before_a_byte(eu, key, {"Range": "bytes=-10"})


def test_an_object_whose_length_fits_no_layout_is_refused_before_a_byte(eu: ProxyThread, store: SignedStore,
                                                                       eu_key: Path) -> None:
    sealed = seal_upload(eu_key, DUBLIN, "alice/cut-to-the-header.eml", PARTED)
    store_parts(store, DUBLIN, "alice/cut-to-the-header.eml", sealed.metadata,
                [*sealed.parts[:2], sealed.parts[2][:HEADER_SIZE + 10]])   # no sealed part is 10 bytes
    refused_before_a_byte(eu, "alice/cut-to-the-header.eml", {})
    refused_before_a_byte(eu, "alice/cut-to-the-header.eml", {"Range": "bytes=0-10"})


def test_a_part_moved_to_another_object_does_not_open(eu: ProxyThread, store: SignedStore, eu_key: Path) -> None:
    sealed = seal_upload(eu_key, DUBLIN, "alice/moved-from.eml", FULL)
    store_parts(store, DUBLIN, "alice/moved-to.eml", sealed.metadata, sealed.parts)
    status, received, _ = raw_get(eu, f"/{DUBLIN}/alice/moved-to.eml")
    assert status == 403   # the upload key is bound to the object it was made for
    assert b"<Code>KeyReleaseRefused</Code>" in received


@pytest.mark.parametrize("meanwhile", ["written again", "deleted"])
def test_an_object_changed_while_a_range_is_read_is_refused(eu: ProxyThread, store: SignedStore, eu_key: Path,
                                                            monkeypatch: pytest.MonkeyPatch, meanwhile: str) -> None:
    key = f"alice/{meanwhile.replace(' ', '-')}-meanwhile.eml"
    put_parted(store, eu_key, DUBLIN, key, FULL)
    first = PartedObject.first

    def change() -> None:
        if meanwhile == "deleted":
            store.client().delete_object(Bucket=DUBLIN, Key=key)
        else:
            put_parted(store, eu_key, DUBLIN, key, PARTED)

    async def first_after_a_change(self: PartedObject) -> tuple[PartHeader, Layout]:
        # Another version lands (or none is left) between the first answer and the sub-requests of the range.
        await asyncio.to_thread(change)
        return await first(self)

    monkeypatch.setattr(PartedObject, "first", first_after_a_change)
    before = _changed_reads(eu)
    status, received, _ = raw_get(eu, f"/{DUBLIN}/{key}", {"Range": f"bytes={P}-{P + 10}"})
    assert status == 503
    assert b"the object changed while it was read" in received
    assert MARKER not in received
    assert _changed_reads(eu) == before + 1


def _changed_reads(proxy: ProxyThread) -> float:
    """The proxy's count of reads refused because the object changed while it was read."""
    metrics = urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5).read().decode()
    found = re.search(r'^bailiwick_encrypted_object_failures_total\{reason="changed"\} (\S+)$', metrics, re.M)
    assert found is not None
    return float(found[1])


def test_a_sub_request_answered_with_other_bytes_than_asked_is_refused(eu: ProxyThread, parted: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A storage server (or anything between) that answers a sub-request with another range than the one asked
    # is refused for that, before a byte: the proxy opens only the bytes it asked for. (Here each sub-request
    # is moved one byte on just before it is signed, so the storage server answers what it was sent.)
    sign = EncryptionStage.sign

    def moved_on(self: EncryptionStage, method: str, target: str, headers: CIMultiDict[str]) -> None:
        asked = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("Range", ""))
        if "If-Match" in headers and asked is not None:
            headers["Range"] = f"bytes={int(asked[1]) + 1}-{int(asked[2]) + 1}"
        sign(self, method, target, headers)

    monkeypatch.setattr(EncryptionStage, "sign", moved_on)
    status, received, clean = raw_get(eu, f"/{DUBLIN}/{parted}", {"Range": f"bytes={P + 10}-{P + 20}"})
    assert (status, clean) == (502, True)
    assert b"<Code>BadGateway</Code>" in received
    assert b"another range than the one asked" in received
    assert MARKER not in received


def test_a_proxy_of_another_region_cannot_open_a_copied_parted_object(store: SignedStore, eu_key: Path,
                                                                     tmp_path: Path) -> None:
    sealed = seal_upload(eu_key, DUBLIN, "alice/secret.eml", FULL)
    store_parts(store, US, "copied/secret.eml", sealed.metadata, sealed.parts)   # copied past the proxies
    write_key_file(tmp_path / "us.key")
    us = ProxyThread(encrypting_config(tmp_path, store, store.server.url, "us-east-1", tmp_path / "us.key")).start()
    try:
        client = s3_client(us.url, make_token("US"))
        for asked in ({}, {"Range": f"bytes={P}-{P + 5}"}):
            with pytest.raises(ClientError) as refused:
                client.get_object(Bucket=US, Key="copied/secret.eml", **asked)
            assert refused.value.response["Error"]["Code"] == "KeyReleaseRefused"
    finally:
        us.stop()


# ---- copies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bucket", "key"), [(DUBLIN, "alice/parted-copy.eml"), (ARCHIVE, "ie/parted-copy.eml")])
def test_a_copy_of_a_parted_object_is_its_plaintext(eu: ProxyThread, store: SignedStore, parted: str,
                                                    bucket: str, key: str) -> None:
    client = irish(eu)
    client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": DUBLIN, "Key": parted})
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == PARTED
    assert got["Metadata"]["folder"] == "inbox"
    held = store.client().get_object(Bucket=bucket, Key=key)
    if bucket == DUBLIN:   # sealed anew for its own name, as any encrypted object
        assert MARKER not in held["Body"].read()
        assert held["Metadata"]["bailiwick-encryption"].startswith("v=1;")
    else:
        assert held["Body"].read() == PARTED
        assert "bailiwick-encryption" not in held["Metadata"]


# ---- tools ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_file(eu: ProxyThread, store: SignedStore, folder: Path, eu_key: Path) -> Path:
    return write_config(folder, store, key_file_section(eu_key))


def run(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


def test_decrypt_recovers_a_parted_object(config_file: Path, parted: str, tmp_path: Path) -> None:
    out = tmp_path / "recovered.eml"
    assert run("decrypt", f"s3://{DUBLIN}/{parted}", "-o", out, "--config", config_file) == 0
    assert out.read_bytes() == PARTED
    assert os.listdir(tmp_path) == ["recovered.eml"]


def test_decrypt_of_a_changed_parted_object_fails_and_leaves_no_file(
        config_file: Path, store: SignedStore, eu_key: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sealed = seal_upload(eu_key, DUBLIN, "alice/decrypt-swapped.eml", FULL)
    store_parts(store, DUBLIN, "alice/decrypt-swapped.eml", sealed.metadata,
                [sealed.parts[0], sealed.parts[2], sealed.parts[1]])
    out = tmp_path / "recovered.eml"
    assert run("decrypt", f"s3://{DUBLIN}/alice/decrypt-swapped.eml", "-o", out, "--config", config_file) == 1
    assert os.listdir(tmp_path) == []
    assert "part 3 is stored where part 2 belongs" in capsys.readouterr().err


def test_rewrap_keeps_a_parted_object_parted_and_readable(eu: ProxyThread, config_file: Path, store: SignedStore,
                                                          eu_key: Path) -> None:
    # (Prefixes without "/": moto re-reads the query decoding "%2F", and would refuse the tool's signature.)
    key = "rewrap-parted.eml"
    sealed = put_parted(store, eu_key, DUBLIN, key, PARTED)
    before = store.client().get_object(Bucket=DUBLIN, Key=key)
    body_before = before["Body"].read()
    assert run("rewrap", f"s3://{DUBLIN}/rewrap-", "--config", config_file) == 0
    after = store.client().get_object(Bucket=DUBLIN, Key=key)
    assert after["Body"].read() == body_before                         # the body as it was
    assert after["ETag"].endswith('-3"')                               # still three parts: listings still read it
    assert after["Metadata"]["folder"] == "inbox"
    assert after["ContentType"] == "message/rfc822"
    rewrapped = after["Metadata"]["bailiwick-encryption"]
    assert rewrapped != sealed.metadata
    assert isinstance(parse_any(rewrapped), PartedEnvelope)
    client = irish(eu)
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == PARTED
    listed = client.list_objects_v2(Bucket=DUBLIN, Prefix="rewrap-")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(key, LENGTH)]


def test_encrypt_leaves_a_parted_object_alone(config_file: Path, store: SignedStore, eu_key: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    put_parted(store, eu_key, DUBLIN, "encrypt-parted.eml", FULL)
    before = store.client().head_object(Bucket=DUBLIN, Key="encrypt-parted.eml")
    assert run("encrypt", f"s3://{DUBLIN}/encrypt-", "--config", config_file) == 0
    after = store.client().head_object(Bucket=DUBLIN, Key="encrypt-parted.eml")
    assert (after["ETag"], after["Metadata"]) == (before["ETag"], before["Metadata"])
    assert "already done" in capsys.readouterr().err

