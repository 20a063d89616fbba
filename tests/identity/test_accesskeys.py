"""S3 access keys as identity: where the key id is read, and what is refused as ambiguous."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import AccessKeyRule, IdentityConfig, NetworkRule
from proxy.errors import ConfigError, Unauthenticated
from proxy.identity import IdentityResolver
from proxy.identity.accesskeys import AccessKeyTable, access_key_in

SIGV4 = ("AWS4-HMAC-SHA256 Credential=AKIAIRELAND/20261123/eu-west-1/s3/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=abcdef0123456789")
PRESIGNED = ("/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIRELAND%2F20261123%2Feu-west-1"
             "%2Fs3%2Faws4_request&X-Amz-Date=20261123T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=ab")


def hdrs(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(("headers", "target", "key"), [
    ((("Authorization", SIGV4),), "/bucket/key", "AKIAIRELAND"),
    ((("Authorization", "AWS AKIAIRELAND:c2lnbmF0dXJl"),), "/bucket/key", "AKIAIRELAND"),   # SigV2
    ((("Authorization", SIGV4.replace(" ", "\t", 1)),), "/bucket/key", "AKIAIRELAND"),   # a tab after the scheme
    ((), PRESIGNED, "AKIAIRELAND"),
    ((), "/bucket/key?AWSAccessKeyId=AKIAIRELAND&Expires=1&Signature=x", "AKIAIRELAND"),  # SigV2 presigned
    ((), "/bucket/key?x-amz-credential=AKIAIRELAND%2Fx", "AKIAIRELAND"),   # names compared without case
    ((), "/bucket/key", None),
    ((), "/bucket/key?list-type=2", None),
    ((("Authorization", "Bearer a.b.c"),), "/bucket/key", None),   # a token, not a key
    ((("Authorization", "SharedKey acct:sig"),), "/bucket/key", None),
])
def test_the_key_id_is_read_from_the_signature(
    headers: tuple[tuple[str, str], ...], target: str, key: str | None,
) -> None:
    assert access_key_in(hdrs(*headers), target) == key


@pytest.mark.parametrize(("headers", "target", "problem"), [
    ((("Authorization", SIGV4),), PRESIGNED, "more than once"),
    ((), PRESIGNED + "&X-Amz-Credential=OTHER%2Fx", "more than once"),
    ((), "/b/k?X-Amz-Credential=A&AWSAccessKeyId=B", "more than once"),
    ((("Authorization", SIGV4), ("Authorization", SIGV4)), "/b/k", "more than once"),
    ((("Authorization", "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=ab"),), "/b/k", "exactly one Credential"),
    # Two Credentials in one header: a server reading the last one would see the US key.
    ((("Authorization", SIGV4 + ", Credential=AKIAUSA/20261123/us-east-1/s3/aws4_request"),), "/b/k",
     "exactly one Credential"),
    ((("Authorization", SIGV4 + ", credential=AKIAUSA/x"),), "/b/k", "exactly one Credential"),
    ((), "/b/k?X-Amz-Credential=", "malformed"),
    ((), "/b/k?X-Amz-Credential=A%3AB%2Fx", "malformed"),
    ((("Authorization", "AWS :sig"),), "/b/k", "malformed"),
    # Spellings some servers accept as signatures: never a fall back to the caller's network.
    ((("Authorization", SIGV4.replace(" ", "", 1)),), "/b/k", "not one this proxy can read"),
    ((("Authorization", SIGV4.lower()),), "/b/k", "not one this proxy can read"),
])
def test_a_key_id_that_could_be_read_two_ways_is_refused(
    headers: tuple[tuple[str, str], ...], target: str, problem: str,
) -> None:
    with pytest.raises(Unauthenticated, match=problem):
        access_key_in(hdrs(*headers), target)


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_input_gives_a_key_none_or_a_refusal(authorization: str, query: str) -> None:
    try:
        key = access_key_in(hdrs(("Authorization", authorization)), "/b/k?" + query)
    except Unauthenticated:
        return
    assert key is None or (0 < len(key) <= 128 and not set(key) & set("/:,= \t"))


def test_a_key_id_listed_twice_is_a_configuration_error() -> None:
    rule = AccessKeyRule("AKIAIRELAND", "IE", "mail-ie")
    with pytest.raises(ConfigError, match="listed twice"):
        AccessKeyTable([rule, rule])


RULES = (AccessKeyRule("AKIAIRELAND", "IE", "mail-ie"),)
NETWORK = (NetworkRule(ipaddress.ip_network("10.20.0.0/16"), "DE"),)


@pytest.mark.parametrize(("headers", "target", "peer", "expected"), [
    ((("Authorization", SIGV4),), "/b/k", "192.0.2.1", ("mail-ie", "IE", "access_key")),
    ((), PRESIGNED, "192.0.2.1", ("mail-ie", "IE", "access_key")),
    # An unknown key: identity falls to the network, as for a request without a token.
    ((("Authorization", SIGV4.replace("AKIAIRELAND", "AKIAOTHER")),), "/b/k", "10.20.1.1",
     ("network:10.20.0.0/16", "DE", "network")),
    # The key wins over the network it comes from.
    ((("Authorization", SIGV4),), "/b/k", "10.20.1.1", ("mail-ie", "IE", "access_key")),
])
async def test_the_resolver_takes_a_mapped_key_before_the_network(
    headers: tuple[tuple[str, str], ...], target: str, peer: str, expected: tuple[str, str, str],
) -> None:
    resolver = IdentityResolver(IdentityConfig(networks=NETWORK, access_keys=RULES))
    identified = await resolver.identify(hdrs(*headers), peer, target)
    caller = identified.caller
    assert (caller.subject, caller.jurisdiction, caller.method) == expected
    assert identified.token_headers == frozenset()   # the signature is forwarded untouched


async def test_an_unknown_key_and_no_network_is_refused_with_the_ways_to_identify() -> None:
    resolver = IdentityResolver(IdentityConfig(access_keys=RULES))
    with pytest.raises(Unauthenticated, match="access key this proxy knows"):
        await resolver.identify(hdrs(("Authorization", SIGV4.replace("AKIAIRELAND", "AKIAOTHER"))), "192.0.2.1",
                                "/b/k")
