"""The proxy's configuration: one frozen value, validated once at start.

Sources, strongest first: command-line flags, ``BAILIWICK_<NAME>`` environment
variables, the YAML file, defaults. `load_config` either returns a `Config`
that the rest of the program can trust or raises `ConfigError` naming the
file, line and key at fault. Paths written in the file are relative to its
folder. Secrets are never read from the YAML; it names the environment
variable or file that holds them.

- `model`: the frozen dataclasses; their field defaults are the defaults.
- `sources`: the file, the variables and the flags merged into one mapping.
- `yamlfile`: the file read as YAML, with the line of every setting.
- `origins`: where each setting was given (file and line, variable, flag), for errors.
- `paths`: the file's relative paths made relative to its folder, found by the model's types.
- `reader`: the checks every value goes through, errors naming the key.
- `storage`, `identity`, `operation`, `encryption`: each section's own checks.
- `auditship`: the `audit.ship` section (the audit chain shipped to a bucket with Object Lock).
- `load`: `load_config`, and the checks that span sections.
- `credentials`: what a secret must look like, also when it is re-read.
- `region`: the proxy's region must be one of the loaded policy's (checked at start and on reload).
"""

from __future__ import annotations

from proxy.config.credentials import (
    ACCESS_KEY_ID,
    MIN_ACCESS_KEY_SECRET_CHARS,
    MIN_HMAC_SECRET_BYTES,
    access_key_secret_problem,
    read_secret_file,
)
from proxy.config.identity import MAX_LEEWAY_SECONDS, MAX_TOKEN_LIFETIME_SECONDS
from proxy.config.load import SETTINGS, load_config
from proxy.config.model import (
    DEFAULT_AZURE_ACCOUNT_HOST_SUFFIXES,
    DEFAULT_AZURE_ENDPOINTS,
    DEFAULT_HMAC_ALGORITHMS,
    DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
    DEFAULT_PUBLIC_KEY_ALGORITHMS,
    DEFAULT_S3_ENDPOINTS,
    HMAC_ALGORITHMS,
    PUBLIC_KEY_ALGORITHMS,
    AccessKeyRule,
    AuditConfig,
    AzureSettings,
    Config,
    EncryptionConfig,
    IdentityConfig,
    IPNetwork,
    JwtIssuer,
    KeyCacheSettings,
    KeyFileSettings,
    KeyServiceKind,
    Limits,
    NetworkRule,
    Pkcs11Settings,
    ReloadConfig,
    S3Settings,
    SigningConfig,
    TagConfig,
    TransitSettings,
    Unmatched,
    UpstreamApi,
    UpstreamConfig,
)
from proxy.config.sources import OVERRIDABLE
from proxy.config.storage import AWS_DOMAIN, AWS_S3_SERVICE_HOST

__all__ = [
    "ACCESS_KEY_ID",
    "AWS_DOMAIN",
    "AWS_S3_SERVICE_HOST",
    "DEFAULT_AZURE_ACCOUNT_HOST_SUFFIXES",
    "DEFAULT_AZURE_ENDPOINTS",
    "DEFAULT_HMAC_ALGORITHMS",
    "DEFAULT_MAX_TOKEN_LIFETIME_SECONDS",
    "DEFAULT_PUBLIC_KEY_ALGORITHMS",
    "DEFAULT_S3_ENDPOINTS",
    "HMAC_ALGORITHMS",
    "MAX_LEEWAY_SECONDS",
    "MAX_TOKEN_LIFETIME_SECONDS",
    "MIN_ACCESS_KEY_SECRET_CHARS",
    "MIN_HMAC_SECRET_BYTES",
    "OVERRIDABLE",
    "PUBLIC_KEY_ALGORITHMS",
    "SETTINGS",
    "AccessKeyRule",
    "AuditConfig",
    "AzureSettings",
    "Config",
    "EncryptionConfig",
    "IPNetwork",
    "IdentityConfig",
    "JwtIssuer",
    "KeyCacheSettings",
    "KeyFileSettings",
    "KeyServiceKind",
    "Limits",
    "NetworkRule",
    "Pkcs11Settings",
    "ReloadConfig",
    "S3Settings",
    "SigningConfig",
    "TagConfig",
    "TransitSettings",
    "Unmatched",
    "UpstreamApi",
    "UpstreamConfig",
    "access_key_secret_problem",
    "load_config",
    "read_secret_file",
]
