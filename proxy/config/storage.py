"""Reading the storage sections (`upstream`, `s3`, `azure`) and the host names AWS S3 reads as its own.

Besides each value's own checks, the names the proxy answers under are
checked against what the storage server will make of them: a name that AWS S3
would read as a bucket while the proxy reads the bucket from the path would let
a request be judged on one bucket and served from another.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.model import AzureSettings, Config, S3Settings, SigningConfig, UpstreamApi, UpstreamConfig
from proxy.config.reader import Reader, Section

# AWS S3's own service names (s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>..., dualstack,
# FIPS, an interface endpoint's vpce-ID.s3.<region>.vpce...): the Host values it reads path-style.
# It reads any other Host as a bucket name.
AWS_S3_SERVICE_HOST = re.compile(r"(s3(-[a-z0-9-]+)?|vpce-[a-z0-9-]+\.s3)(\.[a-z0-9-]+)*\.amazonaws\.com(\.cn)?")
AWS_DOMAIN = re.compile(r"(.+\.)?amazonaws\.com(\.cn)?")

UPSTREAM_KEYS = frozenset({"api", "url", "connect_timeout_seconds", "read_timeout_seconds", "max_connections",
                           "max_connections_per_peer", "ca_bundle", "pin_sha256"})
S3_KEYS = frozenset({"endpoints", "max_delete_body_bytes", "sign", "virtual_hosts"})
SIGNING_KEYS = frozenset({"region", "service", "access_key_id_env", "secret_access_key_env", "session_token_env",
                          "credentials_file", "profile", "rewrite_host"})
AZURE_KEYS = frozenset({"endpoints", "account_host_suffixes"})


def read_upstream(r: Reader, value: Any) -> UpstreamConfig:
    section = r.section(value, "upstream", UpstreamConfig, UPSTREAM_KEYS)
    api = section.choice("api", UpstreamApi)
    url = section.string("url")
    parts = urlsplit(url)
    # Before anything that shows the URL: a password in it would be in the message (and the error log).
    if "@" in parts.netloc or (not parts.netloc and "@" in url):   # the latter: user:password@host, no scheme
        raise r.fail("upstream.url", "must not hold a user name or password (user:password@...): the URL is "
                     "logged and shown in errors, and would carry them to the storage server. The storage "
                     "server's credentials are the caller's signature, or the proxy's own with s3.sign "
                     "(access_key_id_env and secret_access_key_env, or credentials_file)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.fail("upstream.url", f"expected an http:// or https:// URL, got {url!r}")
    # "?" and "#" even with nothing after them: the URL names a server and nothing else.
    if parts.path not in ("", "/") or "?" in url or "#" in url:
        raise r.fail("upstream.url", "must name a server only (no path, query or fragment)")
    return UpstreamConfig(
        api=api,
        url=f"{parts.scheme}://{parts.netloc}",
        connect_timeout_seconds=section.number("connect_timeout_seconds", low=0.1, high=300),
        read_timeout_seconds=section.number("read_timeout_seconds", low=0.1, high=3600),
        max_connections=section.whole("max_connections", low=1, high=100_000),
        max_connections_per_peer=section.whole("max_connections_per_peer", low=1, high=100_000),
        **_upstream_tls(r, section, parts.scheme),
    )


def _upstream_tls(r: Reader, section: Section, scheme: str) -> dict[str, Any]:
    """`ca_bundle` and `pin_sha256`, which only an https:// upstream can use."""
    ca_bundle = section.optional_string("ca_bundle")
    pins = section.get("pin_sha256")
    if isinstance(pins, str):
        pins = [pins]
    if not isinstance(pins, list):
        raise r.fail("upstream.pin_sha256", "expected a base64 SHA-256 digest or a list of them")
    digests = tuple(_pin(r, pin, f"upstream.pin_sha256[{i}]") for i, pin in enumerate(pins))
    if scheme != "https":
        for name, value in (("ca_bundle", ca_bundle), ("pin_sha256", digests)):
            if value:
                raise r.fail(f"upstream.{name}", "applies to an https:// upstream only; upstream.url is http://, "
                             "so nothing would be verified")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise r.fail("upstream.ca_bundle", f"{ca_bundle} is not a readable file")
    return {"ca_bundle": Path(ca_bundle) if ca_bundle is not None else None, "pin_sha256": digests}


