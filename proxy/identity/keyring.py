"""What an S3 signature is verified against: the keys the proxy holds, the region it serves, its clock.

`Keyring` is the state the SigV4 and SigV2 readers (`proxy.identity.sigv4`,
`proxy.identity.sigv2`) share: the access keys by id, the one region a
credential scope may name, the clock a signed date is held to, botocore's
signers, and how to read the bucket a virtual-hosted Host names (SigV2 signs
it). `Authenticated` is what a verified signature yields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from multidict import MultiMapping

from proxy.config import AccessKeyRule
from proxy.errors import RequestTimeTooSkewed, UnknownAccessKey
from proxy.identity.bodycheck import BodyCheck
from proxy.identity.ownsignature import CallerSignature
from proxy.identity.secretsource import SecretSource
from proxy.identity.signers import SERVICE, Signers
from proxy.identity.sigsyntax import CREDENTIAL, Refusal
from proxy.identity.sigtime import MAX_SKEW_SECONDS


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A request whose signature verified: who signed it, and what its body must be.

    `signature`: for a SigV4 signature in the Authorization header, what makes it again for a page
    request of the proxy's own (`proxy.identity.ownsignature`); None for the other ways of signing.
    """

    rule: AccessKeyRule
    body: BodyCheck | None = None
    signature: CallerSignature | None = None


@dataclass(frozen=True, slots=True)
class AccessKey:
    """One configured key: its rule (who the signer is) and its secret."""

    rule: AccessKeyRule
    secret: SecretSource = field(repr=False)


@dataclass(frozen=True, slots=True)
class Keyring:
    """The keys, region, clock and signers a signature is verified with."""

    keys: Mapping[str, AccessKey]
    region: str
    clock: Callable[[], float]
    signers: Signers | None   # None when no key is configured (botocore is not imported)
    virtual_bucket: Callable[[MultiMapping[str]], str | None] | None = None
    # Key id -> what signs a page request again with that key, made at its first verified SigV4 header.
    _signing: dict[str, CallerSignature] = field(default_factory=dict)

    def signing(self, key: AccessKey) -> CallerSignature:
        """What signs a request again with `key` (`proxy.identity.ownsignature`): one for all its requests."""
        made = self._signing.get(key.rule.access_key_id)
        if made is None:
            assert self.signers is not None
            made = self._signing[key.rule.access_key_id] = CallerSignature(self.signers, key, self.region)
        return made

    def key(self, key_id: str) -> AccessKey:
        """The key of that id. Raises `UnknownAccessKey` for a key not held."""
        key = self.keys.get(key_id)
        if key is None:
            raise UnknownAccessKey("the access key id is not one this proxy knows")
        return key

    def credential(self, text: str, error: Refusal) -> tuple[AccessKey, str]:
        """The key a SigV4 credential names and its scope's date, the scope checked against this proxy's.

        Raises `error`'s exception for a credential that is malformed or scoped to another region or
        service, `UnknownAccessKey` for a key not held.
        """
        match = CREDENTIAL.fullmatch(text)
        if match is None:
            raise error("the credential must read KEY/YYYYMMDD/REGION/s3/aws4_request")
        key_id, date, region, service = match.groups()
        if service != SERVICE:
            raise error(f"the credential's service is {service!r}; this proxy serves s3")
        if region != self.region:
            raise error(f"the credential's region is {region!r}; sign for {self.region!r}, the region this "
                        "proxy serves")
        return self.key(key_id), date

    def check_skew(self, moment: float) -> None:
        """Raises `RequestTimeTooSkewed` unless `moment` is within AWS's 15 minutes of the clock."""
        if abs(self.clock() - moment) > MAX_SKEW_SECONDS:
            raise RequestTimeTooSkewed("the difference between the request time and the proxy's time is more "
                                       "than 15 minutes")
