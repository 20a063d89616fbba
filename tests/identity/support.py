"""Test helpers for identity: real keys, tokens (signed or forged), a JWKS server, a clock.

Keys are generated with cryptography; tokens are signed with pyjwt, or forged
by hand where pyjwt would refuse to make them (``alg: none``, HMAC with a PEM).
The JWKS server is a real aiohttp server on 127.0.0.1 that counts requests and
can fail, hold or hang on command, so tests observe fetches instead of timing them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms
from multidict import CIMultiDict, CIMultiDictProxy

ISSUER = "https://idp.example.ie"
AUDIENCE = "bailiwick"
NOW = 1_700_000_000.0
SECRET = b"0123456789abcdef" * 4  # 64 bytes: pyjwt's minimum for every HMAC algorithm

ARRIVAL_SAFETY_NET_SECONDS = 10.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key with the kid and algorithm it is published under."""

    kid: str | None
    alg: str
    private: PrivateKey

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        if self.kid is not None:
            jwk["kid"] = self.kid
        jwk.update({"alg": self.alg, "use": "sig"})
        jwk.update(extra)
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_der(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header} if self.kid is not None else dict(header)
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)

    def sign_raw(self, header: bytes, payload: bytes) -> str:
        """A token validly signed over exactly these header and payload bytes (which pyjwt cannot make)."""
        signing_input = f"{b64(header)}.{b64(payload)}"
        algorithm = get_default_algorithms()[self.alg]
        signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(self.private))
        return f"{signing_input}.{b64(signature)}"


def rsa_key(kid: str | None = "rsa-1", bits: int = 2048, alg: str = "RS256") -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str | None = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str | None = "ed-1") -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: SigningKey) -> bytes:
    return json.dumps({"keys": [key.public_jwk() for key in keys]}).encode()


def claims(now: float = NOW, **changes: Any) -> dict[str, Any]:
    """Good claims at `now`; a change to None removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice@example.ie",
        "jurisdiction": "IE",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def forge(header: dict[str, Any], payload: Any, signature: bytes = b"not-a-signature") -> str:
    """A token with exactly this header and payload, and any signature."""
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


def forge_hmac(header: dict[str, Any], payload: Any, secret: bytes) -> str:
    """A token HMAC-signed with `secret`, whatever the secret looks like (pyjwt refuses PEMs)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    signature = hmac.new(secret, signing_input.encode(), digest[header["alg"]]).digest()
    return f"{signing_input}.{b64(signature)}"


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """Request headers as aiohttp hands them to a handler."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def bearer(token: str) -> CIMultiDictProxy[str]:
    return headers(("Authorization", f"Bearer {token}"))


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksServer:
    """What the JWKS endpoint serves, and what it saw. Change the fields between requests."""

    document: bytes = b'{"keys": []}'
    status: int = 200
    hold: bool = False  # wait for `release` before answering
    stream_bytes: int = 0  # if set: send this many bytes of junk, chunked, without a length
    redirect_to: str | None = None  # if set: answer every path but this one with a redirect to it
    streamed_all: bool = False
    hits: int = 0
    paths: list[str] = field(default_factory=list)
    url: str = ""
    base: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _arrivals: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.paths.append(request.path)
        async with self._arrivals:
            self._arrivals.notify_all()
        if self.hold:
            await self.release.wait()
        if request.path == "/redirect":
            raise web.HTTPFound(location="/jwks")
        if self.redirect_to is not None and request.path != self.redirect_to:
            raise web.HTTPFound(location=self.redirect_to)
        if self.stream_bytes:
            return await self._stream(request)
        return web.Response(body=self.document, status=self.status, content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            for _ in range(self.stream_bytes // len(chunk)):
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            return response  # the client hung up, as it should
        self.streamed_all = True
        return response

    async def wait_for_hits(self, count: int) -> None:
        """Return once `count` requests have arrived (they may still be held).

        The timeout is only a safety net, so that a request that never comes
        fails the test instead of hanging it; nothing is timed.
        """
        async with asyncio.timeout(ARRIVAL_SAFETY_NET_SECONDS), self._arrivals:
            await self._arrivals.wait_for(lambda: self.hits >= count)


async def start_jwks_server(state: JwksServer) -> TestServer:
    app = web.Application()
    app.router.add_get("/{name}", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base = str(server.make_url("/")).rstrip("/")
    state.url = f"{state.base}/jwks"
    return server
