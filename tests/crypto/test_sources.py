"""`proxy.crypto.sources.read_plaintext`: a copy's source read whole or by range, whatever it is stored as.

A small aiohttp server in the test's own event loop calls `read_plaintext`
with a real encryption stage (the dev key file, the proxy's signer) against
moto checking signatures, and answers with the plaintext it was handed (its
length, first byte and total in headers). Sources: a single PUT's object and a
multipart upload's (both encrypted), plaintext in a migrating dataset and in
a dataset without encryption, plaintext where encryption is required.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.audit import RecordedKeyRelease
from proxy.config import Config
from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.keyservice import Justification
from proxy.crypto.plan import ObjectRef, Wanted
from proxy.crypto.segments import SEGMENT_SIZE
from proxy.crypto.sources import Plaintext, read_plaintext
from proxy.crypto.stage import EncryptionStage
from proxy.errors import RequestRefused
from proxy.harness import ProxyThread
from proxy.metrics import Metrics
from proxy.s3.resign import request_signer
from proxy.upstream import Transfer, Upstream
from tests.crypto.test_encrypted_objects import DUBLIN, MIGRATING, body_of, encrypting_config, irish, plant
from tests.support.iam import SignedStore, signed_store
from tests.support.parted import PART_SIZE, put_parted

S = SEGMENT_SIZE
P = PART_SIZE
ARCHIVE = "archive"   # s3://archive/ie/: the irish-archive dataset, not encrypted
SINGLE = body_of(3 * S + 100)
PARTED = body_of(2 * P + S + 10)
PLAIN = body_of(S + 33)


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-sources", {DUBLIN: "eu-west-1", MIGRATING: "eu-west-1",
                                            ARCHIVE: "eu-west-1"}) as running:
        yield running


@pytest.fixture(scope="module")
def eu_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dublin key file, in the folder of the proxy's configuration (policies, credentials, audit log)."""
    key = tmp_path_factory.mktemp("sources") / "eu.key"
    write_key_file(key)
    return key


@pytest.fixture(scope="module")
def config(store: SignedStore, eu_key: Path) -> Config:
    return encrypting_config(eu_key.parent, store, store.server.url, "eu-west-1", eu_key)


@pytest.fixture(scope="module")
def sources(store: SignedStore, config: Config, eu_key: Path) -> None:
    proxy = ProxyThread(config).start()
    try:
        irish(proxy).put_object(Bucket=DUBLIN, Key="single.eml", Body=SINGLE)
    finally:
        proxy.stop()
    put_parted(store, eu_key, DUBLIN, "parted.eml", PARTED)
    plant(store, MIGRATING, "plain.eml", PLAIN, {})
    plant(store, ARCHIVE, "ie/plain.eml", PLAIN, {})
    plant(store, DUBLIN, "plain.eml", PLAIN, {})


class _Use:
    key_release: RecordedKeyRelease | None = None


def read(config: Config, eu_key: Path, bucket: str, key: str, wanted: Wanted | None, *, encrypted: bool = True,
         migrating: bool = False, justified_for: str | None = None) -> tuple[int, bytes, tuple[int, int, int] | None]:
    """Status, body and (length, first byte, total) of what `read_plaintext` handed on (None: it raised); the
    copy justified for the dataset `justified_for` (by default the source's own)."""
    dataset = {DUBLIN: "dublin-mail", MIGRATING: "dublin-migrating", ARCHIVE: "irish-archive"}[bucket]
    source = ObjectRef(dataset, "eu-west-1", bucket, key, migrating)
    host = urlsplit(config.upstream.url).netloc

    async def main() -> tuple[int, bytes, tuple[int, int, int] | None]:
        metrics = Metrics("s3")
        upstream = Upstream(config.upstream, metrics)
        await upstream.start()
        stage = EncryptionStage(KeyFileService(eu_key, allow_insecure=True), metrics, request_signer(config),
                                upstream)
        said: list[tuple[int, int, int]] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            async def then(plain: Plaintext) -> web.StreamResponse:
                said.append((plain.length, plain.first_byte, plain.total))
                response = web.StreamResponse()
                await response.prepare(request)
                async for piece in plain.pieces:
                    await response.write(piece)
                await response.write_eof()
                return response

            try:
                return await read_plaintext(stage, request, f"/{bucket}/{key}", source, encrypted,
                                            CIMultiDict(Host=host), wanted, Transfer(), "test",
                                            Justification("test", "IE", justified_for or dataset, "test"), _Use(),
                                            then)
            except RequestRefused as refused:
                return web.Response(status=refused.status, text=refused.code)

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as answer:
                return answer.status, await answer.read(), said[0] if said else None
        finally:
            await runner.cleanup()
            await upstream.close()
            stage.close()

    return asyncio.run(main())


