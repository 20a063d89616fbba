"""X-Forwarded-Client-Cert refusals on the Azure API: Azure's code, the same audit line, nothing at Azurite.

Identity is read before the request is parsed for either storage API, so the
hostile headers of `tests.identity.test_xfcc_proxy` are refused here too; the
caller sees Azure's ``AuthenticationFailed`` (in ``x-ms-error-code``, the XML
body and ``X-Bailiwick-Error-Code``), while the audit line keeps the proxy's
own code, which says which refusal it was. The Azure SDK sends the header as
any client behind the mesh proxy would (the test client is on loopback).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from proxy.config import UpstreamApi
from proxy.config.workloads import XfccConfig
from proxy.harness import ProxyThread
from tests.conftest import make_token, proxy_config
from tests.identity.test_xfcc_proxy import IE_ID, US_ID, WORKLOADS, xfcc
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

from .conftest import ACCOUNT, IE, KEY


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
