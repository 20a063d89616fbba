"""A refused Get Blob Properties (a HEAD) says why, through the Azure SDK: the refusal headers (docs/storage-apis.md).

Azure's error body never reaches a client on HEAD; ``x-ms-error-code`` gives
the code, and ``X-Bailiwick-Error-Code`` / ``X-Bailiwick-Reason`` give the
code and the plain-words reason as on the S3 side.
"""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import unquote

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobServiceClient

from proxy.harness import ProxyThread
from tests.conftest import make_token

from .conftest import ACCOUNT, IE, KEY, Azurite


def _service(url: str, token: str | None = None) -> BlobServiceClient:
    headers = {"X-Bailiwick-Token": token} if token is not None else {}
    return BlobServiceClient(f"{url}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                             retry_total=0, headers=headers)


def test_get_blob_properties_refused_carries_code_and_reason(azurite: Azurite, azure_proxy: ProxyThread) -> None:
    name = f"alice/{uuid.uuid4().hex}.eml"
    with _service(f"http://127.0.0.1:{azurite.port}") as direct:
        with contextlib.suppress(ResourceExistsError):
            direct.create_container(IE)
        direct.get_blob_client(IE, name).upload_blob(b"Dublin mail")
    with _service(azure_proxy.url, make_token("US")) as proxied, pytest.raises(HttpResponseError) as refused:
        proxied.get_blob_client(IE, name).get_blob_properties()
    headers = getattr(refused.value.response, "headers", {})
    assert refused.value.status_code == 403
    assert headers["x-ms-error-code"] == headers["X-Bailiwick-Error-Code"] == "AuthorizationFailure"
    assert unquote(headers["X-Bailiwick-Reason"]) == (
        "read access to data held in eu-west-1 (IE) is not allowed for callers in US"
    )
