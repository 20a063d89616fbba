"""Host -> addressing style: configured endpoints only, virtual-hosted only where the storage server serves it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.config import S3Settings, SigningConfig
from proxy.errors import BadRequest
from proxy.s3.host import HostReader, bucket_from_host

from .helpers import SETTINGS, headers

NESTED = S3Settings(endpoints=("s3.example.test", "eu.s3.example.test", "Upper.Example.TEST"),
                    virtual_hosts=("s3.example.test", "eu.s3.example.test", "Upper.Example.TEST"))
DOCKER = S3Settings(endpoints=("docker.internal", "docker.internal.s3.example.test"),
                    virtual_hosts=("docker.internal", "docker.internal.s3.example.test"))
# As shipped: path-style only. And re-sign mode, which forwards every request path-style.
PATH_ONLY = S3Settings(endpoints=("localhost", "127.0.0.1", "bailiwick.ns.svc.cluster.local"))
RESIGNED = S3Settings(endpoints=PATH_ONLY.endpoints, sign=SigningConfig())


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("s3.example.test", None),
        ("s3.example.test:8080", None),
        ("localhost:9000", None),
        ("127.0.0.1", None),
        ("127.0.0.1:8080", None),
        ("[::1]:8080", None),
        ("[0:0:0:0:0:0:0:1]", None),  # the same address, written out
        ("mail-eu-dublin.s3.example.test", "mail-eu-dublin"),
        ("mail-eu-dublin.s3.example.test:443", "mail-eu-dublin"),
        ("bucket.localhost", "bucket"),
    ],
)
def test_accepted_hosts(host: str, bucket: str | None) -> None:
    assert bucket_from_host(headers(host), SETTINGS) == bucket


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("s3.example.test", None),
        ("eu.s3.example.test", None),  # an endpoint itself, though also "<eu>.<s3.example.test>"
        ("abc.eu.s3.example.test", "abc"),  # the longest endpoint wins
        ("abc.s3.example.test", "abc"),
        ("upper.example.test", None),  # configured endpoints are compared without case too
        ("bkt.upper.example.test", "bkt"),
    ],
)
def test_longest_endpoint_wins(host: str, bucket: str | None) -> None:
    assert bucket_from_host(headers(host), NESTED) == bucket


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("evil.example", "not a configured S3 endpoint"),
        ("s3.example.test.evil.example", "not a configured S3 endpoint"),
        ("example.test", "not a configured S3 endpoint"),
        ("10.0.0.1", "not a configured S3 endpoint"),
        ("[::2]", "not a configured S3 endpoint"),
        ("bucket.127.0.0.1", "not a valid host name"),  # IP endpoints are path-style only
        ("MyBucket.s3.example.test", "lower case"),  # never folded into another bucket's name
        # moto compares some names with case: it reads "b.x.svc.cluster.LOCAL" as the bucket "b"
        ("S3.Example.TEST", "lower case"),
        ("bkt.UPPER.example.test", "lower case"),
        ("LOCALHOST:9000", "lower case"),
        # moto reads the first label as the bucket ("my"); AWS S3 and MinIO the whole prefix
        ("my.dotted.bucket.s3.example.test", "with dots"),
        ("www.localhost", "'www'"),  # moto drops "www." and finds no bucket, or the next label
        ("localhost-data.localhost", "'localhost-data'"),  # moto reads a Host starting "localhost" path-style
        ("localstack-x.s3.example.test:9000", "'localstack-x'"),
        ("ab.s3.example.test", "between 3 and 63"),
        ("my_bucket.s3.example.test", "only lower-case letters"),
        ("a..b.s3.example.test", "not a valid host name"),
        ("s3.example.test.", "not a valid host name"),  # a trailing dot
        ("s3.example.test:", "not a valid host name"),
        ("s3.example.test:99999", "invalid port"),
        ("s3.example.test:80a", "not a valid host name"),
        ("s3.example.test:80:80", "not a valid host name"),
        ("user@s3.example.test", "not a valid host name"),
        ("s3.example.test/x", "not a valid host name"),
        ("s3.exämple.test", "not a valid host name"),
        ("s3.example.test\udcff", "not a valid host name"),
        ("s3 example.test", "not a valid host name"),
        ("", "not a valid host name"),
        ("::1", "not a valid host name"),
        ("[::1%eth0]", "not a valid host name"),
        ("[::zz]", "not a valid host name"),
        ("999.0.0.1", "not a valid host name"),
        ("127.1", "not a valid host name"),  # a name some resolvers read as 127.0.0.1
        ("-x.s3.example.test", "not a valid host name"),
    ],
)
def test_refused_hosts(host: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        bucket_from_host(headers(host), SETTINGS)
    # A bucket name S3 would refuse gets S3's code; a Host the proxy does not serve is its own refusal.
    bucket_rule = reason in ("between 3 and 63", "only lower-case letters")
    assert caught.value.code == ("InvalidBucketName" if bucket_rule else "InvalidRequest")


@pytest.mark.parametrize("host", [
    "mail-eu-dublin.localhost",
    "mail-eu-dublin.localhost:8080",
    "mail-eu-dublin.bailiwick.ns.svc.cluster.local:8080",  # moto reads this one path-style
    "my.bucket.localhost",
])
def test_virtual_hosted_requests_are_refused_where_the_storage_server_does_not_serve_them(host: str) -> None:
    with pytest.raises(BadRequest, match="not accepted") as caught:
        bucket_from_host(headers(host), PATH_ONLY)
    assert "path-style" in caught.value.message


@pytest.mark.parametrize(("host", "reading"), [
    ("localhost:8080", (None, "localhost:8080")),
    ("mail-eu-dublin.localhost:8080", ("mail-eu-dublin", "localhost:8080")),
    ("mail-eu-dublin.bailiwick.ns.svc.cluster.local", ("mail-eu-dublin", "bailiwick.ns.svc.cluster.local")),
    ("my.dotted.bucket.localhost", ("my.dotted.bucket", "localhost")),   # forwarded as /my.dotted.bucket/...
    ("www.localhost", ("www", "localhost")),
])
def test_re_sign_mode_reads_every_virtual_hosted_request_to_forward_it_path_style(
    host: str, reading: tuple[str | None, str],
) -> None:
    assert HostReader(RESIGNED).read(headers(host)) == reading


def test_host_is_required() -> None:
    with pytest.raises(BadRequest, match="Host header is required"):
        bucket_from_host(headers(None), SETTINGS)


def test_repeated_host_is_refused() -> None:
    with pytest.raises(BadRequest, match="repeated"):
        bucket_from_host(headers("s3.example.test", ("host", "s3.example.test")), SETTINGS)


@pytest.mark.parametrize(
    "header", ["X-Forwarded-Host", "x-forwarded-host", "Forwarded"]
)
def test_headers_that_name_another_host_are_refused(header: str) -> None:
    with pytest.raises(BadRequest, match="read from Host alone"):
        bucket_from_host(headers("s3.example.test", (header, "other.example")), SETTINGS)


@given(st.text())
def test_any_host_is_accepted_or_refused_with_bad_request(host: str) -> None:
    given_headers: CIMultiDict[str] = CIMultiDict(Host=host)
    try:
        bucket = bucket_from_host(given_headers, SETTINGS)
    except BadRequest:
        return
    # Whatever is accepted names a configured endpoint or a valid bucket under one.
    assert bucket is None or host.lower().startswith(bucket + ".")


@pytest.mark.parametrize("host", ["host.docker.internal", "host.docker.internal:9000",
                                  "host.docker.internal.s3.example.test"])
def test_a_host_moto_reads_path_style_is_not_read_as_the_bucket_host(host: str) -> None:
    with pytest.raises(BadRequest, match="'host'"):
        bucket_from_host(headers(host), DOCKER)
