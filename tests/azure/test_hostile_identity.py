"""Hostile identities on the Azure API: Azure's code, the same audit line, nothing at Azurite.

Identity is read before the request is parsed for either storage API, so the
hostile headers of `tests.identity.test_xfcc_proxy` are refused here too; the
caller sees Azure's ``AuthenticationFailed`` (in ``x-ms-error-code``, the XML
body and ``X-Bailiwick-Error-Code``), while the audit line keeps the proxy's
own code, which says which refusal it was. The Azure SDK sends the header as
any client behind the mesh proxy would (the test client is on loopback).

A rule with ``location: same`` refuses an Irish token seen from a US network
(a GeoIP database written at test time) with ``AuthorizationFailure``, and the
audit line records both the token's jurisdiction and the observed location.
"""

from __future__ import annotations

import contextlib
import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobServiceClient

from proxy.config import UpstreamApi
from proxy.config.geoip import GeoIpConfig
from proxy.config.workloads import XfccConfig
from proxy.harness import ProxyThread
from tests.conftest import make_token, proxy_config
from tests.identity.geodb import IE_ADDRESS, US_ADDRESS, write_database
from tests.identity.test_xfcc_proxy import IE_ID, US_ID, WORKLOADS, xfcc
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

from .conftest import ACCOUNT, IE, KEY, Azurite


def xfcc_proxy(recorder: Recorder, policies: Path, audit: Path, trusted: str) -> ProxyThread:
    config = proxy_config(recorder.url, audit)
    identity = replace(config.identity, workloads=WORKLOADS,
                       xfcc=XfccConfig(enabled=True, trusted_peers=(ipaddress.ip_network(trusted),)))
    return ProxyThread(replace(config, identity=identity, policies=policies,
                               upstream=replace(config.upstream, api=UpstreamApi.AZURE))).start()


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("azure-xfcc") / "audit.jsonl"


@pytest.fixture(scope="module")
def mesh(azure_recorder: Recorder, azure_policies: Path, audit: Path) -> Iterator[ProxyThread]:
    running = xfcc_proxy(azure_recorder, azure_policies, audit, "127.0.0.0/8")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def elsewhere(azure_recorder: Recorder, azure_policies: Path, audit: Path) -> Iterator[ProxyThread]:
    running = xfcc_proxy(azure_recorder, azure_policies, audit, "10.0.0.0/8")
    yield running
    running.stop()


