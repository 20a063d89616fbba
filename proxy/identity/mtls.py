"""A verified client certificate as the caller's identity (``listen_tls.client_ca``).

When the listener's handshake verified a client certificate (`proxy.peercert`),
the certificate names the caller the way a mesh names a workload: by the
operator's `identity.workloads` rules, its SPIFFE ID (its one URI SAN) first,
else its subject (RFC 4514, exactly as a ``subject`` rule writes it). The name
that matched is the caller's subject in the audit line. A certificate no rule
maps identifies nobody: it is refused as unidentified, never given a default,
and never passed over for the network.

Pure: it reads a plain `PeerCertificate` value, never a socket.
"""

from __future__ import annotations

from proxy.errors import Unauthenticated
from proxy.identity.workload import WorkloadTable
from proxy.peercert import PeerCertificate


def certificate_identity(certificate: PeerCertificate, workloads: WorkloadTable) -> tuple[str, str]:
    """The (name, jurisdiction) a verified client certificate identifies. Raises `Unauthenticated`."""
    if certificate.spiffe_id is not None:
        jurisdiction = workloads.jurisdiction_of(certificate.spiffe_id)
        if jurisdiction is not None:
            return certificate.spiffe_id, jurisdiction
    jurisdiction = workloads.jurisdiction_of_subject(certificate.subject)
    if jurisdiction is not None:
        return certificate.subject, jurisdiction
    named = certificate.spiffe_id or certificate.subject or "with no subject"
    raise Unauthenticated(f"no identity: the client certificate {named} is in no rule of identity.workloads")
