"""The Host reading both APIs share: syntax, endpoints by name or address, and the table of accepted values."""

from __future__ import annotations

import re

import pytest

from proxy.errors import BadRequest
from proxy.storage.host import AcceptedHosts, HostRefusals, endpoint_sets, read_host

NAMES, IPS = endpoint_sets(("storage.test", "127.0.0.1", "::1"))
REFUSALS = HostRefusals(invalid="invalid", bad_port="port", unknown="unknown {host!r}", code="Code",
                        portless=re.compile(r"portless\.test"), with_port="with port {host!r}")


@pytest.mark.parametrize(("host", "name"), [
    ("storage.test", None),
    ("storage.test:8080", None),
    ("STORAGE.test", None),              # lower-cased: whether case is refused is the API's business
    ("127.0.0.1:9000", None),
    ("[::1]:9000", None),
    ("[0:0:0:0:0:0:0:1]", None),         # an address compared in its canonical form
    ("bkt.storage.test", "bkt.storage.test"),
    ("other.example", "other.example"),  # not an endpoint: what it names is the API's business
    ("portless.test", "portless.test"),
])
def test_a_host_is_an_endpoint_or_a_name(host: str, name: str | None) -> None:
    assert read_host(host, NAMES, IPS, REFUSALS) == name


@pytest.mark.parametrize(("host", "message"), [
    ("bkt.stôrage.test", "invalid"),
    ("a..b", "invalid"),
    ("-a.test", "invalid"),
    ("storage.test:99999", "port"),
    ("[::1]:99999", "port"),
    ("[::zz]", "invalid"),
    ("10.0.0.1", "unknown '10.0.0.1'"),
    ("[::2]", "unknown '[::2]'"),
    ("999.1.1.1", "invalid"),
    ("portless.test:443", "with port 'portless.test:443'"),
])
def test_refusals_say_what_the_api_says(host: str, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        read_host(host, NAMES, IPS, REFUSALS)
    assert (refused.value.message, refused.value.code) == (message, "Code")


def test_only_accepted_values_are_remembered_oldest_forgotten_first() -> None:
    read: list[str] = []

    def reader(host: str) -> str:
        read.append(host)
        if host == "bad":
            raise BadRequest("bad")
        return host.upper()

    accepted = AcceptedHosts(reader, size=2)
    for host in ("a", "b", "a", "c", "a"):
        assert accepted(host) == host.upper()
    with pytest.raises(BadRequest):
        accepted("bad")
    assert read == ["a", "b", "c", "a", "bad"]   # "a" read again once "c" pushed it out
    assert accepted.remembered == ("c", "a")


def test_a_table_of_size_zero_remembers_nothing() -> None:
    accepted = AcceptedHosts(str.upper, size=0)
    assert accepted("a") == "A"
    assert accepted.remembered == ()
