"""Every error bailiwick raises on purpose, under one root.

The tree::

    BailiwickError
    ├── ConfigError              the configuration cannot be used; raised at start
    ├── PolicyLoadError          the policy folder did not load; carries every issue
    ├── StreamInterrupted        the exchange broke after the response began: the caller's
    │                            connection is cut, since no error can be sent any more
    └── RequestRefused           a request that is not forwarded (or failed upstream)
        ├── BadRequest           400: the request cannot be read unambiguously
        │   ├── MethodNotAllowed 405 MethodNotAllowed: a method no operation of the storage API has
        │   └── FormRefused      400 MalformedPOSTRequest (or S3's code for the case): a browser's form
        │                        upload not read as S3 reads it (proxy.s3.postform)
        ├── Unauthenticated      403: no verified identity (missing, invalid, expired token)
        │   ├── NoIdentity              403 InvalidToken: no credential of any kind the proxy reads was
        │   │                           presented (and neither the network nor GeoIP names the caller)
        │   ├── SignatureMismatch       403 SignatureDoesNotMatch: an access-key signature (or a
        │   │                           chunk's, or the body's SHA-256) is not the one expected
        │   ├── UnknownAccessKey        403 InvalidAccessKeyId: a key id the proxy holds no secret for
        │   ├── RequestTimeTooSkewed    403 RequestTimeTooSkewed: a signed date too far from now
        │   ├── ExpiredSignature        403 AccessDenied: a presigned URL (or a form's POST policy) past its expiry
        │   ├── PolicyConditionFailed   403 AccessDenied: a form its POST policy does not admit
        │   │                           (proxy.identity.postpolicy)
        │   ├── ForwardedCertRefused    403 InvalidClientCertHeader: X-Forwarded-Client-Cert that cannot
        │   │                           be believed (an untrusted peer, not written as Envoy writes it)
        │   ├── AmbiguousIdentity       403 AmbiguousIdentity: two identity sources name different
        │   │                           jurisdictions
        │   └── MalformedSignature      400 AuthorizationHeaderMalformed (or the query's or
        │                               InvalidArgument): an AWS signature not written as documented
        ├── AccessDenied         403: the policy refused it
        ├── PreflightRefused     403 AccessForbidden (Azure: CorsPreflightFailure): a CORS preflight no
        │                        rule of its dataset allows (proxy.cors)
        ├── PayloadTooLarge      413: a body the proxy must inspect is over its bound
        ├── LengthRequired       411 MissingContentLength: an upload the proxy must encrypt states no length
        ├── InternalError        500: an exception nobody planned for, or the audit log failed
        ├── NotReady             503: no valid policy is loaded
        ├── AuditLogFull         503 AuditLogFull: no disk space is reserved for the request's audit line
        │                        (the audit log's disk is full); forwarded again once there is
        ├── SlowDown             503: the caller holds its whole share of the proxy, or the bodies read
        │                        before the decision hold all the bytes they may; retry later
        ├── NotImplementedHere   501 NotImplemented: an operation the proxy cannot do on an encrypted dataset
        │                        (or a form upload in re-sign mode)
        ├── KeyReleaseRefused    403 KeyReleaseRefused: the region's key service would not release a data
        │                        key (the key is disabled, deleted or not the proxy's to use: the kill switch)
        ├── KeyServiceUnavailable 503 KeyServiceUnavailable: the region's key service did not answer
        ├── ObjectNotEncrypted   403 ObjectNotEncrypted: a plaintext object in a dataset that requires encryption
        ├── EncryptedObjectInvalid 502 EncryptedObjectInvalid: a stored object failed authentication
        │                        (tampered, truncated, swapped, or not this proxy's format)
        ├── RangeNotSatisfiable  416 InvalidRange: a Range outside an encrypted object's plaintext
        ├── PreconditionFailed   412 PreconditionFailed: a copy's source conditions did not hold
        ├── ObjectChanged        503 ServiceUnavailable: an object read in several requests (a multipart
        │                        upload's, encrypted) was written again in between; nothing was sent
        ├── NoSuchUpload         404 NoSuchUpload: a multipart upload id the proxy cannot use on an encrypted dataset
        └── UpstreamFailure      502: the storage server could not be reached
            ├── UpstreamTimeout  504: the storage server did not answer in time
            └── UpstreamTlsRefused 502: the storage server's certificate was refused (unknown CA, another
                                 name, expired, or not the pinned key): nothing was sent to it

`RequestRefused` carries an HTTP status and an error code in the storage
API's vocabulary (S3's names; other APIs map them). Exactly one place turns a
`RequestRefused` into an HTTP response: `proxy.gateway`, through the API's
error renderer. Anything else that escapes a request handler is an internal
error and is refused too (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass


class BailiwickError(Exception):
    """Root of every error bailiwick raises on purpose."""


class ConfigError(BailiwickError):
    """The configuration (file, flags or environment) cannot be used."""


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file, located for the operator."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyLoadError(BailiwickError):
    """The policy did not load; `issues` lists every problem found."""

    def __init__(self, issues: list[PolicyIssue] | tuple[PolicyIssue, ...]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class StreamInterrupted(BailiwickError):
    """The upstream exchange broke after the caller's response had begun.

    `response` is the caller's response as far as it got; the caller's
    connection has been aborted, so the handler only hands it back.
    """

    def __init__(self, message: str, response: object) -> None:
        super().__init__(message)
        self.response = response


class RequestRefused(BailiwickError):
    """A request that bailiwick does not forward, with what the caller is told."""

    status: int = 403
    default_code: str = "AccessDenied"

    def __init__(self, message: str, *, code: str | None = None, resource: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.resource = resource


class BadRequest(RequestRefused):
    status = 400
    default_code = "InvalidRequest"


class MethodNotAllowed(BadRequest):
    """A method no operation of the storage API has: S3's 405 (Azure's UnsupportedHttpVerb)."""

    status = 405
    default_code = "MethodNotAllowed"


class Unauthenticated(RequestRefused):
    status = 403
    default_code = "InvalidToken"


class NoIdentity(Unauthenticated):
    """Nothing named the caller: no token, no access-key signature, no network or country rule for its address.

    Not a refusal of a credential (a bad token is never this): a source that finds nothing presented says
    so by this type, and a source more specific (a workload certificate) stands alone. The caller sees
    an `Unauthenticated` like any other (403 InvalidToken).
    """


class ForwardedCertRefused(Unauthenticated):
    """An X-Forwarded-Client-Cert the proxy will not believe: from an untrusted peer, doubled, or malformed."""

    default_code = "InvalidClientCertHeader"


class AmbiguousIdentity(Unauthenticated):
    """Two identity sources of one request name different jurisdictions: refused, never resolved."""

    default_code = "AmbiguousIdentity"


class SignatureMismatch(Unauthenticated):
    """An AWS signature that does not verify with the secret of the key it names."""

    default_code = "SignatureDoesNotMatch"


class UnknownAccessKey(Unauthenticated):
    default_code = "InvalidAccessKeyId"


class RequestTimeTooSkewed(Unauthenticated):
    default_code = "RequestTimeTooSkewed"


class ExpiredSignature(Unauthenticated):
    """A presigned URL past its expiry: S3 answers AccessDenied ("Request has expired")."""

    default_code = "AccessDenied"


class MalformedSignature(Unauthenticated):
    """An AWS signature (header or query) not written exactly as AWS documents it."""

    status = 400
    default_code = "AuthorizationHeaderMalformed"


class AccessDenied(RequestRefused):
    status = 403
    default_code = "AccessDenied"


class PayloadTooLarge(RequestRefused):
    status = 413
    default_code = "EntityTooLarge"


class LengthRequired(RequestRefused):
    status = 411
    default_code = "MissingContentLength"


class InternalError(RequestRefused):
    """An exception nobody planned for: refused, never forwarded."""

    status = 500
    default_code = "InternalError"


class NotReady(RequestRefused):
    """No valid policy is loaded: nothing can be decided, so nothing is forwarded."""

    status = 503
    default_code = "ServiceUnavailable"


class AuditLogFull(RequestRefused):
    """No space is reserved on the audit log's disk for this request's line: it is not forwarded (fail closed),
    and requests are forwarded again once space can be reserved (docs/operations.md, "Audit log")."""

    status = 503
    default_code = "AuditLogFull"


class SlowDown(RequestRefused):
    """The caller already holds all of the proxy that one caller may, or the bodies read before the
    decision hold all the bytes they may: it should retry later (S3's throttling)."""

    status = 503
    default_code = "SlowDown"


class NotImplementedHere(RequestRefused):
    """An operation that the proxy does not carry out (refused, never passed on): on an encrypted dataset, or a
    form upload in re-sign mode."""

    status = 501
    default_code = "NotImplemented"


class KeyReleaseRefused(RequestRefused):
    """The region's key service refused to release (or make) a data key: disabled, deleted, not allowed."""

    status = 403
    default_code = "KeyReleaseRefused"


class KeyServiceUnavailable(RequestRefused):
    """The region's key service could not be reached, or did not answer in time."""

    status = 503
    default_code = "KeyServiceUnavailable"


class ObjectNotEncrypted(RequestRefused):
    """A plaintext object found in a dataset that requires encryption (and is not migrating)."""

    status = 403
    default_code = "ObjectNotEncrypted"


class EncryptedObjectInvalid(RequestRefused):
    """A stored encrypted object that does not authenticate: tampered, truncated, swapped or unreadable."""

    status = 502
    default_code = "EncryptedObjectInvalid"


class RangeNotSatisfiable(RequestRefused):
    status = 416
    default_code = "InvalidRange"


class PreconditionFailed(RequestRefused):
    status = 412
    default_code = "PreconditionFailed"


class ObjectChanged(RequestRefused):
    """The object was written again while the proxy read it in several requests: nothing of either version
    was sent (a retry reads the new one)."""

    status = 503
    default_code = "ServiceUnavailable"


class NoSuchUpload(RequestRefused):
    """An upload id that names no upload the proxy can seal parts of (not a token it gave)."""

    status = 404
    default_code = "NoSuchUpload"


class UpstreamFailure(RequestRefused):
    status = 502
    default_code = "BadGateway"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    default_code = "GatewayTimeout"


class UpstreamTlsRefused(UpstreamFailure):
    """The storage server's TLS handshake failed the proxy's checks; the request was not sent, in clear or not."""
