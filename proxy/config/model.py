"""The configuration's values: frozen dataclasses whose field defaults are the proxy's defaults.

Each default is written here and nowhere else: the reader (`proxy.config.load`)
takes a setting the file leaves out from these fields, and docs/operations.md's
reference block is tested against them. Kinds with a fixed set of values are
`StrEnum`s, so they compare and format as the words written in the file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from proxy.config.auditship import AuditShipConfig
from proxy.config.credentials import read_secret_file
from proxy.config.geoip import GeoIpConfig
from proxy.config.origins import Origins
from proxy.config.tls import ListenTlsConfig
from proxy.config.workloads import WorkloadRule, XfccConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never "none"; HMAC only with a shared secret, public-key algorithms only with a JWKS.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# An issuer's `algorithms` when it lists none: by how its keys are given (a JWKS, or a shared secret).
DEFAULT_PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_HMAC_ALGORITHMS = ("HS256",)
# A token's longest life (exp - iat, and exp - now): a day by default.
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86400.0

DEFAULT_S3_ENDPOINTS = ("localhost", "127.0.0.1", "::1", "s3.amazonaws.com")
DEFAULT_AZURE_ENDPOINTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_AZURE_ACCOUNT_HOST_SUFFIXES = ("blob.core.windows.net",)

# Marks a setting kept as text that is a file path ("-": a standard stream), so that it is resolved from the
# configuration file's folder like every field typed `Path` (`proxy.config.paths`).
PATH_TEXT = "path"
PathText = Annotated[str | None, PATH_TEXT]


class UpstreamApi(StrEnum):
    """The storage API the proxy stands in front of (`upstream.api`)."""

    S3 = "s3"
    AZURE = "azure"


class Unmatched(StrEnum):
    """What the proxy does with a resource in no dataset (`unmatched`)."""

    DENY = "deny"
    ALLOW = "allow"


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
    # Workload identities (SPIFFE IDs, certificate subjects) and their jurisdictions.
    workloads: tuple[WorkloadRule, ...] = ()
    # X-Forwarded-Client-Cert from the local mesh proxy (off by default).
    xfcc: XfccConfig = XfccConfig()  # noqa: RUF009 - frozen, so one instance is safely shared
    # A country database for the client's address (None: not configured).
    geoip: GeoIpConfig | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    api: UpstreamApi = UpstreamApi.S3
    url: str = "http://127.0.0.1:9000"
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_connections: int = 256
    # Exchanges one peer (an IPv4 address, an IPv6 /64) may have in flight at once; its
    # further requests wait up to connect_timeout_seconds for one of its own, then get 503
    # SlowDown, so that one caller cannot take the whole pool. At or above max_connections: no share.
    max_connections_per_peer: int = 128
    # An https:// upstream's certificate is always verified (TLS 1.2 at least), against this CA bundle
    # (PEM), or the system's roots when None.
    ca_bundle: Path | None = None
    # Base64 SHA-256 digests of SubjectPublicKeyInfos (as HPKP and Envoy's verify_certificate_spki write
    # them): when any is set, a storage server whose certificate's key is none of them is refused, even
    # with a chain that verifies. List the next key's too before rotating it.
    pin_sha256: tuple[str, ...] = ()


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
    path: PathText = "-"  # "-": standard output; None (``path: null``): no audit log
    # Start a new file when the current one reaches this size (0: never); the chain goes on
    # across files, and rotated files are kept (audit.ship uploads them; removing them is the operator's job).
    max_bytes: int = 0
    # With a key: a keyed checkpoint line (HMAC-SHA256 over the chain so far) every N lines,
    # so that cutting lines off the end is detectable too.
    checkpoint_every: int = 1000
    checkpoint_key: bytes | None = field(default=None, repr=False)
    # Disk space kept reserved ahead of the log file, so that a full disk stops requests before it cuts
    # a line (0: none); each request in flight holds 4 KiB of it (proxy.audit.reserve).
    reserve_bytes: int = 4 * 1024 * 1024
    # Upload the chain to an S3 bucket with Object Lock (`proxy.config.auditship`); None: no shipping.
    ship: AuditShipConfig | None = None


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    """Live policy reload: the folder is polled for a change of content, and SIGHUP reloads at once."""

    interval_seconds: float = 5.0   # 0: no polling (SIGHUP only)
    run_tests: bool = True          # a new policy must also pass the tests in its folder's tests/


class KeyServiceKind(StrEnum):
    """The kind of the region's key service (`encryption.key_service`), each with its own section."""

    TRANSIT = "transit"   # OpenBao / HashiCorp Vault Transit (`encryption.transit`)
    PKCS11 = "pkcs11"     # a PKCS#11 HSM (`encryption.pkcs11`)
    FILE = "file"         # a local key file, development and the demo only (`encryption.key_file`)

    @property
    def section(self) -> str:
        """The key of the section under `encryption` that configures this kind."""
        return "key_file" if self is KeyServiceKind.FILE else self.value


