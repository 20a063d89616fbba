"""S3 access keys as identity: the proxy authenticates the caller itself, as an S3 gateway does.

The AWS CLI, rclone, s3cmd and most SDKs sign every request with an access
key and offer no way to send another header. The operator maps access key
ids to a subject and a jurisdiction (``identity.access_keys``) and gives the
proxy each key's secret, as the storage server has it. A request signed with a
mapped key is taken as that caller only once its signature verifies with that
key's secret: reading the key id alone would let anyone who knows a key id
(key ids are not secret) be judged as its owner, and would leave the proxy
and the storage server to read one header two ways.

What is accepted, exactly as AWS documents it and nothing looser:

* ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/s3/aws4_request, SignedHeaders=a;b, Signature=HEX``
  (SigV4): the three components, in this order, once each, separated by
  ``,`` and at most one space; ``host`` and every ``x-amz-*`` header of the
  request signed; ``x-amz-content-sha256`` present (``UNSIGNED-PAYLOAD``, a
  SHA-256 in hex, or a streaming value whose chunks are verified one by one);
* ``Authorization: AWS AKID:SIGNATURE`` (SigV2);
* a form upload's (S3 POST Object) SigV4 POST policy: ``x-amz-algorithm``,
  ``x-amz-credential``, ``x-amz-date``, ``policy`` and ``x-amz-signature``
  fields, verified with its conditions (`proxy.identity.postpolicy`);
* a presigned URL: ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` once each
  (SigV4), or ``AWSAccessKeyId``, ``Expires``, ``Signature`` once each (SigV2).

The signed date must be within 15 minutes of the proxy's clock (a presigned
URL: from its date until its expiry, at most 7 days); the credential scope
must name the region the proxy serves (`IdentityConfig.access_key_region`)
and the service ``s3``. A request that signs in more than one way, names an
auth parameter twice or in another spelling, or carries temporary credentials
(a security token) is refused. The expected signature is computed by
botocore's own signers (`S3SigV4Auth`, `HmacV1Auth`), from the request-target
and header values exactly as they will be forwarded, and compared in constant
time.

A secret is never logged; one mounted as a file is read again within a
second of a change (a rotated Kubernetes Secret), and a file that cannot be
read keeps the last good secret.

This module is the key table and the entry point (`AccessKeyTable.authenticate`:
which way a request is signed); each step has its own module: the secrets
(`proxy.identity.secretsource`), the grammar shared by both versions
(`proxy.identity.sigsyntax`), dates and their bounds (`proxy.identity.sigtime`),
the keys, region and clock a signature is held to (`proxy.identity.keyring`),
botocore's signers (`proxy.identity.signers`), and each version's reading and
verification (`proxy.identity.sigv4`, `proxy.identity.sigv2`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from multidict import MultiMapping

from proxy.config import AccessKeyRule
from proxy.errors import ConfigError, MalformedSignature
from proxy.identity import sigv2, sigv4
from proxy.identity.keyring import AccessKey, Authenticated, Keyring
from proxy.identity.postpolicy import PolicyLimits, has_post_signature, verify_post_policy
from proxy.identity.secretsource import SecretSource
from proxy.identity.signers import SERVICE, Signers
from proxy.identity.sigsyntax import (
    HEADER_SYNTAX,
    SIGV2,
    SIGV4,
    V2_PARAMS,
    V4_PARAMS,
    Query,
    aws_scheme,
    query_error,
)
from proxy.identity.sigtime import MAX_PRESIGNED_SECONDS, MAX_SKEW_SECONDS
from proxy.identity.sigv4 import UNSIGNED_PAYLOAD

__all__ = [
    "HEADER_SYNTAX",
    "MAX_PRESIGNED_SECONDS",
    "MAX_SKEW_SECONDS",
    "SERVICE",
    "SIGV4",
    "UNSIGNED_PAYLOAD",
    "AccessKeyTable",
    "Authenticated",
    "SecretSource",
    "SignedForm",
]


@dataclass(frozen=True, slots=True)
class SignedForm:
    """A form upload's fields (lower-cased names) and the bucket it is posted to: what its POST policy is held to."""

    fields: Mapping[str, str]
    bucket: str


class AccessKeyTable:
    """Access key id -> its rule and secret (`identity.access_keys`); verifies signatures."""

    def __init__(
        self, rules: Iterable[AccessKeyRule], region: str | None = None, *,
        clock: Callable[[], float] = time.time,
        virtual_bucket: Callable[[MultiMapping[str]], str | None] | None = None,
    ) -> None:
        """`virtual_bucket`: the bucket a virtual-hosted Host names (SigV2 signs it), None when path-style."""
        keys: dict[str, AccessKey] = {}
        for rule in rules:
            if rule.access_key_id in keys:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} is listed twice")
            keys[rule.access_key_id] = AccessKey(rule, SecretSource(rule))
        if keys and region is None:
            raise ConfigError("identity.access_key_region: access keys are verified against the region callers "
                              "sign for: set region (or identity.access_key_region)")
        # botocore is imported only when access keys are configured (~15 MiB and ~0.2 s).
        self._ring = Keyring(keys, region or "", clock, Signers() if keys else None, virtual_bucket)

    def __bool__(self) -> bool:
        return bool(self._ring.keys)

    def authenticate(self, method: str, target: str, headers: MultiMapping[str]) -> Authenticated | None:
        """Who signed this request, verified; None if it carries no AWS signature at all.

        Raises `UnknownAccessKey` for a well-formed signature by a key the proxy does not
        hold (the caller may fall back to other ways of identifying it), and another
        `Unauthenticated` for anything that does not verify or cannot be read one way only.
        """
        authorizations: list[str] = list(headers.getall("Authorization", []))
        if not target.startswith("/"):
            # S3 signs origin-form targets only; an absolute URL or "*" has no canonical path.
            raise MalformedSignature("the request-target must be a path", code="InvalidArgument")
        query = Query.of(target)
        params = query.auth()
        header: str | None = None
        if authorizations:
            if len(authorizations) > 1:
                raise MalformedSignature("the request has more than one Authorization header")
            header = aws_scheme(authorizations[0])
        if header is not None and params:
            raise MalformedSignature("a request may be signed in its Authorization header or in its query, "
                                     "not both", code="InvalidArgument")
        if params.keys() & {"X-Amz-Security-Token"} or "X-Amz-Security-Token" in headers:
            raise MalformedSignature("temporary credentials (a security token) are not accepted with access keys",
                                     code="InvalidArgument")
        ring = self._ring
        if header == SIGV4:
            return sigv4.verify_header(ring, method, target, query, headers, authorizations[0])
        if header == SIGV2:
            return sigv2.verify(ring, method, target, query, headers, authorizations[0], None)
        if not params:
            return None
        v4 = [name for name in V4_PARAMS if name in params]
        v2 = [name for name in V2_PARAMS if name in params]
        if v4 and v2:
            raise query_error("the query mixes SigV4 (X-Amz-*) and SigV2 (AWSAccessKeyId, Signature) parameters")
        if v4:
            return sigv4.verify_presigned(ring, method, target, query, headers, params)
        return sigv2.verify(ring, method, target, query, headers, None, params)

    def authenticate_form(self, form: SignedForm) -> tuple[Authenticated, PolicyLimits] | None:
        """Who signed a form upload's POST policy, verified, and the file size it allows; None if it is unsigned.

        Raises as `authenticate` does (`UnknownAccessKey` for a key the proxy does not hold).
        """
        if not has_post_signature(form.fields):
            return None
        return verify_post_policy(self._ring, form.fields, form.bucket)
