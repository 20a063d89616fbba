"""Identity: who is calling, from a verified token, a verified S3 signature or the caller's network.

`IdentityResolver` is the entry point; the modules beside it each do one step
(finding the token, reading its issuer, keys, verification, claims, networks,
X-Forwarded-For; access keys: the key table, their secrets, SigV4 and SigV2
with the grammar, dates and HMACs they share, signed bodies and chunk
signatures).
"""

from __future__ import annotations

from proxy.identity.resolver import Identified, IdentityResolver

__all__ = ["Identified", "IdentityResolver"]
