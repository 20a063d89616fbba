"""ListBuckets answers cut down to the buckets the caller may list: bytes kept, ambiguity refused."""

from __future__ import annotations

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from proxy.domain import Resource
from proxy.errors import UpstreamFailure
from proxy.s3.listing import filter_list_buckets

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def listing(*names: str, region: bool = True) -> bytes:
    buckets = "".join(
        f"<Bucket><Name>{name}</Name><CreationDate>2026-11-23T00:00:00.000Z</CreationDate>"
        + ("<BucketRegion>eu-west-1</BucketRegion>" if region else "") + "</Bucket>"
        for name in names
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{NS}">'
            f"<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner><Buckets>{buckets}</Buckets>"
            "</ListAllMyBucketsResult>").encode()


def names_in(body: bytes) -> list[str]:
    root = fromstring(body)
    return [e.text or "" for e in root.iter(f"{{{NS}}}Name")]


def only(*allowed: str) -> object:
    return lambda resource: resource.scheme == "s3" and resource.key == "" and resource.bucket in allowed


@pytest.mark.parametrize(("names", "allowed", "shown"), [
    (("a", "b", "c"), ("a", "c"), ["a", "c"]),
    (("a", "b", "c"), (), []),
    (("a", "b", "c"), ("a", "b", "c"), ["a", "b", "c"]),
    ((), ("a",), []),
    (("mail-eu-dublin", "mail-us-east"), ("mail-us-east",), ["mail-us-east"]),
])
def test_only_visible_buckets_stay(names: tuple[str, ...], allowed: tuple[str, ...], shown: list[str]) -> None:
    body = listing(*names)
    filtered = filter_list_buckets(body, only(*allowed))  # type: ignore[arg-type]
    assert names_in(filtered) == shown
    # Everything but the hidden buckets is the server's own bytes.
    assert filtered.endswith(b"</Buckets></ListAllMyBucketsResult>")
    assert filtered.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns=')
    if shown == list(names):
        assert filtered == body


def test_without_a_namespace_and_pretty_printed() -> None:
    body = (b"<ListAllMyBucketsResult>\n  <Buckets>\n    <Bucket>\n      <Name>a</Name>\n    </Bucket>\n"
            b"    <Bucket>\n      <Name>b</Name>\n    </Bucket>\n  </Buckets>\n</ListAllMyBucketsResult>")
    filtered = filter_list_buckets(body, only("b"))  # type: ignore[arg-type]
    assert [e.text for e in fromstring(filtered).iter("Name")] == ["b"]


@pytest.mark.parametrize("body", [
    b"<ListAllMyBucketsResult><Buckets><Bucket><Name>a</Name></Bucket>",           # cut short
    b"<ListAllMyBucketsResult><Buckets><Bucket id='1'><Name>a</Name></Bucket></Buckets></ListAllMyBucketsResult>",
    b"<ListAllMyBucketsResult><Buckets><Bucket><Name>a</Name><Name>b</Name></Bucket></Buckets>"
    b"</ListAllMyBucketsResult>",                                                    # two names
    b"<ListAllMyBucketsResult><Buckets><Bucket><Name>a&amp;b</Name></Bucket></Buckets></ListAllMyBucketsResult>",
    b"<ListAllMyBucketsResult><Buckets><Bucket><!-- <Name>x</Name> --><Name>a</Name></Bucket></Buckets>"
    b"</ListAllMyBucketsResult>",                                                    # a name the parser does not see
    b"<ListAllMyBucketsResult><Buckets><Bucket><Name>a</Name></Bucket><![CDATA[<Bucket><Name>b</Name></Bucket>]]>"
    b"</Buckets></ListAllMyBucketsResult>",                                          # a bucket that is only text
    b"not xml at all",
    # boto3 reads every child of <Buckets> as a bucket, whatever its element is called.
    b"<ListAllMyBucketsResult><Buckets><Bucket><Name>a</Name></Bucket><Other><Name>b</Name></Other></Buckets>"
    b"</ListAllMyBucketsResult>",
])
def test_an_answer_that_reads_two_ways_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamFailure):
        filter_list_buckets(body, lambda resource: resource.bucket == "a")


@given(st.lists(st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True), max_size=12, unique=True),
       st.data())
def test_the_filtered_answer_names_exactly_the_visible_buckets(names: list[str], data: st.DataObject) -> None:
    allowed = set(data.draw(st.lists(st.sampled_from(names), unique=True)) if names else [])
    seen: list[Resource] = []

    def visible(resource: Resource) -> bool:
        seen.append(resource)
        return resource.bucket in allowed

    filtered = filter_list_buckets(listing(*names), visible)
    assert names_in(filtered) == [n for n in names if n in allowed]
    assert [r.bucket for r in seen] == names   # every bucket asked about once, in order


@pytest.mark.parametrize("hidden", [b"<!-- <Bucket> -->", b"<![CDATA[<Bucket>]]>", b"<?pi <Bucket>?>"])
def test_markup_that_could_hide_a_bucket_is_refused_at_once(hidden: bytes) -> None:
    body = listing("a", "b").replace(b"<Buckets>", b"<Buckets>" + hidden + b" " * 200_000)
    with pytest.raises(UpstreamFailure, match="comments, CDATA, a DTD or processing instructions"):
        filter_list_buckets(body, only("a"))  # type: ignore[arg-type]


def test_a_paged_answer_is_not_passed_on() -> None:
    # A continuation token may stand for a bucket the caller may not see.
    body = listing("a").replace(b"</ListAllMyBucketsResult>",
                                b"<ContinuationToken>b-next</ContinuationToken></ListAllMyBucketsResult>")
    with pytest.raises(UpstreamFailure, match="paged bucket listing"):
        filter_list_buckets(body, only("a"))  # type: ignore[arg-type]
