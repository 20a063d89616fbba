"""Encrypted datasets with the region's real key service: OpenBao Transit and a SoftHSM2 token (PKCS#11).

The real proxy in re-sign mode, moto checking every signature, and each key
service as an operator runs it. What is asserted:

- round trips and ranges come back as the plaintext, and the storage server
  (and the wire to it) holds no trace of it, with either key service;
- the region's kill switch: a key whose use is withdrawn (Transit: the
  token's policy loses decrypt; PKCS#11: CKA_DECRYPT false) or that is
  deleted fails reads closed (403 KeyReleaseRefused, an audit line saying
  so, the failure counted on /metrics); the freeze thaws; a key service that
  cannot be reached is 503 KeyServiceUnavailable;
- a proxy of another region, with its own OpenBao, cannot open a Dublin
  object copied onto US storage past the proxies;
- every release is recorded by OpenBao's own audit device with the decision
  id of bailiwick's audit line, the caller's jurisdiction, the dataset and
  the policy version;
- the release cache, when on, spares the second read's call; off (the
  default), every read asks.
"""

from __future__ import annotations

import http.client
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pkcs11 import Attribute, ObjectClass

from proxy.config.model import (
    EncryptionConfig,
    KeyCacheSettings,
    KeyServiceKind,
    Pkcs11Settings,
    TransitSettings,
)
from proxy.crypto.segments import SEGMENT_SIZE, ciphertext_length
from proxy.harness import ProxyThread
from proxy.localstore import free_port
from tests.conftest import make_token
from tests.crypto.test_encrypted_objects import irish, stored
from tests.support.encrypting import (  # noqa: F401  (the fixture "relay")
    audit_line,
    audit_lines,
    decision_of,
    encrypting_proxy_config,
    relay_fixture,
    transit_requests,
)
from tests.support.iam import SignedStore, signed_store
from tests.support.keyservices import KEY, Bao, SoftHsm, bao_fixture, running_bao, softhsm_fixture  # noqa: F401
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.serve import wait_until

DUBLIN, US = "mail-eu-dublin", "mail-us-east"
MARKER = b"REGION-KEY-MARKER-51c9"
S = SEGMENT_SIZE
KINDS = ["transit", "pkcs11"]
REFUSED = 'bailiwick_key_release_failures_total{reason="refused"}'
UNAVAILABLE = 'bailiwick_key_release_failures_total{reason="unavailable"}'


def body_of(size: int) -> bytes:
    """`size` bytes of random data with the marker repeated through it."""
    unit = MARKER + os.urandom(64)
    return (unit * (size // len(unit) + 1))[:size]


@pytest.fixture(scope="module")
def store() -> Iterator[SignedStore]:
    with signed_store("bailiwick-keys", {DUBLIN: "eu-west-1", US: None}) as running:
        yield running


# ---- the key services, each with a kill switch ------------------------------------------------------------


def transit_policy(key: str, *, frozen: bool) -> str:
    """The proxy's token policy on `key`: read it always; make and release data keys unless frozen."""
    rules = f'path "transit/keys/{key}" {{ capabilities = ["read"] }}\n'
    if not frozen:
        for operation in ("datakey/plaintext", "decrypt"):
            rules += f'path "transit/{operation}/{key}" {{ capabilities = ["update"] }}\n'
    return rules


@dataclass(frozen=True)
class RegionKey:
    """One region's key, in its key service: the proxy's `encryption` section, and the operator's switches."""

    kind: str
    encryption: EncryptionConfig
    bao: Bao | None = None
    softhsm: SoftHsm | None = None
    name: str = ""      # the Transit key, or the KEK's label
    policy: str = ""    # the Transit token's policy

    def freeze(self, frozen: bool = True) -> None:
        """Withdraw (or give back, `frozen=False`) the key's use, leaving the key itself in place."""
        if self.bao is not None:
            self.bao.client().sys.create_or_update_policy(self.policy, transit_policy(self.name, frozen=frozen))
            return
        assert self.softhsm is not None
        with self.softhsm.session() as session:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.name)
            key[Attribute.DECRYPT] = not frozen

    def shred(self) -> None:
        """Delete the key: what it wrapped can never be opened again."""
        if self.bao is not None:
            self.bao.delete_key(self.name)   # deletion_allowed, then delete
            return
        assert self.softhsm is not None
        with self.softhsm.session() as session:
            session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.name).destroy()


