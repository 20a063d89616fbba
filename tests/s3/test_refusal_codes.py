"""A request the proxy refuses before the storage server gets S3's own error code and status (docs/storage-apis.md).

Through the real proxy in front of moto, one raw request a case: the status,
the ``<Code>`` of the XML body, ``X-Bailiwick-Error-Code``, and that nothing
reached the storage server. Where moto checks the same input itself, the
same request sent straight to moto must get the same code and status: the
caller cannot tell which of the two refused it.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.conftest import DUBLIN, make_token
from tests.support.recorder import Recorder

CREATE_IN_IRELAND = (b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint>"
                     b"</CreateBucketConfiguration>")


@dataclass(frozen=True, slots=True)
class Case:
    """One malformed request and what S3 answers to it."""

    method: str
    target: str
    status: int
    code: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    host: str = ""               # a virtual-hosted Host's bucket label ("" for path-style)
    moto_checks: bool = False    # moto refuses the same input itself: its answer must be the same


CASES = {
    "bucket name too short (CreateBucket)": Case("PUT", "/ab", 400, "InvalidBucketName", moto_checks=True),
    "bucket name too long (CreateBucket)": Case("PUT", "/" + "b" * 64, 400, "InvalidBucketName",
                                                body=CREATE_IN_IRELAND, moto_checks=True),
    "bucket name in upper case": Case("GET", "/Mail-EU/k", 400, "InvalidBucketName"),
    "bucket name with an underscore": Case("GET", "/mail_eu/k", 400, "InvalidBucketName"),
    "bucket name in IP form": Case("GET", "/10.0.0.1/k", 400, "InvalidBucketName"),
    "access point alias as a bucket": Case("GET", "/ap-abc-s3alias/k", 400, "InvalidBucketName"),
    "bucket name too short in the Host": Case("GET", "/k", 400, "InvalidBucketName", host="ab"),
    "key over 1024 bytes": Case("GET", f"/{DUBLIN}/" + "k" * 1025, 400, "KeyTooLongError"),
    "key over 1024 bytes of UTF-8": Case("PUT", f"/{DUBLIN}/" + "%C3%A4" * 513, 400, "KeyTooLongError", body=b"x"),
    "a method S3 has no operation for": Case("PATCH", f"/{DUBLIN}/k", 405, "MethodNotAllowed"),
    "a percent-escape that is not one": Case("GET", f"/{DUBLIN}/a%zz", 400, "InvalidURI"),
    "a path that is not UTF-8": Case("GET", f"/{DUBLIN}/a%FF", 400, "InvalidURI"),
    "copy source without a key": Case("PUT", f"/{DUBLIN}/copy", 400, "InvalidArgument",
                                      headers={"x-amz-copy-source": DUBLIN}),
    "copy source with an invalid bucket": Case("PUT", f"/{DUBLIN}/copy", 400, "InvalidBucketName",
                                               headers={"x-amz-copy-source": "Other_Bucket/k"}),
    "copy source key over 1024 bytes": Case("PUT", f"/{DUBLIN}/copy", 400, "KeyTooLongError",
                                            headers={"x-amz-copy-source": f"{DUBLIN}/" + "k" * 1025}),
    "DeleteObjects naming no object": Case("POST", f"/{DUBLIN}?delete", 400, "MalformedXML",
                                           body=b"<Delete><Quiet>true</Quiet></Delete>", moto_checks=True),
    "DeleteObjects not XML": Case("POST", f"/{DUBLIN}?delete", 400, "MalformedXML", body=b"<Delete><Obj"),
}


def send(port: int, case: Case, extra: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """`case` as one raw request (the target byte for byte) to 127.0.0.1:`port`: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(case.method, case.target, skip_host=True, skip_accept_encoding=True)
        host = f"{case.host}.localhost:{port}" if case.host else f"127.0.0.1:{port}"
        for name, value in {"Host": host, "Content-Length": str(len(case.body)), **case.headers, **extra}.items():
            connection.putheader(name, value)
        connection.endheaders(case.body or None)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def body_code(body: bytes) -> str | None:
    found = re.search(rb"<Code>([^<]*)</Code>", body)
    return found.group(1).decode() if found else None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_refusal_before_the_storage_server_has_s3s_code(
    proxy: ProxyThread, recorder: Recorder, moto: MotoServer, case: Case,
) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    mark = recorder.mark()
    status, headers, body = send(port, case, {"X-Bailiwick-Token": make_token("IE")})
    assert (status, body_code(body), headers.get("x-bailiwick-error-code")) == (case.status, case.code, case.code)
    assert headers["content-type"] == "application/xml"
    assert recorder.since(mark) == b"", "nothing reaches the storage server"
    if case.moto_checks:
        status, _, body = send(moto.port, case, {})
        assert (status, body_code(body)) == (case.status, case.code), "moto answers the same input alike"


def test_boto3_sees_the_same_code_from_the_proxy_as_from_moto(client_for: Any, direct: Any,
                                                              recorder: Recorder) -> None:
    mark = recorder.mark()
    codes = []
    for client in (client_for("IE"), direct):
        with pytest.raises(ClientError) as refused:
            client.create_bucket(Bucket="ab")
        codes.append((refused.value.response["ResponseMetadata"]["HTTPStatusCode"],
                      refused.value.response["Error"]["Code"]))
    assert codes == [(400, "InvalidBucketName")] * 2
    assert recorder.since(mark) == b""
