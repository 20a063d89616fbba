"""On the Azure API, a refusal the proxy makes before the storage server gets Azure's code for it, not S3's.

The reading both APIs share (`proxy.storage`) raises S3's codes
(KeyTooLongError, MethodNotAllowed, InvalidURI); `proxy.azure.errors.CODES`
turns each into the code Azure Blob gives for the same input. Checked
through the real proxy in front of Azurite, one raw request a case: status,
``x-ms-error-code``, the body's ``<Code>``, ``X-Bailiwick-Error-Code``, and
that nothing reached Azurite.
"""

from __future__ import annotations

import re

import pytest

from proxy.harness import ProxyThread
from tests.conftest import make_token
from tests.support.recorder import Recorder
from tests.test_gateway import raw_request

from .conftest import ACCOUNT, IE

CASES = {
    "blob name over 1024 characters": ("GET", f"/{ACCOUNT}/{IE}/" + "b" * 1025, 400, "OutOfRangeInput"),
    "a method Azure has no operation for": ("PATCH", f"/{ACCOUNT}/{IE}/b", 405, "UnsupportedHttpVerb"),
    "a percent-escape that is not one": ("GET", f"/{ACCOUNT}/{IE}/a%zz", 400, "InvalidUri"),
}


@pytest.mark.parametrize(("method", "target", "status", "code"), CASES.values(), ids=CASES.keys())
def test_a_refusal_before_the_storage_server_has_azures_code(
    azure_proxy: ProxyThread, azure_recorder: Recorder, method: str, target: str, status: int, code: str,
) -> None:
    mark = azure_recorder.mark()
    answer = raw_request(azure_proxy, (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       f"X-Bailiwick-Token: {make_token('IE')}\r\nContent-Length: 0\r\n"
                                       "Connection: close\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head[:200]
    assert f"\r\nx-ms-error-code: {code}\r\n".encode() in head
    assert f"\r\nX-Bailiwick-Error-Code: {code}\r\n".encode() in head
    found = re.search(rb"<Code>([^<]*)</Code>", body)
    assert found is not None
    assert found.group(1).decode() == code
    assert azure_recorder.since(mark) == b""