@pytest.mark.parametrize(("via", "headers", "code", "why"), [
    pytest.param("elsewhere", {"X-Forwarded-Client-Cert": xfcc(IE_ID)}, "InvalidClientCertHeader",
                 "not a trusted mesh proxy", id="untrusted peer"),
    pytest.param("mesh", {"X-Forwarded-Client-Cert": xfcc(IE_ID) + ";"}, "InvalidClientCertHeader", "malformed",
                 id="malformed"),
    pytest.param("mesh", {"X-Forwarded-Client-Cert": xfcc(f'"{US_ID},URI={IE_ID}"')}, "InvalidClientCertHeader",
                 "not a SPIFFE ID", id="a URI quoted around a second URI"),
    pytest.param("mesh", {"X-Forwarded-Client-Cert": xfcc(IE_ID) + f";URI={US_ID}"}, "InvalidClientCertHeader",
                 "more than one URI", id="one element naming two URIs"),
    pytest.param("mesh", {"X-Forwarded-Client-Cert": xfcc(IE_ID), "X-Bailiwick-Token": "US"}, "AmbiguousIdentity",
                 "names IE", id="the header names IE, a token US"),
])
def test_headers_that_cannot_be_believed_are_refused_in_azures_words(
    request: pytest.FixtureRequest, azure_recorder: Recorder, audit: Path, via: str, headers: dict[str, str],
    code: str, why: str,
) -> None:
    proxy: ProxyThread = request.getfixturevalue(via)
    sent = {name: make_token(value) if name == "X-Bailiwick-Token" else value for name, value in headers.items()}
    mark = azure_recorder.mark()
    with BlobServiceClient(f"{proxy.url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                           retry_total=0, headers=sent) as service, pytest.raises(HttpResponseError) as refused:
        service.get_blob_client(IE, f"alice/{uuid.uuid4().hex}.eml").download_blob().readall()
    response = refused.value.response
    assert response is not None
    headers_got = getattr(response, "headers", {})
    assert refused.value.status_code == 403
    assert headers_got["x-ms-error-code"] == headers_got["X-Bailiwick-Error-Code"] == "AuthenticationFailed"
    assert "<Code>AuthenticationFailed</Code>" in response.text()
    assert azure_recorder.since(mark) == b""
    decision_id = headers_got["x-ms-request-id"]
    line = wait_for_record(audit, lambda record: record["decision_id"] == decision_id)
    assert (line["decision"], line["error_code"]) == ("deny", code)
    assert why in line["reason"]
    assert (line["caller"]["subject"], line["caller"]["jurisdiction"]) == (None, None)


LOCATED_POLICY = f"""
regions:
  eu-west-1: IE
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [azure://{ACCOUNT}/{IE}]
    rules:
      - id: irish-seen-in-ireland
        allow: [read, list]
        from: [HOME]
        location: same
"""


@pytest.fixture(scope="module")
def located(azurite: Azurite, azure_recorder: Recorder, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ProxyThread, Path]]:
    """An Azure proxy (and its audit log) whose Irish container is for Irish callers seen in Ireland."""
    with BlobServiceClient(f"http://127.0.0.1:{azurite.port}/{ACCOUNT}",
                           credential={"account_name": ACCOUNT, "account_key": KEY}) as direct, \
            contextlib.suppress(ResourceExistsError):
        direct.create_container(IE)
    folder = tmp_path_factory.mktemp("azure-location")
    (folder / "policies").mkdir()
    (folder / "policies" / "mail.yaml").write_text(LOCATED_POLICY)
    config = proxy_config(azure_recorder.url, folder / "audit.jsonl")
    identity = replace(config.identity, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
                       geoip=GeoIpConfig(database=write_database(folder / "countries.mmdb")))
    running = ProxyThread(replace(config, identity=identity, policies=folder / "policies",
                                  upstream=replace(config.upstream, api=UpstreamApi.AZURE))).start()
    yield running, folder / "audit.jsonl"
    running.stop()


@pytest.mark.parametrize(("address", "refused"), [(US_ADDRESS, True), (IE_ADDRESS, False)])
def test_an_irish_token_seen_from_a_us_network_is_refused_in_azures_words(
    located: tuple[ProxyThread, Path], azure_recorder: Recorder, address: str, refused: bool,
) -> None:
    proxy, audit = located
    headers = {"X-Bailiwick-Token": make_token("IE"), "X-Forwarded-For": address}
    mark = azure_recorder.mark()
    with BlobServiceClient(f"{proxy.url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                           retry_total=0, headers=headers) as service:
        container = service.get_container_client(IE)
        if not refused:   # the control: the same token seen from Ireland is let through to Azurite
            list(container.list_blobs())
            assert azure_recorder.since(mark) != b""
            return
        with pytest.raises(HttpResponseError) as excinfo:
            list(container.list_blobs())
    response = excinfo.value.response
    assert response is not None
    got = getattr(response, "headers", {})
    assert excinfo.value.status_code == 403
    assert got["x-ms-error-code"] == got["X-Bailiwick-Error-Code"] == "AuthorizationFailure"
    assert azure_recorder.since(mark) == b""
    line = wait_for_record(audit, lambda record: record["decision_id"] == got["x-ms-request-id"])
    assert (line["decision"], line["error_code"], line["rule"]) == ("deny", "AccessDenied", "location")
    assert "seen from US, token says IE" in line["reason"]
    assert (line["caller"]["jurisdiction"], line["caller"]["location"]) == ("IE", "US")
