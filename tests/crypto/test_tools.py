"""`bailiwick decrypt`, `encrypt` and `rewrap` against moto checking signatures, with a real re-signing proxy.

Objects are written through the proxy (or planted straight on moto, as data
from before encryption would be); the tools then run in-process through
`proxy.cli.main` with a configuration file of the proxy's own kind, talking to
moto directly. What is asserted is what moto holds before and after (bytes,
ETags, metadata) and what callers read through the proxy.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cli import main
from proxy.config import Config, load_config
from proxy.config.model import EncryptionConfig, KeyServiceKind, TransitSettings
from proxy.crypto.envelope import METADATA_HEADER, parse_header
from proxy.crypto.keyfile import write_key_file
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.crypto.tools import encrypt
from proxy.crypto.tools.encrypt import encrypt_objects
from proxy.crypto.tools.rewrap import key_version
from proxy.crypto.tools.store import Storage
from proxy.crypto.tools.toolbox import Toolbox, size
from proxy.harness import ProxyThread
from tests.crypto.test_encrypted_objects import (
    DUBLIN,
    MARKER,
    MIGRATING,
    US,
    body_of,
    encrypting_config,
    irish,
    plant,
    stored,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.keyservices import Bao, bao_fixture  # noqa: F401 - the `bao` fixture

S = SEGMENT_SIZE
ARCHIVE = "archive"   # irish-archive (s3://archive/ie/, not encrypted); other keys of it are in no dataset
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    buckets: dict[str, str | None] = {DUBLIN: "eu-west-1", US: None, MIGRATING: "eu-west-1", ARCHIVE: "eu-west-1"}
    with signed_store("bailiwick-tools", buckets) as running:
        yield running


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tools")


@pytest.fixture(scope="module")
def eu_key(folder: Path) -> Path:
    write_key_file(folder / "eu.key")
    return folder / "eu.key"


def write_config(folder: Path, store: SignedStore, encryption: str) -> Path:
    """The proxy's configuration file as an operator would write it (the tools read nothing else)."""
    path = folder / "bailiwick.yaml"
    path.write_text(
        f"region: eu-west-1\npolicies: {folder / 'policies'}\nupstream:\n  url: {store.server.url}\n"
        f"s3:\n  sign:\n    region: us-east-1\n    credentials_file: {folder / 'credentials'}\n"
        f"encryption:\n{encryption}")
    return path


def key_file_section(key: Path) -> str:
    return f"  key_service: file\n  key_file:\n    path: {key}\n    allow_insecure: true\n"


