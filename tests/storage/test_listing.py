"""The account-listing filter both APIs share, on a listing shape of its own: what the shape decides."""

from __future__ import annotations

import re

import pytest

from proxy.domain import Resource
from proxy.errors import UpstreamFailure
from proxy.storage.listing import ListingPage, ListingShape, filter_listing, read_page

SHAPE = ListingShape(path=("All", "Items", "Item"), name=re.compile(r"[a-z]{1,9}"), paging="Next",
                     namespaced=False, unreadable="unreadable", markup="markup", paged="paged")


def item(name: str, extra: str = "") -> str:
    return f"<Item><Name>{name}</Name>{extra}</Item>"


def body(*items: str, head: str = "", tail: str = "", root: str = "<All>") -> bytes:
    return f"{root}{head}<Items>{''.join(items)}</Items>{tail}</All>".encode()


def cut(answer: bytes, *allowed: str, shape: ListingShape = SHAPE) -> bytes:
    return filter_listing(answer, shape, lambda name: Resource("s3", name, ""),
                          lambda resource: resource.bucket in allowed)


def test_hidden_entries_are_cut_and_the_rest_is_the_servers_bytes() -> None:
    assert cut(body(item("a"), item("b", "<Next>x</Next>"), item("c")), "b") == body(item("b", "<Next>x</Next>"))


@pytest.mark.parametrize(("answer", "message"), [
    (body(item("a"), tail="<Next>b</Next>"), "paged"),
    (body(item("a"), head="<Meta><Next>b</Next></Meta>"), "paged"),              # anywhere outside the entries
    (body(item("a"), head="<Meta><Item><Name>b</Name></Item></Meta>"), "unreadable"),  # an entry out of place
    # Clients read every child of the list as an entry, whatever it is called (boto3, azure-storage-blob).
    (body(item("a"), "<Other><Name>b</Name></Other>"), "unreadable"),
    (body(item("a"), "<Other/>"), "unreadable"),
    (body(item("a"), root='<All xmlns="urn:x">'), "unreadable"),                # no namespace in this shape
    # An encoding the parser does not know, or cannot read: unreadable like any other parse failure.
    (body(item("a"), root='<?xml version="1.0" encoding="bogus"?><All>'), "unreadable"),
    (body(item("a"), root='<?xml version="1.0" encoding="utf-7"?><All>'), "unreadable"),
    (body('<Item kind="x"><Name>a</Name></Item>'), "unreadable"),
    (body('<Item><Name lang="x">a</Name></Item>'), "unreadable"),
    (body(item("A")), "unreadable"),                                               # not the shape's name spelling
    (body(item("a"), head="<!-- x -->"), "markup"),
    (body(item("a")).replace(b"<Items>", b"<Items><?pi x?>"), "markup"),
])
def test_what_the_shape_does_not_allow_is_refused(answer: bytes, message: str) -> None:
    with pytest.raises(UpstreamFailure) as refused:
        cut(answer, "a", "b")
    assert str(refused.value) == message


def test_a_namespaced_shape_reads_the_roots_default_namespace() -> None:
    shape = ListingShape(path=SHAPE.path, name=SHAPE.name, paging=SHAPE.paging, namespaced=True,
                         unreadable="unreadable", markup="markup", paged="paged")
    answer = body(item("a"), item("b"), root='<All xmlns="urn:x">')
    assert cut(answer, "a", shape=shape) == body(item("a"), root='<All xmlns="urn:x">')
    with pytest.raises(UpstreamFailure, match="unreadable"):
        cut(answer.replace(b"<Items>", b'<Items xmlns="urn:y">'), "a", shape=shape)


def page(answer: bytes, *allowed: str) -> ListingPage:
    return read_page(answer, SHAPE, lambda name: Resource("s3", name, ""), lambda resource: resource.bucket in allowed)


@pytest.mark.parametrize(("answer", "entries", "marker"), [
    (body(item("a"), item("b"), item("c"), tail="<Next>c2</Next>"), [("b", item("b"))], "c2"),
    (body(item("a"), item("b", "<Next>x</Next>")), [("b", item("b", "<Next>x</Next>"))], None),  # inside an entry
    (body(item("a"), tail="<Next></Next>"), [], None),                                            # empty: the end
    (body(item("b"), head="<Meta><Next> m </Next></Meta>"), [("b", item("b"))], "m"),
])
def test_a_page_is_read_for_the_proxys_own_paging(answer: bytes, entries: list[tuple[str, str]],
                                                   marker: str | None) -> None:
    got = page(answer, "b")
    assert [(name, raw.decode()) for name, raw in got.entries] == entries
    assert got.marker == marker


@pytest.mark.parametrize(("answer", "message"), [
    (body(item("a"), tail="<Next>b</Next><Next>c</Next>"), "paged"),    # two markers: which one?
    (body(item("a"), "<Other/>"), "unreadable"),                          # what the filter refuses, refused
    (body(item("a"), head="<!-- x -->"), "markup"),
])
def test_a_page_is_refused_as_the_filter_refuses(answer: bytes, message: str) -> None:
    with pytest.raises(UpstreamFailure) as refused:
        page(answer, "a")
    assert str(refused.value) == message
