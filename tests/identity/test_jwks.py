"""Key sources: a JWKS file read once; a JWKS URL fetched with a cooldown, shared, bounded.

Every fetch is observed on a real local server (its hit counter), and time
moves only through the fake clock: nothing here waits for a cooldown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from proxy.config import JwtIssuer
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity.jwks import NO_KEYS, NO_KID, UNKNOWN_KID, FileKeys, UrlKeys
from proxy.identity.keyset import MAX_JWKS_BYTES

from .support import AUDIENCE, ISSUER, FakeClock, JwksServer, SigningKey, ec_key, jwks

COOLDOWN = 30.0
MAX_AGE = 300.0

ISSUER_CONFIG = JwtIssuer(
    issuer=ISSUER,
    audience=AUDIENCE,
    algorithms=("RS256", "ES256", "EdDSA"),
    jwks_url="http://127.0.0.1/unused",
    jwks_refresh_cooldown_seconds=COOLDOWN,
    jwks_max_age_seconds=MAX_AGE,
    jwks_fetch_timeout_seconds=5.0,
)

MakeKeys = Callable[..., Awaitable[UrlKeys]]


@pytest.fixture
async def url_keys(
    jwks_server: JwksServer, clock: FakeClock
) -> AsyncIterator[MakeKeys]:
    """Makes started `UrlKeys` for the test server; closes them and their session afterwards."""
    session = aiohttp.ClientSession()
    made: list[UrlKeys] = []

    def make(path: str, timeout: float) -> UrlKeys:
        issuer = replace(
            ISSUER_CONFIG, jwks_url=jwks_server.base + path, jwks_fetch_timeout_seconds=timeout
        )
        keys = UrlKeys(issuer, issuer.jwks_url or "", clock=clock)
        made.append(keys)
        return keys

    async def started(path: str = "/jwks", fetch_timeout: float = 5.0) -> UrlKeys:
        keys = make(path, fetch_timeout)
        await keys.start(session)
        return keys

    try:
        yield started
    finally:
        jwks_server.release.set()
        for keys in made:
            await keys.close()
        await session.close()


async def refused(keys: UrlKeys | FileKeys, kid: str | None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await keys.key_for(kid)
    assert caught.value.code == "InvalidToken"
    return caught.value.message


# --- JWKS file -------------------------------------------------------------------------------


async def test_file_keys_are_loaded_once(tmp_path: Path, rsa: SigningKey, ec: SigningKey) -> None:
    path = tmp_path / "idp.jwks.json"
    path.write_bytes(jwks(rsa, ec))
    keys = FileKeys(ISSUER_CONFIG, path)
    await keys.load()
    path.unlink()  # read at start only
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"
    assert (await keys.key_for("ec-1")).algorithm_name == "ES256"
    assert await refused(keys, "other") == UNKNOWN_KID
    assert await refused(keys, None) == NO_KID


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the JWKS file"),
        (b"{not json", "cannot be used: the document is not JSON"),
        (b'{"keys": []}', "cannot be used: the document has no signature keys"),
        (json.dumps({"keys": [{"kty": "EC"}] * 101}).encode(), "at most 100"),
        (b" " * (MAX_JWKS_BYTES + 10), f"over {MAX_JWKS_BYTES} bytes"),
    ],
)
async def test_unusable_files_are_config_errors_naming_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "broken.jwks.json"
    if content is not None:
        path.write_bytes(content)
    keys = FileKeys(ISSUER_CONFIG, path)
    with pytest.raises(ConfigError) as caught:
        await keys.load()
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert ISSUER in str(caught.value)


async def test_file_keys_before_loading_are_refused(tmp_path: Path) -> None:
    keys = FileKeys(ISSUER_CONFIG, tmp_path / "never.json")
    assert await refused(keys, "rsa-1") == NO_KEYS


# --- JWKS URL ------------------------------------------------------------------------------


async def test_first_fetch_loads_the_keys(
    url_keys: MakeKeys, jwks_server: JwksServer, rsa: SigningKey, ed: SigningKey
) -> None:
    jwks_server.document = jwks(rsa, ed)
    keys = await url_keys()
    assert jwks_server.hits == 1
    assert (await keys.key_for("ed-1")).algorithm_name == "EdDSA"
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"
    assert jwks_server.hits == 1


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    assert jwks_server.hits == 1

    # Within the cooldown of the first fetch: refused without a fetch, whatever the kid.
    for kid in ("new-1", "new-2", "new-3"):
        assert await refused(keys, kid) == UNKNOWN_KID
    assert jwks_server.hits == 1

    clock.advance(COOLDOWN)
    assert await refused(keys, "new-1") == UNKNOWN_KID
    assert jwks_server.hits == 2
    for kid in ("new-1", "new-4"):
        assert await refused(keys, kid) == UNKNOWN_KID
    assert jwks_server.hits == 2

    # The issuer rotates; once the cooldown is over the new key is found.
    rotated = ec_key("new-1")
    jwks_server.document = jwks(rsa, rotated)
    clock.advance(COOLDOWN - 1)
    assert await refused(keys, "new-1") == UNKNOWN_KID
    assert jwks_server.hits == 2
    clock.advance(1)
    assert (await keys.key_for("new-1")).algorithm_name == "ES256"
    assert jwks_server.hits == 3
    assert (await keys.key_for("new-1")).algorithm_name == "ES256"
    assert jwks_server.hits == 3


async def test_concurrent_requests_share_one_fetch(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    rotated = ec_key("rotated")
    jwks_server.document = jwks(rsa, rotated)
    jwks_server.hold = True
    clock.advance(COOLDOWN)

    waiting = [asyncio.create_task(keys.key_for("rotated")) for _ in range(25)]
    await jwks_server.wait_for_hits(2)
    jwks_server.release.set()
    found = await asyncio.gather(*waiting)

    assert {key.key_id for key in found} == {"rotated"}
    assert jwks_server.hits == 2


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, None),
        (404, None),
        (200, b"<html>not json</html>"),
        (200, b'{"keys": []}'),
        (200, "thousands"),
        (200, "oversized"),
    ],
)
async def test_failed_fetch_keeps_the_last_good_keys(
    url_keys: MakeKeys,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa: SigningKey,
    status: int,
    document: bytes | str | None,
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    newcomer = ec_key("newcomer")
    if document == "thousands":
        jwks_server.document = json.dumps({"keys": [newcomer.public_jwk()] * 5000}).encode()
    elif document == "oversized":
        jwks_server.document = jwks(newcomer)[:-2] + b" " * MAX_JWKS_BYTES + b"]}"
    elif isinstance(document, bytes):
        jwks_server.document = document
    jwks_server.status = status

    clock.advance(COOLDOWN)
    assert await refused(keys, "newcomer") == UNKNOWN_KID
    assert jwks_server.hits == 2
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"


async def test_hanging_endpoint_times_out_and_keeps_the_last_good_keys(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys(fetch_timeout=0.2)
    jwks_server.hold = True  # and never released while the test runs
    clock.advance(COOLDOWN)
    assert await refused(keys, "newcomer") == UNKNOWN_KID
    assert jwks_server.hits == 2
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"


async def test_an_endless_document_is_not_read_to_its_end(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    # Chunked, with no Content-Length to refuse it up front: reading must stop at the bound.
    jwks_server.stream_bytes = 64 * MAX_JWKS_BYTES
    clock.advance(COOLDOWN)
    assert await refused(keys, "newcomer") == UNKNOWN_KID
    assert jwks_server.hits == 2
    assert not jwks_server.streamed_all
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"


async def test_redirects_are_not_followed(
    url_keys: MakeKeys, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys("/redirect")
    assert jwks_server.paths == ["/redirect"]
    assert await refused(keys, "rsa-1") == NO_KEYS


async def test_failed_first_fetch_refuses_until_a_fetch_succeeds(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.status = 503
    keys = await url_keys()
    assert jwks_server.hits == 1
    assert await refused(keys, "rsa-1") == NO_KEYS
    assert jwks_server.hits == 1

    jwks_server.status = 200
    jwks_server.document = jwks(rsa)
    clock.advance(COOLDOWN)
    assert (await keys.key_for("rsa-1")).algorithm_name == "RS256"
    assert jwks_server.hits == 2


async def test_no_kid_uses_the_only_key_and_never_refetches_for_several(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey, ec: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    assert (await keys.key_for(None)).key_id == "rsa-1"

    jwks_server.document = jwks(rsa, ec)
    clock.advance(COOLDOWN)
    await keys.key_for("ec-1")  # refetch: now two keys
    assert jwks_server.hits == 2
    clock.advance(COOLDOWN)
    assert await refused(keys, None) == NO_KID
    assert jwks_server.hits == 2


async def test_old_keys_are_refreshed_in_the_background(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()

    clock.advance(MAX_AGE - 1)
    await keys.key_for("rsa-1")
    await keys.wait_idle()
    assert jwks_server.hits == 1  # not old yet

    rotated = ec_key("rotated")
    jwks_server.document = jwks(rotated)
    jwks_server.hold = True
    clock.advance(1)
    # Answered from the keys at hand while the refresh it started is still held by the server.
    assert (await keys.key_for("rsa-1")).key_id == "rsa-1"
    await jwks_server.wait_for_hits(2)
    assert (await keys.key_for("rsa-1")).key_id == "rsa-1"
    jwks_server.release.set()
    await keys.wait_idle()

    assert jwks_server.hits == 2
    assert (await keys.key_for("rotated")).key_id == "rotated"
    clock.advance(COOLDOWN)
    assert await refused(keys, "rsa-1") == UNKNOWN_KID  # rotated away (and one refetch)
    assert jwks_server.hits == 3


async def test_failing_background_refreshes_are_rate_limited(
    url_keys: MakeKeys, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    jwks_server.document = jwks(rsa)
    keys = await url_keys()
    jwks_server.status = 500
    clock.advance(MAX_AGE)
    for _ in range(5):
        assert (await keys.key_for("rsa-1")).key_id == "rsa-1"
        await keys.wait_idle()
    assert jwks_server.hits == 2
    clock.advance(COOLDOWN)
    assert (await keys.key_for("rsa-1")).key_id == "rsa-1"
    await keys.wait_idle()
    assert jwks_server.hits == 3


async def test_every_fetch_is_reported_with_its_result(
    jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey,
) -> None:
    # The proxy counts these as bailiwick_jwks_fetches_total{issuer, result}.
    reported: list[tuple[str, bool]] = []
    issuer = replace(ISSUER_CONFIG, jwks_url=jwks_server.base + "/jwks")
    keys = UrlKeys(issuer, issuer.jwks_url or "", clock=clock, on_fetch=lambda name, ok: reported.append((name, ok)))
    jwks_server.document = jwks(rsa)
    async with aiohttp.ClientSession() as session:
        await keys.start(session)
        jwks_server.status = 500
        clock.advance(COOLDOWN)
        await refused(keys, "unknown")
        await keys.close()
    assert reported == [(ISSUER, True), (ISSUER, False)]
