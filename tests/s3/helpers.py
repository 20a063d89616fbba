"""Shared test helpers: a settings value, header builders, and requests as botocore sends them.

`wire` runs a real botocore client up to the moment it would send, and hands
back the method, raw target, headers and body it would have put on the wire,
so that tests check the parser against the client's own encoding, not a
hand-written imitation of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from multidict import CIMultiDict

from proxy.config import S3Settings
from proxy.s3.request import RequestReader, S3Request

PATH_HOST = "s3.example.test"
# The storage server these tests picture serves virtual-hosted requests under both names.
SETTINGS = S3Settings(endpoints=(PATH_HOST, "localhost", "127.0.0.1", "::1"), virtual_hosts=(PATH_HOST, "localhost"))
READER = RequestReader(SETTINGS)


def headers(host: str | None = PATH_HOST, *pairs: tuple[str, str]) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    if host is not None:
        result.add("Host", host)
    for name, value in pairs:
        result.add(name, value)
    return result


def parse(method: str, target: str, host: str = PATH_HOST, *pairs: tuple[str, str]) -> S3Request:
    return READER.read(method, target, headers(host, *pairs))


@dataclass(frozen=True)
class WireRequest:
    method: str
    target: str
    headers: CIMultiDict[str]
    body: bytes


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


@lru_cache(maxsize=4)
def client(addressing: str = "path", endpoint: str = f"http://{PATH_HOST}") -> Any:
    """A botocore S3 client whose requests are captured instead of sent."""
    session = botocore.session.get_session()
    s3 = session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",  # a dummy credential: requests are never sent
        config=Config(
            s3={"addressing_style": addressing},
            retries={"max_attempts": 0},
            parameter_validation=False,
        ),
    )
    s3.meta.events.register("before-send", _capture)
    return s3


def wire(operation: str, params: dict[str, Any], addressing: str = "path") -> WireRequest:
    """The request botocore would send for `operation` (snake_case) with `params`."""
    try:
        getattr(client(addressing), operation)(**params)
    except _Captured as captured:
        request = captured.request
    else:  # pragma: no cover - the hook always fires
        raise AssertionError("botocore sent nothing")
    url = urlsplit(request.url)
    result: CIMultiDict[str] = CIMultiDict()
    result.add("Host", url.netloc)
    for name, value in request.headers.items():
        result.add(name, value.decode() if isinstance(value, bytes) else value)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    target = url.path + (f"?{url.query}" if url.query else "")
    return WireRequest(request.method, target, result, body)


def parse_wire(request: WireRequest) -> S3Request:
    return READER.read(request.method, request.target, request.headers)
