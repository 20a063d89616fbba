"""S3 access keys as identity, for clients that cannot add a token header.

The AWS CLI, rclone, s3cmd and most SDKs sign every request with an access
key and offer no way to send another header. The operator maps access key
ids to a subject and a jurisdiction (``identity.access_keys``); the proxy
reads the key id from the request's signature and takes that identity. It
does not check the signature (it does not hold the secret): the storage
server does, so a request with a borrowed key id and a wrong signature is
refused there. The key id is not a secret; the signature is never read.

Where the key id is read, and nothing else:

* ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/s3/aws4_request, ...`` (SigV4);
* ``Authorization: AWS AKID:SIGNATURE`` (SigV2, still spoken by old clients);
* the query of a presigned URL: ``X-Amz-Credential=AKID%2F...`` (SigV4) or
  ``AWSAccessKeyId=AKID`` (SigV2).

A request that names a key id in more than one place, or twice, is refused
rather than read one way: the storage server might read it the other way.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

from multidict import MultiMapping

from proxy.config import AccessKeyRule
from proxy.errors import ConfigError, Unauthenticated

_SIGV4 = "AWS4-HMAC-SHA256"
_SIGV2 = "AWS"
# Query parameters that carry the key id, compared without regard to case.
_QUERY_NAMES = {"x-amz-credential": "X-Amz-Credential", "awsaccesskeyid": "AWSAccessKeyId"}
# AWS key ids are 16-128 characters of [A-Z0-9]; other S3 servers are freer. Anything
# with a separator in it is not a key id this proxy will look up.
_MAX_KEY_ID = 128
_FORBIDDEN = frozenset("/:,= \t")


def access_key_in(headers: MultiMapping[str], target: str) -> str | None:
    """The access key id a request is signed with, or None. Raises `Unauthenticated` when ambiguous."""
    found: list[tuple[str, str]] = []   # (where, key id)
    for value in headers.getall("Authorization", ()):
        key = _from_authorization(value)
        if key is not None:
            found.append(("the Authorization header", key))
    query = target.partition("?")[2]
    if query and ("=" in query):
        for param in query.split("&"):
            name, _, raw = param.partition("=")
            canonical = _QUERY_NAMES.get(unquote(name).lower())
            if canonical is None:
                continue
            value = unquote(raw)
            key = value.split("/", 1)[0] if canonical == "X-Amz-Credential" else value
            found.append((f"the {canonical} query parameter", key))
    if not found:
        return None
    if len(found) > 1:
        raise Unauthenticated("the request names its access key more than once ("
                              + ", ".join(where for where, _ in found) + ")")
    where, key = found[0]
    if not key or len(key) > _MAX_KEY_ID or any(c in _FORBIDDEN for c in key):
        raise Unauthenticated(f"the access key id in {where} is malformed")
    return key


def _from_authorization(value: str) -> str | None:
    words = value.split(None, 1)
    scheme, rest = (words[0], words[1] if len(words) == 2 else "") if words else ("", "")
    if scheme.upper().startswith(_SIGV2) and scheme not in (_SIGV4, _SIGV2):
        # "AWS4-HMAC-SHA256Credential=…" and the like: some servers read them as signatures,
        # so a key id this proxy cannot find is not left to fall back to the caller's network.
        raise Unauthenticated("the AWS Authorization header is not one this proxy can read")
    if scheme == _SIGV4:
        credentials = [credential for name, _, credential in (part.strip().partition("=") for part in rest.split(","))
                       if name.lower() == "credential"]
        if len(credentials) != 1:
            raise Unauthenticated("the AWS4-HMAC-SHA256 Authorization header must have exactly one Credential")
        return credentials[0].split("/", 1)[0]
    if scheme == _SIGV2:
        return rest.strip().rpartition(":")[0]
    return None


class AccessKeyTable:
    """Access key id -> the rule that names it (`identity.access_keys`)."""

    def __init__(self, rules: Iterable[AccessKeyRule]) -> None:
        self._rules: dict[str, AccessKeyRule] = {}
        for rule in rules:
            if rule.access_key_id in self._rules:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} is listed twice")
            self._rules[rule.access_key_id] = rule

    def __bool__(self) -> bool:
        return bool(self._rules)

    def lookup(self, key_id: str) -> AccessKeyRule | None:
        return self._rules.get(key_id)
