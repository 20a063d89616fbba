"""The refusal headers' values: any reason becomes a safe header value that decodes back to it."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.storage.refusal import CODE_HEADER, REASON_HEADER, REASON_LIMIT, encode_reason, refusal_headers

_CUT = "\u2026"


def _safe(value: str) -> bool:
    """Space and visible ASCII only, and no space at either end (a parser would drop it)."""
    return all(0x20 <= ord(char) <= 0x7E for char in value) and value == value.strip(" ")


@pytest.mark.parametrize(("reason", "encoded"), [
    ("read access to data held in eu-west-1 (IE) is not allowed for callers in US",
     "read access to data held in eu-west-1 (IE) is not allowed for callers in US"),
    ("a\r\nSet-Cookie: x=1", "a%0D%0ASet-Cookie: x=1"),
    ("s3://b/ключ", "s3://b/%D0%BA%D0%BB%D1%8E%D1%87"),
    ("100% sure", "100%25 sure"),
    (" edges ", "%20edges%20"),
    ("lone \ud800 surrogate", "lone %EF%BF%BD surrogate"),
    ("tab\tnul\x00del\x7f", "tab%09nul%00del%7F"),
    ("", ""),
])
def test_reason_encoding(reason: str, encoded: str) -> None:
    assert encode_reason(reason) == encoded


def test_both_headers() -> None:
    assert refusal_headers("Access\r\nDenied", "no") == {CODE_HEADER: "AccessDenied", REASON_HEADER: "no"}


@pytest.mark.parametrize("char", ["x", "é", "ключ", "\U0001f600", "%"])
def test_a_long_reason_is_cut_at_a_character_and_says_so(char: str) -> None:
    encoded = encode_reason(char * 3000)
    assert len(encoded) <= REASON_LIMIT
    decoded = unquote(encoded, errors="strict")   # no character's escapes were split
    assert decoded.endswith(_CUT)
    assert set(decoded.removesuffix(_CUT)) == set(char)


@given(st.text())
def test_any_reason_gives_a_safe_value_that_decodes_back(reason: str) -> None:
    encoded = encode_reason(reason)
    assert _safe(encoded)
    assert len(encoded) <= REASON_LIMIT
    decoded = unquote(encoded, errors="strict")
    whole = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in reason)
    assert decoded == whole or (decoded.endswith(_CUT) and whole.startswith(decoded.removesuffix(_CUT)))
