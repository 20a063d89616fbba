"""Finding the token in the headers: which header, which scheme, and what is ambiguous."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy, MultiMapping

from proxy.errors import Unauthenticated
from proxy.identity.extract import MAX_TOKEN_CHARS, PresentedToken, find_token, token_in

from .support import headers

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abcdef0123456789"
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (headers(("Authorization", f"Bearer {JWT}")), PresentedToken(JWT, "authorization")),
        (headers(("Authorization", f"bearer {JWT}")), PresentedToken(JWT, "authorization")),
        (headers(("Authorization", f"BEARER   {JWT}  ")), PresentedToken(JWT, "authorization")),
        (headers(("authorization", f"Bearer\t{JWT}")), PresentedToken(JWT, "authorization")),
        (headers(("X-Bailiwick-Token", JWT)), PresentedToken(JWT, "x-bailiwick-token")),
        (headers(("x-bailiwick-token", f" {JWT} ")), PresentedToken(JWT, "x-bailiwick-token")),
        # A storage signature in Authorization is not a token, and does not hide the token header.
        (
            headers(("Authorization", SIGV4), ("X-Bailiwick-Token", JWT)),
            PresentedToken(JWT, "x-bailiwick-token"),
        ),
        (
            headers(("Authorization", "SharedKey account:c2lnbmF0dXJl"), ("X-Bailiwick-Token", JWT)),
            PresentedToken(JWT, "x-bailiwick-token"),
        ),
        (headers(("Authorization", SIGV4)), None),
        (headers(("Authorization", "SharedKey account:c2lnbmF0dXJl")), None),
        (headers(("Authorization", "Basic dXNlcjpwYXNz")), None),
        (headers(("Host", "bucket.s3.amazonaws.com")), None),
        (headers(), None),
    ],
)
def test_finds_the_token_and_its_header(
    given: CIMultiDictProxy[str], expected: PresentedToken | None
) -> None:
    assert find_token(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (headers(("Authorization", f"Bearer {JWT}"), ("X-Bailiwick-Token", JWT)), "more than one token"),
        (headers(("X-Bailiwick-Token", JWT), ("X-Bailiwick-Token", JWT)), "more than one token"),
        (
            headers(("Authorization", f"Bearer {JWT}"), ("Authorization", f"Bearer {JWT}")),
            "more than one token",
        ),
        (headers(("Authorization", f"Bearer {JWT}"), ("Authorization", SIGV4)), "more than one token"),
        (headers(("Authorization", SIGV4), ("Authorization", SIGV4)), "Authorization header appears"),
        (headers(("Authorization", "Bearer")), "carries no token"),
        (headers(("Authorization", "Bearer   ")), "carries no token"),
        (headers(("X-Bailiwick-Token", "")), "carries no token"),
        (headers(("Authorization", "Bearer abc.def")), "not a JWT"),
        (headers(("Authorization", "Bearer abc.def.")), "not a JWT"),
        (headers(("Authorization", "Bearer a.b.c.d")), "not a JWT"),
        (headers(("Authorization", "Bearer a b.c.d")), "not a JWT"),
        (headers(("X-Bailiwick-Token", "a.b=.c")), "not a JWT"),
        (headers(("X-Bailiwick-Token", f"Bearer {JWT}")), "not a JWT"),
    ],
)
def test_refuses_ambiguous_or_malformed_tokens(given: CIMultiDictProxy[str], message: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        find_token(given)
    assert refused.value.code == "InvalidToken"
    assert message in refused.value.message
    assert JWT not in refused.value.message


@pytest.mark.parametrize("header", ["Authorization", "X-Bailiwick-Token"])
def test_refuses_oversized_tokens_without_reading_them(header: str) -> None:
    # Not even shaped like a JWT: the size is refused before anything else is looked at.
    token = "A" * (MAX_TOKEN_CHARS + 1)
    value = f"Bearer {token}" if header == "Authorization" else token
    with pytest.raises(Unauthenticated) as refused:
        find_token(headers((header, value)))
    assert refused.value.code == "InvalidToken"
    assert f"at most {MAX_TOKEN_CHARS}" in refused.value.message
    assert "AAAAAAAA" not in refused.value.message


def test_accepts_a_token_of_exactly_the_limit() -> None:
    token = "a" * 100 + "." + "b" * (MAX_TOKEN_CHARS - 202) + "." + "c" * 100
    assert len(token) == MAX_TOKEN_CHARS
    assert find_token(headers(("X-Bailiwick-Token", token))) == PresentedToken(token, "x-bailiwick-token")


def test_repr_does_not_show_the_token() -> None:
    assert JWT not in repr(PresentedToken(JWT, "authorization"))


_NAME_SPELLINGS = st.sampled_from(
    ["Authorization", "authorization", "AUTHORIZATION", "X-Bailiwick-Token", "x-bailiwick-token",
     "X-BAILIWICK-TOKEN", "X-Bailiwic\u212a-Token", "Host"]
)
_VALUES = st.sampled_from([f"Bearer {JWT}", f"bearer\t{JWT}", "Bearer", SIGV4, JWT, f" {JWT} ", "", "Bearer a.b"])


@given(st.lists(st.tuples(_NAME_SPELLINGS, _VALUES), max_size=4))
def test_every_kind_of_mapping_gets_the_same_answer(pairs: list[tuple[str, str]]) -> None:
    # aiohttp's case-insensitive headers take a quicker path than other mappings; the answers agree.
    def answer(given: MultiMapping[str]) -> object:
        try:
            return find_token(given)
        except Unauthenticated as refused:
            return refused.message

    assert answer(headers(*pairs)) == answer(MultiDictProxy(MultiDict(pairs)))


ENTRA = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL3N0b3JhZ2UuYXp1cmUuY29tIn0.c2ln"


@pytest.mark.parametrize(("given", "expected"), [
    # Azure Blob with Entra ID: the Bearer token is the storage server's, ours is in X-Bailiwick-Token.
    (headers(("Authorization", f"Bearer {ENTRA}"), ("X-Bailiwick-Token", JWT)), (JWT, "x-bailiwick-token")),
    # Without X-Bailiwick-Token a Bearer token is still the caller's.
    (headers(("Authorization", f"Bearer {JWT}")), (JWT, "authorization")),
])
def test_a_storage_bearer_token_is_left_to_the_storage_server(
    given: CIMultiDictProxy[str], expected: tuple[str, str],
) -> None:
    assert token_in(given, storage_bearer=True) == expected


@pytest.mark.parametrize("given", [
    headers(("Authorization", f"Bearer {ENTRA}"), ("Authorization", f"Bearer {JWT}"), ("X-Bailiwick-Token", JWT)),
    headers(("Authorization", f"Bearer {ENTRA}"), ("X-Bailiwick-Token", JWT), ("X-Bailiwick-Token", JWT)),
])
def test_a_storage_bearer_token_does_not_make_ambiguity_acceptable(given: CIMultiDictProxy[str]) -> None:
    with pytest.raises(Unauthenticated):
        token_in(given, storage_bearer=True)
    # And for S3 (no Bearer of its own) the pair stays two tokens.
    with pytest.raises(Unauthenticated, match="more than one token"):
        token_in(headers(("Authorization", f"Bearer {ENTRA}"), ("X-Bailiwick-Token", JWT)))
