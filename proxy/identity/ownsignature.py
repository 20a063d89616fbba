"""A caller's verified SigV4 signature, made again for a request the proxy sends on the caller's behalf.

The proxy answers a paged ListBuckets itself (`proxy.storage.accountpages`): it
asks the storage server for pages of its own, which differ from the caller's
request in the paging parameters of the query only. Under the caller's own
signature (access keys, not re-sign mode) that signature would no longer
verify at the storage server. Having just verified it, the proxy holds the
day's signing key it was verified with (derived from the key's secret, scoped
to that date, region and service); `CallerSignature.sign` signs the changed
request with it: the same key id and credential scope, the same signed headers
and values, the same date and payload line, only the query and so the
signature new. The storage server then checks each page request against the
caller's own key, as it checked the caller's request: nothing is asked under
an identity or a scope the caller's signature did not have.

Only a signature in the Authorization header (AWS4-HMAC-SHA256) can be made
again so: a presigned URL's signature is in the query it signs, and SigV2 is
refused for paged listings as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.identity.signers import Signers


@dataclass(frozen=True, slots=True)
class CallerSignature:
    """A request's verified SigV4 header signature, and what signs another query the same way."""

    signers: Signers = field(repr=False)
    key_id: str
    region: str
    signing_key: bytes = field(repr=False)   # the day's key the signature verified with
    authorization: str   # the caller's Authorization header, as received
    signature_at: int    # where its Signature value begins (it runs to the end)
    signed: dict[str, list[str]] = field(repr=False)   # the signed headers' values, as forwarded
    payload: str         # the x-amz-content-sha256 line
    timestamp: str       # the signed date, YYYYMMDDTHHMMSSZ

    def sign(self, method: str, target: str) -> str:
        """The Authorization header for the same request sent to `target`: the caller's, with its signature anew."""
        signature, _ = self.signers.v4("", self.key_id, self.region, method, target, target.partition("?")[2],
                                       self.signed, self.payload, self.timestamp, key=self.signing_key)
        return self.authorization[:self.signature_at] + signature
