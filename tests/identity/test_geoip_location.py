"""The location check through the real proxy and moto: a token seen from abroad is refused and audited."""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.config.geoip import GeoIpConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

from .geodb import ABSENT_ADDRESS, IE_ADDRESS, US_ADDRESS, write_database

POLICY = """\
jurisdictions:
  EEA: [IE, DE, FR, IS, LI, NO]
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-dublin]
    rules:
      - id: irish-seen-in-ireland
        allow: [read, list]
        from: [HOME]
        location: same
"""


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def proxy(recorder: Recorder, seeded: None, tmp_path: Path, audit: Path) -> Iterator[ProxyThread]:
    policies = tmp_path / "policies"
    policies.mkdir(mode=0o755)
    (policies / "mail.yaml").write_text(textwrap.dedent(POLICY))
    (policies / "mail.yaml").chmod(0o644)
    config = proxy_config(recorder.url, audit)
    identity = replace(config.identity, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
                       geoip=GeoIpConfig(database=write_database(tmp_path / "countries.mmdb")))
    running = ProxyThread(replace(config, identity=identity, policies=policies)).start()
    yield running
    running.stop()


def irish_token_from(proxy: ProxyThread, address: str) -> Any:
    """An Irish token's client, behind a trusted proxy (loopback) that forwards `address`."""
    client = s3_client(proxy.url, make_token("IE"))

    def forwarded(request: Any, **_: Any) -> None:
        request.headers["X-Forwarded-For"] = address

    client.meta.events.register("before-send.s3", forwarded)
    return client


def decided_by(audit: Path, rule: str) -> dict[str, Any]:
    """The audit line of the request `rule` decided (each test has an audit log of its own)."""
    return wait_for_record(audit, lambda line: line.get("rule") == rule)


def test_an_irish_token_seen_from_ireland_is_allowed(proxy: ProxyThread, audit: Path) -> None:
    body = irish_token_from(proxy, IE_ADDRESS).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()
    assert body == b"Dublin mail"
    line = decided_by(audit, "irish-seen-in-ireland")
    assert line["decision"] == "allow"
    assert (line["caller"]["jurisdiction"], line["caller"]["location"]) == ("IE", "IE")


@pytest.mark.parametrize(
    ("address", "location", "reason"),
    [
        (US_ADDRESS, "US", "seen from US, token says IE"),                        # replayed from abroad
        (ABSENT_ADDRESS, "unknown", "seen from an unknown location, token says IE"),  # never a guess
    ],
)
def test_an_irish_token_seen_elsewhere_is_refused_and_audited(
    proxy: ProxyThread, recorder: Recorder, audit: Path, address: str, location: str, reason: str,
) -> None:
    mark = recorder.mark()
    with pytest.raises(ClientError) as refused:
        irish_token_from(proxy, address).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (403, "AccessDenied")
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-bailiwick-error-code"] == "AccessDenied"
    assert reason in error["Error"]["Message"]
    assert b"alice/inbox" not in recorder.since(mark)
    line = decided_by(audit, "location")
    assert line["decision_id"] == error["ResponseMetadata"]["RequestId"]
    assert (line["decision"], line["error_code"], line["dataset"]) == ("deny", "AccessDenied", "dublin-mail")
    assert reason in line["reason"]
    # Both the claimed jurisdiction (the token's) and the observed location are recorded; the source is the
    # connection's peer (the trusted proxy on loopback), as docs/operations.md says.
    assert line["caller"] == {"subject": "client-1", "jurisdiction": "IE", "location": location,
                              "source": "127.0.0.1"}


@pytest.mark.parametrize(("address", "shown"), [(IE_ADDRESS, True), (US_ADDRESS, False), (ABSENT_ADDRESS, False)])
def test_an_account_listing_names_a_location_checked_bucket_only_to_a_caller_seen_there(
    proxy: ProxyThread, address: str, shown: bool,
) -> None:
    names = {bucket["Name"] for bucket in irish_token_from(proxy, address).list_buckets()["Buckets"]}
    assert (DUBLIN in names) is shown