@dataclass(frozen=True, slots=True)
class TransitSettings:
    """OpenBao / Vault Transit (`encryption.transit`): data keys from `<mount>/datakey/...`.

    The token is in a mounted file (`token_file`, read again on every use, so a
    renewed token is taken without a restart) or in an environment variable
    (`token_env`, read once at start into `token`).
    """

    address: str
    key: str
    mount: str = "transit"
    token_file: Path | None = None
    token_env: str = "BAO_TOKEN"  # noqa: S105 - a variable name, not a secret
    token: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    timeout_seconds: float = 5.0

    def current_token(self) -> str:
        """The token to send now: `token_file`'s content, or the value `token_env` held at start."""
        if self.token_file is not None:
            return read_secret_file(self.token_file)
        return self.token or ""


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    """A PKCS#11 HSM (`encryption.pkcs11`): the key-encryption key `key_label` never leaves the token.

    The user PIN is in a mounted file (`pin_file`) or an environment variable
    (`pin_env`, read once at start into `pin`).
    """

    module: Path
    token_label: str
    key_label: str
    pin_file: Path | None = None
    pin_env: str = "BAILIWICK_PKCS11_PIN"
    pin: str | None = field(default=None, repr=False)

    def current_pin(self) -> str:
        """The PIN to log in with: `pin_file`'s content, or the value `pin_env` held at start."""
        if self.pin_file is not None:
            return read_secret_file(self.pin_file)
        return self.pin or ""


@dataclass(frozen=True, slots=True)
class KeyFileSettings:
    """A local key file (`encryption.key_file`): development and the demo only, refused unless allowed."""

    path: Path
    allow_insecure: bool = False


@dataclass(frozen=True, slots=True)
class KeyCacheSettings:
    """Released data keys kept in memory (`encryption.key_cache`), bounded in number and age."""

    max_keys: int = 0           # 0: no cache (the default): every read asks the key service
    ttl_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class EncryptionConfig:
    """The key service of the proxy's region (`encryption`); None: encrypted datasets cannot be served.

    Exactly the section of `key_service` is set; the others are None.
    """

    key_service: KeyServiceKind | None = None
    transit: TransitSettings | None = None
    pkcs11: Pkcs11Settings | None = None
    key_file: KeyFileSettings | None = None
    key_cache: KeyCacheSettings = KeyCacheSettings()

    @property
    def enabled(self) -> bool:
        """Whether a key service is configured."""
        return self.key_service is not None


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[str, int] = ("0.0.0.0", 8080)  # noqa: S104 - a sidecar listens on the pod's address
    admin_listen: tuple[str, int] = ("127.0.0.1", 9090)
    # TLS on the data listener (`proxy.config.tls`); None: plain HTTP.
    listen_tls: ListenTlsConfig | None = None
    region: str | None = None
    policies: Path = Path("policies")
    unmatched: Unmatched = Unmatched.DENY
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
    encryption: EncryptionConfig = EncryptionConfig()
    # JSON access log, one line per request ("-": standard error; None: off). The audit
    # log already has a line for every decision; this one is for operating the proxy.
    access_log: PathText = None
    # The key of paged account listings' tokens (64 hex digits): replicas sharing it accept each other's
    # tokens. None: a key made at each start, shared by its workers (tokens end with the process).
    listing_token_key_file: Path | None = None
    # On SIGTERM: stop accepting, let requests in flight finish for this long, then close.
    shutdown_grace_seconds: float = 30.0
    # Not a setting: where each setting was given (the file's lines, a variable, a flag), for later errors.
    origins: Origins = field(default=Origins(), compare=False, repr=False)

    @property
    def unmatched_allow(self) -> bool:
        return self.unmatched is Unmatched.ALLOW
