"""Where an issuer's public keys come from: a JWKS file, or a JWKS URL kept fresh.

A file is read once at start; a broken file stops the proxy (`ConfigError`).

A URL is fetched at start and then kept fresh without ever holding up the
event loop or letting callers drive traffic at the identity provider:

- a token whose ``kid`` is unknown triggers at most one fetch per cooldown
  (``jwks_refresh_cooldown_seconds``), however many such tokens arrive and
  whatever kids they name; nothing is remembered per unknown kid, so random
  kids cannot grow memory;
- concurrent requests that need a fetch share the one in flight;
- keys older than ``jwks_max_age_seconds`` are refreshed in the background by
  the first request that notices, which is answered with the keys at hand;
- a failed fetch (error status, timeout, oversized or unusable document) is
  logged and changes nothing: the last good keys stay in use. Until a first
  fetch succeeds, the issuer's tokens are refused.

Time comes from an injected clock, so cooldowns and ages can be tested
without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import aiohttp
from jwt import PyJWK

from proxy.config import JwtIssuer
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity.keyset import MAX_JWKS_BYTES, JwksError, KeySet, parse_jwks

log = logging.getLogger(__name__)

UNKNOWN_KID = "the token's key id (kid) is not one of the issuer's keys"
NO_KID = "the token names no key id (kid) and the issuer has more than one key"
NO_KEYS = "the issuer's keys are not available at the moment; try again later"


class KeySource(Protocol):
    """The public keys of one issuer."""

    async def key_for(self, kid: str | None) -> PyJWK:
        """The key named `kid` (or the only key, for None). Raises `Unauthenticated`."""
        ...

    def key_at_hand(self, kid: str | None) -> PyJWK | None:
        """What `key_for` returns when it needs no fetch: the key among those held, or None.

        Synchronous, so that re-checking a remembered token's key costs no await;
        None means only `key_for` can say (it may fetch, or refuse).
        """
        ...


def _pick(keys: KeySet | None, kid: str | None) -> PyJWK:
    if keys is None:
        raise Unauthenticated(NO_KEYS)
    found = keys.find(kid)
    if found is None:
        raise Unauthenticated(UNKNOWN_KID if kid is not None else NO_KID)
    return found


class FileKeys:
    """Keys read once from a JWKS file."""

    def __init__(self, issuer: JwtIssuer, path: Path) -> None:
        self._issuer = issuer
        self._path = path
        self._keys: KeySet | None = None

    async def load(self) -> None:
        """Read and parse the file. Raises `ConfigError` naming the file."""
        self._keys = await asyncio.to_thread(self._read)

    def _read(self) -> KeySet:
        try:
            with self._path.open("rb") as handle:
                # One byte over the bound is enough to know the file is too large.
                document = handle.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"{self._path}: cannot read the JWKS file of issuer {self._issuer.issuer}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            return parse_jwks(document, self._issuer.algorithms)
        except JwksError as exc:
            raise ConfigError(
                f"{self._path}: the JWKS file of issuer {self._issuer.issuer} cannot be used: {exc}"
            ) from exc

    async def key_for(self, kid: str | None) -> PyJWK:
        return _pick(self._keys, kid)

    def key_at_hand(self, kid: str | None) -> PyJWK | None:
        return self._keys.find(kid) if self._keys is not None else None


class UrlKeys:
    """Keys fetched from a JWKS URL, refreshed on demand and in the background."""

    def __init__(
        self, issuer: JwtIssuer, url: str, *, clock: Callable[[], float],
        on_fetch: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._issuer = issuer
        self._url = url
        self._clock = clock
        # Told of every fetch: (issuer, succeeded), for the metrics.
        self._on_fetch = on_fetch
        self._session: aiohttp.ClientSession | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=issuer.jwks_fetch_timeout_seconds)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Do the first fetch; a failure is logged, not raised."""
        self._session = session
        await asyncio.shield(self._fetch_now())

    async def close(self) -> None:
        """Stop any fetch in flight (the session belongs to the caller)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
        self._session = None

    async def wait_idle(self) -> None:
        """Wait for a fetch in flight, if any (for tests and orderly shutdown)."""
        task = self._inflight
        if task is not None:
            await asyncio.shield(task)

    async def key_for(self, kid: str | None) -> PyJWK:
        found = self.key_at_hand(kid)
        if found is not None:
            return found
        keys = self._keys
        if keys is not None and kid is None:
            # More than one key and no kid: a refetch would not say which to use.
            raise Unauthenticated(NO_KID)
        if self._inflight is None and not self._cooldown_over():
            return _pick(keys, kid)
        await asyncio.shield(self._fetch_now())
        return _pick(self._keys, kid)

    def key_at_hand(self, kid: str | None) -> PyJWK | None:
        keys = self._keys
        found = keys.find(kid) if keys is not None else None
        if found is not None:
            # Every use of a key, awaited or not, may start the background refresh of old keys.
            self._refresh_if_old()
        return found

    def _cooldown_over(self) -> bool:
        if self._last_attempt is None:
            return True
        elapsed = self._clock() - self._last_attempt
        # A clock that went backwards must not freeze the keys for good.
        return elapsed < 0 or elapsed >= self._issuer.jwks_refresh_cooldown_seconds

    def _refresh_if_old(self) -> None:
        if self._inflight is not None or self._session is None:
            return
        age = self._clock() - self._fetched_at
        if age >= self._issuer.jwks_max_age_seconds and self._cooldown_over():
            self._begin()

    def _fetch_now(self) -> asyncio.Task[None]:
        """The fetch in flight, starting one if there is none."""
        return self._inflight if self._inflight is not None else self._begin()

    def _begin(self) -> asyncio.Task[None]:
        self._last_attempt = self._clock()
        task = asyncio.create_task(self._refresh(), name=f"jwks refresh {self._url}")
        self._inflight = task
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh(self) -> None:
        try:
            keys = await self._download()
        except Exception as exc:
            # Whatever went wrong, the outcome is the same: keep what we have, say why.
            reason = str(exc) or type(exc).__name__
            kept = "keeping the previous keys" if self._keys is not None else "no keys yet"
            log.warning("JWKS fetch for issuer %s from %s failed (%s); %s",
                        self._issuer.issuer, self._url, reason, kept)
            if self._on_fetch is not None:
                self._on_fetch(self._issuer.issuer, False)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        if self._on_fetch is not None:
            self._on_fetch(self._issuer.issuer, True)
        log.info("JWKS for issuer %s loaded from %s: %d usable keys",
                 self._issuer.issuer, self._url, len(keys.keys))

    async def _download(self) -> KeySet:
        session = self._session
        if session is None:
            raise JwksError("the resolver is not started")
        async with asyncio.timeout(self._issuer.jwks_fetch_timeout_seconds):
            async with session.get(
                self._url,
                timeout=self._timeout,
                # A redirect could lead anywhere; the operator names the one URL to trust.
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise JwksError(f"HTTP status {response.status}")
                if response.content_length is not None and response.content_length > MAX_JWKS_BYTES:
                    raise JwksError(f"the document is over {MAX_JWKS_BYTES} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError(f"the document is over {MAX_JWKS_BYTES} bytes")
        # Parsing up to a megabyte and building keys is work better kept off the event loop.
        return await asyncio.to_thread(parse_jwks, bytes(body), self._issuer.algorithms)
