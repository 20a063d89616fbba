"""The real proxy with ``upstream.api: azure`` in front of Azurite, driven by Microsoft's azure-storage-blob SDK.

Every refusal is checked three ways: what the SDK raised (status and Azure
error code), that none of the request reached the storage server (the
recording relay between the proxy and Azurite), and the audit line. Allowed
traffic is checked byte for byte, on Azurite directly too; Azurite verifies
every SharedKey and SAS signature, so a request that passes shows the proxy
forwarded it unchanged.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

from proxy.harness import ProxyThread
from tests.conftest import make_token
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record
from tests.test_gateway import raw_request

from .conftest import ACCOUNT, IE, KEY, NOWHERE, US, Azurite


def service(url: str, token: str | None = None, *, key: str = KEY, **options: Any) -> BlobServiceClient:
    """A client of the account at `url` (path-style), signing with SharedKey, sending `token` if given."""
    if token is not None:
        options["headers"] = {"X-Bailiwick-Token": token}
    return BlobServiceClient(f"{url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": key},
                             retry_total=0, **options)


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}.eml"


@pytest.fixture(scope="module")
def direct(azurite: Azurite) -> Iterator[BlobServiceClient]:
    """Straight to Azurite (setup and checks), with the three containers in place."""
    client = service(f"http://127.0.0.1:{azurite.port}")
    for name in (IE, US, NOWHERE):
        with contextlib.suppress(ResourceExistsError):
            client.create_container(name)
    yield client
    client.close()


def proxied(proxy: ProxyThread, jurisdiction: str, *, sub: str = "client-1", **options: Any) -> BlobServiceClient:
    return service(proxy.url, make_token(jurisdiction, sub=sub), **options)


def error_code(error: HttpResponseError) -> str | None:
    """The Azure error code the storage SDK read from x-ms-error-code (it sets the attribute itself)."""
    code = getattr(error, "error_code", None)
    return code if isinstance(code, str) else None


def refusal(excinfo: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str | None, str]:
    """Status, Azure error code and request id (the decision id) of a refusal the SDK raised."""
    error = excinfo.value
    headers = getattr(error.response, "headers", {})
    return error.status_code, error_code(error), str(headers.get("x-ms-request-id", ""))


# --- allowed traffic, byte for byte -----------------------------------------------------------------


@pytest.mark.parametrize("single_put", [64 * 1024 * 1024, 64 * 1024])   # one Put Blob; Put Block + Block List
def test_irish_client_uploads_downloads_lists_and_deletes(
    azure_proxy: ProxyThread, direct: BlobServiceClient, single_put: int,
) -> None:
    client = proxied(azure_proxy, "IE", max_single_put_size=single_put, max_block_size=64 * 1024)
    name = unique("alice/inbox")
    data = os.urandom(200_000) + b"\r\n\x00end"
    container = client.get_container_client(IE)
    container.upload_blob(name, data)
    assert direct.get_blob_client(IE, name).download_blob().readall() == data
    assert container.download_blob(name).readall() == data
    assert container.get_blob_client(name).get_blob_properties().size == len(data)
    assert [blob.name for blob in container.list_blobs(name_starts_with=name)] == [name]
    container.delete_blob(name)
    assert list(direct.get_container_client(IE).list_blobs(name_starts_with=name)) == []


def test_a_sas_signed_request_passes_through_unchanged(azure_proxy: ProxyThread, direct: BlobServiceClient) -> None:
    name = unique("sas")
    direct.get_blob_client(IE, name).upload_blob(b"read with a SAS")
    sas = generate_blob_sas(ACCOUNT, IE, name, account_key=KEY, permission=BlobSasPermissions(read=True),
                            expiry=datetime.now(UTC) + timedelta(minutes=10))
    blob = BlobClient.from_blob_url(f"{azure_proxy.url}/{ACCOUNT}/{IE}/{name}?{sas}",
                                    headers={"X-Bailiwick-Token": make_token("IE")}, retry_total=0)
    assert blob.download_blob().readall() == b"read with a SAS"


def test_a_wrong_shared_key_is_refused_by_azurite_itself(
    azure_proxy: ProxyThread, azure_recorder: Recorder, direct: BlobServiceClient,
) -> None:
    """The proxy allows the request (policy) and forwards it as it came: Azurite checks the signature."""
    name = unique("signed")
    direct.get_blob_client(IE, name).upload_blob(b"x")
    wrong = "A" * 86 + "=="
    mark = azure_recorder.mark()
    with pytest.raises(HttpResponseError) as excinfo:
        service(azure_proxy.url, make_token("IE"), key=wrong).get_blob_client(IE, name).download_blob()
    assert excinfo.value.status_code == 403
    assert error_code(excinfo.value) in ("AuthorizationFailure", "AuthenticationFailed")
    assert name.encode() in azure_recorder.since(mark)   # it was Azurite that refused


def test_an_irish_client_copies_us_mail_into_dublin(azure_proxy: ProxyThread, direct: BlobServiceClient) -> None:
    source = unique("bob/inbox")
    direct.get_blob_client(US, source).upload_blob(b"US mail to keep in Dublin")
    target = unique("copied")
    blob = proxied(azure_proxy, "IE").get_blob_client(IE, target)
    blob.start_copy_from_url(direct.get_blob_client(US, source).url, requires_sync=True)
    assert direct.get_blob_client(IE, target).download_blob().readall() == b"US mail to keep in Dublin"


# --- refusals: the SDK's own error, nothing upstream, an audit line --------------------------------------


def test_a_us_read_of_dublin_mail_is_refused_before_azurite(
    azure_proxy: ProxyThread, azure_recorder: Recorder, azure_audit: Path, direct: BlobServiceClient,
) -> None:
    name = unique("alice/inbox")
    direct.get_blob_client(IE, name).upload_blob(b"Dublin mail")
    mark = azure_recorder.mark()
    with pytest.raises(HttpResponseError) as excinfo:
        proxied(azure_proxy, "US", sub="prosecutor-1").get_blob_client(IE, name).download_blob()
    status, code, request_id = refusal(excinfo)
    assert (status, code) == (403, "AuthorizationFailure")
    assert "read access to data held in" in str(excinfo.value.message)
    assert "not allowed for callers in US" in str(excinfo.value.message)
    assert azure_recorder.since(mark) == b""
    record = wait_for_record(azure_audit, lambda r: r["decision_id"] == request_id)
    assert (record["decision"], record["status"], record["caller"]["subject"]) == ("deny", 403, "prosecutor-1")
    assert record["request"] == {
        "action": "read", "api": "azure", "copy_from": None, "method": "GET", "operation": "GetBlob",
        "resource": f"azure://{ACCOUNT}/{IE}/{name}", "resources": 1, "listing": False,
    }


def test_a_us_copy_out_of_dublin_is_refused(
    azure_proxy: ProxyThread, azure_recorder: Recorder, azure_audit: Path, direct: BlobServiceClient,
) -> None:
    source = unique("alice/inbox")
    direct.get_blob_client(IE, source).upload_blob(b"Dublin mail")
    target = unique("exfiltrated")
    mark = azure_recorder.mark()
    with pytest.raises(HttpResponseError) as excinfo:
        proxied(azure_proxy, "US").get_blob_client(US, target).start_copy_from_url(
            direct.get_blob_client(IE, source).url)
    status, code, request_id = refusal(excinfo)
    assert (status, code) == (403, "AuthorizationFailure")
    assert azure_recorder.since(mark) == b""
    assert not direct.get_blob_client(US, target).exists()
    record = wait_for_record(azure_audit, lambda r: r["decision_id"] == request_id)
    assert record["request"]["operation"] == "CopyBlob"
    assert record["request"]["copy_from"] == f"azure://{ACCOUNT}/{IE}/{source}"
    assert record["request"]["resource"] == f"azure://{ACCOUNT}/{IE}/{source}"   # the read that decided


def test_a_blob_batch_is_refused_with_a_reason(azure_proxy: ProxyThread, azure_recorder: Recorder) -> None:
    mark = azure_recorder.mark()
    with pytest.raises(HttpResponseError) as excinfo:
        proxied(azure_proxy, "IE").get_container_client(IE).delete_blobs("a", "b")
    assert excinfo.value.status_code == 400
    assert "blob batch requests are not supported" in str(excinfo.value.message)
    assert azure_recorder.since(mark) == b""


def test_a_host_the_proxy_does_not_know_is_refused_in_azures_format(
    azure_proxy: ProxyThread, azure_recorder: Recorder,
) -> None:
    mark = azure_recorder.mark()
    answer = raw_request(azure_proxy, (f"GET /{IE}/a HTTP/1.1\r\nHost: evil.example\r\n"
                                       f"X-Bailiwick-Token: {make_token('IE')}\r\nConnection: close\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"\r\nx-ms-error-code: InvalidUri\r\n" in head
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidUri</Code><Message>')
    assert b"storage host this proxy does not know" in body
    assert azure_recorder.since(mark) == b""


# --- List Containers: only what the caller may list ----------------------------------------------------------


@pytest.mark.parametrize(("jurisdiction", "shown"), [
    ("IE", {IE, US}),
    ("US", {US}),
    ("JP", set()),
])
def test_list_containers_shows_only_what_the_caller_may_list(
    azure_proxy: ProxyThread, direct: BlobServiceClient, jurisdiction: str, shown: set[str],
) -> None:
    names = {container.name for container in proxied(azure_proxy, jurisdiction).list_containers()}
    assert names == shown   # no-dataset is in no dataset: never shown
    assert {container.name for container in direct.list_containers()} >= {IE, US, NOWHERE}


# --- what Azure clients send that S3 clients do not ------------------------------------------------------------


def test_metadata_names_with_underscores_reach_azurite(azure_proxy: ProxyThread, direct: BlobServiceClient) -> None:
    # Azure metadata names are C# identifiers: "_" is everyday in them, and they are opaque to the proxy.
    name = unique("alice")
    blob = proxied(azure_proxy, "IE").get_blob_client(IE, name)
    blob.upload_blob(b"with metadata", metadata={"mail_folder": "inbox", "x": "1"})
    stored = direct.get_blob_client(IE, name).get_blob_properties()
    assert stored.metadata == {"mail_folder": "inbox", "x": "1"}


def test_an_entra_id_bearer_token_is_left_for_the_storage_server(
    azure_proxy: ProxyThread, azure_recorder: Recorder,
) -> None:
    # An Entra ID client authenticates to storage with Authorization: Bearer; its bailiwick
    # token then travels in X-Bailiwick-Token, and only that one is the proxy's to read and drop.
    entra = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL3N0b3JhZ2UuYXp1cmUuY29tIn0.c2ln"
    mark = azure_recorder.mark()
    raw_request(azure_proxy, (f"GET /{ACCOUNT}/{IE}/alice/none.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              f"Authorization: Bearer {entra}\r\nX-Bailiwick-Token: {make_token('IE')}\r\n"
                              "x-ms-version: 2021-08-06\r\nConnection: close\r\n\r\n").encode())
    forwarded = azure_recorder.since(mark)
    assert f"Authorization: Bearer {entra}\r\n".encode() in forwarded
    assert b"x-bailiwick-token" not in forwarded.lower()
