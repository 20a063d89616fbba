"""A caller's verified SigV4 signature, made again for a request the proxy sends on the caller's behalf.

The proxy answers a paged ListBuckets itself (`proxy.storage.accountpages`): it
asks the storage server for pages of its own, which differ from the caller's
request in the paging parameters of the query only. Under the caller's own
signature (access keys, not re-sign mode) that signature would no longer
verify at the storage server. Having just verified it, the proxy holds the
key it was made with; `CallerSignature.sign` signs the changed request with
it: the same key id and credential scope, the same signed headers and values,
the same date and payload line, only the query and so the signature new. The
storage server then checks each page request against the caller's own key, as
it checked the caller's request: nothing is asked under an identity or a scope
the caller's signature did not have.

Only a signature in the Authorization header (AWS4-HMAC-SHA256) is made again
so: a presigned URL's signature is in the query it signs, and SigV2 is refused
for paged listings as before. One `CallerSignature` serves every request of a
key (`Keyring.signing`): the request's signature is read again from its
headers when a page request is signed, so a request that pages nothing pays
nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multidict import MultiMapping

from proxy.errors import MalformedSignature
from proxy.identity.signers import Signers
from proxy.identity.sigsyntax import SIGV4_HEADER, signed_headers
from proxy.identity.sigtime import signed_date

if TYPE_CHECKING:
    from proxy.identity.keyring import AccessKey


@dataclass(frozen=True, slots=True)
class CallerSignature:
    """Signs a request again with the access key whose SigV4 header signature on it verified."""

    signers: Signers = field(repr=False)
    key: AccessKey = field(repr=False)
    region: str

    def sign(self, method: str, target: str, headers: MultiMapping[str]) -> str:
        """The Authorization header for the verified request of `headers`, sent to `target` instead: the caller's
        own header, its signature made anew. Raises `MalformedSignature` if `headers` are not a SigV4 header
        signature by this key (they were verified: never, but nothing is signed for another key)."""
        authorizations: list[str] = list(headers.getall("Authorization", []))
        match = SIGV4_HEADER.fullmatch(authorizations[0]) if len(authorizations) == 1 else None
        key_id = self.key.rule.access_key_id
        if match is None or match.group(1).partition("/")[0] != key_id:
            raise MalformedSignature("the request is not signed in its Authorization header by this key")
        signed = signed_headers(match.group(2), headers, MalformedSignature)
        _, timestamp = signed_date(signed)
        payload = headers.getall("X-Amz-Content-SHA256")[0]
        signature, _ = self.signers.v4(self.key.secret.current(), key_id, self.region, method, target,
                                       target.partition("?")[2], signed, payload, timestamp)
        return authorizations[0][:match.start(3)] + signature
