"""Requests signed as S3 clients sign them (botocore's own signers), as raw parts a test can then tamper with.

`signed` returns the method, the request-target and the header list exactly as
a client would send them; `streaming_body` frames a body as an aws-chunked
upload with chunk signatures (AWS's "Transferring Payload in Multiple Chunks").
botocore does not sign chunks, so the chunk signatures are the proxy's own
`chunk_signature` and `signing_key`, which tests/identity/test_chunksig.py holds
to AWS's published example.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.identity.sigv4hmac import chunk_signature, signing_key

STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


@dataclass(frozen=True, slots=True)
class Signed:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str:
        return next(value for key, value in self.headers if key.lower() == name.lower())

    def replace(self, name: str, value: str) -> Signed:
        return Signed(self.method, self.target,
                      tuple((k, value if k.lower() == name.lower() else v) for k, v in self.headers))

    def add(self, name: str, value: str) -> Signed:
        return Signed(self.method, self.target, (*self.headers, (name, value)))

    def without(self, name: str) -> Signed:
        return Signed(self.method, self.target, tuple((k, v) for k, v in self.headers if k.lower() != name.lower()))

    def raw(self, body: bytes = b"") -> bytes:
        """The request as bytes on the wire (Content-Length added when there is a body)."""
        lines = [f"{self.method} {self.target} HTTP/1.1", *(f"{k}: {v}" for k, v in self.headers)]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in self.headers):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed(
    method: str, url: str, key: str, secret: str, *, region: str = "eu-west-1", version: str = "v4",
    headers: dict[str, str] | None = None, body: bytes = b"", payload: str | None = None, expires: int = 3600,
    auth_path: str | None = None,
) -> Signed:
    """A request signed with `key`/`secret`: version "v4", "v4-query", "v2" or "v2-query".

    `payload`: the x-amz-content-sha256 to sign (default: the body's SHA-256).
    """
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    request.auth_path = auth_path   # SigV2 of a virtual-hosted request: /BUCKET/KEY
    credentials = Credentials(key, secret)
    if version == "v4":
        request.context["fixed_payload"] = payload or hashlib.sha256(body).hexdigest()

        class Fixed(S3SigV4Auth):  # type: ignore[misc]
            def payload(self, request: AWSRequest) -> str:
                return str(request.context["fixed_payload"])

        Fixed(credentials, "s3", region).add_auth(request)
    elif version == "v4-query":
        S3SigV4QueryAuth(credentials, "s3", region, expires=expires).add_auth(request)
    elif version == "v2":
        HmacV1Auth(credentials).add_auth(request)
    elif version == "v2-query":
        HmacV1QueryAuth(credentials, expires=expires).add_auth(request)
    else:
        raise ValueError(version)
    parts = urlsplit(request.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sent = [("Host", parts.netloc), *((str(k), str(v)) for k, v in request.headers.items())]
    if version == "v2-query":
        # What the URL's user sends: the signed headers are in the query now (and Date was the expiry).
        sent = [(k, v) for k, v in sent if not k.lower().startswith("x-amz-")
                and k.lower() not in ("date", "content-type", "content-md5")]
    return Signed(method, target, tuple(sent))


def streaming_body(request: Signed, secret: str, data: bytes, *, region: str = "eu-west-1",
                   chunk: int = 65536) -> bytes:
    """`data` as an aws-chunked body whose chunk signatures chain from `request`'s signature."""
    authorization = request.header("Authorization")
    seed = authorization.rsplit("Signature=", 1)[1]
    amz_date = request.header("X-Amz-Date")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    key = signing_key(secret, amz_date[:8], region)
    out, previous = [], seed
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for piece in pieces:
        previous = chunk_signature(key, amz_date, scope, previous, hashlib.sha256(piece).hexdigest())
        out.append(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), previous.encode(), piece))
    return b"".join(out)


def streaming_request(url: str, key: str, secret: str, data: bytes, *, region: str = "eu-west-1",
                      chunk: int = 65536) -> tuple[Signed, bytes]:
    """A chunk-signed PUT of `data` (headers signed with the STREAMING payload) and its body."""
    framed_length = len(streaming_body(
        signed("PUT", url, key, secret, region=region, payload=STREAMING), secret, data, region=region, chunk=chunk))
    request = signed("PUT", url, key, secret, region=region, payload=STREAMING, headers={
        "Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data)),
        "Content-Length": str(framed_length)})
    return request, streaming_body(request, secret, data, region=region, chunk=chunk)
