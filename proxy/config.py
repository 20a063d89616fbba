"""The proxy's configuration: one frozen value, validated once at start.

Sources, strongest first: command-line flags, ``BAILIWICK_<NAME>`` environment
variables, the YAML file, defaults. `load_config` either returns a `Config`
that the rest of the program can trust or raises `ConfigError` naming the
file and key at fault (as uvicorn's ``Config.load`` does). Secrets are never
read from the YAML; it names the environment variable or file that holds them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from proxy.errors import ConfigError
from proxy.jurisdictions import is_country_code

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never "none"; HMAC only with a shared secret, public-key algorithms only with a JWKS.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_LEEWAY_SECONDS = 60.0
# A token's longest life (exp - iat, and exp - now): a day by default, at most a year.
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86400.0
MAX_TOKEN_LIFETIME_SECONDS = 366 * 86400.0
MIN_HMAC_SECRET_BYTES = 32
# S3 secret access keys: AWS's are 40 characters, MinIO's at least 8.
MIN_ACCESS_KEY_SECRET_CHARS = 8

DEFAULT_S3_ENDPOINTS = ("localhost", "127.0.0.1", "::1", "s3.amazonaws.com")
DEFAULT_AZURE_ENDPOINTS = ("localhost", "127.0.0.1", "::1")
# AWS S3's own service names (s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>..., dualstack,
# FIPS, an interface endpoint's vpce-ID.s3.<region>.vpce...): the Host values it reads path-style.
# It reads any other Host as a bucket name.
AWS_S3_SERVICE_HOST = re.compile(r"(s3(-[a-z0-9-]+)?|vpce-[a-z0-9-]+\.s3)(\.[a-z0-9-]+)*\.amazonaws\.com(\.cn)?")
AWS_DOMAIN = re.compile(r"(.+\.)?amazonaws\.com(\.cn)?")
DEFAULT_AZURE_ACCOUNT_HOST_SUFFIXES = ("blob.core.windows.net",)


@dataclass(frozen=True, slots=True)
class JwtIssuer:
    """One trusted token issuer (`identity.jwt[]`)."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    hs256_secret: bytes | None = field(default=None, repr=False)
    jurisdiction_claim: str = "jurisdiction"
    subject_claim: str = "sub"
    leeway_seconds: float = 30.0
    # Tokens whose exp is further than this from their iat, or from now, are refused.
    max_lifetime_seconds: float = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
    jwks_refresh_cooldown_seconds: float = 30.0
    jwks_max_age_seconds: float = 300.0
    jwks_fetch_timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """Callers without a token, identified by their socket address."""

    cidr: IPNetwork
    jurisdiction: str


@dataclass(frozen=True, slots=True)
class AccessKeyRule:
    """Callers that sign with an S3 access key and send no token (`identity.access_keys[]`).

    The proxy verifies their signatures, so it holds each key's secret: read from
    the environment at start (`secret_access_key`), or from a mounted file that is
    read again when it changes (`secret_access_key_file`). Exactly one is set.
    """

    access_key_id: str
    jurisdiction: str
    subject: str
    secret_access_key: str | None = field(default=None, repr=False)
    secret_access_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    jwt: tuple[JwtIssuer, ...] = ()
    networks: tuple[NetworkRule, ...] = ()
    access_keys: tuple[AccessKeyRule, ...] = ()
    # The SigV4 region access-key callers sign for (their credential scope); None: the proxy's `region`.
    access_key_region: str | None = None
    # Peers whose X-Forwarded-For is believed; everyone else's is ignored.
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    api: str = "s3"
    url: str = "http://127.0.0.1:9000"
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_connections: int = 256
    # Exchanges one peer (an IPv4 address, an IPv6 /64) may have in flight at once; its
    # further requests wait up to connect_timeout_seconds for one of its own, then get 503
    # SlowDown, so that one caller cannot take the whole pool. At or above max_connections: no share.
    max_connections_per_peer: int = 128


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """Re-sign mode (`s3.sign`): the proxy signs forwarded requests with its own S3 credentials."""

    # SigV4 signing region; None: the proxy's `region`.
    region: str | None = None
    service: str = "s3"
    # Where the keys are: environment variables, or an AWS shared-credentials file (re-read on change).
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name, not a secret
    session_token_env: str | None = "AWS_SESSION_TOKEN"  # noqa: S105 - a variable name, not a secret
    credentials_file: Path | None = None
    profile: str = "default"
    # Send the storage server its own name as Host (AWS S3 routes by it) instead of the
    # caller's: path-style requests get the upstream's host, virtual-hosted ones BUCKET.<it>.
    rewrite_host: bool = False


