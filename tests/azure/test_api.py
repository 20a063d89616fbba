"""`upstream.api: azure` end to end without a server: configuration, the API seam, and the policy's answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import ParsedRequest, make_api
from proxy.azure.api import AzureApi
from proxy.config import AzureSettings, load_config
from proxy.domain import Resource
from proxy.errors import ConfigError, InternalError
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import ACCOUNT_LISTING
from proxy.s3.api import S3Api

from .conftest import POLICY
from .helpers import ACCOUNT, EMULATOR

API = AzureApi(AzureSettings())


def request(method: str, target: str, *pairs: tuple[str, str], host: str = EMULATOR) -> ParsedRequest:
    headers: CIMultiDict[str] = CIMultiDict([("Host", host), *pairs])
    return API.parse(method, target, CIMultiDictProxy(headers))


def test_the_configuration_chooses_the_api(tmp_path: Path) -> None:
    path = tmp_path / "bailiwick.yaml"
    path.write_text("upstream: {api: azure, url: 'http://127.0.0.1:10000'}\n"
                    "azure: {endpoints: [azurite.test, '[::1]'],"
                    " account_host_suffixes: [blob.core.usgovcloudapi.net]}\n")
    config = load_config(path, environ={})
    assert config.azure == AzureSettings(endpoints=("azurite.test", "::1"),
                                         account_host_suffixes=("blob.core.usgovcloudapi.net",))
    api = make_api(config)
    assert isinstance(api, AzureApi)
    assert api.name == "azure"
    assert isinstance(make_api(load_config(None, environ={})), S3Api)
    assert load_config(None, environ={"BAILIWICK_UPSTREAM_API": "azure"}).upstream.api == "azure"


@pytest.mark.parametrize(("text", "fragment"), [
    ("upstream: {api: gcs}", "upstream.api"),
    ("azure: {endpoints: []}", "azure.endpoints"),
    ("azure: {account_host_suffixes: blob.core.windows.net}", "azure.account_host_suffixes"),
    ("azure: {account_host_suffixes: ['']}", "azure.account_host_suffixes[0]"),
    ("azure: {hosts: [x]}", "azure.hosts"),
    ("azure: [x]", "azure"),
])
def test_bad_azure_settings_are_refused_by_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bailiwick.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, environ={})


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    (folder / "mail.yaml").write_text(POLICY)
    return folder


@pytest.mark.parametrize(("jurisdiction", "method", "target", "pairs", "allowed"), [
    ("IE", "GET", f"/{ACCOUNT}/ie-mail/alice/1.eml", (), True),
    ("US", "GET", f"/{ACCOUNT}/ie-mail/alice/1.eml", (), False),
    ("US", "GET", f"/{ACCOUNT}/ie-mail?restype=container&comp=list&prefix=alice%2F", (), False),
    ("IE", "GET", f"/{ACCOUNT}/us-mail?restype=container&comp=list", (), True),
    ("IE", "DELETE", f"/{ACCOUNT}/us-mail/x", (), False),
    ("IE", "PUT", f"/{ACCOUNT}/ie-mail?restype=container&comp=acl", (), False),    # admin: nobody has it
    ("IE", "GET", f"/{ACCOUNT}/?restype=service&comp=properties", (), False),
    # A copy is a read of the source, by the caller and by the destination's jurisdiction.
    ("US", "PUT", f"/{ACCOUNT}/us-mail/x", (("x-ms-copy-source", f"http://127.0.0.1/{ACCOUNT}/ie-mail/a"),), False),
    ("IE", "PUT", f"/{ACCOUNT}/us-mail/x", (("x-ms-copy-source", f"http://127.0.0.1/{ACCOUNT}/ie-mail/a"),), False),
    ("IE", "PUT", f"/{ACCOUNT}/ie-mail/x", (("x-ms-copy-source", f"http://127.0.0.1/{ACCOUNT}/us-mail/a"),), True),
    ("US", "PUT", f"/{ACCOUNT}/us-mail/x", (("x-ms-copy-source", f"http://127.0.0.1/{ACCOUNT}/us-mail/a"),), True),
])
def test_decisions(policy_dir: Path, jurisdiction: str, method: str, target: str,
                   pairs: tuple[tuple[str, str], ...], allowed: bool) -> None:
    parsed = request(method, target, *pairs)
    decision = decide(load_policy(policy_dir), jurisdiction, parsed.request)
    assert decision.forwarded is allowed, decision.reason


def test_list_containers_is_an_account_listing_filtered_by_the_policy(policy_dir: Path) -> None:
    parsed = request("GET", f"/{ACCOUNT}/?comp=list")
    assert (parsed.api, parsed.operation, parsed.account_listing) == ("azure", "ListContainers", True)
    assert parsed.body_limit is None
    policy = load_policy(policy_dir)
    assert decide(policy, "US", parsed.request).rule == ACCOUNT_LISTING
    body = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x"><Containers>'
            b"<Container><Name>ie-mail</Name></Container><Container><Name>us-mail</Name></Container>"
            b"</Containers><NextMarker/></EnumerationResults>")
    seen: list[Resource] = []

    def visible(resource: Resource) -> bool:
        seen.append(resource)
        return resource.key == "us-mail/"

    assert b"ie-mail" not in API.filter_account_listing(parsed, body, visible)
    assert seen == [Resource("azure", ACCOUNT, "ie-mail/"), Resource("azure", ACCOUNT, "us-mail/")]


def test_nothing_else_is_filtered_or_expanded() -> None:
    parsed = request("GET", f"/{ACCOUNT}/ie-mail/a")
    assert parsed.account_listing is False
    with pytest.raises(InternalError):
        API.filter_account_listing(parsed, b"<x/>", lambda resource: True)
    with pytest.raises(InternalError):
        API.expand(parsed, b"")


def test_refusals_are_azure_errors() -> None:
    from proxy.errors import AccessDenied

    status, headers, body = API.render_error(AccessDenied("no"), "abc")
    assert (status, headers["x-ms-error-code"], headers["x-ms-request-id"]) == (403, "AuthorizationFailure", "abc")
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationFailure</Code>')


@pytest.mark.parametrize(("pairs", "admin"), [
    ((("x-ms-legal-hold", "true"),), True),
    ((("x-ms-immutability-policy-until-date", "Sun, 01 Jan 2099 00:00:00 GMT"),
      ("x-ms-immutability-policy-mode", "Locked")), True),
    ((("x-ms-meta-folder", "inbox"),), False),
])
def test_a_write_that_locks_the_blob_is_judged_as_admin_too(pairs: tuple[tuple[str, str], ...], admin: bool) -> None:
    parsed = request("PUT", f"/{ACCOUNT}/ie-mail/alice/1.eml", ("x-ms-blob-type", "BlockBlob"),
                     ("Content-Length", "1"), *pairs)
    actions = [access.action.value for access in parsed.request.accesses]
    assert actions == (["write", "admin"] if admin else ["write"])