def fresh_key(kind: str, bao: Bao, softhsm: SoftHsm, *, root: bool = False) -> RegionKey:
    """A new key of `kind`; a Transit token limited by a policy of its own (the root token with `root`)."""
    name = f"region-{uuid.uuid4().hex[:8]}"
    if kind == "transit":
        bao.create_key(name)
        policy = f"bailiwick-{name}"
        client = bao.client()
        client.sys.create_or_update_policy(policy, transit_policy(name, frozen=False))
        token = bao.token if root else \
            client.auth.token.create(policies=[policy], no_default_policy=True)["auth"]["client_token"]
        transit = TransitSettings(address=bao.address, key=name, token=token)
        return RegionKey(kind, EncryptionConfig(key_service=KeyServiceKind.TRANSIT, transit=transit), bao=bao,
                         name=name, policy=policy)
    softhsm.create_kek(name)
    pkcs11 = Pkcs11Settings(module=softhsm.module, token_label=softhsm.token_label, key_label=name, pin=softhsm.pin)
    return RegionKey(kind, EncryptionConfig(key_service=KeyServiceKind.PKCS11, pkcs11=pkcs11), softhsm=softhsm,
                     name=name)


@dataclass(frozen=True)
class Region:
    """A running proxy of eu-west-1 and where its audit log is."""

    proxy: ProxyThread
    folder: Path
    key: RegionKey


@pytest.fixture
def start_region(store: SignedStore, relay: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start eu-west-1 proxies for `RegionKey`s (stopped after the test)."""
    started: list[ProxyThread] = []

    def start(key: RegionKey, region: str = "eu-west-1", **changes: Any) -> Region:
        folder = tmp_path_factory.mktemp(f"{key.kind}-{region}")
        config = encrypting_proxy_config(folder, store, relay.url, region, key.encryption, **changes)
        proxy = ProxyThread(config).start()
        started.append(proxy)
        return Region(proxy, folder, key)

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module", params=KINDS)
def region(request: pytest.FixtureRequest, store: SignedStore, relay: Recorder, bao: Bao, softhsm: SoftHsm,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """The module's Dublin proxy with each key service (Transit: the session's key, the root token)."""
    kind = str(request.param)
    if kind == "transit":
        transit = TransitSettings(address=bao.address, key=KEY, token=bao.token)
        key = RegionKey(kind, EncryptionConfig(key_service=KeyServiceKind.TRANSIT, transit=transit), bao=bao, name=KEY)
    else:
        key = fresh_key(kind, bao, softhsm)
    folder = tmp_path_factory.mktemp(f"region-{kind}")
    proxy = ProxyThread(encrypting_proxy_config(folder, store, relay.url, "eu-west-1", key.encryption)).start()
    yield Region(proxy, folder, key)
    proxy.stop()


def raw_get(proxy: ProxyThread, path: str, jurisdiction: str, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes]:
    """Status and every byte the caller received (whatever the answer was)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path, headers={"X-Bailiwick-Token": make_token(jurisdiction), **(headers or {})})
    answer = conn.getresponse()
    received = b""
    try:
        while chunk := answer.read1(65536):
            received += chunk
    except (http.client.IncompleteRead, ConnectionError) as exc:
        received += getattr(exc, "partial", b"")
    conn.close()
    return answer.status, received


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as refused:
        call()
    response = refused.value.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


# ---- round trips and ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 3 * S + 7])
def test_round_trip_stores_only_ciphertext(region: Region, store: SignedStore, relay: Recorder, size: int) -> None:
    data = body_of(size)
    key = f"alice/{region.key.kind}-sized-{size}.eml"
    mark = relay.mark()
    irish(region.proxy).put_object(Bucket=DUBLIN, Key=key, Body=data)
    assert MARKER not in relay.since(mark)          # nothing of the plaintext crossed to the storage server
    held, metadata = stored(store, DUBLIN, key)
    assert len(held) == ciphertext_length(size)
    assert MARKER not in held
    assert region.key.kind in metadata["bailiwick-encryption"]
    got = irish(region.proxy).get_object(Bucket=DUBLIN, Key=key)
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert irish(region.proxy).head_object(Bucket=DUBLIN, Key=key)["ContentLength"] == size