@dataclass(frozen=True, slots=True)
class AzureSettings:
    # Host names that reach the proxy path-style (the emulator): the account is the first path segment.
    endpoints: tuple[str, ...] = DEFAULT_AZURE_ENDPOINTS
    # "<account>.<suffix>" names the account in the Host (virtual-host style); any other Host is refused.
    account_host_suffixes: tuple[str, ...] = DEFAULT_AZURE_ACCOUNT_HOST_SUFFIXES


@dataclass(frozen=True, slots=True)
class S3Settings:
    # Host names that reach the proxy: a Host equal to one is path-style,
    # "<bucket>.<endpoint>" is virtual-hosted-style; any other Host is refused.
    endpoints: tuple[str, ...] = DEFAULT_S3_ENDPOINTS
    # Multi-object delete bodies are read whole to check every key; S3 allows 1000 keys.
    max_delete_body_bytes: int = 2 * 1024 * 1024
    # Re-sign mode; None: requests keep the caller's own signature.
    sign: SigningConfig | None = None
    # Names from `endpoints` under which the storage server, too, reads "<bucket>.<name>" as
    # virtual-hosted (bucket from the Host). Under any other endpoint such a Host is refused
    # (re-sign mode rewrites it into path-style instead): the safe default is path-style only.
    virtual_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """What one caller may hold of the proxy: time, connections, header sizes."""

    # A connection must deliver a complete request head this long after it opened or
    # after its last response (slowloris), and an idle keep-alive connection is closed then.
    header_timeout_seconds: float = 15.0
    # A request body that sends nothing for this long is cut off, and its upstream request aborted.
    body_idle_timeout_seconds: float = 60.0
    # Connections accepted at once; more are answered 503 and closed.
    max_connections: int = 1024
    # The request line and each header field, in bytes; and how many header fields.
    max_header_bytes: int = 8190
    max_headers: int = 128
    # Connections one peer (an IPv4 address, an IPv6 /64, as the socket says) may hold at
    # once; more are answered 503 and closed.
    max_connections_per_peer: int = 256
    # An answer the caller stops reading (nothing of it leaves the proxy) for this long is
    # cut: the caller's connection and the exchange with the storage server are closed.
    send_idle_timeout_seconds: float = 60.0
    # A body read before the decision (a multi-object delete, CreateBucket) must have arrived whole
    # this long after the proxy started reading it, however steadily it trickles in.
    body_read_timeout_seconds: float = 20.0
    # Bytes held at once by bodies read before the decision, across all requests of a process;
    # when spent, more such requests are answered 503 SlowDown (Azure: ServerBusy) unread.
    max_inspected_bytes: int = 64 * 1024 * 1024
    # An answer the caller reads, but slower than this (bytes per second while answer bytes wait
    # unsent, with a credit of `min_rate_window_seconds` of it plus 16 KiB), is cut like a stalled one; 0: never.
    # Off by default: measuring it caps what the kernel holds unsent (TCP_NOTSENT_LOWAT), which
    # cost a third of a single stream's throughput on loopback; the per-peer share bounds trickles.
    min_send_rate_bytes_per_second: int = 0
    # A request body being forwarded that arrives slower than this (bytes per second over each
    # window of `min_rate_window_seconds` the proxy waits for it) is cut: 400 RequestTimeout; 0: never.
    min_receive_rate_bytes_per_second: int = 240
    # The window both minimum rates are measured over; the first one is the grace period.
    min_rate_window_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class TagConfig:
    signing_key: bytes | None = field(default=None, repr=False)
    ttl_seconds: int = 60


@dataclass(frozen=True, slots=True)
class AuditConfig:
    path: str | None = "-"  # "-": standard output; None (``path: null``): no audit log
    # Start a new file when the current one reaches this size (0: never); the chain goes on
    # across files, and rotated files are kept (shipping and removing them is the log collector's job).
    max_bytes: int = 0
    # With a key: a keyed checkpoint line (HMAC-SHA256 over the chain so far) every N lines,
    # so that cutting lines off the end is detectable too.
    checkpoint_every: int = 1000
    checkpoint_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    """Live policy reload: the folder is polled for a change of content, and SIGHUP reloads at once."""

    interval_seconds: float = 5.0   # 0: no polling (SIGHUP only)
    run_tests: bool = True          # a new policy must also pass the tests in its folder's tests/


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[str, int] = ("0.0.0.0", 8080)  # noqa: S104 - a sidecar listens on the pod's address
    admin_listen: tuple[str, int] = ("127.0.0.1", 9090)
    region: str | None = None
    policies: Path = Path("policies")
    unmatched: str = "deny"
    dry_run: bool = False
    # Processes serving the same ports (SO_REUSEPORT); each keeps its own audit chain.
    workers: int = 1
    upstream: UpstreamConfig = UpstreamConfig()
    s3: S3Settings = S3Settings()
    azure: AzureSettings = AzureSettings()
    identity: IdentityConfig = IdentityConfig()
    limits: Limits = Limits()
    tag: TagConfig = TagConfig()
    audit: AuditConfig = AuditConfig()
    reload: ReloadConfig = ReloadConfig()
    # JSON access log, one line per request ("-": standard error; None: off). The audit
    # log already has a line for every decision; this one is for operating the proxy.
    access_log: str | None = None
    # On SIGTERM: stop accepting, let requests in flight finish for this long, then close.
    shutdown_grace_seconds: float = 30.0

    @property
    def unmatched_allow(self) -> bool:
        return self.unmatched == "allow"


