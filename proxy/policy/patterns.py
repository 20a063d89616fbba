"""Resource patterns as policies write them, and concrete resources as tests write them.

A pattern is ``s3://BUCKET[/KEY-PREFIX]`` or
``azure://ACCOUNT/CONTAINER[/BLOB-PREFIX]`` (docs/policies.md, "datasets"). The
bucket (or account) may end in ``*`` to mean a name prefix; nothing else is a
wildcard, and a ``*`` anywhere else is an error rather than a literal, because
an operator who writes one almost certainly expects it to match more.

Key prefixes match as plain string prefixes, the way S3 prefixes do:
``s3://archive/ie`` covers the keys ``ie/1`` and ``ie-x`` alike; write
``s3://archive/ie/`` to mean the "folder". An Azure pattern is kept in the
same shape as an S3 one so that both share one index: the account is the
"bucket" and the key prefix is ``CONTAINER/`` followed by the blob prefix
(see `proxy.domain.Resource`).

Names are checked against the storage services' own rules so that a typo
(``s3://Mail-EU``) is an error at load time instead of a pattern that can
never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.domain import Resource

S3 = "s3"
AZURE = "azure"

_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_BUCKET_PREFIX = re.compile(r"([a-z0-9][a-z0-9.-]{0,61})?")
_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_AZURE_ACCOUNT_PREFIX = re.compile(r"[a-z0-9]{0,23}")
# 3-63 characters, letters, digits and single hyphens between them.
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_AZURE_SPECIAL_CONTAINERS = frozenset({"$root", "$logs", "$web"})

_S3_BUCKET_RULE = (
    "3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"
)
_AZURE_ACCOUNT_RULE = "3 to 24 lower-case letters and digits"
_AZURE_CONTAINER_RULE = (
    "3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit"
)
PATTERN_FORMS = "s3://BUCKET[/KEY-PREFIX] or azure://ACCOUNT/CONTAINER[/BLOB-PREFIX]"


class PatternError(ValueError):
    """A pattern or resource that cannot be used; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """One resource pattern of a dataset.

    `bucket` is the exact bucket (S3) or account (Azure), or, with
    `bucket_prefix` set, the name prefix written before ``*``. `key_prefix` is
    the key (S3) or ``CONTAINER/BLOB`` (Azure) prefix, "" for a whole bucket.
    `text` is the pattern as written; two patterns that mean the same thing
    (``s3://b`` and ``s3://b/``) compare equal.
    """

    scheme: str
    bucket: str
    bucket_prefix: bool
    key_prefix: str
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text

    def matches(self, resource: Resource) -> bool:
        if resource.scheme != self.scheme or not resource.key.startswith(self.key_prefix):
            return False
        if self.bucket_prefix:
            return resource.bucket.startswith(self.bucket)
        return resource.bucket == self.bucket

    def describe(self) -> str:
        """What the pattern covers, in plain words (for `bailiwick explain`)."""
        noun = "bucket" if self.scheme == S3 else "storage account"
        if self.bucket_prefix:
            where = f"any {noun} whose name starts with {self.bucket!r}" if self.bucket else f"any {noun}"
        else:
            where = f"{noun} {self.bucket!r}"
        if self.scheme == AZURE:
            container, _, blob = self.key_prefix.partition("/")
            what = f"container {container!r}, " + (
                f"blobs whose name starts with {blob!r}" if blob else "every blob"
            )
        else:
            what = f"keys starting with {self.key_prefix!r}" if self.key_prefix else "every key"
        return f"{where}, {what}"


def parse_pattern(text: str) -> ResourcePattern:
    """Parse a dataset's resource pattern; raises `PatternError` with the reason."""
    scheme, rest = _split_scheme(text)
    if scheme == S3:
        bucket, _, key = rest.partition("/")
        name, prefix = _bucket_name(bucket, text)
        if prefix:
            _check_s3_prefix(name, text)
        else:
            _check_s3_bucket(name)
        _no_star(key, text)
        return ResourcePattern(S3, name, prefix, key, text)
    account, _, after = rest.partition("/")
    name, prefix = _bucket_name(account, text)
    if prefix:
        if not _AZURE_ACCOUNT_PREFIX.fullmatch(name):
            raise PatternError(
                f'"{text}": "{name}" before "*" does not start a valid storage account name '
                f"({_AZURE_ACCOUNT_RULE})"
            )
    else:
        _check_azure_account(name)
    container, _, blob = after.partition("/")
    if not container:
        raise PatternError(f'"{text}": an Azure pattern names an account and a container ({PATTERN_FORMS})')
    _no_star(after, text)
    _check_azure_container(container)
    return ResourcePattern(AZURE, name, prefix, f"{container}/{blob}", text)


def parse_resource(text: str) -> Resource:
    """Parse a concrete resource (``s3://bucket/key``, ``azure://account/container/blob``).

    Used for policy tests and `bailiwick explain`; raises `PatternError`.
    """
    scheme, rest = _split_scheme(text)
    if "*" in text:
        raise PatternError(f'"{text}": a resource names one bucket and key; "*" is not allowed here')
    bucket, _, key = rest.partition("/")
    if scheme == S3:
        _check_s3_bucket(bucket)
        return Resource(S3, bucket, key)
    _check_azure_account(bucket)
    if not key:
        return Resource(AZURE, bucket, "")
    container, _, blob = key.partition("/")
    _check_azure_container(container)
    return Resource(AZURE, bucket, f"{container}/{blob}")


def _split_scheme(text: str) -> tuple[str, str]:
    for scheme in (S3, AZURE):
        marker = f"{scheme}://"
        if text.startswith(marker):
            return scheme, text[len(marker):]
    raise PatternError(f'"{text}" is not a resource (expected {PATTERN_FORMS})')


def _bucket_name(part: str, text: str) -> tuple[str, bool]:
    """The bucket (or account) name and whether it ends in the prefix wildcard."""
    name, star, _ = part.partition("*")
    if star and name + star != part:
        raise PatternError(f'"{text}": "*" may appear once, at the end of the bucket or account name')
    return name, bool(star)


def _no_star(key: str, text: str) -> None:
    if "*" in key:
        raise PatternError(
            f'"{text}": "*" is a wildcard only at the end of the bucket or account name; '
            "key prefixes match literally, so leave it out"
        )


def _check_s3_bucket(name: str) -> None:
    if not name:
        raise PatternError(f"the bucket name is missing ({PATTERN_FORMS})")
    if not _S3_BUCKET.fullmatch(name) or ".." in name:
        raise PatternError(f'"{name}" is not a valid S3 bucket name ({_S3_BUCKET_RULE})')


def _check_s3_prefix(name: str, text: str) -> None:
    if not _S3_BUCKET_PREFIX.fullmatch(name) or ".." in name:
        raise PatternError(
            f'"{text}": "{name}" before "*" does not start a valid S3 bucket name ({_S3_BUCKET_RULE})'
        )


def _check_azure_account(name: str) -> None:
    if not name:
        raise PatternError(f"the storage account name is missing ({PATTERN_FORMS})")
    if not _AZURE_ACCOUNT.fullmatch(name):
        raise PatternError(f'"{name}" is not a valid Azure storage account name ({_AZURE_ACCOUNT_RULE})')


def _check_azure_container(name: str) -> None:
    if name in _AZURE_SPECIAL_CONTAINERS:
        return
    if not _AZURE_CONTAINER.fullmatch(name):
        raise PatternError(f'"{name}" is not a valid Azure container name ({_AZURE_CONTAINER_RULE})')
