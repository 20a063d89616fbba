"""Reading the `identity` section: token issuers, network rules and access keys.

Secrets are never in the file: it names the environment variable or the
mounted file that holds each one, and both are read (and checked) here, so a
proxy never starts with a secret it could not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.credentials import ACCESS_KEY_ID, access_key_secret_problem, read_secret_file
from proxy.config.geoip import read_geoip
from proxy.config.model import (
    DEFAULT_HMAC_ALGORITHMS,
    DEFAULT_PUBLIC_KEY_ALGORITHMS,
    HMAC_ALGORITHMS,
    PUBLIC_KEY_ALGORITHMS,
    AccessKeyRule,
    IdentityConfig,
    JwtIssuer,
    NetworkRule,
)
from proxy.config.reader import Reader
from proxy.config.workloads import MatchKind, read_workloads, read_xfcc

MAX_LEEWAY_SECONDS = 60.0
# A token's longest life may be set to at most a year.
MAX_TOKEN_LIFETIME_SECONDS = 366 * 86400.0

IDENTITY_KEYS = frozenset({"jwt", "networks", "trusted_proxies", "access_keys", "access_key_region", "workloads",
                           "xfcc", "geoip"})
NETWORK_KEYS = frozenset({"cidr", "jurisdiction"})
ACCESS_KEY_KEYS = frozenset({"access_key_id", "jurisdiction", "subject", "secret_access_key_env",
                             "secret_access_key_file"})
ISSUER_KEYS = frozenset({"issuer", "audience", "jwks_file", "jwks_url", "hs256_secret_env", "jurisdiction_claim",
                         "subject_claim", "algorithms", "leeway_seconds", "jwks_refresh_cooldown_seconds",
                         "jwks_max_age_seconds", "jwks_fetch_timeout_seconds", "max_lifetime_seconds"})


def read_identity(r: Reader, value: Any, region: str | None = None) -> IdentityConfig:
    """The `identity` section; `region` is the proxy's, the default region access keys sign for."""
    raw = r.mapping(value, "identity", IDENTITY_KEYS)
    issuers = raw.get("jwt") or []
    if not isinstance(issuers, list):
        raise r.fail("identity.jwt", "expected a list of issuers")
    networks = raw.get("networks") or []
    if not isinstance(networks, list):
        raise r.fail("identity.networks", "expected a list of {cidr, jurisdiction}")
    proxies = raw.get("trusted_proxies") or []
    if not isinstance(proxies, list):
        raise r.fail("identity.trusted_proxies", "expected a list of networks")
    seen: set[str] = set()
    parsed = []
    for i, item in enumerate(issuers):
        issuer = _issuer(r, item, f"identity.jwt[{i}]")
        if issuer.issuer in seen:
            raise r.fail(f"identity.jwt[{i}].issuer", f"{issuer.issuer!r} is configured twice")
        seen.add(issuer.issuer)
        parsed.append(issuer)
    rules = []
    for i, item in enumerate(networks):
        key = f"identity.networks[{i}]"
        entry = r.mapping(item, key, NETWORK_KEYS)
        if "cidr" not in entry or "jurisdiction" not in entry:
            raise r.fail(key, "expected both cidr and jurisdiction")
        rules.append(NetworkRule(
            cidr=r.network(entry["cidr"], f"{key}.cidr"),
            jurisdiction=r.jurisdiction(entry["jurisdiction"], f"{key}.jurisdiction"),
        ))
    keys = raw.get("access_keys") or []
    if not isinstance(keys, list):
        raise r.fail("identity.access_keys", "expected a list of {access_key_id, jurisdiction, subject, "
                                             "secret_access_key_env or secret_access_key_file}")
    access_keys: dict[str, AccessKeyRule] = {}
    for i, item in enumerate(keys):
        key = f"identity.access_keys[{i}]"
        entry = r.mapping(item, key, ACCESS_KEY_KEYS)
        if "access_key_id" not in entry or "jurisdiction" not in entry:
            raise r.fail(key, "expected access_key_id and jurisdiction (and optionally subject)")
        key_id = r.string(entry["access_key_id"], f"{key}.access_key_id")
        if not ACCESS_KEY_ID.fullmatch(key_id):
            raise r.fail(f"{key}.access_key_id", "expected an access key id (1-128 visible ASCII characters, "
                                                 "none of / : , ; =)")
        if key_id in access_keys:
            raise r.fail(f"{key}.access_key_id", f"{key_id!r} is listed twice")
        secret, secret_file = _access_key_secret(r, entry, key)
        access_keys[key_id] = AccessKeyRule(
            access_key_id=key_id,
            jurisdiction=r.jurisdiction(entry["jurisdiction"], f"{key}.jurisdiction"),
            subject=r.string(entry.get("subject", f"access-key:{key_id}"), f"{key}.subject"),
            secret_access_key=secret,
            secret_access_key_file=secret_file,
        )
    key_region = raw.get("access_key_region")
    if key_region is not None:
        region = r.string(key_region, "identity.access_key_region")
    if access_keys and region is None:
        raise r.fail("identity.access_key_region",
                     "access keys are verified against the region callers sign for: set region "
                     "(or identity.access_key_region, e.g. us-east-1 for MinIO's default)")
    workloads = read_workloads(r, raw.get("workloads"))
    xfcc = read_xfcc(r, raw.get("xfcc"))
    if xfcc.enabled and not any(rule.kind is not MatchKind.SUBJECT for rule in workloads):
        raise r.fail("identity.xfcc.enabled", "X-Forwarded-Client-Cert is read by its SPIFFE ID: "
                                              "map IDs to jurisdictions in identity.workloads")
    return IdentityConfig(
        jwt=tuple(parsed),
        networks=tuple(rules),
        access_keys=tuple(access_keys.values()),
        access_key_region=region if access_keys else None,
        trusted_proxies=tuple(
            r.network(p, f"identity.trusted_proxies[{i}]") for i, p in enumerate(proxies)
        ),
        workloads=workloads,
        xfcc=xfcc,
        geoip=read_geoip(r, raw.get("geoip")),
    )


