"""Parsing JWKS documents: which keys are kept, each bound to one algorithm, and the bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.identity.keyset import MAX_JWKS_BYTES, MAX_JWKS_KEYS, JwksError, parse_jwks

from .support import SigningKey, b64, ec_key, rsa_key

ALL_PUBLIC = ("RS256", "ES256", "EdDSA")


def doc(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def test_keeps_each_key_with_its_algorithm(rsa: SigningKey, ec: SigningKey, ed: SigningKey) -> None:
    keys = parse_jwks(doc(rsa.public_jwk(), ec.public_jwk(), ed.public_jwk()), ALL_PUBLIC)
    assert {kid: key.algorithm_name for kid, key in keys.by_kid.items()} == {
        "rsa-1": "RS256",
        "ec-1": "ES256",
        "ed-1": "EdDSA",
    }
    assert len(keys.keys) == 3


def test_a_key_without_alg_gets_the_algorithm_of_its_type(rsa: SigningKey, ec: SigningKey) -> None:
    bare = [{k: v for k, v in key.public_jwk().items() if k != "alg"} for key in (rsa, ec)]
    keys = parse_jwks(doc(*bare), ALL_PUBLIC)
    assert keys.by_kid["rsa-1"].algorithm_name == "RS256"
    assert keys.by_kid["ec-1"].algorithm_name == "ES256"


@pytest.mark.parametrize(
    ("algorithms", "kept"),
    [
        (("RS256",), {"rsa-1"}),
        (("ES256",), {"ec-1"}),
        (("EdDSA", "ES256"), {"ec-1", "ed-1"}),
        # HMAC is never used with a JWKS, even if an allow-list names it.
        (("HS256", "RS256"), {"rsa-1"}),
    ],
)
def test_keeps_only_keys_of_allowed_algorithms(
    rsa: SigningKey, ec: SigningKey, ed: SigningKey, algorithms: tuple[str, ...], kept: set[str]
) -> None:
    keys = parse_jwks(doc(rsa.public_jwk(), ec.public_jwk(), ed.public_jwk()), algorithms)
    assert set(keys.by_kid) == kept


def test_drops_symmetric_encryption_and_unparseable_keys(rsa: SigningKey) -> None:
    secret = {"kty": "oct", "kid": "hmac", "k": b64(b"s" * 64), "alg": "HS256"}
    enc = rsa.public_jwk(kid="enc", use="enc")
    broken = {"kty": "RSA", "kid": "broken", "n": "AQAB"}
    wrong_alg = rsa.public_jwk(kid="lies", alg="HS256")  # an RSA key claiming HMAC
    keys = parse_jwks(doc(secret, enc, broken, wrong_alg, rsa.public_jwk(), "junk"), ALL_PUBLIC)  # type: ignore[arg-type]
    assert set(keys.by_kid) == {"rsa-1"}


def test_drops_short_rsa_keys_and_overlong_kids(ec: SigningKey) -> None:
    short = rsa_key("short", bits=1024)
    long_kid = ec_key("k" * 257)
    keys = parse_jwks(doc(short.public_jwk(), long_kid.public_jwk(), ec.public_jwk()), ALL_PUBLIC)
    assert set(keys.by_kid) == {"ec-1"}
    assert len(keys.keys) == 1


def test_a_kid_used_twice_selects_nothing(ec: SigningKey, ed: SigningKey) -> None:
    twin = ec_key("ec-1")
    keys = parse_jwks(doc(ec.public_jwk(), twin.public_jwk(), ed.public_jwk()), ALL_PUBLIC)
    assert set(keys.by_kid) == {"ed-1"}
    assert keys.find("ec-1") is None


@pytest.mark.parametrize(("count", "sole"), [(1, True), (2, False)])
def test_no_kid_finds_the_only_key(count: int, sole: bool) -> None:
    published = [ec_key(kid=None).public_jwk() for _ in range(count)]
    keys = parse_jwks(doc(*published), ALL_PUBLIC)
    assert (keys.find(None) is not None) is sole
    assert keys.by_kid == {}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", '"keys" list'),
        (b'{"keys": {}}', '"keys" list'),
        (b"{}", '"keys" list'),
        (b'{"keys": []}', "no signature keys"),
        (doc({"kty": "oct", "k": b64(b"s" * 64), "alg": "HS256"}), "no key is usable"),
        (doc({"kty": "nope"}), "no usable keys"),
        (b" " * (MAX_JWKS_BYTES + 1), f"over {MAX_JWKS_BYTES} bytes"),
    ],
)
def test_refuses_unusable_documents(document: bytes, message: str) -> None:
    with pytest.raises(JwksError, match=message):
        parse_jwks(document, ALL_PUBLIC)


def test_refuses_documents_with_too_many_keys(ec: SigningKey) -> None:
    jwk = ec.public_jwk()
    assert len(parse_jwks(doc(*[jwk] * MAX_JWKS_KEYS), ALL_PUBLIC).keys) == MAX_JWKS_KEYS
    with pytest.raises(JwksError, match=f"at most {MAX_JWKS_KEYS}"):
        parse_jwks(doc(*[jwk] * 5000), ALL_PUBLIC)
