"""ListBuckets through the proxy (real moto, real boto3): only the buckets the caller may list.

The answer is rewritten: other buckets' names and regions never reach the
caller, not even in the bytes; the decision is audited as an account listing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.harness import ProxyThread
from tests.conftest import ARCHIVE, DUBLIN, US, make_token
from tests.support.records import wait_for_record
from tests.test_gateway import FAKE_SIGV4, raw_request

OURS = {DUBLIN, US, ARCHIVE}


@pytest.mark.parametrize(("jurisdiction", "shown"), [
    ("IE", {DUBLIN, US, ARCHIVE}),
    ("US", {US, ARCHIVE}),        # archive: its only dataset (ie/) is in dry run
    ("JP", {US, ARCHIVE}),
])
def test_list_buckets_shows_only_what_the_caller_may_list(
    client_for: Any, seeded: None, direct: Any, jurisdiction: str, shown: set[str],
) -> None:
    direct.create_bucket(Bucket="no-dataset-here")
    names = {b["Name"] for b in client_for(jurisdiction).list_buckets()["Buckets"]}
    assert names == shown   # buckets in no dataset (like no-dataset-here) are never shown
    assert {b["Name"] for b in direct.list_buckets()["Buckets"]} >= OURS | {"no-dataset-here"}


def test_hidden_buckets_are_not_in_the_bytes_and_the_listing_is_audited(
    proxy: ProxyThread, seeded: None, audit_path: Path,
) -> None:
    token = make_token("US", sub="lister-7")
    answer = raw_request(proxy, (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {token}\r\n"
                                 f"{FAKE_SIGV4}Connection: close\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"<Name>{US}</Name>".encode() in body
    assert DUBLIN.encode() not in body
    # The subject is unique to this test: its line is the one with that subject.
    record = wait_for_record(audit_path, lambda r: r["caller"]["subject"] == "lister-7")
    assert (record["decision"], record["rule"], record["status"]) == ("allow", "account listing", 200)
    assert (record["request"]["action"], record["request"]["operation"]) == ("list", "ListBuckets")
