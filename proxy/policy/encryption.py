"""Which data a policy keeps encrypted, and whether a proxy can serve it.

A dataset says `encryption: required` or `migrating` (`proxy.policy.model.Encryption`);
the proxy encrypts what it writes there with a data key from its region's key
service (`proxy.config.model.EncryptionConfig`). Decisions carry the dataset's
encryption in `Check.encryption`, and `proxy.policy.engine.encryption_of`
answers the same question where there is no decision (the sizes in a listing
answer). This module says which datasets are encrypted (`policy check`), and
when a policy asks for encryption that a proxy cannot give
(`encryption_problem`), so that the proxy refuses to start, or to take a
reloaded policy, rather than refuse every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.policy.model import Dataset, Encryption, Policy

if TYPE_CHECKING:  # the configuration is only read here, never built
    from proxy.config.model import Config


def encrypted_datasets(policy: Policy, region: str | None = None) -> tuple[Dataset, ...]:
    """The datasets whose objects are stored encrypted (REQUIRED or MIGRATING), of `region` (None: of any)."""
    return tuple(
        d for d in policy.datasets if d.encryption.encrypts and (region is None or d.region == region)
    )


def encryption_summary(policy: Policy) -> str:
    """What `bailiwick policy check` adds about encryption, e.g. ", 2 datasets require encryption";
    "" when no dataset is encrypted."""
    required = sum(1 for d in policy.datasets if d.encryption is Encryption.REQUIRED)
    migrating = sum(1 for d in policy.datasets if d.encryption is Encryption.MIGRATING)
    parts = []
    if required:
        parts.append(f"{required} {'dataset requires' if required == 1 else 'datasets require'} encryption")
    if migrating:
        parts.append(f"{migrating} {'dataset' if migrating == 1 else 'datasets'} migrating to encryption")
    return "".join(f", {part}" for part in parts)


def encryption_problem(policy: Policy, config: Config) -> str | None:
    """Why this proxy cannot serve `policy` (None: it can): a dataset of its region (of any region when the
    proxy has none) is encrypted, and no key service is configured (`encryption.key_service`)."""
    if config.encryption.enabled:
        return None
    datasets = encrypted_datasets(policy, config.region)
    if not datasets:
        return None
    named = ", ".join(f"{d.name} ({d.region}, encryption: {d.encryption}, at {d.file}:{d.line})" for d in datasets)
    many = len(datasets) > 1
    return (f"dataset{'s' if many else ''} {named} {'are' if many else 'is'} stored encrypted, but this proxy has "
            f"no key service to open {'them' if many else 'it'} with: set encryption.key_service (docs/encryption.md)")
