"""Re-sign mode: the proxy signs every forwarded S3 request with keys only it holds.

Callers present a token and nothing else; the credentials that reach the
data exist only beside the proxy, in its own region (environment variables
or a mounted credentials file), so the keys to Dublin's data never leave
Dublin. The signature is AWS Signature Version 4 made by botocore's
`S3SigV4Auth` (the signer the AWS SDK for Python uses), not a hand-written one.

Every request is forwarded path-style: a virtual-hosted one
(``BUCKET.<endpoint>``, ``/KEY``) is rewritten before it is signed into
``/BUCKET/KEY`` with the endpoint alone as Host, the key's bytes exactly as
the caller sent them. Storage servers differ on the names under which they
read a bucket from the Host (moto reads ``B.x.svc.cluster.local`` path-style,
MinIO only under its configured domain), but an endpoint alone is read
path-style (that is what `s3.endpoints` asserts), so the storage server acts
on exactly the bucket and key the decision was made on. With ``rewrite_host``, the Host sent is the
storage server's own name (AWS S3 routes by it, and a sidecar's callers
address ``127.0.0.1:8080``).

What is signed is exactly what is forwarded: the request target is sent as
the caller wrote it (with the bucket put in front of a virtual-hosted one's
path), and the canonical URI and query that SigV4 signs are
derived from those bytes the way S3 derives them (decode once, encode every
byte but the unreserved ones). The headers signed are ``host``,
``content-md5``, ``content-type`` and every ``x-amz-*`` header; none of them
is changed after signing. Bodies are never read for signing: the payload
hash is the caller's own ``x-amz-content-sha256`` when it is a SHA-256 (so
S3 still checks the body's integrity), ``UNSIGNED-PAYLOAD`` otherwise.

Refused in this mode, before the decision: presigned URLs (their query
carries a signature of its own) and chunk-signed uploads
(``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: every chunk carries a signature made
with the caller's key, which the proxy cannot redo without reading the body).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

from multidict import CIMultiDict, MultiMapping

from proxy.config import Config, S3Settings, SigningConfig
from proxy.errors import BadRequest, ConfigError, UpstreamFailure
from proxy.s3.host import HostReader
from proxy.watchedfile import WatchedFile

if TYPE_CHECKING:
    from botocore.credentials import Credentials

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Payload hashes forwarded as the caller sent them: S3 checks a SHA-256 against the body.
_KEPT_PAYLOADS = frozenset({UNSIGNED_PAYLOAD, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK_SIGNED = "STREAMING-AWS4-"
# The caller's own signature and what belongs to it; the proxy's replaces them.
_CALLER_AUTH = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256")
# Query parameters that make a request a presigned one (SigV4 and SigV2), compared lowered.
_PRESIGN_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-algorithm", "x-amz-security-token",
    "signature", "awsaccesskeyid",
})
_SIGNED = frozenset({"host", "content-md5", "content-type"})
# S3's canonical form: every byte encoded but the unreserved characters (and "/" in paths).
_PATH_SAFE = "/-_.~"
_QUERY_SAFE = "-_.~"
# A mounted credentials file is looked at again at most this often (a rotated Secret).
FILE_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Keys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class CredentialSource:
    """The proxy's own S3 credentials, from the environment or a mounted credentials file.

    A file (AWS shared-credentials format) is read again when it changes, so a
    rotated Kubernetes Secret is used without a restart; a file that becomes
    unreadable keeps the last good keys and the next request tries again.
    """

    def __init__(self, config: SigningConfig, environ: Mapping[str, str] | None = None) -> None:
        self._keys: _Keys | None = None
        self._file: WatchedFile[_Keys] | None = None
        if config.credentials_file is None:
            self._keys = _from_env(config, os.environ if environ is None else environ)
        else:
            profile = config.profile
            self._file = WatchedFile(config.credentials_file, lambda path: _from_file(path, profile),
                                     interval=FILE_CHECK_SECONDS)

    def current(self) -> _Keys:
        if self._file is not None:
            return self._file.current()
        assert self._keys is not None
        return self._keys


def _from_env(config: SigningConfig, environ: Mapping[str, str]) -> _Keys:
    key_id = environ.get(config.access_key_id_env, "")
    secret = environ.get(config.secret_access_key_env, "")
    if not key_id or not secret:
        raise ConfigError(
            f"s3.sign: re-sign mode needs the environment variables {config.access_key_id_env} and "
            f"{config.secret_access_key_env} (or s3.sign.credentials_file)"
        )
    token = environ.get(config.session_token_env) if config.session_token_env else None
    return _Keys(key_id, secret, token or None)


def _from_file(path: Path, profile: str) -> _Keys:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"s3.sign.credentials_file: cannot read {path}: {exc.strerror}") from exc
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"s3.sign.credentials_file: {path} is not an AWS credentials file: {exc}") from exc
    if not parser.has_section(profile):
        raise ConfigError(f"s3.sign.credentials_file: {path} has no [{profile}] profile")
    section = parser[profile]
    key_id = section.get("aws_access_key_id", "").strip()
    secret = section.get("aws_secret_access_key", "").strip()
    if not key_id or not secret:
        raise ConfigError(
            f"s3.sign.credentials_file: [{profile}] in {path} needs aws_access_key_id and aws_secret_access_key"
        )
    token = section.get("aws_session_token", "").strip() or None
    return _Keys(key_id, secret, token)


class RequestSigner:
    """Signs forwarded requests (`sign`) after refusing what cannot be re-signed (`check`)."""

    def __init__(
        self, config: SigningConfig, region: str, credentials: CredentialSource,
        *, hosts: HostReader | None = None, upstream_host: str | None = None,
    ) -> None:
        """`hosts`: how the caller's Host is read; `upstream_host`: the Host to send instead (``rewrite_host``)."""
        # botocore is imported only when re-sign mode is on (it costs ~15 MiB and ~0.2 s).
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest, HTTPHeaders
        from botocore.credentials import Credentials as BotoCredentials

        class _Signer(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
            # The payload hash is decided by `RequestSigner`, never by reading a body.
            def payload(self, request: Any) -> str:
                return str(request.context["payload"])

        self._auth_class = _Signer
        self._request_class = AWSRequest
        self._headers_class = HTTPHeaders
        self._credentials_class = BotoCredentials
        self._credentials = credentials
        self._service = config.service
        self._region = region
        self._cached: tuple[_Keys, Credentials] | None = None
        self._hosts = hosts or HostReader(S3Settings(sign=config))
        self._upstream_host = upstream_host

    def check(self, target: str, headers: MultiMapping[str]) -> None:
        """Refuse a request whose signature the proxy cannot replace. Raises `BadRequest`."""
        query = target.partition("?")[2]
        if query:
            for pair in query.split("&"):
                name = unquote_to_bytes(pair.partition("=")[0]).decode("utf-8", "replace").lower()
                if name in _PRESIGN_PARAMS:
                    raise BadRequest(
                        "this proxy signs requests to the storage server itself, so a presigned URL's "
                        "signature is not accepted: send the request with a token instead"
                    )
        for value in headers.getall("X-Amz-Content-SHA256", ()):
            if value.strip().startswith(_CHUNK_SIGNED):
                raise BadRequest(
                    "chunk-signed uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) cannot be re-signed by "
                    "this proxy: turn off payload signing in the client or use UNSIGNED-PAYLOAD"
                )

    def rewrite(self, headers: CIMultiDict[str], target: str) -> str:
        """Make the request path-style: set Host, and return the request-target to forward and sign.

        Runs before the signed tag binds Host and target, and before `sign`. A
        virtual-hosted request's target gets its bucket in front (``/KEY?Q`` ->
        ``/BUCKET/KEY?Q``, the rest byte for byte); its Host becomes the endpoint
        it was sent under, or the storage server's own name with ``rewrite_host``.
        """
        bucket, endpoint = self._hosts.read(headers)   # as the Host was read when the request was decided
        host = self._upstream_host or endpoint
        if headers.get("Host") != host:
            headers["Host"] = host
        if bucket is None:
            return target
        path, question, query = target.partition("?")
        # Path-style, "/" alone (the bucket itself) is "/BUCKET"; "/KEY" and "//KEY" keep every byte.
        return f"/{bucket}{'' if path == '/' else path}{question}{query}"

    def sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        """Replace the caller's signature in `headers` (forwarded as they are) with the proxy's."""
        payloads = headers.getall("X-Amz-Content-SHA256", ())
        payload = payloads[0].strip() if len(payloads) == 1 else UNSIGNED_PAYLOAD
        if payload not in _KEPT_PAYLOADS and not _SHA256_HEX.fullmatch(payload):
            payload = UNSIGNED_PAYLOAD
        for name in _CALLER_AUTH:
            headers.popall(name, None)
        host = headers.get("Host")
        if host is None:
            raise UpstreamFailure("the request has no Host header, so it cannot be signed")
        signed = self._headers_class()
        for name, value in headers.items():
            lower = name.lower()
            if lower in _SIGNED or lower.startswith("x-amz-"):
                signed[lower] = value   # HTTPHeaders: assignment adds; a repeated header keeps every value
        path, _, query = target.partition("?")
        url = f"http://{host}{canonical_path(path)}"
        if query:
            url += "?" + canonical_query(query)
        request = self._request_class(method=method, url=url, headers=signed)
        request.context["payload"] = payload
        request.headers["X-Amz-Content-SHA256"] = payload
        self._auth_class(self._boto_credentials(), self._service, self._region).add_auth(request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256"):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value

    def _boto_credentials(self) -> Credentials:
        keys = self._credentials.current()
        cached = self._cached
        if cached is None or cached[0] is not keys:
            cached = (keys, self._credentials_class(keys.access_key_id, keys.secret_access_key, keys.session_token))
            self._cached = cached
        return cached[1]


def canonical_path(raw: str) -> str:
    # S3 decodes the path once and signs it encoded again; a path the proxy accepted
    # decodes one way only (proxy.storage.target refuses the ambiguous ones).
    return quote(unquote_to_bytes(raw), safe=_PATH_SAFE) or "/"


def canonical_query(raw: str) -> str:
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        # A raw "+" never gets here: proxy.storage.target refuses it in the query.
        pairs.append((quote(unquote_to_bytes(name), safe=_QUERY_SAFE),
                      quote(unquote_to_bytes(value), safe=_QUERY_SAFE)))
    # botocore sorts and joins the pairs; they are given to it already encoded.
    return "&".join(f"{name}={value}" for name, value in pairs)


def request_signer(config: Config) -> RequestSigner | None:
    """The signer re-sign mode (`s3.sign`) asks for, or None. Raises `ConfigError` at start."""
    signing = config.s3.sign
    if signing is None:
        return None
    if config.upstream.api != "s3":
        raise ConfigError(f"s3.sign: re-sign mode signs S3 requests; upstream.api is {str(config.upstream.api)!r}")
    if config.identity.access_keys:
        # Access-key callers are identified by their own signatures, which the storage server checks
        # too; re-signed requests carry the proxy's instead, and one proxy does not do both.
        raise ConfigError("s3.sign: re-sign mode cannot be used with identity.access_keys: access-key callers "
                          "sign their own requests for the storage server, and re-signing would replace them")
    region = signing.region or config.region
    if region is None:
        raise ConfigError("s3.sign.region: re-sign mode needs the signing region (s3.sign.region or region)")
    upstream_host = urlsplit(config.upstream.url).netloc if signing.rewrite_host else None
    return RequestSigner(signing, region, CredentialSource(signing), hosts=HostReader(config.s3),
                         upstream_host=upstream_host)