# An access key id as the proxy accepts it in a signature: no separator of the SigV4 and SigV2 syntaxes.
ACCESS_KEY_ID = re.compile(r"[!-+\--.0-9<>-~]{1,128}")


def read_secret_file(path: Path) -> str:
    """A secret mounted as a file (a Kubernetes Secret key): its text, without the final line break."""
    return path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")


def access_key_secret_problem(secret: str) -> str | None:
    """What is wrong with a secret access key, worded to follow its source's name; None if usable."""
    if not secret:
        return "is not set or empty"
    if len(secret) < MIN_ACCESS_KEY_SECRET_CHARS or not secret.isascii() or not secret.isprintable() \
            or secret != secret.strip():
        return (f"does not hold a secret access key (at least {MIN_ACCESS_KEY_SECRET_CHARS} visible ASCII "
                "characters, nothing else)")
    return None


# Settings that flags and BAILIWICK_<NAME> variables may set, with the config key they override.
OVERRIDABLE: dict[str, str] = {
    "listen": "listen",
    "admin_listen": "admin_listen",
    "upstream": "upstream.url",
    "upstream_url": "upstream.url",
    "upstream_api": "upstream.api",
    "policies": "policies",
    "region": "region",
    "unmatched": "unmatched",
    "audit_path": "audit.path",
    "dry_run": "dry_run",
    "workers": "workers",
    "access_log": "access_log",
}