RANGED = body_of(3 * S + 7)


@pytest.fixture(scope="module")
def ranged(region: Region) -> str:
    key = f"alice/{region.key.kind}-ranged.eml"
    irish(region.proxy).put_object(Bucket=DUBLIN, Key=key, Body=RANGED)
    return key


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        (f"bytes={S - 1}-{S}", S - 1, S),                       # the two bytes either side of the first boundary
        (f"bytes={S - 10}-{2 * S + 10}", S - 10, 2 * S + 10),   # across two boundaries
        (f"bytes={S}-{2 * S - 1}", S, 2 * S - 1),               # exactly the second segment
        (f"bytes={2 * S + 1}-", 2 * S + 1, 3 * S + 6),          # open-ended, into the short last segment
        (f"bytes=-{S + 8}", 2 * S - 1, 3 * S + 6),              # suffix reaching back over a boundary
        ("bytes=0-", 0, 3 * S + 6),                             # the whole object as a range
    ],
)
def test_a_range_across_segments_is_the_plaintext_slice(region: Region, ranged: str, asked: str, first: int,
                                                        last: int) -> None:
    got = irish(region.proxy).get_object(Bucket=DUBLIN, Key=ranged, Range=asked)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(RANGED)}"
    assert got["Body"].read() == RANGED[first:last + 1]


# ---- the kill switch ------------------------------------------------------------------------------------------


def assert_refused_and_counted(running: Region, key: str, before: float) -> None:
    """A read of `key` refused 403 KeyReleaseRefused, with nothing of the object, audited and counted."""
    status, received = raw_get(running.proxy, f"/{DUBLIN}/{key}", "IE")
    assert status == 403
    assert b"<Code>KeyReleaseRefused</Code>" in received
    assert MARKER not in received
    wait_until(lambda: any(r["status"] == 403 for r in audit_lines(running.folder, DUBLIN, key, "GetObject")))
    line = audit_lines(running.folder, DUBLIN, key, "GetObject")[-1]
    assert line["status"] == 403
    assert line["error_code"] == "KeyReleaseRefused"
    assert line["key_release"]["operation"] == "unwrap"
    assert line["key_release"]["result"] == "refused"
    assert line["key_release"]["service"] == running.key.kind
    assert metric(running.proxy, REFUSED) == before + 1


def written_and_read(running: Region, key: str) -> Any:
    """Write `key` through the proxy and read it back; the Irish client."""
    client = irish(running.proxy)
    client.put_object(Bucket=DUBLIN, Key=key, Body=MARKER * 4)
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == MARKER * 4
    return client


@pytest.mark.parametrize("kind", KINDS)
def test_a_frozen_key_fails_reads_closed_until_it_thaws(kind: str, bao: Bao, softhsm: SoftHsm,
                                                        start_region: Any) -> None:
    running: Region = start_region(fresh_key(kind, bao, softhsm))
    client = written_and_read(running, "alice/frozen.eml")
    before = metric(running.proxy, REFUSED)
    running.key.freeze()
    assert_refused_and_counted(running, "alice/frozen.eml", before)
    running.key.freeze(False)   # thaw
    assert client.get_object(Bucket=DUBLIN, Key="alice/frozen.eml")["Body"].read() == MARKER * 4
    assert metric(running.proxy, REFUSED) == before + 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_deleted_key_fails_reads_and_writes_closed(kind: str, bao: Bao, softhsm: SoftHsm, start_region: Any,
                                                     store: SignedStore) -> None:
    running: Region = start_region(fresh_key(kind, bao, softhsm))
    client = written_and_read(running, "alice/shredded.eml")
    before = metric(running.proxy, REFUSED)
    running.key.shred()
    assert_refused_and_counted(running, "alice/shredded.eml", before)
    # Nothing new can be written either: no data key is made, and nothing reaches the storage server.
    assert refusal(lambda: client.put_object(Bucket=DUBLIN, Key="alice/after.eml", Body=b"x")) == \
        (403, "KeyReleaseRefused")
    with pytest.raises(ClientError):
        store.client().head_object(Bucket=DUBLIN, Key="alice/after.eml")


