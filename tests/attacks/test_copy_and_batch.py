"""Class 2: copies out of Dublin in every spelling, multi-object deletes, data-moving bucket configuration.

A server-side copy from Dublin into the US bucket is refused whoever asks
(docs/policies.md, "How a request is decided", step 2), however the source is spelled. A multi-object delete is
judged by every key in its body. Bucket configuration that sends data
elsewhere (replication, logging, inventory) is admin, which no rule allows.
All are refused by our handler (audited), under both of aiohttp's parsers.
"""

from __future__ import annotations

import gzip

import pytest

from tests.attacks.conftest import Target, assert_refused
from tests.conftest import ARCHIVE, DUBLIN, US

FILE = "alice/inbox/1.eml"


def copy(source_headers: str, query: str = "", caller: str = "IE", key: str = "stolen/copy.eml") -> bytes:
    return (f"PUT /{US}/{key}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{{caller}}}\r\n"
            f"{{SIGV4}}{source_headers}Content-Length: 0\r\nConnection: close\r\n\r\n").encode()


COPIES = {
    "plain": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n"),
    "no-leading-slash": copy(f"x-amz-copy-source: {DUBLIN}/{FILE}\r\n"),
    "header-upper-case": copy(f"X-AMZ-COPY-SOURCE: {DUBLIN}/{FILE}\r\n"),
    "url-encoded-key": copy(f"x-amz-copy-source: {DUBLIN}/alice%2Finbox%2F1.eml\r\n"),
    "url-encoded-all": copy(f"x-amz-copy-source: %2F{DUBLIN}%2Falice%2Finbox%2F1.eml\r\n"),
    "url-encoded-bucket": copy(f"x-amz-copy-source: mail-eu-%64ublin/{FILE}\r\n"),
    "version-id": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY\r\n"),
    "version-id-smuggles-param": copy(f"x-amz-copy-source: /{US}/x?versionId=1&bucket={DUBLIN}\r\n"),
    "other-param": copy(f"x-amz-copy-source: /{US}/x?x-id=/{DUBLIN}/{FILE}\r\n"),
    "repeated-header": copy(f"x-amz-copy-source: /{US}/bob/inbox/1.eml\r\nx-amz-copy-source: /{DUBLIN}/{FILE}\r\n"),
    "repeated-header-case": copy(f"x-amz-copy-source: /{US}/bob/inbox/1.eml\r\n"
                                 f"X-Amz-Copy-Source: /{DUBLIN}/{FILE}\r\n"),
    "comma-joined": copy(f"x-amz-copy-source: /{US}/bob/inbox/1.eml, /{DUBLIN}/{FILE}\r\n"),
    "arn-accesspoint": copy(
        "x-amz-copy-source: arn:aws:s3:eu-west-1:123456789012:accesspoint/dublin/object/alice/inbox/1.eml\r\n"),
    "arn-encoded": copy(
        "x-amz-copy-source: arn%3Aaws%3As3%3Aeu-west-1%3A123456789012%3Aaccesspoint%2Fd%2Fobject%2Fa\r\n"),
    "alias-source": copy(f"x-amz-copy-source: /myap-abcdefghij-s3alias/{FILE}\r\n"),
    "dotdot-source": copy(f"x-amz-copy-source: /{US}/../{DUBLIN}/{FILE}\r\n"),
    "dotdot-encoded-source": copy(f"x-amz-copy-source: /{US}/%2e%2e/{DUBLIN}/{FILE}\r\n"),
    "double-encoded-source": copy(f"x-amz-copy-source: /{US}/%252e%252e/{DUBLIN}/{FILE}\r\n"),
    "backslash-source": copy(f"x-amz-copy-source: /{US}/..%5c{DUBLIN}/{FILE}\r\n"),
    "upper-case-bucket": copy(f"x-amz-copy-source: /MAIL-EU-DUBLIN/{FILE}\r\n"),
    "space-in-source": copy(f"x-amz-copy-source: /{DUBLIN}/alice/inbox/1.eml \r\n"),
    "upload-part-copy": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n", query="?partNumber=1&uploadId=abc"),
    "copy-on-post": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n", query="?uploads").replace(b"PUT", b"POST", 1),
    "copy-on-tagging": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n", query="?tagging"),
    "rename-source": copy(f"x-amz-rename-source: /{DUBLIN}/{FILE}\r\n"),
    # hoisted into the query string (presigned URLs carry headers there)
    "query": copy("", query=f"?x-amz-copy-source={DUBLIN}%2Falice%2Finbox%2F1.eml"),
    "query-upper-case": copy("", query=f"?X-Amz-Copy-Source=%2F{DUBLIN}%2Falice%2Finbox%2F1.eml"),
    "query-and-header": copy(f"x-amz-copy-source: /{US}/bob/inbox/1.eml\r\n",
                             query=f"?x-amz-copy-source={DUBLIN}%2Falice%2Finbox%2F1.eml"),
    "query-twice": copy("", query=f"?x-amz-copy-source={US}%2Fx&x-amz-copy-source={DUBLIN}%2Fx"),
    "query-empty": copy("", query="?x-amz-copy-source="),
    "query-rename": copy("", query=f"?x-amz-rename-source={DUBLIN}%2Falice"),
    # a US caller copying Dublin data into its own bucket
    "us-caller": copy(f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n", caller="US"),
}


@pytest.mark.parametrize("request_bytes", COPIES.values(), ids=COPIES.keys())
def test_copy_out_of_dublin(any_parser: Target, request_bytes: bytes) -> None:
    assert_refused(any_parser, request_bytes, by="proxy")


def delete(body: bytes, *, caller: str = "IE", bucket: str = ARCHIVE, extra: str = "",
           length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    head = (f"POST /{bucket}?delete HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{{caller}}}\r\n"
            f"{{SIGV4}}Content-Type: application/xml\r\n{extra}Content-Length: {size}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def keys(*names: str) -> bytes:
    objects = "".join(f"<Object><Key>{name}</Key></Object>" for name in names)
    return f'<?xml version="1.0" encoding="UTF-8"?><Delete>{objects}</Delete>'.encode()


XXE = (b'<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY k SYSTEM "file:///etc/passwd">]>'
       b"<Delete><Object><Key>&k;</Key></Object></Delete>")
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY a "ie/x"><!ENTITY b "&a;&a;&a;&a;">]>'
                  b"<Delete><Object><Key>&b;</Key></Object></Delete>")
OVERSIZED = keys(*(f"ie/{i:06d}" + "x" * 900 for i in range(2400)))  # > 2 MiB, every key in ie/

DELETES = {
    "ie-and-unmatched": delete(keys("ie/a", "other/b")),
    "unmatched-only": delete(keys("other/b")),
    "us-caller-unmatched": delete(keys("other/b"), caller="US"),
    "unmatched-after-many": delete(keys(*(f"ie/{i}" for i in range(999)), "zz/last")),
    "dotdot-out-of-ie": delete(keys("ie/../other/b")),
    "char-reference-dotdot": delete(keys("ie/&#46;&#46;/other/b")),
    "cdata-unmatched": delete(keys("ie/a", "<![CDATA[other/b]]>")),
    "backslash-key": delete(keys("ie\\..\\other")),
    "double-encoded-key": delete(keys("ie/%2e%2e/other")),
    "key-split-by-comment": delete(keys("ie/a", "oth<!---->er/b")),
    "two-keys-one-object": delete(b"<Delete><Object><Key>ie/a</Key><Key>other/b</Key></Object></Delete>"),
    "foreign-namespace": delete(b'<Delete xmlns="urn:evil"><Object><Key>other/b</Key></Object></Delete>'),
    "utf16-body": delete('<?xml version="1.0" encoding="UTF-16"?><Delete/>'.encode("utf-16")),
    "too-many-keys": delete(keys(*(f"ie/{i}" for i in range(1001)))),
    "doctype-entity": delete(BILLION_LAUGHS),
    "doctype-external": delete(XXE),
    "doctype-only": delete(b'<?xml version="1.0"?><!DOCTYPE Delete><Delete><Object><Key>ie/a</Key></Object></Delete>'),
    "oversized-declared": delete(b"", length=3 * 1024 * 1024),
    "oversized-body": delete(OVERSIZED),
    "oversized-chunked": (
        b"POST /" + ARCHIVE.encode() + b"?delete HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {IE}\r\n"
        b"{SIGV4}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"".join(b"%x\r\n" % len(part) + part + b"\r\n"
                   for part in (OVERSIZED[i:i + 65536] for i in range(0, len(OVERSIZED), 65536)))
        + b"0\r\n\r\n"),
    "gzip": delete(gzip.compress(keys("other/b")), extra="Content-Encoding: gzip\r\n"),
    "gzip-identity-list": delete(gzip.compress(keys("other/b")), extra="Content-Encoding: identity, gzip\r\n"),
    "gzip-repeated": delete(gzip.compress(keys("other/b")),
                            extra="Content-Encoding: identity\r\nContent-Encoding: gzip\r\n"),
    "deflate": delete(keys("other/b"), extra="Content-Encoding: deflate\r\n"),
    "empty-body": delete(b""),
    "truncated-body": delete(keys("ie/a")[:-5]),
    "dublin-by-us": delete(keys("alice/inbox/1.eml"), caller="US", bucket=DUBLIN),
}