CASES = [
    (None, 0, None),
    (Wanted(0, 0), 0, 0),
    (Wanted(S - 1, S), S - 1, S),
    (Wanted(S + 5, None), S + 5, None),
    (Wanted(suffix=10), -10, None),
    (Wanted(5, 10 * P), 5, None),
]


def _slice(data: bytes, first: int, last: int | None) -> tuple[bytes, int]:
    start = first % len(data)
    end = len(data) - 1 if last is None else last
    return data[start:end + 1], start


@pytest.mark.parametrize(("bucket", "key", "data", "encrypted", "migrating"), [
    (DUBLIN, "single.eml", SINGLE, True, False),
    (DUBLIN, "parted.eml", PARTED, True, False),
    (MIGRATING, "plain.eml", PLAIN, True, True),
    (ARCHIVE, "ie/plain.eml", PLAIN, False, False),
], ids=["single-put", "multipart", "migrating-plaintext", "unencrypted-dataset"])
@pytest.mark.parametrize(("wanted", "first", "last"), CASES, ids=["whole", "first-byte", "segment-edge",
                                                                  "open-ended", "suffix", "past-the-end"])
def test_the_plaintext_asked_is_handed_on(config: Config, eu_key: Path, sources: None, bucket: str, key: str,
                                          data: bytes, encrypted: bool, migrating: bool, wanted: Wanted | None,
                                          first: int, last: int | None) -> None:
    status, body, said = read(config, eu_key, bucket, key, wanted, encrypted=encrypted, migrating=migrating)
    expected, start = _slice(data, first, last)
    assert (status, body) == (200, expected)
    assert said == (len(expected), start, len(data))


@pytest.mark.parametrize("key", ["single.eml", "parted.eml"])
def test_a_range_past_the_end_is_unsatisfiable(config: Config, eu_key: Path, sources: None, key: str) -> None:
    status, body, said = read(config, eu_key, DUBLIN, key, Wanted(len(PARTED) + 1, None))
    assert (status, body, said) == (416, b"InvalidRange", None)


def test_parted_ranges_across_parts(config: Config, eu_key: Path, sources: None) -> None:
    for first, last in ((P - 3, P + 3), (2 * P - 1, 2 * P + S + 9), (P, 2 * P - 1)):
        status, body, said = read(config, eu_key, DUBLIN, "parted.eml", Wanted(first, last))
        assert (status, body, said) == (200, PARTED[first:last + 1], (last - first + 1, first, len(PARTED)))


def test_plaintext_where_encryption_is_required_is_refused(config: Config, eu_key: Path, sources: None) -> None:
    status, body, said = read(config, eu_key, DUBLIN, "plain.eml", Wanted(0, 5))
    assert (status, body, said) == (403, b"ObjectNotEncrypted", None)


@pytest.mark.parametrize(("key", "data"), [("single.eml", SINGLE), ("parted.eml", PARTED)],
                         ids=["single-put", "multipart"])
def test_the_sources_key_is_released_for_the_sources_dataset(config: Config, eu_key: Path, sources: None, key: str,
                                                             data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy is justified for its destination's dataset; the source's key is released for the source's own.
    asked: list[str] = []
    unwrap = KeyFileService.unwrap

    def recorded(self: KeyFileService, wrapped: str, context: bytes, why: Justification) -> bytes:
        asked.append(why.dataset)
        return unwrap(self, wrapped, context, why)

    monkeypatch.setattr(KeyFileService, "unwrap", recorded)
    status, body, _ = read(config, eu_key, DUBLIN, key, None, justified_for="irish-archive")
    assert (status, body) == (200, data)
    assert asked == ["dublin-mail"]
