"""Who is calling: the one entry point the server uses to identify a request.

A request is identified by a token when it carries one, and otherwise by the
network it comes from. A token that fails verification is a refusal: the
resolver never falls back to the network, so a bad token cannot be laundered
into a network identity. The issuer is picked from the token's (unverified)
``iss`` by exact match, and only that issuer's keys can verify it.

Everything that can be prepared is prepared at construction (issuer table,
network index, trusted proxies); `start` loads JWKS files (fatal on error)
and does a first fetch of JWKS URLs (not fatal: that issuer's tokens are
refused until a fetch succeeds).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from multidict import MultiMapping

from proxy.config import IdentityConfig
from proxy.domain import Caller
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity.extract import find_token
from proxy.identity.forwarded import ClientLocator
from proxy.identity.jwks import FileKeys, KeySource, UrlKeys
from proxy.identity.networks import NetworkTable
from proxy.identity.unverified import peek
from proxy.identity.verifier import IssuerVerifier, VerifiedClaims

NO_IDENTITY = "no identity: send a token in Authorization: Bearer or X-Bailiwick-Token"
UNKNOWN_ISSUER = "the token's issuer (iss) is not one this proxy trusts"
# Verified tokens remembered at once; the oldest is forgotten first.
TOKEN_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _Verified:
    verifier: IssuerVerifier
    claims: VerifiedClaims


@dataclass(frozen=True, slots=True)
class Identified:
    """A verified caller, and the headers that carried its token (never forwarded)."""

    caller: Caller
    token_headers: frozenset[str]


class IdentityResolver:
    """Turns a request's headers and peer address into a verified `Caller`."""

    def __init__(self, config: IdentityConfig, *, clock: Callable[[], float] = time.time) -> None:
        """Prepare every issuer and network lookup. Raises `ConfigError`."""
        self._files: list[FileKeys] = []
        self._urls: list[UrlKeys] = []
        self._verifiers: dict[str, IssuerVerifier] = {}
        for issuer in config.jwt:
            if issuer.issuer in self._verifiers:
                raise ConfigError(f"identity.jwt: issuer {issuer.issuer} is configured twice")
            given = (issuer.jwks_file, issuer.jwks_url, issuer.hs256_secret)
            if sum(source is not None for source in given) != 1:
                raise ConfigError(
                    f"identity.jwt issuer {issuer.issuer}: set exactly one of jwks_file, jwks_url "
                    "or hs256_secret_env"
                )
            keys: KeySource | None = None
            if issuer.jwks_file is not None:
                file_keys = FileKeys(issuer, issuer.jwks_file)
                self._files.append(file_keys)
                keys = file_keys
            elif issuer.jwks_url is not None:
                url_keys = UrlKeys(issuer, issuer.jwks_url, clock=clock)
                self._urls.append(url_keys)
                keys = url_keys
            self._verifiers[issuer.issuer] = IssuerVerifier(issuer, keys, clock=clock)
        self._networks = NetworkTable(config.networks)
        self._locator = ClientLocator(config.trusted_proxies)
        self._session: aiohttp.ClientSession | None = None
        self._clock = clock
        # Verifying a signature costs far more than the rest of a request, and a client
        # sends the same token many times: a verified token is remembered, by its
        # SHA-256, until it expires or its key is rotated out. Refusals are not remembered.
        self._verified: dict[bytes, _Verified] = {}

    async def start(self) -> None:
        """Load JWKS files and fetch JWKS URLs once.

        A JWKS file that cannot be used raises `ConfigError` naming it; a failed
        fetch is logged and that issuer's tokens are refused until one succeeds.
        """
        for file_keys in self._files:
            await file_keys.load()
        if self._urls and self._session is None:
            session = self._session = aiohttp.ClientSession()
            await asyncio.gather(*(url_keys.start(session) for url_keys in self._urls))

    async def close(self) -> None:
        """Stop background fetches and close the HTTP session."""
        for url_keys in self._urls:
            await url_keys.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def identify(self, headers: MultiMapping[str], peer: str | None) -> Identified:
        """The caller of a request with these `headers` from `peer`. Raises `Unauthenticated`."""
        presented = find_token(headers)
        client = self._locator.locate(headers, peer)
        if presented is not None:
            claims = await self._verify(presented.token)
            caller = Caller(
                subject=claims.subject,
                jurisdiction=claims.jurisdiction,
                source=client.source,
                method="jwt",
            )
            return Identified(caller=caller, token_headers=frozenset({presented.header}))
        rule = self._networks.lookup(client.address) if client.address is not None else None
        if rule is None:
            raise Unauthenticated(NO_IDENTITY)
        caller = Caller(
            subject=f"network:{rule.cidr}",
            jurisdiction=rule.jurisdiction,
            source=client.source,
            method="network",
        )
        return Identified(caller=caller, token_headers=frozenset())

    async def _verify(self, token: str) -> VerifiedClaims:
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if self._clock() < known.claims.valid_until and await known.verifier.key_is_current(
                known.claims.kid, known.claims.key
            ):
                return known.claims
            del self._verified[digest]
        unverified = peek(token)
        verifier = self._verifiers.get(unverified.issuer)
        if verifier is None:
            raise Unauthenticated(UNKNOWN_ISSUER)
        claims = await verifier.verify(token, unverified.header)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = _Verified(verifier, claims)
        return claims
