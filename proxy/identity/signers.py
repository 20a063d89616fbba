"""The expected S3 signature of a request, computed by botocore's own signers.

The proxy does not write its own SigV4 or SigV2 canonicaliser: it feeds
botocore's (`S3SigV4Auth`, `HmacV1Auth`) the request-target and the header
values exactly as they will be forwarded, so the signature it checks is the
one an AWS SDK would have made for the bytes the storage server receives.
botocore is imported only when access keys are configured (it costs about
15 MiB and 0.2 s).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from proxy.identity.sigv4hmac import signing_key
from proxy.s3.resign import canonical_path, canonical_query

SERVICE = "s3"
# Signing keys remembered (a few a key: a day's, the next day's around midnight, a rotated secret's).
_SIGNING_KEYS = 1024


class Signers:
    """botocore's SigV4 and SigV2 signers, fed the request exactly as it will be forwarded."""

    def __init__(self) -> None:
        from botocore.auth import HmacV1Auth, S3SigV4Auth
        from botocore.awsrequest import AWSRequest, HTTPHeaders
        from botocore.credentials import Credentials

        class V4(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
            # The headers signed are the ones the caller named, with the values received;
            # the payload line is the caller's x-amz-content-sha256 (UNSIGNED-PAYLOAD presigned).
            def headers_to_sign(self, request: Any) -> Any:
                return request.context["signed"]

            def payload(self, request: Any) -> str:
                return str(request.context["payload"])

        class V2(HmacV1Auth):  # type: ignore[misc]
            def __init__(self, credentials: Any, date: str) -> None:
                super().__init__(credentials)
                self._date = date

            def _get_date(self) -> str:   # the Date line: the request's own, never "now"
                return self._date

        self._v4, self._v2 = V4, V2
        self._request, self._headers, self._credentials = AWSRequest, HTTPHeaders, Credentials
        # (secret, day, region) -> the SigV4 signing key of that day.
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def v4(self, secret: str, key_id: str, region: str, method: str, target: str, query: str,
           signed: dict[str, list[str]], payload: str, timestamp: str) -> tuple[str, bytes]:
        """The SigV4 signature of this request, and the signing key (for chunk signatures)."""
        path = target.partition("?")[0]
        url = "http://host" + canonical_path(path)
        query_part = canonical_query(query)
        if query_part:
            url += "?" + query_part
        request = self._request(method=method, url=url)
        request.context.update(signed=_SignedHeaders(signed), payload=payload, timestamp=timestamp)
        auth = self._v4(self._credentials(key_id, secret), SERVICE, region)
        string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
        # botocore's `signature` derives the day's signing key anew each time (four HMACs, two
        # thirds of the cost); the key is the same all day, so it is derived once.
        cached = (secret, timestamp[:8], region)
        key = self._keys.get(cached)
        if key is None:
            key = signing_key(secret, timestamp[:8], region, SERVICE)
            if len(self._keys) >= _SIGNING_KEYS:
                self._keys.clear()
            self._keys[cached] = key
        return str(auth._sign(key, string_to_sign, hex=True)), key

    def v2(self, secret: str, key_id: str, method: str, target: str, headers: list[tuple[str, str]],
           date: str, bucket: str | None) -> str:
        """The SigV2 signature of this request (`bucket`: the one a virtual-hosted Host names)."""
        split = urlsplit("http://host" + target)
        box = self._headers()
        for name, value in headers:
            box[name] = value   # HTTPHeaders: assignment adds
        auth = self._v2(self._credentials(key_id, secret), date)
        auth_path = f"/{bucket}{split.path}" if bucket is not None else None
        return str(auth.sign_string(auth.canonical_string(method, split, box, auth_path=auth_path)))


class _SignedHeaders(dict[str, list[str]]):
    """The signed headers as botocore's canonicaliser reads them (`get_all`)."""

    def get_all(self, name: str) -> list[str]:
        return self[name]
