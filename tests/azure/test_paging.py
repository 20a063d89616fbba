"""Paged List Containers through the real proxy, in front of Azurite, read with azure-storage-blob.

2,500 containers of mixed jurisdictions are created straight at Azurite. The
callers list with an account SAS (which does not sign ``marker`` or
``maxresults``, so the proxy may page the storage server itself) and
``results_per_page``: each sees exactly its own, in order, once each. A
marker that is not the proxy's, or is another caller's, is refused with
Azure's code and never forwarded; a paged listing under SharedKey (whose
signature covers the query) is refused; a caller who sees few of many
containers gets short pages rather than a walk of the whole account.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

from proxy.azure.api import AzureApi
from proxy.config import UpstreamApi
from proxy.harness import ProxyThread
from proxy.storage import accountpages
from tests.conftest import make_token, proxy_config
from tests.support.recorder import Recorder

from .conftest import ACCOUNT, KEY, Azurite
from .test_azurite import error_code

GROUPS = {"call": 400, "cie": 1000, "cnone": 300, "cus": 800}
NAMES = sorted(f"{group}-{n:04d}" for group, count in GROUPS.items() for n in range(count))
# A container is named whole in a policy (only an account name may end in "*").
DATASETS = [("irish", "eu-west-1", "cie", ("read", "list"), "IE"),
            ("american", "us-east-1", "cus", ("read", "list"), "US"),
            ("everyone", "eu-west-1", "call", ("list",), '"*"')]
POLICY = "regions:\n  eu-west-1: IE\n  us-east-1: US\ndatasets:\n" + "".join(
    f"  - name: {name}\n    region: {region}\n"
    f"    resources: [{', '.join(f'azure://{ACCOUNT}/{n}' for n in NAMES if n.startswith(group + '-'))}]\n"
    f"    rules:\n      - id: {name}-list\n        allow: [{', '.join(actions)}]\n        from: [{source}]\n"
    for name, region, group, actions, source in DATASETS
)
SEEN = {
    "IE": [n for n in NAMES if n.startswith(("call-", "cie-"))],
    "US": [n for n in NAMES if n.startswith(("call-", "cus-"))],
    "JP": [n for n in NAMES if n.startswith("call-")],
}


@pytest.fixture(scope="module")
def containers(azurite: Azurite) -> None:
    direct = BlobServiceClient(azurite.url, credential={"account_name": ACCOUNT, "account_key": KEY}, retry_total=0)

    def create(name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            direct.create_container(name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, NAMES))
    direct.close()


@pytest.fixture
def relay(azure_recorder: Recorder) -> Recorder:
    return azure_recorder


@pytest.fixture(scope="module")
def proxy(
    containers: None, azure_recorder: Recorder, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyThread]:
    folder: Path = tmp_path_factory.mktemp("azure-paging")
    (folder / "policies").mkdir()
    (folder / "policies" / "paging.yaml").write_text(POLICY)
    config = proxy_config(azure_recorder.url, folder / "audit.jsonl")
    config = replace(config, policies=folder / "policies", upstream=replace(config.upstream, api=UpstreamApi.AZURE))
    running = ProxyThread(config).start()
    yield running
    running.stop()


def sas_client(proxy: ProxyThread, jurisdiction: str) -> BlobServiceClient:
    sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(service=True), AccountSasPermissions(list=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    return BlobServiceClient(f"{proxy.url}/{ACCOUNT}", credential=sas, retry_total=0,
                             headers={"X-Bailiwick-Token": make_token(jurisdiction)})


def pages(client: BlobServiceClient, size: int, **options: Any) -> list[list[str]]:
    return [[c.name for c in page] for page in client.list_containers(results_per_page=size, **options).by_page()]


@pytest.mark.parametrize(("jurisdiction", "size"), [("IE", 1000), ("US", 333), ("JP", 50), ("IE", 5000)])
def test_each_caller_pages_through_exactly_its_own(proxy: ProxyThread, jurisdiction: str, size: int) -> None:
    got = pages(sas_client(proxy, jurisdiction), size)
    assert [name for page in got for name in page] == SEEN[jurisdiction]
    assert [len(page) for page in got[:-1]] == [size] * (len(got) - 1)
    assert 0 < len(got[-1]) <= size


def test_a_prefix_is_kept(proxy: ProxyThread) -> None:
    got = pages(sas_client(proxy, "US"), 100, name_starts_with="cus-")
    assert [name for page in got for name in page] == SEEN["US"][400:]


def _first_marker(client: BlobServiceClient, size: int = 3) -> str:
    listing = client.list_containers(results_per_page=size).by_page()
    next(listing)
    marker = listing.continuation_token   # type: ignore[attr-defined]
    assert isinstance(marker, str)
    return marker


@pytest.mark.parametrize("make", [
    pytest.param(lambda marker: "cus-0100", id="a container name"),
    pytest.param(lambda marker: marker[:-4], id="truncated"),
    pytest.param(lambda marker: marker[:10] + ("A" if marker[10] != "A" else "B") + marker[11:], id="altered"),
])
def test_a_marker_that_is_not_the_proxys_is_refused(proxy: ProxyThread, relay: Recorder, make: Any) -> None:
    client = sas_client(proxy, "IE")
    bad = make(_first_marker(client))
    mark = relay.mark()
    with pytest.raises(HttpResponseError) as refused:
        next(client.list_containers(results_per_page=3).by_page(continuation_token=bad))
    assert (refused.value.status_code, error_code(refused.value)) == (400, "InvalidQueryParameterValue")
    assert relay.since(mark) == b""


def test_another_callers_marker_is_refused(proxy: ProxyThread, relay: Recorder) -> None:
    marker = _first_marker(sas_client(proxy, "IE"))
    mark = relay.mark()
    with pytest.raises(HttpResponseError) as refused:
        next(sas_client(proxy, "US").list_containers(results_per_page=3).by_page(continuation_token=marker))
    assert error_code(refused.value) == "InvalidQueryParameterValue"
    assert relay.since(mark) == b""


def test_a_shared_key_paged_listing_is_refused(proxy: ProxyThread, relay: Recorder) -> None:
    client = BlobServiceClient(f"{proxy.url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                               retry_total=0, headers={"X-Bailiwick-Token": make_token("IE")})
    mark = relay.mark()
    with pytest.raises(HttpResponseError) as refused:
        next(client.list_containers(results_per_page=3).by_page())
    assert error_code(refused.value) == "InvalidQueryParameterValue"
    assert relay.since(mark) == b""


def test_the_walk_is_capped(proxy: ProxyThread, relay: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    # Storage-server pages of 100, at most 2 per request: the Japanese caller's 400 containers come first,
    # then 2,100 it may not see, walked 200 per request, in pages that may be empty but go on.
    monkeypatch.setattr(AzureApi, "account_paging", replace(AzureApi.account_paging, upstream_page=100))
    monkeypatch.setattr(accountpages, "MAX_UPSTREAM_PAGES", 2)
    mark = relay.mark()
    got = pages(sas_client(proxy, "JP"), 5000)
    assert [name for page in got for name in page] == SEEN["JP"]
    assert got[0] == SEEN["JP"][:200]
    assert [] in got   # pages the cap cut short, with a marker to go on
    # Each storage-server page read once (other tests' few containers may add one), two per request.
    sent = relay.since(mark).count(b"GET /")
    assert len(NAMES) // 100 <= sent <= len(NAMES) // 100 + 1
    assert len(got) == (sent + 1) // 2
