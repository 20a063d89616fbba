"""Who is calling: the one entry point the server uses to identify a request.

A request is identified by a token when it carries one; otherwise by the S3
access key it is signed with, when the operator mapped that key and its
signature verifies with the key's secret (`proxy.identity.accesskeys`; a
browser's form upload is signed by the POST policy in its form, whose fields
the gateway reads first and passes in, `proxy.identity.postpolicy`); a
signature that does not verify is a refusal, never a fall back to the
network; otherwise by the network it comes from (`identity.networks`); otherwise, only with
`identity.geoip.use_as_jurisdiction`, by the country its address is in, when the database knows
it (`proxy.identity.geoip`; "unknown" identifies nobody; the database is asked at most once a request,
whichever sources are tried). A token that fails verification is a refusal: the
resolver never falls back to the network, so a bad token cannot be laundered
into a network identity. The issuer is picked from the token's (unverified)
``iss`` by exact match, and only that issuer's keys can verify it.

Behind a mesh sidecar (``identity.xfcc``), the workload certificate the mesh
proxy vouched for in X-Forwarded-Client-Cert (`proxy.identity.xfcc`) is a
source like a token: it wins over the network, and a token or access key may
agree with it; one naming another jurisdiction is refused as ambiguous.
A client certificate the listener verified (``listen_tls.client_ca``,
`proxy.identity.mtls`) is the same kind of source, combined the same way,
except from a trusted mesh peer with ``identity.xfcc`` on: that certificate is
the mesh proxy's own, and the header names the caller (Envoy's model). Without
``identity.workloads`` rules a client certificate admits the connection only.

Everything that can be prepared is prepared at construction (issuer table,
network index, trusted proxies); `start` loads JWKS files (fatal on error)
and does a first fetch of JWKS URLs (not fatal: that issuer's tokens are
refused until a fetch succeeds).

A verified token is remembered (by its SHA-256) until it expires or its key
is rotated out, and every request runs through `identify`, so a request
with a remembered token is answered without an await and without objects
it does not need: the token's shape is not re-scanned (it is the very token
that passed), the key is re-checked among the keys at hand, and the
`Identified` built last for that token is reused while the client's source
and the token's header are the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import aiohttp
from multidict import MultiMapping

from proxy.config import IdentityConfig
from proxy.domain import Caller
from proxy.errors import AmbiguousIdentity, ConfigError, NoIdentity, Unauthenticated, UnknownAccessKey
from proxy.identity.accesskeys import AccessKeyTable, SignedForm
from proxy.identity.bodycheck import BodyCheck
from proxy.identity.extract import AUTHORIZATION, TOKEN_HEADER, check_shape, token_in
from proxy.identity.forwarded import Client, ClientLocator
from proxy.identity.geoip import UNKNOWN, GeoIp
from proxy.identity.jwks import FileKeys, KeySource, UrlKeys
from proxy.identity.mtls import certificate_identity
from proxy.identity.networks import NetworkTable
from proxy.identity.ownsignature import CallerSignature
from proxy.identity.postpolicy import PolicyLimits
from proxy.identity.unverified import peek
from proxy.identity.verifier import IssuerVerifier, VerifiedClaims
from proxy.identity.workload import WorkloadTable
from proxy.identity.xfcc import XfccReader
from proxy.peercert import PeerCertificate

NO_IDENTITY = "no identity: send a token in Authorization: Bearer or X-Bailiwick-Token"
NO_IDENTITY_OR_KEY = ("no identity: send a token in Authorization: Bearer or X-Bailiwick-Token, "
                      "or sign with an access key this proxy knows")
UNKNOWN_ISSUER = "the token's issuer (iss) is not one this proxy trusts"
# Methods that only stand in when nothing names the caller: a workload's certificate is more specific.
FALLBACK_METHODS = frozenset({"network", "geoip"})
# Verified tokens remembered at once; the oldest is forgotten first.
TOKEN_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Identified:
    """A verified caller, and the headers that carried its token (never forwarded).

    `body`: what the body must be for the caller's signature to hold (access keys
    only); the proxy checks it as the body is forwarded. `form_limits`: the file
    size a form upload's POST policy allows, when the caller was identified by it.
    `signature`: the caller's verified SigV4 header signature (access keys only),
    which the proxy makes again for the page requests of a paged ListBuckets.
    """

    caller: Caller
    token_headers: frozenset[str]
    body: BodyCheck | None = None
    form_limits: PolicyLimits | None = None
    signature: CallerSignature | None = None


# Built once: the token headers of every Identified are one of these.
_CARRIED_BY = {AUTHORIZATION: frozenset({AUTHORIZATION}), TOKEN_HEADER: frozenset({TOKEN_HEADER})}
_NO_TOKEN_HEADERS: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Verified:
    """A remembered verification, and the answer last built from it (immutable, so shareable)."""

    verifier: IssuerVerifier
    claims: VerifiedClaims
    last: Identified | None = None


class _Sighting:
    """Where one request's client is seen from: GeoIP is asked on the first question, and only then.

    One request may be located on two paths (a workload certificate, then whatever else the request
    presents, which GeoIP may have been asked about already): both read the one lookup, so
    ``bailiwick_geoip_lookups_total`` counts requests. The client is the same on both paths (it is a
    function of the request's peer and headers), so the first one asked about is the one looked up.
    """

    __slots__ = ("_country", "_geoip")

    def __init__(self, geoip: GeoIp) -> None:
        self._geoip = geoip
        self._country: str | None = None

    def country(self, client: Client) -> str:
        """The ISO code of the country `client` is in, or ``unknown`` (`GeoIp.country`), looked up once."""
        if self._country is None:
            self._country = self._geoip.country(client.address)
        return self._country


class IdentityResolver:
    """Turns a request's headers and peer address into a verified `Caller`."""

    def __init__(
        self, config: IdentityConfig, *, clock: Callable[[], float] = time.time,
        on_jwks_fetch: Callable[[str, bool], None] | None = None, storage_bearer: bool = False,
        virtual_bucket: Callable[[MultiMapping[str]], str | None] | None = None,
        on_geoip_lookup: Callable[[str], None] | None = None,
    ) -> None:
        """Prepare every issuer and network lookup. Raises `ConfigError`.

        `virtual_bucket`: the bucket a virtual-hosted S3 Host names (SigV2 signs it).

        `on_jwks_fetch` is told of every JWKS URL fetch: (issuer, succeeded).
        `on_geoip_lookup` is told how each GeoIP lookup ended (`proxy.identity.geoip.Lookup`).
        `storage_bearer`: the storage API takes Bearer tokens of its own (Azure
        Blob with Entra ID); see `proxy.identity.extract.token_in`.
        """
        self._storage_bearer = storage_bearer
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
                url_keys = UrlKeys(issuer, issuer.jwks_url, clock=clock, on_fetch=on_jwks_fetch)
                self._urls.append(url_keys)
                keys = url_keys
            self._verifiers[issuer.issuer] = IssuerVerifier(issuer, keys, clock=clock)
        self._networks = NetworkTable(config.networks)
        self._access_keys = AccessKeyTable(config.access_keys, config.access_key_region, clock=clock,
                                           virtual_bucket=virtual_bucket)
        self._no_identity = NO_IDENTITY_OR_KEY if self._access_keys else NO_IDENTITY
        self._locator = ClientLocator(config.trusted_proxies)
        self._workloads = WorkloadTable(config.workloads)
        self._xfcc = XfccReader(config.xfcc.trusted_peers, self._workloads) if config.xfcc.enabled else None
        geoip = config.geoip
        self._geoip = GeoIp(geoip.database, on_lookup=on_geoip_lookup) if geoip is not None else None
        # The last resort, after tokens, access keys and networks; off unless asked for.
        self._geoip_identifies = geoip is not None and geoip.use_as_jurisdiction
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

    async def identify(
        self, headers: MultiMapping[str], peer: str | None, target: str = "", method: str = "GET",
        certificate: PeerCertificate | None = None, form: SignedForm | None = None,
    ) -> Identified:
        """The caller of a `method` request for `target` with these `headers` from `peer`. Raises `Unauthenticated`.

        `certificate`: the client certificate the listener's handshake verified (None: none). `form`: a form
        upload's fields, whose signed POST policy names the caller's access key (it signs nothing else).
        """
        seen = _Sighting(self._geoip) if self._geoip is not None else None
        workload = self._xfcc.workload(headers, peer) if self._xfcc is not None else None
        if workload is not None:
            return await self._with_workload(workload.spiffe_id, workload.jurisdiction, "xfcc",
                                             headers, peer, target, method, seen, form)
        # Without workload rules a client certificate only admits the connection (the CA vouched for it).
        # From a trusted mesh peer the certificate is the mesh proxy's own, not the caller's.
        if certificate is not None and self._workloads and not (self._xfcc is not None and self._xfcc.trusts(peer)):
            named, jurisdiction = certificate_identity(certificate, self._workloads)
            return await self._with_workload(named, jurisdiction, "mtls", headers, peer, target, method, seen, form)
        return await self._identify(headers, peer, target, method, seen, form)

    async def _with_workload(
        self, named: str, jurisdiction: str, by: str, headers: MultiMapping[str], peer: str | None, target: str,
        method: str, seen: _Sighting | None, form: SignedForm | None,
    ) -> Identified:
        """The caller a verified certificate (`by`: xfcc or mtls) names; a token or access key may agree, not differ."""
        client = self._locator.locate(headers, peer)
        own = Identified(caller=Caller(subject=named, jurisdiction=jurisdiction,
                                       source=client.source, method=by), token_headers=_NO_TOKEN_HEADERS)
        try:
            other = await self._identify(headers, peer, target, method, seen, form)
        except (NoIdentity, UnknownAccessKey):
            # Nothing else was presented (a key this proxy holds no secret for identifies nobody either).
            return self._located(own, client, seen)   # what GeoIP answered while trying the rest, if it was asked
        if other.caller.method in FALLBACK_METHODS:
            return replace(own, caller=replace(own.caller, location=other.caller.location))
        if other.caller.jurisdiction != jurisdiction:
            raise AmbiguousIdentity(
                f"the workload certificate ({named}) names {jurisdiction} and the "
                f"{other.caller.method} names {other.caller.jurisdiction}: refused, never resolved")
        return other

    async def _identify(
        self, headers: MultiMapping[str], peer: str | None, target: str, method: str, seen: _Sighting | None,
        form: SignedForm | None = None,
    ) -> Identified:
        """The caller by token, access key or network alone."""
        found = token_in(headers, storage_bearer=self._storage_bearer)
        if found is None:
            client = self._locator.locate(headers, peer)
            if self._access_keys:
                limits: PolicyLimits | None = None
                try:
                    if form is None:
                        verified = self._access_keys.authenticate(method, target, headers)
                    else:
                        signed = self._access_keys.authenticate_form(form)
                        verified, limits = (None, None) if signed is None else signed
                except UnknownAccessKey as unknown:
                    # A key this proxy holds no secret for identifies nobody: the network may.
                    try:
                        return self._by_network(client, seen)
                    except NoIdentity:
                        raise UnknownAccessKey(f"{unknown.message}; {self._no_identity}") from None
                if verified is not None:
                    caller = Caller(subject=verified.rule.subject, jurisdiction=verified.rule.jurisdiction,
                                    source=client.source, method="access_key")
                    return self._located(Identified(caller=caller, token_headers=_NO_TOKEN_HEADERS,
                                                    body=verified.body, form_limits=limits,
                                                    signature=verified.signature), client, seen)
            return self._by_network(client, seen)
        token, header = found
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is None:
            # Refusals keep their order: a malformed token before the client's address is read.
            # A remembered token is the very string that passed this check before.
            check_shape(token, header)
        client = self._locator.locate(headers, peer)
        if known is not None and self._still_valid(known):
            last = known.last
            if last is not None and last.caller.source == client.source and header in last.token_headers:
                if seen is None:
                    return last
                known.last = identified = self._located(last, client, seen)   # the database may have changed
                return identified
            entry = known
        else:
            entry = await self._verify(token, digest, known)
        entry.last = identified = self._located(self._by_token(entry.claims, header, client), client, seen)
        return identified

    @staticmethod
    def _by_token(claims: VerifiedClaims, header: str, client: Client) -> Identified:
        caller = Caller(subject=claims.subject, jurisdiction=claims.jurisdiction, source=client.source, method="jwt")
        return Identified(caller=caller, token_headers=_CARRIED_BY[header])

    def _by_network(self, client: Client, seen: _Sighting | None) -> Identified:
        rule = self._networks.lookup(client.address) if client.address is not None else None
        if rule is None:
            return self._by_location(client, seen)
        caller = Caller(
            subject=f"network:{rule.cidr}",
            jurisdiction=rule.jurisdiction,
            source=client.source,
            method="network",
        )
        return self._located(Identified(caller=caller, token_headers=_NO_TOKEN_HEADERS), client, seen)

    @staticmethod
    def _located(identified: Identified, client: Client, seen: _Sighting | None) -> Identified:
        """`identified` with the country its address is in (`Caller.location`), with `identity.geoip`."""
        if seen is None:
            return identified
        location = seen.country(client)
        if identified.caller.location == location:
            return identified
        return replace(identified, caller=replace(identified.caller, location=location))

    def _by_location(self, client: Client, seen: _Sighting | None) -> Identified:
        if seen is None or not self._geoip_identifies:
            raise NoIdentity(self._no_identity)
        country = seen.country(client)
        if country == UNKNOWN:
            raise NoIdentity(f"{self._no_identity} (the client address's country is unknown)")
        caller = Caller(subject=f"geoip:{country}", jurisdiction=country, source=client.source, method="geoip",
                        location=country)
        return Identified(caller=caller, token_headers=_NO_TOKEN_HEADERS)

    def _still_valid(self, known: _Verified) -> bool:
        """Whether a remembered verification holds now, decided from what is at hand.

        False also when only a fetch of the issuer's keys could tell: `_verify`
        then asks the same question the awaited way.
        """
        claims = known.claims
        return (
            self._clock() < claims.valid_until
            and known.verifier.key_is_current_at_hand(claims.kid, claims.key) is True
        )

    async def _verify(self, token: str, digest: bytes, known: _Verified | None) -> _Verified:
        """The remembered verification of `token`, made now unless `known` still holds. Raises `Unauthenticated`."""
        if known is not None:
            if self._clock() < known.claims.valid_until and await known.verifier.key_is_current(
                known.claims.kid, known.claims.key
            ):
                return known
            if self._verified.get(digest) is known:
                del self._verified[digest]
        unverified = peek(token)
        verifier = self._verifiers.get(unverified.issuer)
        if verifier is None:
            raise Unauthenticated(UNKNOWN_ISSUER)
        claims = await verifier.verify(token, unverified.header)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        entry = self._verified[digest] = _Verified(verifier, claims)
        return entry