def unreachable(key: RegionKey, tmp: Path) -> EncryptionConfig:
    """`key`'s section with the service out of reach: Transit at a port nothing listens on; PKCS#11 with its
    PIN file gone (the token cannot be logged in to; the nearest a test gets to an HSM out of reach)."""
    if key.encryption.transit is not None:
        transit = replace(key.encryption.transit, address=f"http://127.0.0.1:{free_port()}", timeout_seconds=2.0)
        return replace(key.encryption, transit=transit)
    assert key.encryption.pkcs11 is not None
    return replace(key.encryption, pkcs11=replace(key.encryption.pkcs11, pin=None, pin_file=tmp / "no-such-pin"))


def test_an_unreachable_key_service_is_unavailable(region: Region, start_region: Any, tmp_path: Path) -> None:
    irish(region.proxy).put_object(Bucket=DUBLIN, Key="alice/unreachable.eml", Body=MARKER)
    cut = replace(region.key, encryption=unreachable(region.key, tmp_path))
    running: Region = start_region(cut)
    status, received = raw_get(running.proxy, f"/{DUBLIN}/alice/unreachable.eml", "IE")
    assert status == 503
    assert b"<Code>KeyServiceUnavailable</Code>" in received
    assert MARKER not in received
    line = audit_line(running.folder, DUBLIN, "alice/unreachable.eml", "GetObject")
    assert line["error_code"] == "KeyServiceUnavailable"
    assert line["key_release"]["result"] == "unavailable"
    assert metric(running.proxy, UNAVAILABLE) == 1
    assert metric(running.proxy, REFUSED) == 0


# ---- another region --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["transit"], indirect=True)
def test_a_proxy_of_another_region_with_its_own_openbao_cannot_open_a_copy(
    region: Region, store: SignedStore, relay: Recorder, tmp_path: Path,
) -> None:
    secret = body_of(2 * S + 3)
    irish(region.proxy).put_object(Bucket=DUBLIN, Key="alice/secret.eml", Body=secret)
    held, metadata = stored(store, DUBLIN, "alice/secret.eml")
    # Copied past both proxies, stored bytes and metadata, onto US storage.
    store.client().put_object(Bucket=US, Key="copied/secret.eml", Body=held, Metadata=metadata)
    (tmp_path / "bao").mkdir()
    with running_bao(tmp_path / "bao") as us_bao:
        # The US key has the same name as Dublin's: the proxy asks its own service, which cannot open it.
        transit = TransitSettings(address=us_bao.address, key=KEY, token=us_bao.token)
        encryption = EncryptionConfig(key_service=KeyServiceKind.TRANSIT, transit=transit)
        (tmp_path / "us").mkdir()
        config = encrypting_proxy_config(tmp_path / "us", store, relay.url, "us-east-1", encryption)
        us = ProxyThread(config).start()
        try:
            for headers in ({}, {"Range": "bytes=0-99"}, {"Range": f"bytes={S}-"}):
                status, received = raw_get(us, f"/{US}/copied/secret.eml", "US", headers)
                assert status == 403
                assert b"<Code>KeyReleaseRefused</Code>" in received
                assert MARKER not in received
                assert secret[:16] not in received
            line = audit_line(tmp_path / "us", US, "copied/secret.eml", "GetObject")
            assert line["key_release"] == {"service": "transit", "key": f"transit:transit/{KEY}",
                                           "operation": "unwrap", "result": "refused"}
            # The refusal is the US key service's own: it was asked, and said no.
            asked = [decision_of(r) for r in transit_requests(us_bao, f"transit/decrypt/{KEY}")]
            assert line["decision_id"] in asked
        finally:
            us.stop()


# ---- key release audited at the key service --------------------------------------------------------------------