def load_config(
    path: Path | None = None,
    *,
    overrides: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the configuration. Raises `ConfigError`."""
    env = os.environ if environ is None else environ
    source = str(path) if path else "configuration"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        raw = loaded
    for name, key in OVERRIDABLE.items():
        value = env.get(f"BAILIWICK_{name.upper()}")
        if value:
            _set_path(raw, key, value)
    for name, value in (overrides or {}).items():
        if value is not None:
            _set_path(raw, OVERRIDABLE[name], value)
    return _Reader(source, env).config(raw)


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


class _Reader:
    """Turns the merged raw mapping into a `Config`, naming the key on any error."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a mapping")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown setting (expected one of: {', '.join(sorted(allowed))})",
            )
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def number(self, value: Any, key: str, *, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low:g} and {high:g}, got {value:g}")
        return float(value)

    def count(self, value: Any, key: str, *, high: int) -> int:
        """A whole number from 1 to `high`; digits in a string (from BAILIWICK_<NAME>) count too."""
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, got {value!r}")
        return int(self.number(value, key, low=1, high=high))

    def address(self, value: Any, key: str) -> tuple[str, int]:
        text = self.string(str(value) if isinstance(value, int) else value, key)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.fail(key, f"expected HOST:PORT, got {text!r}")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104
        return host, int(port)

    def network(self, value: Any, key: str) -> IPNetwork:
        try:
            return ipaddress.ip_network(self.string(value, key), strict=True)
        except ValueError as exc:
            raise self.fail(key, f"not a network in CIDR notation: {exc}") from exc

    def jurisdiction(self, value: Any, key: str) -> str:
        code = self.string(value, key)
        if not is_country_code(code):
            raise self.fail(key, f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return code

    def secret_from_env(self, value: Any, key: str) -> bytes:
        name = self.string(value, key)
        secret = self.env.get(name)
        if not secret:
            raise self.fail(key, f"the environment variable {name} is not set or empty")
        data = secret.encode()
        if len(data) < MIN_HMAC_SECRET_BYTES:
            raise self.fail(
                key, f"the secret in {name} is {len(data)} bytes; at least {MIN_HMAC_SECRET_BYTES} are required"
            )
        return data

    def config(self, raw: dict[str, Any]) -> Config:
        top = self.mapping(
            raw,
            "",
            {"listen", "admin_listen", "region", "policies", "unmatched", "dry_run", "workers",
             "upstream", "s3", "azure", "identity", "limits", "tag", "audit", "reload", "access_log",
             "shutdown_grace_seconds"},
        )
        base = Config()
        unmatched = top.get("unmatched", base.unmatched)
        if unmatched not in ("deny", "allow"):
            raise self.fail("unmatched", f'expected "deny" or "allow", got {unmatched!r}')
        dry_run = top.get("dry_run", False)
        if isinstance(dry_run, str) and dry_run.lower() in ("true", "false", "1", "0"):
            dry_run = dry_run.lower() in ("true", "1")  # from BAILIWICK_DRY_RUN
        if not isinstance(dry_run, bool):
            raise self.fail("dry_run", f"expected true or false, got {dry_run!r}")
        region = top.get("region")
        upstream = self.upstream(top.get("upstream"))
        identity = self.identity(top.get("identity"), self.string(region, "region") if region is not None else None)
        if identity.access_keys and upstream.api != "s3":
            raise self.fail("identity.access_keys", f"access keys are S3's; upstream.api is {upstream.api!r}")
        s3 = self.s3(top.get("s3"))
        limits = self.limits(top.get("limits"))
        if limits.max_inspected_bytes < s3.max_delete_body_bytes:
            raise self.fail("limits.max_inspected_bytes",
                            f"must be at least s3.max_delete_body_bytes ({s3.max_delete_body_bytes}), "
                            f"or no multi-object delete of the largest size could ever be read")
        config = replace(
            base,
            listen=self.address(top["listen"], "listen") if "listen" in top else base.listen,
            admin_listen=(
                self.address(top["admin_listen"], "admin_listen") if "admin_listen" in top else base.admin_listen
            ),
            region=self.string(region, "region") if region is not None else None,
            policies=Path(self.string(top.get("policies", str(base.policies)), "policies")),
            unmatched=unmatched,
            dry_run=dry_run,
            workers=self.count(top.get("workers", 1), "workers", high=64),
            upstream=upstream,
            s3=s3,
            azure=self.azure(top.get("azure")),
            identity=identity,
            limits=limits,
            tag=self.tag(top.get("tag")),
            audit=self.audit(top.get("audit")),
            reload=self.reload(top.get("reload")),
            access_log=(
                self.string(top["access_log"], "access_log") if top.get("access_log") is not None else None
            ),
            shutdown_grace_seconds=self.number(
                top.get("shutdown_grace_seconds", base.shutdown_grace_seconds), "shutdown_grace_seconds",
                low=0, high=3600,
            ),
        )
        self.check_aws_hosts(config)
        return config

    def check_aws_hosts(self, config: Config) -> None:
        """In front of AWS S3, refuse endpoints it would read as a bucket name (virtual hosting with CNAME)."""
        upstream_host = urlsplit(config.upstream.url).hostname or ""
        if config.upstream.api != "s3" or not AWS_DOMAIN.fullmatch(upstream_host):
            return
        sign = config.s3.sign
        if sign is not None and sign.rewrite_host:
            # The Host sent is the upstream's own name, with the bucket in the path.
            if not AWS_S3_SERVICE_HOST.fullmatch(upstream_host):
                raise self.fail("upstream.url", f"{upstream_host!r} is not one of AWS S3's service names "
                                "(s3.<region>.amazonaws.com, ...): with s3.sign.rewrite_host it is sent as the "
                                "Host, and AWS S3 would read a bucket from it")
            return
        for i, name in enumerate(config.s3.endpoints):
            if not AWS_S3_SERVICE_HOST.fullmatch(name):
                raise self.fail(
                    f"s3.endpoints[{i}]",
                    f"{name!r} would reach AWS S3 ({upstream_host}) as the Host, and AWS S3 reads a Host that is "
                    "not one of its own names as the name of a bucket: list only S3 names such as "
                    "s3.<region>.amazonaws.com, or turn on s3.sign.rewrite_host",
                )

    def upstream(self, value: Any) -> UpstreamConfig:
        raw = self.mapping(
            value, "upstream",
            {"api", "url", "connect_timeout_seconds", "read_timeout_seconds", "max_connections",
             "max_connections_per_peer"},
        )
        base = UpstreamConfig()
        api = raw.get("api", base.api)
        if api not in ("s3", "azure"):
            raise self.fail("upstream.api", f'expected "s3" or "azure", got {api!r}')
        url = self.string(raw.get("url", base.url), "upstream.url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail("upstream.url", f"expected an http:// or https:// URL, got {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise self.fail("upstream.url", "must name a server only (no path, query or fragment)")
        return UpstreamConfig(
            api=api,
            url=f"{parts.scheme}://{parts.netloc}",
            connect_timeout_seconds=self.number(
                raw.get("connect_timeout_seconds", base.connect_timeout_seconds),
                "upstream.connect_timeout_seconds", low=0.1, high=300,
            ),
            read_timeout_seconds=self.number(
                raw.get("read_timeout_seconds", base.read_timeout_seconds),
                "upstream.read_timeout_seconds", low=0.1, high=3600,
            ),
            max_connections=int(self.number(
                raw.get("max_connections", base.max_connections),
                "upstream.max_connections", low=1, high=100_000,
            )),
            max_connections_per_peer=int(self.number(
                raw.get("max_connections_per_peer", base.max_connections_per_peer),
                "upstream.max_connections_per_peer", low=1, high=100_000,
            )),
        )

    def azure(self, value: Any) -> AzureSettings:
        raw = self.mapping(value, "azure", {"endpoints", "account_host_suffixes"})
        base = AzureSettings()
        lists: dict[str, tuple[str, ...]] = {}
        for key, default in (("endpoints", base.endpoints), ("account_host_suffixes", base.account_host_suffixes)):
            items = raw.get(key, list(default))
            if not isinstance(items, list) or not items:
                raise self.fail(f"azure.{key}", "expected a non-empty list of host names")
            lists[key] = tuple(
                self.string(e, f"azure.{key}[{i}]").lower().strip("[]").strip(".") for i, e in enumerate(items)
            )
        return AzureSettings(endpoints=lists["endpoints"], account_host_suffixes=lists["account_host_suffixes"])

    def s3(self, value: Any) -> S3Settings:
        raw = self.mapping(value, "s3", {"endpoints", "max_delete_body_bytes", "sign", "virtual_hosts"})
        base = S3Settings()
        endpoints = raw.get("endpoints", list(base.endpoints))
        if not isinstance(endpoints, list) or not endpoints:
            raise self.fail("s3.endpoints", "expected a non-empty list of host names")
        names = tuple(self.string(e, f"s3.endpoints[{i}]").lower().strip("[]") for i, e in enumerate(endpoints))
        for i, name in enumerate(names):
            if AWS_DOMAIN.fullmatch(name) and not AWS_S3_SERVICE_HOST.fullmatch(name):
                # BUCKET.s3.amazonaws.com: AWS S3 (and moto) read the bucket from such a Host.
                raise self.fail(f"s3.endpoints[{i}]", f"{name!r} is not one of AWS S3's service names "
                                "(s3.amazonaws.com, s3.<region>.amazonaws.com, ...): AWS S3 would read a bucket "
                                "from it while the proxy reads the bucket from the path")
        virtual_hosts = self.virtual_hosts(raw.get("virtual_hosts", []), names)
        return S3Settings(
            endpoints=names,
            virtual_hosts=virtual_hosts,
            max_delete_body_bytes=int(self.number(
                raw.get("max_delete_body_bytes", base.max_delete_body_bytes),
                "s3.max_delete_body_bytes", low=1024, high=64 * 1024 * 1024,
            )),
            sign=self.signing(raw["sign"]) if raw.get("sign") is not None else None,
        )

    def virtual_hosts(self, value: Any, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        """`s3.virtual_hosts`: endpoint names, none an IP address, no endpoint a bucket under one."""
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("s3.virtual_hosts", "expected a list of host names from s3.endpoints")
        names: list[str] = []
        for i, item in enumerate(value):
            key = f"s3.virtual_hosts[{i}]"
            name = self.string(item, key).lower()
            try:
                ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                pass
            else:
                raise self.fail(key, f"{name!r} is an IP address: no server reads a bucket in front of one")
            if name not in endpoints:
                raise self.fail(key, f"{name!r} is not in s3.endpoints (list it there as well)")
            if name.split(".", 1)[0].isdigit():
                # BUCKET.1.2.3.x starts like an IPv4 address, which some servers (moto) read path-style.
                raise self.fail(key, f"{name!r} starts with a numeric label: a Host BUCKET.{name} could be read "
                                     "as an IP address, path-style")
            if name not in names:
                names.append(name)
        for i, endpoint in enumerate(endpoints):
            for name in names:
                if endpoint.endswith("." + name):
                    raise self.fail(
                        f"s3.endpoints[{i}]",
                        f"{endpoint!r} is a bucket's name under {name!r} (s3.virtual_hosts): the storage server "
                        "would read that Host as virtual-hosted while the proxy reads it path-style",
                    )
        return tuple(names)

    def signing(self, value: Any) -> SigningConfig:
        allowed = {"region", "service", "access_key_id_env", "secret_access_key_env", "session_token_env",
                   "credentials_file", "profile", "rewrite_host"}
        if value is True:
            value = {}
        raw = self.mapping(value, "s3.sign", allowed)
        base = SigningConfig()
        names = {
            name: self.string(raw.get(name, getattr(base, name)), f"s3.sign.{name}")
            for name in ("service", "access_key_id_env", "secret_access_key_env", "profile")
        }
        region = raw.get("region")
        token_env = raw.get("session_token_env", base.session_token_env)
        credentials_file = raw.get("credentials_file")
        rewrite_host = raw.get("rewrite_host", base.rewrite_host)
        if not isinstance(rewrite_host, bool):
            raise self.fail("s3.sign.rewrite_host", f"expected true or false, got {rewrite_host!r}")
        return SigningConfig(
            rewrite_host=rewrite_host,
            region=self.string(region, "s3.sign.region") if region is not None else None,
            session_token_env=self.string(token_env, "s3.sign.session_token_env") if token_env else None,
            credentials_file=(Path(self.string(credentials_file, "s3.sign.credentials_file"))
                              if credentials_file is not None else None),
            **names,
        )

    def identity(self, value: Any, region: str | None = None) -> IdentityConfig:
        raw = self.mapping(value, "identity",
                           {"jwt", "networks", "trusted_proxies", "access_keys", "access_key_region"})
        issuers = raw.get("jwt") or []
        if not isinstance(issuers, list):
            raise self.fail("identity.jwt", "expected a list of issuers")
        networks = raw.get("networks") or []
        if not isinstance(networks, list):
            raise self.fail("identity.networks", "expected a list of {cidr, jurisdiction}")
        proxies = raw.get("trusted_proxies") or []
        if not isinstance(proxies, list):
            raise self.fail("identity.trusted_proxies", "expected a list of networks")
        seen: set[str] = set()
        parsed = []
        for i, item in enumerate(issuers):
            issuer = self.issuer(item, f"identity.jwt[{i}]")
            if issuer.issuer in seen:
                raise self.fail(f"identity.jwt[{i}].issuer", f"{issuer.issuer!r} is configured twice")
            seen.add(issuer.issuer)
            parsed.append(issuer)
        rules = []
        for i, item in enumerate(networks):
            key = f"identity.networks[{i}]"
            entry = self.mapping(item, key, {"cidr", "jurisdiction"})
            if "cidr" not in entry or "jurisdiction" not in entry:
                raise self.fail(key, "expected both cidr and jurisdiction")
            rules.append(NetworkRule(
                cidr=self.network(entry["cidr"], f"{key}.cidr"),
                jurisdiction=self.jurisdiction(entry["jurisdiction"], f"{key}.jurisdiction"),
            ))
        keys = raw.get("access_keys") or []
        if not isinstance(keys, list):
            raise self.fail("identity.access_keys", "expected a list of {access_key_id, jurisdiction, subject, "
                                                    "secret_access_key_env or secret_access_key_file}")
        access_keys: dict[str, AccessKeyRule] = {}
        for i, item in enumerate(keys):
            key = f"identity.access_keys[{i}]"
            entry = self.mapping(item, key, {"access_key_id", "jurisdiction", "subject", "secret_access_key_env",
                                             "secret_access_key_file"})
            if "access_key_id" not in entry or "jurisdiction" not in entry:
                raise self.fail(key, "expected access_key_id and jurisdiction (and optionally subject)")
            key_id = self.string(entry["access_key_id"], f"{key}.access_key_id")
            if not ACCESS_KEY_ID.fullmatch(key_id):
                raise self.fail(f"{key}.access_key_id", "expected an access key id (1-128 visible ASCII characters, "
                                                        "none of / : , ; =)")
            if key_id in access_keys:
                raise self.fail(f"{key}.access_key_id", f"{key_id!r} is listed twice")
            secret, secret_file = self.access_key_secret(entry, key)
            access_keys[key_id] = AccessKeyRule(
                access_key_id=key_id,
                jurisdiction=self.jurisdiction(entry["jurisdiction"], f"{key}.jurisdiction"),
                subject=self.string(entry.get("subject", f"access-key:{key_id}"), f"{key}.subject"),
                secret_access_key=secret,
                secret_access_key_file=secret_file,
            )
        key_region = raw.get("access_key_region")
        if key_region is not None:
            region = self.string(key_region, "identity.access_key_region")
        if access_keys and region is None:
            raise self.fail("identity.access_key_region",
                            "access keys are verified against the region callers sign for: set region "
                            "(or identity.access_key_region, e.g. us-east-1 for MinIO's default)")
        return IdentityConfig(
            jwt=tuple(parsed),
            networks=tuple(rules),
            access_keys=tuple(access_keys.values()),
            access_key_region=region if access_keys else None,
            trusted_proxies=tuple(
                self.network(p, f"identity.trusted_proxies[{i}]") for i, p in enumerate(proxies)
            ),
        )

    def access_key_secret(self, entry: dict[str, Any], key: str) -> tuple[str | None, Path | None]:
        """The secret of one access key: (from the environment, None) or (None, the file that holds it)."""
        sources = [name for name in ("secret_access_key_env", "secret_access_key_file") if name in entry]
        if len(sources) != 1:
            raise self.fail(key, "set exactly one of secret_access_key_env or secret_access_key_file: the proxy "
                                 "verifies each caller's signature itself, so it needs the key's secret (access "
                                 "keys are no longer taken on their key id alone)")
        if sources[0] == "secret_access_key_env":
            name = self.string(entry["secret_access_key_env"], f"{key}.secret_access_key_env")
            secret = self.env.get(name, "")
            problem = access_key_secret_problem(secret)
            if problem:
                raise self.fail(f"{key}.secret_access_key_env", f"the environment variable {name} {problem}")
            return secret, None
        path = Path(self.string(entry["secret_access_key_file"], f"{key}.secret_access_key_file"))
        try:
            secret = read_secret_file(path)
        except OSError as exc:
            raise self.fail(f"{key}.secret_access_key_file", f"cannot read {path}: {exc.strerror}") from exc
        problem = access_key_secret_problem(secret)
        if problem:
            raise self.fail(f"{key}.secret_access_key_file", f"{path} {problem}")
        return None, path

    def issuer(self, value: Any, key: str) -> JwtIssuer:
        raw = self.mapping(
            value, key,
            {"issuer", "audience", "jwks_file", "jwks_url", "hs256_secret_env", "jurisdiction_claim",
             "subject_claim", "algorithms", "leeway_seconds", "jwks_refresh_cooldown_seconds",
             "jwks_max_age_seconds", "jwks_fetch_timeout_seconds", "max_lifetime_seconds"},
        )
        for required in ("issuer", "audience"):
            if required not in raw:
                raise self.fail(f"{key}.{required}", "is required")
        sources = [k for k in ("jwks_file", "jwks_url", "hs256_secret_env") if k in raw]
        if len(sources) != 1:
            raise self.fail(key, "set exactly one of jwks_file, jwks_url or hs256_secret_env")
        hmac = sources[0] == "hs256_secret_env"
        default_algorithms = ("HS256",) if hmac else DEFAULT_PUBLIC_KEY_ALGORITHMS
        algorithms_raw = raw.get("algorithms", list(default_algorithms))
        if not isinstance(algorithms_raw, list) or not algorithms_raw:
            raise self.fail(f"{key}.algorithms", "expected a non-empty list")
        algorithms = tuple(self.string(a, f"{key}.algorithms") for a in algorithms_raw)
        allowed = HMAC_ALGORITHMS if hmac else PUBLIC_KEY_ALGORITHMS
        for alg in algorithms:
            if alg not in allowed:
                kind = "a shared secret" if hmac else "a JWKS"
                raise self.fail(
                    f"{key}.algorithms", f"{alg!r} cannot be used with {kind} (allowed: {', '.join(sorted(allowed))})"
                )
        jwks_url = raw.get("jwks_url")
        if jwks_url is not None:
            jwks_url = self.string(jwks_url, f"{key}.jwks_url")
            if urlsplit(jwks_url).scheme not in ("http", "https"):
                raise self.fail(f"{key}.jwks_url", "expected an http:// or https:// URL")
        jwks_file = raw.get("jwks_file")
        return JwtIssuer(
            issuer=self.string(raw["issuer"], f"{key}.issuer"),
            audience=self.string(raw["audience"], f"{key}.audience"),
            algorithms=algorithms,
            jwks_file=Path(self.string(jwks_file, f"{key}.jwks_file")) if jwks_file is not None else None,
            jwks_url=jwks_url,
            hs256_secret=self.secret_from_env(raw["hs256_secret_env"], f"{key}.hs256_secret_env") if hmac else None,
            jurisdiction_claim=self.string(raw.get("jurisdiction_claim", "jurisdiction"), f"{key}.jurisdiction_claim"),
            subject_claim=self.string(raw.get("subject_claim", "sub"), f"{key}.subject_claim"),
            leeway_seconds=self.number(raw.get("leeway_seconds", 30), f"{key}.leeway_seconds",
                                       low=0, high=MAX_LEEWAY_SECONDS),
            max_lifetime_seconds=self.number(
                raw.get("max_lifetime_seconds", DEFAULT_MAX_TOKEN_LIFETIME_SECONDS), f"{key}.max_lifetime_seconds",
                low=60, high=MAX_TOKEN_LIFETIME_SECONDS),
            jwks_refresh_cooldown_seconds=self.number(
                raw.get("jwks_refresh_cooldown_seconds", 30), f"{key}.jwks_refresh_cooldown_seconds",
                low=1, high=3600),
            jwks_max_age_seconds=self.number(
                raw.get("jwks_max_age_seconds", 300), f"{key}.jwks_max_age_seconds", low=10, high=86400),
            jwks_fetch_timeout_seconds=self.number(
                raw.get("jwks_fetch_timeout_seconds", 5), f"{key}.jwks_fetch_timeout_seconds", low=0.1, high=60),
        )

    def limits(self, value: Any) -> Limits:
        raw = self.mapping(
            value, "limits",
            {"header_timeout_seconds", "body_idle_timeout_seconds", "max_connections", "max_header_bytes",
             "max_headers", "max_connections_per_peer", "send_idle_timeout_seconds",
             "body_read_timeout_seconds", "max_inspected_bytes", "min_send_rate_bytes_per_second",
             "min_receive_rate_bytes_per_second", "min_rate_window_seconds"},
        )
        base = Limits()
        return Limits(
            header_timeout_seconds=self.number(
                raw.get("header_timeout_seconds", base.header_timeout_seconds),
                "limits.header_timeout_seconds", low=0.1, high=3600),
            body_idle_timeout_seconds=self.number(
                raw.get("body_idle_timeout_seconds", base.body_idle_timeout_seconds),
                "limits.body_idle_timeout_seconds", low=0.1, high=3600),
            max_connections=int(self.number(
                raw.get("max_connections", base.max_connections), "limits.max_connections", low=1, high=1_000_000)),
            max_header_bytes=int(self.number(
                raw.get("max_header_bytes", base.max_header_bytes), "limits.max_header_bytes", low=1024, high=65536)),
            max_headers=int(self.number(
                raw.get("max_headers", base.max_headers), "limits.max_headers", low=16, high=1024)),
            max_connections_per_peer=int(self.number(
                raw.get("max_connections_per_peer", base.max_connections_per_peer),
                "limits.max_connections_per_peer", low=1, high=1_000_000)),
            send_idle_timeout_seconds=self.number(
                raw.get("send_idle_timeout_seconds", base.send_idle_timeout_seconds),
                "limits.send_idle_timeout_seconds", low=0.1, high=3600),
            body_read_timeout_seconds=self.number(
                raw.get("body_read_timeout_seconds", base.body_read_timeout_seconds),
                "limits.body_read_timeout_seconds", low=0.1, high=3600),
            max_inspected_bytes=int(self.number(
                raw.get("max_inspected_bytes", base.max_inspected_bytes),
                "limits.max_inspected_bytes", low=1024 * 1024, high=1 << 40)),
            min_send_rate_bytes_per_second=int(self.number(
                raw.get("min_send_rate_bytes_per_second", base.min_send_rate_bytes_per_second),
                "limits.min_send_rate_bytes_per_second", low=0, high=1 << 30)),
            min_receive_rate_bytes_per_second=int(self.number(
                raw.get("min_receive_rate_bytes_per_second", base.min_receive_rate_bytes_per_second),
                "limits.min_receive_rate_bytes_per_second", low=0, high=1 << 30)),
            min_rate_window_seconds=self.number(
                raw.get("min_rate_window_seconds", base.min_rate_window_seconds),
                "limits.min_rate_window_seconds", low=0.1, high=3600),
        )

    def tag(self, value: Any) -> TagConfig:
        raw = self.mapping(value, "tag", {"signing_key_env", "ttl_seconds"})
        key = None
        if "signing_key_env" in raw:
            key = self.secret_from_env(raw["signing_key_env"], "tag.signing_key_env")
        return TagConfig(
            signing_key=key,
            ttl_seconds=int(self.number(raw.get("ttl_seconds", 60), "tag.ttl_seconds", low=1, high=3600)),
        )

    def audit(self, value: Any) -> AuditConfig:
        raw = self.mapping(value, "audit", {"path", "max_bytes", "checkpoint_every", "checkpoint_key_env"})
        base = AuditConfig()
        path = raw.get("path", base.path)
        key = None
        if "checkpoint_key_env" in raw:
            key = self.secret_from_env(raw["checkpoint_key_env"], "audit.checkpoint_key_env")
        max_bytes = int(self.number(raw.get("max_bytes", 0), "audit.max_bytes", low=0, high=2**50))
        if 0 < max_bytes < 4096:
            raise self.fail("audit.max_bytes", f"must be 0 (no rotation) or at least 4096, got {max_bytes}")
        return AuditConfig(
            path=self.string(path, "audit.path") if path is not None else None,
            max_bytes=max_bytes,
            checkpoint_every=self.count(
                raw.get("checkpoint_every", base.checkpoint_every), "audit.checkpoint_every", high=10_000_000,
            ),
            checkpoint_key=key,
        )

    def reload(self, value: Any) -> ReloadConfig:
        raw = self.mapping(value, "reload", {"interval_seconds", "run_tests"})
        base = ReloadConfig()
        run_tests = raw.get("run_tests", base.run_tests)
        if not isinstance(run_tests, bool):
            raise self.fail("reload.run_tests", f"expected true or false, got {run_tests!r}")
        interval = self.number(raw.get("interval_seconds", base.interval_seconds), "reload.interval_seconds",
                               low=0, high=3600)
        if 0 < interval < 0.1:
            raise self.fail("reload.interval_seconds", f"must be 0 (no polling) or at least 0.1, got {interval:g}")
        return ReloadConfig(interval_seconds=interval, run_tests=run_tests)
