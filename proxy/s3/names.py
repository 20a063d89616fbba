"""The rules an S3 bucket name must meet before the policy sees it (keys: `proxy.storage.keys`).

Policies name data by bucket and key prefix, so a name that a storage server
could resolve to something other than its literal text (an access-point alias
standing for another bucket, a key with ``..`` that a file-system backed store
normalises, a backslash that some servers read as "/") would let a request
reach data under a name the policy never judged. Such names are refused here,
in one place, for the path, the virtual-hosted Host and the copy source alike.

The check runs on every request. It first asks, with a few cheap tests,
whether the name is plainly acceptable (the everyday case), and only
otherwise runs the rule-by-rule reading (`bucket_name_rules`), which names
the first rule broken; the quick test accepts nothing the full reading would
refuse. A deployment has few buckets, so the answer for a bucket name is
also remembered (bounded; only names short enough to be valid).
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from proxy.errors import BadRequest

# S3's code for a name that breaks its naming rules (400), which moto answers too for one it checks.
INVALID_BUCKET_NAME_CODE = "InvalidBucketName"

_BUCKET_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-")
_ALNUM = frozenset(string.ascii_lowercase + string.digits)
_IP_FORM = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# Names S3 reserves. The aliases stand for another bucket, so the policy would
# judge the alias while the server serves the bucket behind it.
_RESERVED_PREFIXES = {
    "xn--": "bucket names must not start with xn-- (reserved)",
    "sthree-": "bucket names must not start with sthree- (reserved)",
}
_RESERVED_SUFFIXES = {
    "-s3alias": "names ending in -s3alias are access point aliases; address the bucket by its name",
    "--ol-s3": "names ending in --ol-s3 are Object Lambda aliases; address the bucket by its name",
    ".mrap": "names ending in .mrap are multi-region access points; address the bucket by its name",
    "--table-s3": "bucket names must not end in --table-s3 (reserved)",
}
_PREFIXES = tuple(_RESERVED_PREFIXES)
_SUFFIXES = tuple(_RESERVED_SUFFIXES)
# 3 to 63 lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit.
_PLAIN_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket_name(name: str) -> None:
    """Refuse (`BadRequest`, InvalidBucketName) a name that is not a valid S3 bucket name."""
    reason = bucket_name_problem(name)
    if reason:
        raise BadRequest(f"{reason}: {name!r}", code=INVALID_BUCKET_NAME_CODE, resource=name)


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 bucket name, or None if it is."""
    if len(name) > 63:
        # Refused by the first rule; not worth remembering (and its length is the caller's choice).
        return _name_problem(name)
    return _short_name_problem(name)


@lru_cache(maxsize=4096)
def _short_name_problem(name: str) -> str | None:
    # The answer depends on the name alone; at most 4096 names of at most 63 characters are kept.
    return _name_problem(name)


def _name_problem(name: str) -> str | None:
    if (
        _PLAIN_BUCKET.fullmatch(name)
        and ".." not in name
        and not name.startswith(_PREFIXES)
        and not name.endswith(_SUFFIXES)
        and not _IP_FORM.fullmatch(name)
    ):
        # Each rule of `bucket_name_rules` at once: length, case, characters, ends, dots,
        # IP form, reserved names.
        return None
    return bucket_name_rules(name)


def bucket_name_rules(name: str) -> str | None:
    """The rule-by-rule reading behind the quick test: the first rule `name` breaks, or None."""
    if not 3 <= len(name) <= 63:
        return "bucket names must be between 3 and 63 characters long"
    if name.lower() != name:
        return "bucket names must be lower case"
    if any(char not in _BUCKET_CHARS for char in name):
        return "bucket names may contain only lower-case letters, digits, dots and hyphens"
    if name[0] not in _ALNUM or name[-1] not in _ALNUM:
        return "bucket names must begin and end with a letter or digit"
    if ".." in name:
        return "bucket names must not contain two adjacent dots"
    if _IP_FORM.fullmatch(name):
        return "bucket names must not be formatted as an IP address"
    for prefix, reason in _RESERVED_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    for suffix, reason in _RESERVED_SUFFIXES.items():
        if name.endswith(suffix):
            return reason
    return None