def _access_key_secret(r: Reader, entry: dict[str, Any], key: str) -> tuple[str | None, Path | None]:
    """The secret of one access key: (from the environment, None) or (None, the file that holds it)."""
    sources = [name for name in ("secret_access_key_env", "secret_access_key_file") if name in entry]
    if len(sources) != 1:
        raise r.fail(key, "set exactly one of secret_access_key_env or secret_access_key_file: the proxy "
                          "verifies each caller's signature itself, so it needs the key's secret (access "
                          "keys are no longer taken on their key id alone)")
    if sources[0] == "secret_access_key_env":
        name = r.string(entry["secret_access_key_env"], f"{key}.secret_access_key_env")
        secret = r.env.get(name, "")
        problem = access_key_secret_problem(secret)
        if problem:
            raise r.fail(f"{key}.secret_access_key_env", f"the environment variable {name} {problem}")
        return secret, None
    path = Path(r.string(entry["secret_access_key_file"], f"{key}.secret_access_key_file"))
    try:
        secret = read_secret_file(path)
    except OSError as exc:
        raise r.fail(f"{key}.secret_access_key_file", f"cannot read {path}: {exc.strerror}") from exc
    problem = access_key_secret_problem(secret)
    if problem:
        raise r.fail(f"{key}.secret_access_key_file", f"{path} {problem}")
    return None, path


def _issuer(r: Reader, value: Any, key: str) -> JwtIssuer:
    section = r.section(value, key, JwtIssuer, ISSUER_KEYS)
    raw = section.raw
    for required in ("issuer", "audience"):
        if required not in raw:
            raise r.fail(f"{key}.{required}", "is required")
    sources = [k for k in ("jwks_file", "jwks_url", "hs256_secret_env") if k in raw]
    if len(sources) != 1:
        raise r.fail(key, "set exactly one of jwks_file, jwks_url or hs256_secret_env")
    hmac = sources[0] == "hs256_secret_env"
    default_algorithms = DEFAULT_HMAC_ALGORITHMS if hmac else DEFAULT_PUBLIC_KEY_ALGORITHMS
    algorithms_raw = raw.get("algorithms", list(default_algorithms))
    if not isinstance(algorithms_raw, list) or not algorithms_raw:
        raise r.fail(f"{key}.algorithms", "expected a non-empty list")
    algorithms = tuple(r.string(a, f"{key}.algorithms") for a in algorithms_raw)
    allowed = HMAC_ALGORITHMS if hmac else PUBLIC_KEY_ALGORITHMS
    for alg in algorithms:
        if alg not in allowed:
            kind = "a shared secret" if hmac else "a JWKS"
            raise r.fail(
                f"{key}.algorithms", f"{alg!r} cannot be used with {kind} (allowed: {', '.join(sorted(allowed))})"
            )
    jwks_url = section.optional_string("jwks_url")
    if jwks_url is not None and urlsplit(jwks_url).scheme not in ("http", "https"):
        raise r.fail(f"{key}.jwks_url", "expected an http:// or https:// URL")
    issuer = r.string(raw["issuer"], f"{key}.issuer")
    audience = r.string(raw["audience"], f"{key}.audience")
    jwks_file = section.optional_string("jwks_file")
    return JwtIssuer(
        issuer=issuer,
        audience=audience,
        algorithms=algorithms,
        jwks_file=Path(jwks_file) if jwks_file is not None else None,
        jwks_url=jwks_url,
        hs256_secret=r.secret_from_env(raw["hs256_secret_env"], f"{key}.hs256_secret_env") if hmac else None,
        jurisdiction_claim=section.string("jurisdiction_claim"),
        subject_claim=section.string("subject_claim"),
        leeway_seconds=section.number("leeway_seconds", low=0, high=MAX_LEEWAY_SECONDS),
        max_lifetime_seconds=section.number("max_lifetime_seconds", low=60, high=MAX_TOKEN_LIFETIME_SECONDS),
        jwks_refresh_cooldown_seconds=section.number("jwks_refresh_cooldown_seconds", low=1, high=3600),
        jwks_max_age_seconds=section.number("jwks_max_age_seconds", low=10, high=86400),
        jwks_fetch_timeout_seconds=section.number("jwks_fetch_timeout_seconds", low=0.1, high=60),
    )