@pytest.mark.parametrize("request_bytes", DELETES.values(), ids=DELETES.keys())
def test_multi_object_delete(any_parser: Target, request_bytes: bytes) -> None:
    assert_refused(any_parser, request_bytes, by="proxy")


def configure(query: str, body: bytes = b"<x/>", method: str = "PUT", bucket: str = DUBLIN) -> bytes:
    return (f"{method} /{bucket}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
            f"{{SIGV4}}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


CONFIGURATION = {
    "replication": configure("replication"),
    "replication-empty-value": configure("replication="),
    "replication-upper": configure("Replication"),
    "replication-with-x-id": configure("replication&x-id=PutBucketReplication"),
    "logging": configure("logging"),
    "inventory": configure("inventory&id=steal"),
    "inventory-no-id": configure("inventory"),
    "analytics": configure("analytics&id=steal"),
    "notification": configure("notification"),
    "policy": configure("policy"),
    "acl": configure("acl"),
    "website": configure("website"),
    "delete-replication": configure("replication", b"", method="DELETE"),
    "unknown-subresource": configure("metadataConfiguration", method="POST"),
    "unknown-param": configure("exfiltrate=1"),
    "archive-replication": configure("replication", bucket=ARCHIVE),
    "object-acl": configure("acl").replace(f"/{DUBLIN}?".encode(), f"/{DUBLIN}/{FILE}?".encode()),
}


@pytest.mark.parametrize("request_bytes", CONFIGURATION.values(), ids=CONFIGURATION.keys())
def test_bucket_configuration_is_admin(any_parser: Target, request_bytes: bytes) -> None:
    answer = assert_refused(any_parser, request_bytes, by="proxy")
    assert answer.status in (400, 403)