def _pin(r: Reader, value: Any, key: str) -> str:
    text = r.string(value, key).strip()
    try:
        digest = base64.b64decode(text, validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 32:
        raise r.fail(key, f"expected the base64 SHA-256 digest of a SubjectPublicKeyInfo (44 characters), "
                     f"got {text!r}")
    return text


def read_azure(r: Reader, value: Any) -> AzureSettings:
    section = r.section(value, "azure", AzureSettings, AZURE_KEYS)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("endpoints", "account_host_suffixes"):
        items = section.get(key)
        if not isinstance(items, list) or not items:
            raise r.fail(f"azure.{key}", "expected a non-empty list of host names")
        lists[key] = tuple(
            r.string(e, f"azure.{key}[{i}]").lower().strip("[]").strip(".") for i, e in enumerate(items)
        )
    return AzureSettings(endpoints=lists["endpoints"], account_host_suffixes=lists["account_host_suffixes"])


def read_s3(r: Reader, value: Any) -> S3Settings:
    section = r.section(value, "s3", S3Settings, S3_KEYS)
    endpoints = section.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise r.fail("s3.endpoints", "expected a non-empty list of host names")
    names = tuple(r.string(e, f"s3.endpoints[{i}]").lower().strip("[]") for i, e in enumerate(endpoints))
    for i, name in enumerate(names):
        if AWS_DOMAIN.fullmatch(name) and not AWS_S3_SERVICE_HOST.fullmatch(name):
            # BUCKET.s3.amazonaws.com: AWS S3 (and moto) read the bucket from such a Host.
            raise r.fail(f"s3.endpoints[{i}]", f"{name!r} is not one of AWS S3's service names "
                         "(s3.amazonaws.com, s3.<region>.amazonaws.com, ...): AWS S3 would read a bucket "
                         "from it while the proxy reads the bucket from the path")
    virtual_hosts = _virtual_hosts(r, section.get("virtual_hosts"), names)
    return S3Settings(
        endpoints=names,
        virtual_hosts=virtual_hosts,
        max_delete_body_bytes=section.whole("max_delete_body_bytes", low=1024, high=64 * 1024 * 1024),
        sign=_signing(r, section.raw["sign"]) if section.raw.get("sign") is not None else None,
    )


def _virtual_hosts(r: Reader, value: Any, endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """`s3.virtual_hosts`: endpoint names, none an IP address, no endpoint a bucket under one."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("s3.virtual_hosts", "expected a list of host names from s3.endpoints")
    names: list[str] = []
    for i, item in enumerate(value):
        key = f"s3.virtual_hosts[{i}]"
        name = r.string(item, key).lower()
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            pass
        else:
            raise r.fail(key, f"{name!r} is an IP address: no server reads a bucket in front of one")
        if name not in endpoints:
            raise r.fail(key, f"{name!r} is not in s3.endpoints (list it there as well)")
        if name.split(".", 1)[0].isdigit():
            # BUCKET.1.2.3.x starts like an IPv4 address, which some servers (moto) read path-style.
            raise r.fail(key, f"{name!r} starts with a numeric label: a Host BUCKET.{name} could be read "
                              "as an IP address, path-style")
        if name not in names:
            names.append(name)
    for i, endpoint in enumerate(endpoints):
        for name in names:
            if endpoint.endswith("." + name):
                raise r.fail(
                    f"s3.endpoints[{i}]",
                    f"{endpoint!r} is a bucket's name under {name!r} (s3.virtual_hosts): the storage server "
                    "would read that Host as virtual-hosted while the proxy reads it path-style",
                )
    return tuple(names)


def _signing(r: Reader, value: Any) -> SigningConfig:
    if value is True:
        value = {}
    section = r.section(value, "s3.sign", SigningConfig, SIGNING_KEYS)
    names = {
        name: section.string(name)
        for name in ("service", "access_key_id_env", "secret_access_key_env", "profile")
    }
    rewrite_host = section.boolean("rewrite_host")
    region = section.optional_string("region")
    token_env = section.get("session_token_env")
    credentials_file = section.optional_string("credentials_file")
    return SigningConfig(
        rewrite_host=rewrite_host,
        region=region,
        session_token_env=r.string(token_env, "s3.sign.session_token_env") if token_env else None,
        credentials_file=Path(credentials_file) if credentials_file is not None else None,
        **names,
    )


def check_aws_hosts(r: Reader, config: Config) -> None:
    """In front of AWS S3, refuse endpoints it would read as a bucket name (virtual hosting with CNAME)."""
    upstream_host = urlsplit(config.upstream.url).hostname or ""
    if config.upstream.api is not UpstreamApi.S3 or not AWS_DOMAIN.fullmatch(upstream_host):
        return
    sign = config.s3.sign
    if sign is not None and sign.rewrite_host:
        # The Host sent is the upstream's own name, with the bucket in the path.
        if not AWS_S3_SERVICE_HOST.fullmatch(upstream_host):
            raise r.fail("upstream.url", f"{upstream_host!r} is not one of AWS S3's service names "
                         "(s3.<region>.amazonaws.com, ...): with s3.sign.rewrite_host it is sent as the "
                         "Host, and AWS S3 would read a bucket from it")
        return
    for i, name in enumerate(config.s3.endpoints):
        if not AWS_S3_SERVICE_HOST.fullmatch(name):
            raise r.fail(
                f"s3.endpoints[{i}]",
                f"{name!r} would reach AWS S3 ({upstream_host}) as the Host, and AWS S3 reads a Host that is "
                "not one of its own names as the name of a bucket: list only S3 names such as "
                "s3.<region>.amazonaws.com, or turn on s3.sign.rewrite_host",
            )