@pytest.fixture(scope="module")
def eu(store: SignedStore, folder: Path, eu_key: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(encrypting_config(folder, store, store.server.url, "eu-west-1", eu_key)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def config_file(eu: ProxyThread, store: SignedStore, folder: Path, eu_key: Path) -> Path:
    return write_config(folder, store, key_file_section(eu_key))


def run(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


def head(store: SignedStore, bucket: str, key: str) -> dict[str, Any]:
    return dict(store.client().head_object(Bucket=bucket, Key=key))


# ---- decrypt -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3 * S + 7])
def test_decrypt_to_a_file_gives_the_exact_bytes(eu: ProxyThread, config_file: Path, tmp_path: Path,
                                                 size: int) -> None:
    data = body_of(size)
    irish(eu).put_object(Bucket=DUBLIN, Key=f"alice/recover-{size}.eml", Body=data)
    out = tmp_path / "recovered.eml"
    assert run("decrypt", f"s3://{DUBLIN}/alice/recover-{size}.eml", "-o", out, "--config", config_file) == 0
    assert out.read_bytes() == data
    assert os.listdir(tmp_path) == ["recovered.eml"]   # no partial file left beside it


@pytest.mark.parametrize("size", [0, 1, 3 * S + 7])
def test_decrypt_to_standard_output_gives_the_exact_bytes(eu: ProxyThread, config_file: Path,
                                                          capsysbinary: pytest.CaptureFixture[bytes],
                                                          size: int) -> None:
    data = body_of(size)
    irish(eu).put_object(Bucket=DUBLIN, Key=f"alice/out-{size}.eml", Body=data)
    assert run("decrypt", f"s3://{DUBLIN}/alice/out-{size}.eml", "--config", config_file) == 0
    assert capsysbinary.readouterr().out == data


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.mark.parametrize(
    ("name", "change", "said"),
    [
        ("first-segment", lambda held: _flip(held, 3), "segment 0 of the stored object does not authenticate"),
        # Two segments verified and written to the partial file before the third fails.
        ("third-segment", lambda held: _flip(held, 2 * (S + 16) + 3), "segment 2 of the stored object"),
        ("truncated", lambda held: held[: 2 * (S + 16)], "truncated or replaced"),
    ],
)
def test_decrypt_of_a_tampered_object_fails_and_leaves_no_file(
        eu: ProxyThread, store: SignedStore, config_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], name: str, change: Any, said: str) -> None:
    key = f"alice/tampered-{name}.eml"
    irish(eu).put_object(Bucket=DUBLIN, Key=key, Body=body_of(3 * S + 7))
    held, metadata = stored(store, DUBLIN, key)
    plant(store, DUBLIN, key, change(held), metadata)
    out = tmp_path / "recovered.eml"
    assert run("decrypt", f"s3://{DUBLIN}/{key}", "-o", out, "--config", config_file) == 1
    assert os.listdir(tmp_path) == []
    error = capsys.readouterr().err
    assert said in error
    assert error.startswith("bailiwick: ")
    assert error.count("\n") == 1


def test_decrypt_leaves_an_existing_file_as_it_was_when_it_fails(store: SignedStore, config_file: Path,
                                                                 tmp_path: Path) -> None:
    plant(store, DUBLIN, "alice/not-ours.eml", b"x" * ciphertext_length(5), {
        "bailiwick-encryption": "v=1;seg=65536;len=5;salt=" + "A" * 43 + ";np=AAAAAAAAAA;ks=file;ref=file:0;wk=x"})
    out = tmp_path / "kept.eml"
    out.write_bytes(b"what was there")
    assert run("decrypt", f"s3://{DUBLIN}/alice/not-ours.eml", "-o", out, "--config", config_file) == 1
    assert out.read_bytes() == b"what was there"
    assert os.listdir(tmp_path) == ["kept.eml"]


@pytest.mark.parametrize(
    ("location", "status", "said"),
    [
        (f"s3://{MIGRATING}/old/plain-decrypt.eml", 1, "is not encrypted"),
        # Refused before the key service is asked, as the proxy refuses it.
        (f"s3://{DUBLIN}/alice/foreign.eml", 1, "was encrypted under file:0, not under this region's key"),
        (f"s3://{DUBLIN}/alice/missing.eml", 1, "answered 404 (NoSuchKey: "),
        (f"s3://{DUBLIN}", 2, "names a bucket, not an object"),
        (f"{DUBLIN}/alice/a.eml", 2, "is not an S3 location"),
    ],
)
def test_decrypt_refuses_what_it_cannot_recover(store: SignedStore, config_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], location: str, status: int,
                                                said: str) -> None:
    plant(store, MIGRATING, "old/plain-decrypt.eml", b"left in the clear", {})
    plant(store, DUBLIN, "alice/foreign.eml", b"x" * ciphertext_length(5), {
        "bailiwick-encryption": "v=1;seg=65536;len=5;salt=" + "A" * 43 + ";np=AAAAAAAAAA;ks=file;ref=file:0;wk=x"})
    assert run("decrypt", location, "-o", tmp_path / "out", "--config", config_file) == status
    assert said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("output", "said"), [("missing/out.eml", "No such file or directory"),
                                              (".", "it is a folder")])
def test_decrypt_says_when_it_cannot_write(eu: ProxyThread, config_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           output: str, said: str) -> None:
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/unwritable.eml", Body=b"x")
    monkeypatch.chdir(tmp_path)
    assert run("decrypt", f"s3://{DUBLIN}/alice/unwritable.eml", "-o", output, "--config", config_file) == 1
    assert capsys.readouterr().err == f"bailiwick: cannot write {output}: {said}" + (
        " (name the file to write)\n" if output == "." else "\n")
    assert os.listdir(tmp_path) == []


