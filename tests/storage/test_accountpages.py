"""Paged ListBuckets through the real proxy, in front of moto's server, read with boto3's paginator.

2,500 buckets of mixed jurisdictions are created straight at moto. Each
caller pages through them with ``MaxBuckets`` and sees exactly its own, in
order, once each; a forged, altered, other caller's or other prefix's token
is refused with S3's code and nothing of it reaches the storage server. The
proxy runs in re-sign mode: it signs each page request it makes itself.
Under the caller's own access key instead, it signs each page request again
with that key: moto with IAM authentication, and a paging store that checks
every signature, accept each one (and moto refuses the caller's own signature
on the proxy's page request); a presigned or SigV2 paged listing is still
refused before anything is sent.
A token works in every worker of ``serve --workers 2`` and in replicas
sharing a key file. How a page request is read (`page_request`) is tested
on its own at the end.
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from multidict import CIMultiDict

from proxy.azure.listing import PAGING as AZURE_PAGING
from proxy.config import AccessKeyRule, Config, SigningConfig
from proxy.errors import BadRequest
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from proxy.s3.api import S3Api
from proxy.s3.listing import PAGING as S3_PAGING
from proxy.storage import accountpages
from proxy.storage.accountpages import Paging, check_unsigned_query, page_request
from proxy.storage.pagetoken import PageTokens, Position
from tests.conftest import make_token, proxy_config, s3_client
from tests.support.iam import SignedStore, signed_store
from tests.support.recorder import Recorder
from tests.support.serve import serve

POLICY = """
datasets:
  - name: irish
    region: eu-west-1
    resources: [s3://pie-*]
    rules:
      - id: irish-list
        allow: [read, list]
        from: [IE]
  - name: american
    region: us-east-1
    resources: [s3://pus-*]
    rules:
      - id: american-list
        allow: [read, list]
        from: [US]
  - name: everyone
    region: eu-west-1
    resources: [s3://pall-*]
    rules:
      - id: all-list
        allow: [list]
        from: ["*"]
"""
# Interleaved in name order: a page of any caller spans the others' buckets.
GROUPS = {"pall": 400, "pie": 1000, "pnone": 300, "pus": 800}
NAMES = sorted(f"{group}-{n:04d}" for group, count in GROUPS.items() for n in range(count))
SEEN = {
    "IE": [n for n in NAMES if n.startswith(("pall-", "pie-"))],
    "US": [n for n in NAMES if n.startswith(("pall-", "pus-"))],
    "JP": [n for n in NAMES if n.startswith("pall-")],
}
BAD_TOKEN = ("InvalidArgument", "The continuation token provided is incorrect")


@pytest.fixture(scope="module")
def store() -> Iterator[MotoServer]:
    with MotoServer() as server:
        direct = s3_client(server.url)
        for name in NAMES:   # in name order: moto lists in the order buckets were made
            direct.create_bucket(Bucket=name)
        yield server


@pytest.fixture(scope="module")
def relay(store: MotoServer) -> Iterator[Recorder]:
    recorder = Recorder(store.port)
    yield recorder
    recorder.close()


def paging_config(upstream: str, folder: Path) -> Config:
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "paging.yaml").write_text(POLICY)
    (folder / "credentials").write_text("[default]\naws_access_key_id = AKIAPROXY\naws_secret_access_key = s\n")
    config = proxy_config(upstream, folder / "audit.jsonl", policies=folder / "policies")
    signing = SigningConfig(region="us-east-1", credentials_file=folder / "credentials")
    return replace(config, s3=replace(config.s3, sign=signing))


@pytest.fixture(scope="module")
def proxy(relay: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    running = ProxyThread(paging_config(relay.url, tmp_path_factory.mktemp("paging"))).start()
    yield running
    running.stop()


def pages(client: Any, size: int, **extra: Any) -> list[list[str]]:
    paginator = client.get_paginator("list_buckets")
    return [[b["Name"] for b in page.get("Buckets", [])]
            for page in paginator.paginate(PaginationConfig={"PageSize": size}, **extra)]


@pytest.mark.parametrize(("jurisdiction", "size"), [("IE", 1000), ("US", 333), ("JP", 40), ("IE", 10_000)])
def test_each_caller_pages_through_exactly_its_own(proxy: ProxyThread, jurisdiction: str, size: int) -> None:
    got = pages(s3_client(proxy.url, make_token(jurisdiction)), size)
    flat = [name for page in got for name in page]
    assert flat == SEEN[jurisdiction]   # in order, no gap, no duplicate, nothing of another's
    assert all(len(page) <= size for page in got)
    assert [len(page) for page in got[:-1]] == [size] * (len(got) - 1)   # full pages until the last


def test_max_buckets_and_the_token(proxy: ProxyThread, relay: Recorder) -> None:
    client = s3_client(proxy.url, make_token("US"))
    mark = relay.mark()
    first = client.list_buckets(MaxBuckets=5)
    assert [b["Name"] for b in first["Buckets"]] == SEEN["US"][:5]
    token = first["ContinuationToken"]
    assert "pall-" not in token
    assert "pus-" not in token
    sent = relay.since(mark)
    assert b"max-buckets=10000" in sent
    assert token.encode() not in sent
    mark = relay.mark()
    second = client.list_buckets(MaxBuckets=5, ContinuationToken=token)
    assert [b["Name"] for b in second["Buckets"]] == SEEN["US"][5:10]
    assert token.encode() not in relay.since(mark)   # the proxy's token never reaches the storage server


def test_a_prefix_is_kept_and_binds_the_token(proxy: ProxyThread) -> None:
    client = s3_client(proxy.url, make_token("IE"))
    first = client.list_buckets(MaxBuckets=3, Prefix="pie-")
    assert [b["Name"] for b in first["Buckets"]] == ["pie-0000", "pie-0001", "pie-0002"]
    assert first["Prefix"] == "pie-"
    with pytest.raises(ClientError) as refused:
        client.list_buckets(MaxBuckets=3, Prefix="pall-", ContinuationToken=first["ContinuationToken"])
    assert (refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]) == BAD_TOKEN


def _altered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


@pytest.mark.parametrize("make", [
    pytest.param(lambda token: "pus-0100", id="a bucket name"),
    pytest.param(lambda token: "bw1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id="forged"),
    pytest.param(_altered, id="altered"),
    pytest.param(lambda token: token[:-3], id="truncated"),
    pytest.param(lambda token: token + "A", id="lengthened"),
])
def test_a_token_that_is_not_the_proxys_is_refused(proxy: ProxyThread, relay: Recorder, make: Any) -> None:
    client = s3_client(proxy.url, make_token("IE"))
    token = client.list_buckets(MaxBuckets=2)["ContinuationToken"]
    bad = make(token)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.list_buckets(MaxBuckets=2, ContinuationToken=bad)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert (refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]) == BAD_TOKEN
    assert relay.since(mark) == b""   # nothing forwarded


def test_another_callers_token_is_refused(proxy: ProxyThread, relay: Recorder) -> None:
    token = s3_client(proxy.url, make_token("IE")).list_buckets(MaxBuckets=2)["ContinuationToken"]
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        s3_client(proxy.url, make_token("US")).list_buckets(MaxBuckets=2, ContinuationToken=token)
    assert (refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]) == BAD_TOKEN
    assert relay.since(mark) == b""


@pytest.mark.parametrize("value", ["0", "10001", "-1", "ten", ""])
def test_max_buckets_out_of_range_is_refused(proxy: ProxyThread, relay: Recorder, value: str) -> None:
    client = s3_client(proxy.url, make_token("IE"))

    def swap(request: Any, **_: Any) -> None:
        request.url = request.url.replace("max-buckets=1", f"max-buckets={value}")

    client.meta.events.register("before-sign.s3.ListBuckets", swap)
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        client.list_buckets(MaxBuckets=1)
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
    assert relay.since(mark) == b""


def test_an_unpaged_listing_is_as_before(proxy: ProxyThread) -> None:
    names = [b["Name"] for b in s3_client(proxy.url, make_token("JP")).list_buckets()["Buckets"]]
    assert names == SEEN["JP"]


def test_boto3s_paginator_goes_on_after_an_empty_page() -> None:
    # The proxy may answer an empty page with a token (its walk of the storage server is capped).
    client = s3_client("http://127.0.0.1:9")
    with Stubber(client) as stub:
        stub.add_response("list_buckets", {"Buckets": [], "ContinuationToken": "t1"}, {"MaxBuckets": 5})
        stub.add_response("list_buckets", {"Buckets": [], "ContinuationToken": "t2"},
                          {"MaxBuckets": 5, "ContinuationToken": "t1"})
        stub.add_response("list_buckets", {"Buckets": [{"Name": "pall-0001"}]},
                          {"MaxBuckets": 5, "ContinuationToken": "t2"})
        assert pages(client, 5) == [[], [], ["pall-0001"]]


def test_a_token_works_in_every_worker(store: MotoServer, relay: Recorder, tmp_path: Path) -> None:
    config = paging_config(relay.url, tmp_path)   # the policy and credentials files
    assert config.s3.sign is not None
    process, port, _admin = serve(
        tmp_path, relay.url, tmp_path / "policies",
        f"workers: 2\ns3: {{sign: {{region: us-east-1, credentials_file: {config.s3.sign.credentials_file}}}}}\n",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        token = s3_client(url, make_token("US")).list_buckets(MaxBuckets=5)["ContinuationToken"]
        for _ in range(20):
            # New connections each time, so that the kernel spreads them over both workers.
            page = s3_client(url, make_token("US")).list_buckets(MaxBuckets=5, ContinuationToken=token)
            assert [b["Name"] for b in page["Buckets"]] == SEEN["US"][5:10]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0
    lines = [len(f.read_text().splitlines()) for f in sorted(tmp_path.glob("audit.worker*.jsonl"))]
    assert len(lines) == 2
    assert min(lines) > 0   # both workers answered pages


def test_replicas_with_one_key_file_accept_each_others_tokens(relay: Recorder, tmp_path: Path) -> None:
    (tmp_path / "listing.key").write_text(os.urandom(32).hex() + "\n")
    shared = replace(paging_config(relay.url, tmp_path), listing_token_key_file=tmp_path / "listing.key")
    one, two = ProxyThread(shared).start(), ProxyThread(shared).start()
    alone = ProxyThread(paging_config(relay.url, tmp_path)).start()   # a key of its own
    try:
        token = s3_client(one.url, make_token("IE")).list_buckets(MaxBuckets=4)["ContinuationToken"]
        page = s3_client(two.url, make_token("IE")).list_buckets(MaxBuckets=4, ContinuationToken=token)
        assert [b["Name"] for b in page["Buckets"]] == SEEN["IE"][4:8]
        with pytest.raises(ClientError) as refused:
            s3_client(alone.url, make_token("IE")).list_buckets(MaxBuckets=4, ContinuationToken=token)
        assert refused.value.response["Error"]["Code"] == "InvalidArgument"
    finally:
        for running in (one, two, alone):
            running.stop()


def test_outside_re_sign_mode_a_signed_paged_listing_is_refused(relay: Recorder, tmp_path: Path) -> None:
    # The caller's SigV4 signature covers the query: a page request the proxy made would not verify.
    config = paging_config(relay.url, tmp_path)
    running = ProxyThread(replace(config, s3=replace(config.s3, sign=None))).start()
    try:
        client = s3_client(running.url, make_token("IE"))
        mark = relay.mark()
        with pytest.raises(ClientError) as refused:
            client.list_buckets(MaxBuckets=5)
        assert refused.value.response["Error"]["Code"] == "InvalidRequest"
        assert relay.since(mark) == b""
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == SEEN["IE"]   # unpaged: as before
    finally:
        running.stop()


@pytest.fixture(scope="module")
def iam_store() -> Iterator[SignedStore]:
    """The same 2,500 buckets in a moto that checks every signature (IAM authentication on)."""
    with signed_store("lister", dict.fromkeys(NAMES)) as signed:
        yield signed


def keyed_proxy(upstream: str, folder: Path, key: tuple[str, str], jurisdiction: str) -> ProxyThread:
    """No re-sign mode: `key` (id, secret) is the caller's, mapped to `jurisdiction`; the proxy holds its secret."""
    config = paging_config(upstream, folder)
    keys = (AccessKeyRule(key[0], jurisdiction, "lister", secret_access_key=key[1]),)
    return ProxyThread(replace(config, s3=replace(config.s3, sign=None), identity=replace(
        config.identity, access_keys=keys, access_key_region="us-east-1"))).start()


def keyed_client(url: str, key: tuple[str, str], **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key[0],
                        aws_secret_access_key=key[1], config=BotoConfig(
                            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config))


def sent_requests(sent: bytes) -> list[tuple[str, dict[str, str]]]:
    """The request lines and headers (lower-cased names) of what reached the storage server (GETs, no bodies)."""
    requests = []
    for head in sent.split(b"\r\n\r\n")[:-1]:
        line, *fields = head.decode().split("\r\n")
        requests.append((line, {k.lower(): v for k, _, v in (f.partition(": ") for f in fields)}))
    return requests


@pytest.mark.parametrize(("jurisdiction", "size"), [("IE", 500), ("US", 333), ("JP", 1000)])
def test_under_the_callers_own_key_each_page_is_signed_with_it(
    iam_store: SignedStore, tmp_path: Path, jurisdiction: str, size: int,
) -> None:
    relay = Recorder(iam_store.server.port)
    running = keyed_proxy(relay.url, tmp_path, (iam_store.key, iam_store.secret), jurisdiction)
    try:
        client = keyed_client(running.url, (iam_store.key, iam_store.secret))
        caller: list[str] = []
        client.meta.events.register("before-send.s3.ListBuckets",
                                    lambda request, **_: caller.append(request.headers["Authorization"].decode()))
        got = pages(client, size)
        sent = sent_requests(relay.received)
    finally:
        running.stop()
        relay.close()
    assert [name for page in got for name in page] == SEEN[jurisdiction]   # only the buckets it may list
    assert [len(page) for page in got[:-1]] == [size] * (len(got) - 1)
    # One page request a caller page (moto answers max-buckets=10000 whole), each signed anew with the
    # caller's key for its own query: moto checked each signature, else the page was refused.
    assert len(sent) == len(got) == len(caller)
    for (line, headers), theirs in zip(sent, caller, strict=True):
        assert line == "GET /?max-buckets=10000 HTTP/1.1"
        ours = headers["authorization"]
        assert ours.partition("Signature=")[0] == theirs.partition("Signature=")[0]   # key, scope, signed headers
        assert ours != theirs
    # moto refuses the caller's own signature on the proxy's page request: the proxy's was needed.
    line, headers = sent[0]
    replay = urllib.request.Request(iam_store.server.url + line.split()[1], headers={
        **{k: v for k, v in headers.items() if k not in ("authorization", "content-length")},
        "authorization": caller[0]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(replay, timeout=10)
    assert refused.value.code == 403
    refused.value.close()


@pytest.mark.parametrize("how", ["SigV2", "presigned"])
def test_under_the_callers_own_key_a_paged_listing_signed_otherwise_is_refused(
    iam_store: SignedStore, tmp_path: Path, how: str,
) -> None:
    relay = Recorder(iam_store.server.port)
    running = keyed_proxy(relay.url, tmp_path, (iam_store.key, iam_store.secret), "US")
    try:
        client = keyed_client(running.url, (iam_store.key, iam_store.secret),
                              signature_version="s3" if how == "SigV2" else "s3v4")
        if how == "SigV2":
            with pytest.raises(ClientError) as refused:
                client.list_buckets(MaxBuckets=5)
            assert refused.value.response["Error"]["Code"] == "InvalidRequest"
        else:
            url = client.generate_presigned_url("list_buckets", Params={"MaxBuckets": 5})
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(url, timeout=10)
            assert answer.value.code == 400
            assert b"<Code>InvalidRequest</Code>" in answer.value.read()
            answer.value.close()
        assert relay.received == b""
    finally:
        running.stop()
        relay.close()


@pytest.mark.parametrize(("paging", "target", "limit", "kept"), [
    (S3_PAGING, "/?max-buckets=5", 5, ()),
    (S3_PAGING, "/?prefix=pie-&max-buckets=10000&x-id=ListBuckets", 10_000, ("prefix=pie-", "x-id=ListBuckets")),
    (AZURE_PAGING, "/acct/?comp=list&maxresults=5000&include=metadata", 5000, ("comp=list", "include=metadata")),
    (AZURE_PAGING, "/acct/?comp=list&MaxResults=1", 1, ("comp=list",)),
    (AZURE_PAGING, "/acct/?comp=list&maxresults=5001", 5000, ("comp=list",)),   # Azure: at most 5,000
    (AZURE_PAGING, "/acct/?comp=list&maxresults=" + "9" * 5000, 5000, ("comp=list",)),
    (S3_PAGING, "/?max-buckets=0000000000000000000007", 7, ()),
])
def test_a_page_request_is_read(paging: Paging, target: str, limit: int, kept: tuple[str, ...]) -> None:
    wanted = page_request(paging, target, "IE", "acct", PageTokens(bytes(32)))
    assert wanted is not None
    assert (wanted.limit, wanted.kept_query, wanted.position) == (limit, kept, Position(None, None))


@pytest.mark.parametrize(("paging", "target", "code"), [
    (S3_PAGING, "/?max-buckets=0", "InvalidArgument"),
    (S3_PAGING, "/?max-buckets=%2B5", "InvalidArgument"),
    (S3_PAGING, "/?continuation-token=", "InvalidArgument"),
    (S3_PAGING, "/?max-buckets=" + "9" * 5000, "InvalidArgument"),
    (AZURE_PAGING, "/acct/?comp=list&maxresults=0", "OutOfRangeQueryParameterValue"),
    (AZURE_PAGING, "/acct/?comp=list&maxresults=-1", "OutOfRangeQueryParameterValue"),
    (AZURE_PAGING, "/acct/?comp=list&marker=cus-0001", "InvalidQueryParameterValue"),
])
def test_a_bad_page_request_is_refused(paging: Paging, target: str, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        page_request(paging, target, "IE", "acct", PageTokens(bytes(32)))
    assert (refused.value.status, refused.value.code) == (400, code)


@pytest.mark.parametrize(("paging", "authorization", "query", "refused"), [
    (AZURE_PAGING, None, "", False),
    (AZURE_PAGING, "Bearer eyJ0", "", False),
    (AZURE_PAGING, "bearer eyJ0", "", False),
    (AZURE_PAGING, "SharedKey acct:c2ln", "", True),
    (AZURE_PAGING, "sharedkey acct:c2ln", "", True),
    (AZURE_PAGING, "SharedKeyLite acct:c2ln", "", True),
    (AZURE_PAGING, "Basic YTpi", "", True),   # a scheme the proxy does not know: it may sign the query
    (S3_PAGING, None, "", False),
    (S3_PAGING, "AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=00", "", True),
    (S3_PAGING, "AWS AKIA:c2ln", "", True),   # SigV2
    (S3_PAGING, "Bearer eyJ0", "", True),
    (S3_PAGING, None, "&X-Amz-Signature=00", True),   # presigned (SigV4)
    (S3_PAGING, None, "&Signature=00", True),   # presigned (SigV2)
])
def test_a_signed_query_is_refused_outside_re_sign_mode(
    paging: Paging, authorization: str | None, query: str, refused: bool,
) -> None:
    headers: CIMultiDict[str] = CIMultiDict() if authorization is None else CIMultiDict(Authorization=authorization)
    target = f"/acct/?comp=list&maxresults=5{query}"
    check_unsigned_query(paging, headers, target, resigned=True)
    if not refused:
        check_unsigned_query(paging, headers, target, resigned=False)
        return
    with pytest.raises(BadRequest) as refusal:
        check_unsigned_query(paging, headers, target, resigned=False)
    assert refusal.value.code == paging.signed_query_code


def test_an_unpaged_listing_is_not_a_page_request() -> None:
    assert page_request(S3_PAGING, "/?prefix=a", "IE", "", PageTokens(bytes(32))) is None


class _PagingStore(BaseHTTPRequestHandler):
    """ListBuckets as S3 pages it (moto does not): name order, `max-buckets`, opaque continuation tokens."""

    seen: ClassVar[list[str]] = []   # the targets asked for
    reversed_pages: ClassVar[bool] = False   # a broken store: each page out of name order
    stuck: ClassVar[bool] = False   # a broken store: a page after the first names itself as the next one

    def do_GET(self) -> None:
        store = type(self)
        store.seen.append(self.path)
        query = parse_qs(urlsplit(self.path).query)
        size = int(query["max-buckets"][0])
        start = int(base64.b64decode(query["continuation-token"][0])) if "continuation-token" in query else 0
        names = NAMES[start:start + size][::-1 if store.reversed_pages else 1]
        more = start + size < len(NAMES)
        following = start if store.stuck and start else start + size
        token = f"<ContinuationToken>{base64.b64encode(str(following).encode()).decode()}</ContinuationToken>"
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/'
                '2006-03-01/"><Owner><ID>owner-id</ID><DisplayName>owner</DisplayName></Owner><Buckets>'
                + "".join(f"<Bucket><Name>{n}</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate>"
                          f"<BucketRegion>eu-west-1</BucketRegion></Bucket>" for n in names)
                + "</Buckets>" + (token if more else "") + "</ListAllMyBucketsResult>").encode()
        self.answer(200, body)

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_the_storage_servers_own_pages_are_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages of 100 from the storage server, at most 3 per request: the proxy follows its tokens itself.
    monkeypatch.setattr(S3Api, "account_paging", replace(S3Api.account_paging, upstream_page=100))
    monkeypatch.setattr(accountpages, "MAX_UPSTREAM_PAGES", 3)
    _PagingStore.seen = []
    store = ThreadingHTTPServer(("127.0.0.1", 0), _PagingStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    running = ProxyThread(paging_config(f"http://127.0.0.1:{store.server_port}", tmp_path)).start()
    try:
        client = s3_client(running.url, make_token("US"))
        got = pages(client, 250)
        walked = len(_PagingStore.seen)
        assert [name for page in got for name in page] == SEEN["US"]
        # The store's 1,300 names US may not see (pie-, pnone-) take more than one capped walk: pages cut short.
        assert [] in got
        assert walked <= 3 * len(got)
        assert [b["BucketRegion"] for b in client.list_buckets(MaxBuckets=1)["Buckets"]] == ["eu-west-1"]
    finally:
        running.stop()
        store.shutdown()
        store.server_close()
    asked = [parse_qs(urlsplit(target).query) for target in _PagingStore.seen]
    assert all(query["max-buckets"] == ["100"] for query in asked)
    tokens = [query["continuation-token"][0] for query in asked if "continuation-token" in query]
    assert len(set(tokens)) == len(NAMES) // 100 - 1   # every page of the store read, each once per walk


SIGNING_KEY = ("AKIALISTER", "lister-secret-0123456789")


class _VerifyingStore(_PagingStore):
    """Pages as S3 does, each page request's SigV4 signature checked with `SIGNING_KEY` (botocore's): 403 if wrong."""

    verified: ClassVar[list[str]] = []   # the targets whose signature verified

    def do_GET(self) -> None:
        authorization = self.headers["Authorization"] or ""
        fields = dict(part.strip().partition("=")[::2] for part in authorization.partition(" ")[2].split(","))
        key_id, _date, region, service, _ = fields["Credential"].split("/")
        request = AWSRequest(method="GET", url=f"http://{self.headers['Host']}{self.path}",
                             headers={name: self.headers[name] for name in fields["SignedHeaders"].split(";")})
        request.context["timestamp"] = self.headers["X-Amz-Date"]
        auth = S3SigV4Auth(Credentials(key_id, SIGNING_KEY[1]), service, region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if key_id != SIGNING_KEY[0] or expected != fields["Signature"]:
            self.answer(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
            return
        type(self).verified.append(self.path)
        super().do_GET()


def test_under_the_callers_own_key_the_storage_servers_pages_are_followed_each_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pages of 100 from a store that checks every signature: the proxy signs each of its page requests,
    # continuation tokens of the store's included, with the caller's key.
    monkeypatch.setattr(S3Api, "account_paging", replace(S3Api.account_paging, upstream_page=100))
    monkeypatch.setattr(accountpages, "MAX_UPSTREAM_PAGES", 3)
    _VerifyingStore.seen, _VerifyingStore.verified = [], []
    store = ThreadingHTTPServer(("127.0.0.1", 0), _VerifyingStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    running = keyed_proxy(f"http://127.0.0.1:{store.server_port}", tmp_path, SIGNING_KEY, "US")
    try:
        got = pages(keyed_client(running.url, SIGNING_KEY), 250)
    finally:
        running.stop()
        store.shutdown()
        store.server_close()
    assert [name for page in got for name in page] == SEEN["US"]
    assert _VerifyingStore.verified == _VerifyingStore.seen   # every page request verified
    tokens = [target for target in _VerifyingStore.seen if "continuation-token=" in target]
    assert len(tokens) >= len(NAMES) // 100 - 1


class _ReversedStore(_PagingStore):
    reversed_pages = True


class _StuckStore(_PagingStore):
    stuck = True


@pytest.mark.parametrize("handler", [_ReversedStore, _StuckStore], ids=["out of name order", "stuck on a page"])
def test_a_storage_server_that_cannot_be_paged_is_a_502(
    handler: type[_PagingStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A page resumes after the last name handed out: pages out of order, or a walk that goes nowhere, would
    # hand out names twice or skip some.
    monkeypatch.setattr(S3Api, "account_paging", replace(S3Api.account_paging, upstream_page=100))
    store = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    running = ProxyThread(paging_config(f"http://127.0.0.1:{store.server_port}", tmp_path)).start()
    try:
        client = s3_client(running.url, make_token("US"))
        with pytest.raises(ClientError) as refused:
            client.list_buckets(MaxBuckets=10_000)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    finally:
        running.stop()
        store.shutdown()
        store.server_close()


class _EchoingStore(_PagingStore):
    """A store whose page requests with a marker are refused, echoing the marker as S3's InvalidArgument does."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "continuation-token" not in query:
            super().do_GET()
            return
        body = ("<Error><Code>InvalidArgument</Code><Message>The continuation token provided is incorrect"
                "</Message><ArgumentName>continuation-token</ArgumentName><ArgumentValue>"
                f"{query['continuation-token'][0]}</ArgumentValue></Error>").encode()
        self.answer(400, body)


def test_a_refused_page_request_does_not_echo_the_storage_servers_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The marker names what follows the page in the account, perhaps a hidden bucket: a 502, never its echo.
    monkeypatch.setattr(S3Api, "account_paging", replace(S3Api.account_paging, upstream_page=100))
    store = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    running = ProxyThread(paging_config(f"http://127.0.0.1:{store.server_port}", tmp_path)).start()
    try:
        client = s3_client(running.url, make_token("JP"))
        with pytest.raises(ClientError) as refused:
            client.list_buckets(MaxBuckets=150)   # more than the store's first page of 100
        error = refused.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert "ArgumentValue" not in error["Error"]
        assert base64.b64encode(b"100").decode() not in str(error)
    finally:
        running.stop()
        store.shutdown()
        store.server_close()