@pytest.mark.parametrize("region", ["transit"], indirect=True)   # PKCS#11 has no channel for the justification
@pytest.mark.parametrize(("operation", "path"), [("PutObject", "datakey/plaintext"), ("GetObject", "decrypt")])
def test_openbao_audits_each_release_with_the_decision(region: Region, bao: Bao, operation: str,
                                                       path: str) -> None:
    key = f"alice/justified-{operation}.eml"
    client = irish(region.proxy)
    client.put_object(Bucket=DUBLIN, Key=key, Body=MARKER)
    assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == MARKER
    line = audit_line(region.folder, DUBLIN, key, operation)
    audited = [r for r in transit_requests(bao, f"transit/{path}/{KEY}") if decision_of(r) == line["decision_id"]]
    assert len(audited) == 1
    headers = audited[0]["headers"]
    assert headers["x-bailiwick-jurisdiction"] == ["IE"] == [line["caller"]["jurisdiction"]]
    assert headers["x-bailiwick-dataset"] == [line["dataset"]]
    assert line["dataset"]
    assert headers["x-bailiwick-policy-version"] == [line["policy_version"]]
    assert line["policy_version"]


# ---- the release cache ------------------------------------------------------------------------------------------


def unwraps(proxy: ProxyThread, result: str) -> float:
    return metric(proxy, f'bailiwick_key_releases_total{{operation="unwrap",result="{result}"}}')


def lookups(proxy: ProxyThread, result: str) -> float:
    return metric(proxy, f'bailiwick_key_cache_lookups_total{{result="{result}"}}')


def read_twice(running: Region, key: str) -> list[str]:
    """Write `key`, read it twice; the two reads' decision ids."""
    client = irish(running.proxy)
    client.put_object(Bucket=DUBLIN, Key=key, Body=MARKER * 3)
    for _ in range(2):
        assert client.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == MARKER * 3
    wait_until(lambda: len(audit_lines(running.folder, DUBLIN, key, "GetObject")) == 2)
    return [line["decision_id"] for line in audit_lines(running.folder, DUBLIN, key, "GetObject")]


def service_unwraps(running: Region, decisions: list[str]) -> int | None:
    """How many of the reads' releases OpenBao's audit recorded (None: the service keeps no such record)."""
    if running.key.bao is None:
        return None
    return sum(decision_of(r) in decisions
               for r in transit_requests(running.key.bao, f"transit/decrypt/{running.key.name}"))


@pytest.mark.parametrize("kind", KINDS)
def test_the_cache_spares_the_second_release(kind: str, bao: Bao, softhsm: SoftHsm, start_region: Any) -> None:
    key = fresh_key(kind, bao, softhsm, root=True)
    running: Region = start_region(replace(key, encryption=replace(
        key.encryption, key_cache=KeyCacheSettings(max_keys=8, ttl_seconds=60))))
    decisions = read_twice(running, "alice/cached.eml")
    assert len(decisions) == 2
    assert service_unwraps(running, decisions) in (1, None)   # the key service was asked once
    assert (lookups(running.proxy, "miss"), lookups(running.proxy, "hit")) == (1, 1)
    # One read released by the key service, one from the cache.
    assert (unwraps(running.proxy, "released"), unwraps(running.proxy, "cached")) == (1, 1)


def test_without_the_cache_every_read_asks(region: Region) -> None:
    kind = region.key.kind
    before = unwraps(region.proxy, "released")
    decisions = read_twice(region, f"alice/uncached-{kind}.eml")
    assert service_unwraps(region, decisions) in (2, None)
    assert unwraps(region.proxy, "released") == before + 2
    assert (lookups(region.proxy, "miss"), lookups(region.proxy, "hit")) == (0, 0)


def test_a_cached_release_is_recorded_as_cached(bao: Bao, softhsm: SoftHsm, start_region: Any) -> None:
    key = fresh_key("transit", bao, softhsm, root=True)
    running: Region = start_region(replace(key, encryption=replace(
        key.encryption, key_cache=KeyCacheSettings(max_keys=8, ttl_seconds=60))))
    read_twice(running, "alice/cached.eml")
    lines = audit_lines(running.folder, DUBLIN, "alice/cached.eml", "GetObject")
    assert [line["key_release"]["result"] for line in lines] == ["released", "cached"]
    assert (unwraps(running.proxy, "released"), unwraps(running.proxy, "cached")) == (1, 1)
