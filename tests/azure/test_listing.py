"""List Containers answers cut down to the containers the caller may list: bytes kept, ambiguity refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from proxy.azure.listing import filter_list_containers
from proxy.domain import Resource
from proxy.errors import UpstreamFailure

ACCOUNT = "devstoreaccount1"
HEAD = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults '
        b'ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1"><Prefix>ie</Prefix><MaxResults>5</MaxResults>')
TAIL = b"<NextMarker /></EnumerationResults>"


def container(name: str, metadata: str = "") -> bytes:
    return (f"<Container><Name>{name}</Name><Properties><Last-Modified>Sun, 06 Dec 2026 03:00:00 GMT"
            f'</Last-Modified><Etag>"0x8D"</Etag><LeaseStatus>unlocked</LeaseStatus></Properties>'
            + (f"<Metadata>{metadata}</Metadata>" if metadata else "") + "</Container>").encode()


def listing(*names: str, metadata: str = "") -> bytes:
    return HEAD + b"<Containers>" + b"".join(container(n, metadata) for n in names) + b"</Containers>" + TAIL


def names_in(body: bytes) -> list[str]:
    return [element.findtext("Name") or "" for element in fromstring(body).findall("Containers/Container")]


def only(*allowed: str) -> Callable[[Resource], bool]:
    def visible(resource: Resource) -> bool:
        assert resource.scheme == "azure"
        assert resource.bucket == ACCOUNT
        assert resource.key.endswith("/")
        return resource.key[:-1] in allowed

    return visible


@pytest.mark.parametrize(("names", "allowed", "shown"), [
    (("ie-mail", "us-mail", "other"), ("us-mail",), ["us-mail"]),
    (("ie-mail", "us-mail", "other"), ("ie-mail", "other"), ["ie-mail", "other"]),
    (("ie-mail", "us-mail"), (), []),
    (("ie-mail", "us-mail"), ("ie-mail", "us-mail"), ["ie-mail", "us-mail"]),
    ((), ("ie-mail",), []),
    (("$logs", "$root", "ie-mail"), ("$root",), ["$root"]),
])
def test_only_visible_containers_stay(names: tuple[str, ...], allowed: tuple[str, ...], shown: list[str]) -> None:
    body = listing(*names)
    filtered = filter_list_containers(body, ACCOUNT, only(*allowed))
    assert names_in(filtered) == shown
    assert filtered.startswith(HEAD)
    assert filtered.endswith(TAIL)
    for name in set(names) - set(shown):
        assert f"<Name>{name}</Name>".encode() not in filtered
    if shown == list(names):
        assert filtered == body


def test_metadata_named_like_the_elements_is_not_mistaken_for_them() -> None:
    tricky = "<Name>us-mail</Name><Container><Name>ie-mail</Name></Container><name>x</name>"
    body = listing("ie-mail", "us-mail", metadata=tricky)
    filtered = filter_list_containers(body, ACCOUNT, only("us-mail"))
    assert names_in(filtered) == ["us-mail"]
    assert filtered == HEAD + b"<Containers>" + container("us-mail", tricky) + b"</Containers>" + TAIL


def test_a_bom_pretty_printing_and_attributes_are_kept() -> None:
    body = (b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n<EnumerationResults ServiceEndpoint="a>b">\n'
            b"  <Containers>\n    <Container>\n      <Name>ie-mail</Name>\n    </Container>\n"
            b"    <Container>\n      <Name>us-mail</Name>\n      <Metadata />\n    </Container>\n  </Containers>\n"
            b"  <NextMarker />\n</EnumerationResults>\n")
    filtered = filter_list_containers(body, ACCOUNT, only("us-mail"))
    assert names_in(filtered) == ["us-mail"]
    assert b"ie-mail" not in filtered
    assert filtered.startswith(b"\xef\xbb\xbf<?xml")


@pytest.mark.parametrize("body", [
    HEAD + b"<Containers>" + container("ie-mail"),                                   # cut short
    b"not xml at all",
    b"",
    HEAD.replace(b"EnumerationResults", b"Other") + b"<Containers/>" + TAIL.replace(b"EnumerationResults", b"Other"),
    HEAD + b"<Containers><Container><Name>ie-mail</Name><Name>x</Name></Container></Containers>" + TAIL,
    HEAD + b"<Containers><Container><Properties/></Container></Containers>" + TAIL,       # no name
    HEAD + b"<Containers><Container/></Containers>" + TAIL,
    HEAD + b"<Containers><Container><Name/></Container></Containers>" + TAIL,
    HEAD + b"<Containers><Container><Name>IE&amp;x</Name></Container></Containers>" + TAIL,
    HEAD + b"<Containers><Container><Name> ie-mail</Name></Container></Containers>" + TAIL,
    HEAD + b"<Containers><Container><Name>ie<b/>mail</Name></Container></Containers>" + TAIL,
    HEAD + b"<Containers><!-- <Container><Name>x</Name></Container> -->" + container("ie-mail") + b"</Containers>"
    + TAIL,
    HEAD + b"<Containers><![CDATA[<Container><Name>x</Name></Container>]]>" + container("ie-mail")
    + b"</Containers>" + TAIL,
    HEAD + b"<Containers>" + container("ie-mail") + b"<?pi x?></Containers>" + TAIL,
    b'<!DOCTYPE x [<!ENTITY e "ie-mail">]>' + HEAD + b"<Containers><Container><Name>&e;</Name></Container>"
    b"</Containers>" + TAIL,
    HEAD + b'<Containers xmlns="urn:x">' + container("ie-mail") + b"</Containers>" + TAIL,
    HEAD.replace(b"<EnumerationResults", b'<EnumerationResults xmlns="urn:x"') + b"<Containers>"
    + container("ie-mail") + b"</Containers>" + TAIL,
    HEAD + b"<Containers><x:Container xmlns:x='urn:x'><Name>ie-mail</Name></x:Container></Containers>" + TAIL,
    # azure-storage-blob reads every child of <Containers> as a container, whatever its element is called.
    HEAD + b"<Containers>" + container("ie-mail") + b"<Other><Name>us-mail</Name></Other></Containers>" + TAIL,
])
def test_an_answer_that_reads_two_ways_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamFailure):
        filter_list_containers(body, ACCOUNT, lambda resource: False)


NAMES = st.lists(st.from_regex(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,20}", fullmatch=True), max_size=10, unique=True)


@given(NAMES, st.data())
def test_any_listing_keeps_exactly_the_visible_containers_in_order(names: list[str], data: st.DataObject) -> None:
    allowed = data.draw(st.sets(st.sampled_from(names)) if names else st.just(set()))
    metadata = data.draw(st.sampled_from(["", "<Name>zz</Name>", "<Container>q</Container>", "<a>1</a>"]))
    body = listing(*names, metadata=metadata)
    filtered = filter_list_containers(body, ACCOUNT, only(*allowed))
    assert names_in(filtered) == [name for name in names if name in allowed]
    # Only whole Container elements were cut: what is left is the original with spans removed.
    rebuilt = HEAD + b"<Containers>" + b"".join(container(n, metadata) for n in names if n in allowed) \
        + b"</Containers>" + TAIL
    assert filtered == rebuilt


def test_a_paged_answer_is_not_passed_on() -> None:
    # The next page's marker names a container: it could be one the caller may not see.
    body = HEAD + b"<Containers>" + container("ie-mail") + b"</Containers><NextMarker>us-mail</NextMarker>"
    with pytest.raises(UpstreamFailure, match="paged container listing"):
        filter_list_containers(body + b"</EnumerationResults>", ACCOUNT, only("ie-mail"))
