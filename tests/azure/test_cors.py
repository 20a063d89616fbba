"""CORS through the proxy in front of Azurite: Azure Blob preflights answered from the policy, in Azure's shape,
and the policy's Access-Control-* headers on actual requests; nothing of a preflight reaches the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import urllib3

from proxy.config import UpstreamApi
from proxy.harness import ProxyThread
from tests.azure.conftest import ACCOUNT
from tests.conftest import make_token, proxy_config
from tests.support.recorder import Recorder

APP = "https://app.example.com"
WEB, PLAIN = "ie-web", "ie-plain"   # neither is created in the emulator: the answer must not care

POLICY = f"""
regions:
  eu-west-1: IE
datasets:
  - name: web
    region: eu-west-1
    resources: [azure://{ACCOUNT}/{WEB}]
    rules:
      - allow: [read, list, write]
        from: [IE]
    cors:
      - allowed_origins: [{APP}]
        allowed_methods: [GET, PUT]
        allowed_headers: [x-bailiwick-token, "x-ms-*"]
        expose_headers: [ETag]
  - name: plain
    region: eu-west-1
    resources: [azure://{ACCOUNT}/{PLAIN}]
    rules:
      - allow: [read, list, write]
        from: [IE]
"""


@pytest.fixture(scope="module")
def cors_proxy(azure_recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("azure-cors-policy")
    (folder / "web.yaml").write_text(POLICY, encoding="utf-8")
    config = proxy_config(azure_recorder.url, tmp_path_factory.mktemp("azure-cors-audit") / "audit.jsonl")
    running = ProxyThread(replace(config, policies=folder, upstream=replace(config.upstream,
                                                                             api=UpstreamApi.AZURE))).start()
    yield running
    running.stop()


def _request(proxy: ProxyThread, method: str, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(method, f"{proxy.url}/{ACCOUNT}{path}", headers=headers, retries=False, timeout=10)


def _cors_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize(("origin", "method", "asked", "allowed"), [
    (APP, "PUT", "x-ms-blob-type, x-bailiwick-token", True),
    (APP, "DELETE", "", False),
    ("https://evil.example.net", "GET", "", False),
    (APP, "GET", "authorization", False),
])
def test_a_blob_preflight_is_answered_from_the_policy_in_azures_shape(
    cors_proxy: ProxyThread, azure_recorder: Recorder, origin: str, method: str, asked: str, allowed: bool,
) -> None:
    mark = azure_recorder.mark()
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if asked:
        headers["Access-Control-Request-Headers"] = asked
    response = _request(cors_proxy, "OPTIONS", f"/{WEB}/page/a.txt", **headers)
    assert azure_recorder.since(mark) == b""
    if allowed:
        assert response.status == 200
        assert _cors_headers(response.headers) == {
            "access-control-allow-origin": APP, "access-control-allow-credentials": "true",
            "access-control-allow-methods": "GET, PUT", "access-control-allow-headers": asked,
            "access-control-expose-headers":
                "X-Bailiwick-Error-Code, X-Bailiwick-Reason, x-ms-request-id, x-ms-error-code, ETag",
        }
    else:
        assert (response.status, response.headers["x-ms-error-code"]) == (403, "CorsPreflightFailure")
        assert b"<Code>CorsPreflightFailure</Code><Message>CORS not enabled or no matching rule" in response.data


def test_a_preflight_to_a_container_without_cors_is_refused_as_any_options(
    cors_proxy: ProxyThread, azure_recorder: Recorder,
) -> None:
    mark = azure_recorder.mark()
    today = _request(cors_proxy, "OPTIONS", f"/{PLAIN}/page/a.txt")
    asked = _request(cors_proxy, "OPTIONS", f"/{PLAIN}/page/a.txt", Origin=APP,
                     **{"Access-Control-Request-Method": "GET"})
    assert (asked.status, asked.headers["x-ms-error-code"]) == (today.status, today.headers["x-ms-error-code"])
    assert _cors_headers(asked.headers) == {}
    assert azure_recorder.since(mark) == b""


@pytest.mark.parametrize("jurisdiction", ["IE", "US"])   # US: refused by the proxy, readable by the page
def test_an_actual_request_carries_the_policys_headers_whatever_its_answer(
    cors_proxy: ProxyThread, jurisdiction: str,
) -> None:
    response = _request(cors_proxy, "GET", f"/{WEB}/page/a.txt", Origin=APP,
                        **{"X-Bailiwick-Token": make_token(jurisdiction)})
    assert _cors_headers(response.headers)["access-control-allow-origin"] == APP
    assert response.headers["Vary"].endswith("Origin")
    if jurisdiction == "US":
        assert (response.status, response.headers["x-ms-error-code"]) == (403, "AuthorizationFailure")
