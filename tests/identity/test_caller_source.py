"""An audit line's `caller.source` is the socket's peer, never the client a trusted proxy names (docs/operations.md).

`X-Forwarded-For` from a peer in `identity.trusted_proxies` gives `identity.geoip` (and `identity.networks`)
the client's address; the line records that client's country as `caller.location`, and the peer that
connected (the load balancer, here loopback) as `caller.source`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import DUBLIN
from tests.support.recorder import Recorder

from .geodb import IE_ADDRESS, write_database
from .test_geoip_proxy import from_address, located_proxy


def test_the_audit_source_is_the_peer_not_the_forwarded_client(
    recorder: Recorder, seeded: None, tmp_path: Path,
) -> None:
    database = write_database(tmp_path / "countries.mmdb")
    audit = tmp_path / "audit.jsonl"
    running = located_proxy(recorder, database, audit, use_as_jurisdiction=True)
    try:
        body = from_address(running, IE_ADDRESS).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()
        assert body == b"Dublin mail"
    finally:
        running.stop()
    (line,) = [json.loads(text) for text in audit.read_text().splitlines() if '"decision"' in text]
    # Judged by the forwarded client's address (an Irish one) ...
    assert (line["decision"], line["caller"]["subject"], line["caller"]["location"]) == ("allow", "geoip:IE", "IE")
    # ... and recorded as coming from the peer that connected, which wrote the header.
    assert line["caller"]["source"] == "127.0.0.1"