def test_an_unreachable_storage_server_is_said_plainly(config_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.localstore import free_port

    config = tmp_path / "elsewhere.yaml"
    config.write_text(re.sub(r"url: http://127\.0\.0\.1:\d+", f"url: http://127.0.0.1:{free_port()}",
                             config_file.read_text()))
    assert run("encrypt", f"s3://{MIGRATING}", "--config", config) == 1
    said = capsys.readouterr().err
    assert said.startswith("bailiwick: the storage server http://127.0.0.1:")
    assert "cannot be reached" in said
    assert said.count("\n") == 1


def test_decrypt_runs_as_a_program(eu: ProxyThread, config_file: Path) -> None:
    data = body_of(S + 1)
    irish(eu).put_object(Bucket=DUBLIN, Key="alice/program.eml", Body=data)
    done = subprocess.run([sys.executable, "-m", "proxy", "decrypt", f"s3://{DUBLIN}/alice/program.eml"],
                          capture_output=True, timeout=60, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "BAILIWICK_CONFIG": str(config_file)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_a_configuration_without_a_key_service_is_refused(eu: ProxyThread, store: SignedStore, folder: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, store, "  key_service: null\n")
    config.write_text(config.read_text().replace(str(tmp_path / "policies"), str(folder / "policies")))
    assert run("encrypt", f"s3://{MIGRATING}", "--config", config) == 1
    assert "names no key service" in capsys.readouterr().err


# ---- encrypt -------------------------------------------------------------------------------------------

PLANTED = {
    (MIGRATING, "old/empty.eml"): b"",
    (MIGRATING, "old/one.eml"): b"1",
    (MIGRATING, "old/big.eml"): body_of(3 * S + 7),
    # Spaces are encoded in the path (moto fails its own signature check of keys with other signs: "+", "(").
    (MIGRATING, "old/a key with spaces.eml"): b"a key written many ways",
    (DUBLIN, "legacy/required.eml"): MARKER * 3,
}
LEFT = {
    (US, "legacy/us.eml"): "of region us-east-1",           # another region's dataset: its own proxy encrypts it
    (ARCHIVE, "ie/archived.eml"): "is not encrypted",        # irish-archive: not an encrypted dataset
    (ARCHIVE, "elsewhere.eml"): "in no dataset",
}
USER_METADATA = {"owner": "alice", "n": "7"}
TAGGING = "team=mail&note=kept%20as%20is"
TAGS = [{"Key": "note", "Value": "kept as is"}, {"Key": "team", "Value": "mail"}]
HEADERS = {"ContentType": "message/rfc822", "ContentDisposition": 'attachment; filename="m.eml"',
           "CacheControl": "max-age=60", "ContentEncoding": "identity"}


def _plant_all(store: SignedStore) -> None:
    client = store.client()
    for (bucket, key), data in PLANTED.items():
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=USER_METADATA, Tagging=TAGGING, **HEADERS)
    for bucket, key in LEFT:
        client.put_object(Bucket=bucket, Key=key, Body=MARKER)


def _etags(store: SignedStore, where: Any) -> dict[tuple[str, str], str]:
    return {(bucket, key): head(store, bucket, key)["ETag"] for bucket, key in where}


def test_encrypt_migrates_plaintext_objects_in_place(eu: ProxyThread, store: SignedStore, config_file: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _plant_all(store)
    before = _etags(store, [*PLANTED, *LEFT])

    # --dry-run says what it would do and changes nothing.
    for bucket in (MIGRATING, DUBLIN, US, ARCHIVE):
        assert run("encrypt", f"s3://{bucket}", "--dry-run", "--config", config_file) == 0
    said = capsys.readouterr().err
    for bucket, key in PLANTED:
        assert f"would encrypt: s3://{bucket}/{key}" in said
    assert _etags(store, [*PLANTED, *LEFT]) == before
    assert all(MARKER in stored(store, *where)[0] for where in LEFT)

    for bucket in (MIGRATING, DUBLIN, US, ARCHIVE):
        # A prefix without "/" (moto re-reads "%2F" in a query and would refuse the signature).
        assert run("encrypt", f"s3://{bucket}/{'old' if bucket == MIGRATING else ''}", "--config", config_file) == 0
    said = capsys.readouterr().err
    client = irish(eu)
    for (bucket, key), data in PLANTED.items():
        assert f"encrypted: s3://{bucket}/{key}" in said
        held, metadata = stored(store, bucket, key)
        assert len(held) == ciphertext_length(len(data))
        assert MARKER not in held
        assert USER_METADATA.items() <= metadata.items()
        tags = store.client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert sorted(tags, key=lambda tag: tag["Key"]) == TAGS
        assert parse_header(metadata["bailiwick-encryption"]).plaintext_length == len(data)
        got = client.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data
        assert {name: got[name] for name in HEADERS} == HEADERS
        assert USER_METADATA.items() <= got["Metadata"].items()
    for (bucket, key), why in LEFT.items():
        assert f"skipped: s3://{bucket}/{key} ({len(MARKER)} B): " in said
        assert why in said
        assert stored(store, bucket, key)[0] == MARKER
    assert _etags(store, LEFT) == {where: before[where] for where in LEFT}

    # A second run finds everything done and writes nothing.
    done = _etags(store, [*PLANTED, *LEFT])
    for bucket in (MIGRATING, DUBLIN):
        assert run("encrypt", f"s3://{bucket}", "--config", config_file) == 0
    said = capsys.readouterr().err
    assert "encrypted:" not in said
    for bucket, key in PLANTED:
        assert f"already done: s3://{bucket}/{key}" in said
    assert _etags(store, [*PLANTED, *LEFT]) == done


def test_encrypt_writes_an_object_too_large_for_one_put_in_parts(eu: ProxyThread, store: SignedStore,
                                                                config_file: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the largest PUT (here lowered to 6 MiB), the object is written as a multipart upload's object
    (format 2) in parts of PART_BYTES (here 5 MiB), its metadata and tags kept, and reads back whole and by
    range through the proxy."""
    monkeypatch.setattr(encrypt, "MAX_PUT_BYTES", 6 * 1024 * 1024)
    monkeypatch.setattr(encrypt, "PART_BYTES", 5 * 1024 * 1024)
    key, data = "big-parted.eml", body_of(11 * 1024 * 1024 + 7)
    store.client().put_object(Bucket=MIGRATING, Key=key, Body=data, Metadata=USER_METADATA, Tagging=TAGGING,
                              **HEADERS)
    assert encrypt_with(Storage, config_file, "big-parted") == 0
    held = store.client().get_object(Bucket=MIGRATING, Key=key)
    assert held["ETag"].strip('"').endswith("-3")
    assert held["Metadata"]["bailiwick-encryption"].startswith("v=2;")
    assert USER_METADATA.items() <= held["Metadata"].items()
    assert MARKER not in held["Body"].read()
    tags = store.client().get_object_tagging(Bucket=MIGRATING, Key=key)["TagSet"]
    assert sorted(tags, key=lambda tag: tag["Key"]) == TAGS
    client = irish(eu)
    got = client.get_object(Bucket=MIGRATING, Key=key)
    assert (got["Body"].read(), got["ContentLength"]) == (data, len(data))
    assert {name: got[name] for name in HEADERS} == HEADERS
    edge = 5 * 1024 * 1024
    ranged = client.get_object(Bucket=MIGRATING, Key=key, Range=f"bytes={edge - 5}-{2 * edge + 5}")
    assert ranged["Body"].read() == data[edge - 5:2 * edge + 6]
    # Done once: a second run leaves it.
    etag = store.client().head_object(Bucket=MIGRATING, Key=key)["ETag"]
    assert encrypt_with(Storage, config_file, "big-parted") == 0
    assert store.client().head_object(Bucket=MIGRATING, Key=key)["ETag"] == etag


def test_a_part_size_keeps_to_ten_thousand_parts() -> None:
    assert encrypt.part_size(1) == encrypt.PART_BYTES
    huge = 5 * 1024**4   # S3's largest object
    size = encrypt.part_size(huge)
    assert size % S == 0
    assert -(-huge // size) <= 10_000 < -(-huge // (size - S))


def encrypt_with(storage: Callable[[Config], Storage], config_file: Path, prefix: str) -> int:
    """`bailiwick encrypt s3://MIGRATING/prefix`, in-process, through a storage client of the test's making."""
    config = load_config(config_file)
    box = Toolbox.open(config)

    async def go() -> int:
        async with storage(config) as reaching:
            return await encrypt_objects(box, reaching, MIGRATING, prefix, dry_run=False)

    try:
        return asyncio.run(go())
    finally:
        box.close()


class _Meddler(Storage):
    """Storage whose HEAD of one key is followed, before anything else, by someone else's write of it."""

    def __init__(self, config: Config, store: SignedStore, key: str) -> None:
        super().__init__(config)
        self.store, self.key = store, key

    async def head(self, bucket: str, key: str) -> CIMultiDictProxy[str]:
        seen = await super().head(bucket, key)
        if key == self.key:
            self.store.client().put_object(Bucket=bucket, Key=key, Body=b"written meanwhile")
        return seen


def test_encrypt_does_not_overwrite_an_object_changed_meanwhile(store: SignedStore, config_file: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    plant(store, MIGRATING, "raced/a.eml", b"first version", {})
    plant(store, MIGRATING, "raced/b.eml", b"left alone", {})
    assert encrypt_with(lambda config: _Meddler(config, store, "raced/a.eml"), config_file, "raced") == 1
    said = capsys.readouterr().err
    assert "changed meanwhile: s3://mail-eu-migrating/raced/a.eml" in said
    assert "PreconditionFailed" in said
    assert "run the same command again" in said
    assert stored(store, MIGRATING, "raced/a.eml") == (b"written meanwhile", {})   # not overwritten
    assert "bailiwick-encryption" in stored(store, MIGRATING, "raced/b.eml")[1]     # the others go on
    assert run("encrypt", f"s3://{MIGRATING}/raced", "--config", config_file) == 0  # and a second run finishes
    assert "bailiwick-encryption" in stored(store, MIGRATING, "raced/a.eml")[1]


class _Cut(Storage):
    """Storage whose GETs of object bodies break off after their first piece (the storage server went away)."""

    def __init__(self, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(config)
        cut: set[int] = set()
        whole = aiohttp.StreamReader.iter_chunked

        def iter_chunked(stream: aiohttp.StreamReader, size: int) -> AsyncIterator[bytes]:
            if id(stream) not in cut:
                return whole(stream, size)

            async def first_then_break() -> AsyncIterator[bytes]:
                yield await stream.read(size)
                raise aiohttp.ClientPayloadError("Response payload is not completed")

            return first_then_break()

        monkeypatch.setattr(aiohttp.StreamReader, "iter_chunked", iter_chunked)
        self.cut = cut

    async def request(self, method: str, target: str, headers: CIMultiDict[str] | None = None,
                      body: AsyncIterator[bytes] | None = None) -> aiohttp.ClientResponse:
        answer = await super().request(method, target, headers, body)
        if method == "GET" and "?" not in target:
            self.cut.add(id(answer.content))
        return answer


def test_encrypt_stores_nothing_when_the_read_breaks_off(store: SignedStore, config_file: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = body_of(3 * S + 7)
    plant(store, MIGRATING, "cut/a.eml", data, {"owner": "alice"})
    assert encrypt_with(lambda config: _Cut(config, monkeypatch), config_file, "cut") == 1
    said = capsys.readouterr().err
    assert "failed: s3://mail-eu-migrating/cut/a.eml" in said
    assert "the storage server's answer broke off" in said
    assert stored(store, MIGRATING, "cut/a.eml") == (data, {"owner": "alice"})   # the plaintext, as it was


# ---- rewrap --------------------------------------------------------------------------------------------


@pytest.fixture
def transit(bao: Bao, store: SignedStore, folder: Path, tmp_path: Path) -> Iterator[tuple[ProxyThread, Path, str]]:
    """A proxy and a configuration file whose key service is a fresh Transit key of its own."""
    name = f"tools-{os.urandom(4).hex()}"
    bao.create_key(name)
    token = tmp_path / "token"
    token.write_text(bao.token)
    base = encrypting_config(tmp_path, store, store.server.url, "eu-west-1", folder / "eu.key")
    settings = TransitSettings(address=bao.address, key=name, token_file=token)
    running = ProxyThread(replace(base, encryption=EncryptionConfig(key_service=KeyServiceKind.TRANSIT,
                                                                    transit=settings))).start()
    section = (f"  key_service: transit\n  transit:\n    address: {bao.address}\n    key: {name}\n"
               f"    token_file: {token}\n")
    try:
        yield running, write_config(tmp_path, store, section), name
    finally:
        running.stop()


def test_rewrap_after_rotation_keeps_bodies_and_moves_envelopes(
        transit: tuple[ProxyThread, Path, str], bao: Bao, store: SignedStore, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    proxy, config, name = transit
    prefix = f"rotated{name}"
    objects = {f"{prefix}/a.eml": body_of(1), f"{prefix}/b.eml": body_of(3 * S + 7)}
    for key, data in objects.items():
        irish(proxy).put_object(Bucket=DUBLIN, Key=key, Body=data, ContentType="message/rfc822",
                                Metadata={"owner": "alice"})
    before = {key: stored(store, DUBLIN, key) for key in objects}
    assert all(parse_header(m["bailiwick-encryption"]).wrapped.startswith("vault:v1:") for _, m in before.values())

    bao.client().secrets.transit.rotate_key(name)
    assert run("rewrap", f"s3://{DUBLIN}/{prefix}", "--dry-run", "--config", config) == 0
    assert {key: stored(store, DUBLIN, key) for key in objects} == before
    assert run("rewrap", f"s3://{DUBLIN}/{prefix}", "--config", config) == 0
    said = capsys.readouterr().err
    for key, data in objects.items():
        assert f"would rewrap: s3://{DUBLIN}/{key} ({size(len(before[key][0]))}): key version 1 -> 2" in said
        assert f"rewrapped: s3://{DUBLIN}/{key} ({size(len(before[key][0]))}): key version 1 -> 2" in said
        held, metadata = stored(store, DUBLIN, key)
        old = parse_header(before[key][1]["bailiwick-encryption"])
        new = parse_header(metadata["bailiwick-encryption"])
        assert held == before[key][0]                               # the body, byte for byte
        assert key_version(new.wrapped) == 2
        assert new._replace(wrapped=old.wrapped) == old             # only the wrapped key changed
        assert metadata["owner"] == "alice"
        got = irish(proxy).get_object(Bucket=DUBLIN, Key=key)
        assert got["Body"].read() == data
        assert got["ContentType"] == "message/rfc822"
        out = tmp_path / "recovered"
        assert run("decrypt", f"s3://{DUBLIN}/{key}", "-o", out, "--config", config) == 0
        assert out.read_bytes() == data

    # Everything is at the latest version now: a second run (and a dry run) copies nothing.
    after = {key: stored(store, DUBLIN, key) for key in objects}
    assert run("rewrap", f"s3://{DUBLIN}/{prefix}", "--dry-run", "--config", config) == 0
    assert run("rewrap", f"s3://{DUBLIN}/{prefix}", "--config", config) == 0
    said = capsys.readouterr().err
    assert "rewrapped:" not in said
    assert "would rewrap:" not in said
    assert said.count("already done:") == 2 * len(objects)
    assert {key: stored(store, DUBLIN, key) for key in objects} == after


def test_rewrap_with_a_key_without_versions_rewraps_and_keeps_bodies(
        eu: ProxyThread, store: SignedStore, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = body_of(S + 3)
    irish(eu).put_object(Bucket=DUBLIN, Key="rewrap-file/a.eml", Body=data)
    irish(eu).put_object(Bucket=DUBLIN, Key="rewrap-file/c.eml", Body=b"c")
    plant(store, MIGRATING, "rewrap-file/plain.eml", b"plain", {})
    held, metadata = stored(store, DUBLIN, "rewrap-file/a.eml")
    plant(store, DUBLIN, "rewrap-file/b.eml", held, metadata)   # a's envelope moved to b: its key is not b's
    assert run("rewrap", f"s3://{DUBLIN}/rewrap-file", "--config", config_file) == 1
    assert run("rewrap", f"s3://{MIGRATING}/rewrap-file", "--config", config_file) == 0
    said = capsys.readouterr().err
    assert f"rewrapped: s3://{DUBLIN}/rewrap-file/a.eml" in said
    assert f"failed: s3://{DUBLIN}/rewrap-file/b.eml" in said       # refused for that object alone...
    assert f"rewrapped: s3://{DUBLIN}/rewrap-file/c.eml" in said    # ...so the batch went on
    assert stored(store, DUBLIN, "rewrap-file/b.eml") == (held, metadata)
    assert f"skipped: s3://{MIGRATING}/rewrap-file/plain.eml (5 B): not encrypted" in said
    held_after, metadata_after = stored(store, DUBLIN, "rewrap-file/a.eml")
    assert held_after == held
    assert metadata_after[METADATA_HEADER.removeprefix("x-amz-meta-")] != metadata["bailiwick-encryption"]
    assert irish(eu).get_object(Bucket=DUBLIN, Key="rewrap-file/a.eml")["Body"].read() == data


def test_a_batch_stops_when_the_key_service_cannot_serve(transit: tuple[ProxyThread, Path, str], bao: Bao,
                                                         store: SignedStore,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, config, name = transit
    for key in ("frozen/a.eml", "frozen/b.eml"):
        plant(store, MIGRATING, key, MARKER, {})
    bao.delete_key(name)   # the region's key is shredded: nothing can be encrypted (or read) any more
    assert run("encrypt", f"s3://{MIGRATING}/frozen", "--config", config) == 1
    said = capsys.readouterr().err
    assert "stopped, since the key service cannot serve" in said
    assert "[1/2]" not in said
    assert all(stored(store, MIGRATING, key)[0] == MARKER for key in ("frozen/a.eml", "frozen/b.eml"))
