"""GeoIP through the real proxy and moto: the config read, the last-resort jurisdiction, reloads, /metrics."""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.config import load_config
from proxy.config.geoip import GeoIpConfig
from proxy.errors import ConfigError
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, US, proxy_config, s3_client
from tests.support.recorder import Recorder

from .geodb import ABSENT_ADDRESS, IE_ADDRESS, IE_NETWORK, PRIVATE_ADDRESS, US_ADDRESS, write_database

RELOAD_WAIT_SECONDS = 10.0


def test_the_database_path_is_the_config_files_folders(tmp_path: Path) -> None:
    write_database(tmp_path / "countries.mmdb")
    (tmp_path / "bailiwick.yaml").write_text("identity:\n  geoip:\n    database: countries.mmdb\n")
    config = load_config(tmp_path / "bailiwick.yaml", environ={})
    assert config.identity.geoip == GeoIpConfig(database=tmp_path / "countries.mmdb", use_as_jurisdiction=False)
    assert load_config(None, environ={}).identity.geoip is None


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("    use_as_jurisdiction: true\n", r"identity\.geoip\.database.*is required"),
        ("    database: absent.mmdb\n", r"identity\.geoip\.database.*is not a readable file"),
        ("    database: countries.mmdb\n    use_as_jurisdiction: yes please\n", r"use_as_jurisdiction"),
        ("    database: countries.mmdb\n    use_as_jurisdictions: true\n", r"did you mean use_as_jurisdiction"),
    ],
)
def test_bad_geoip_settings_are_named(tmp_path: Path, section: str, error: str) -> None:
    write_database(tmp_path / "countries.mmdb")
    (tmp_path / "bailiwick.yaml").write_text("identity:\n  geoip:\n" + section)
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path / "bailiwick.yaml", environ={})


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_database(tmp_path / "countries.mmdb")


def located_proxy(recorder: Recorder, database: Path, audit: Path, *, use_as_jurisdiction: bool) -> ProxyThread:
    config = proxy_config(recorder.url, audit)
    identity = replace(config.identity, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
                       geoip=GeoIpConfig(database=database, use_as_jurisdiction=use_as_jurisdiction))
    return ProxyThread(replace(config, identity=identity)).start()


@pytest.fixture
def proxy(recorder: Recorder, seeded: None, database: Path, tmp_path: Path) -> Iterator[ProxyThread]:
    running = located_proxy(recorder, database, tmp_path / "audit.jsonl", use_as_jurisdiction=True)
    yield running
    running.stop()


def from_address(proxy: ProxyThread, address: str) -> Any:
    """A client without a token, behind a trusted proxy (loopback) that says it forwards `address`."""
    client = s3_client(proxy.url)

    def forwarded(request: Any, **_: Any) -> None:
        request.headers["X-Forwarded-For"] = address

    client.meta.events.register("before-send.s3", forwarded)
    return client


def refusal(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as excinfo:
        call()
    response = excinfo.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"].get("Message", ""))


def status_of(call: Any) -> str:
    """"ok", or the error code the call was refused with."""
    try:
        call()
    except ClientError as refused:
        return str(refused.response["Error"]["Code"])
    return "ok"


def lookups(proxy: ProxyThread) -> dict[str, float]:
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^bailiwick_geoip_lookups_total\{result="(\w+)"\} (\S+)$',
                                                    text, re.MULTILINE)}


def test_a_caller_from_the_irish_network_gets_irelands_access(proxy: ProxyThread) -> None:
    client = from_address(proxy, IE_ADDRESS)
    # Irish mail is for Irish callers only (a US caller is refused it, below).
    assert client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read() == b"Dublin mail"


def test_a_caller_from_the_us_network_gets_the_us_access(proxy: ProxyThread) -> None:
    client = from_address(proxy, US_ADDRESS)
    assert client.get_object(Bucket=US, Key="bob/inbox/1.eml")["Body"].read() == b"US mail"
    assert refusal(lambda: client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))[:2] == (403, "AccessDenied")


@pytest.mark.parametrize("address", [ABSENT_ADDRESS, PRIVATE_ADDRESS, "1.1.1.1"])
def test_an_unknown_location_is_refused_as_unidentified(proxy: ProxyThread, recorder: Recorder, address: str) -> None:
    mark = recorder.mark()
    status, code, message = refusal(lambda: from_address(proxy, address).get_object(Bucket=DUBLIN,
                                                                                 Key="alice/inbox/1.eml"))
    assert (status, code) == (403, "InvalidToken")
    assert "country is unknown" in message
    assert b"alice/inbox" not in recorder.since(mark)


def test_an_untrusted_peers_forwarded_address_is_not_believed(
    recorder: Recorder, seeded: None, database: Path, tmp_path: Path,
) -> None:
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl")
    identity = replace(config.identity, geoip=GeoIpConfig(database=database, use_as_jurisdiction=True))
    running = ProxyThread(replace(config, identity=identity)).start()
    try:
        client = from_address(running, IE_ADDRESS)   # loopback is no trusted proxy here: 127.0.0.1 is looked up
        assert refusal(lambda: client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))[:2] == (403, "InvalidToken")
        assert lookups(running)["not_public"] == 1
    finally:
        running.stop()


def test_geoip_identifies_nobody_unless_asked_to(
    recorder: Recorder, seeded: None, database: Path, tmp_path: Path,
) -> None:
    running = located_proxy(recorder, database, tmp_path / "audit.jsonl", use_as_jurisdiction=False)
    try:
        client = from_address(running, IE_ADDRESS)
        assert refusal(lambda: client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))[:2] == (403, "InvalidToken")
    finally:
        running.stop()


def test_a_replaced_database_gives_new_answers(proxy: ProxyThread, database: Path) -> None:
    client = from_address(proxy, IE_ADDRESS)
    assert client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read() == b"Dublin mail"
    write_database(database, {IE_NETWORK: {"country": {"iso_code": "US"}}})
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while status_of(lambda: client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")) == "ok":
        assert time.monotonic() < deadline, "the replaced database was never read"   # looked at once a second
        time.sleep(0.2)
    # Now a US caller: refused Irish mail, given US mail.
    assert refusal(lambda: client.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))[:2] == (403, "AccessDenied")
    assert client.get_object(Bucket=US, Key="bob/inbox/1.eml")["Body"].read() == b"US mail"


def test_lookups_are_counted_by_result(proxy: ProxyThread) -> None:
    before = lookups(proxy)
    assert set(before) == {"found", "not_found", "not_public", "no_country", "no_address"}
    from_address(proxy, IE_ADDRESS).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    refusal(lambda: from_address(proxy, ABSENT_ADDRESS).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))
    refusal(lambda: from_address(proxy, "1.1.1.1").get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml"))
    after = lookups(proxy)
    assert {result: after[result] - before[result] for result in after} == {
        "found": 1, "not_found": 1, "not_public": 0, "no_country": 1, "no_address": 0,
    }
