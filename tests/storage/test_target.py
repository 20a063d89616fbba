"""The strict reading of a request-target both APIs share: raw path and query, decoded parameters.

What the path names is each API's reading, tested with it (`tests/s3/test_target.py`,
`tests/azure/test_request.py`); the refusals are tested there too, end to end.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.storage.target import QueryParam, parse_target


def test_query_keeps_raw_and_decoded_values() -> None:
    target = parse_target("/bkt?acl&prefix=a%20b%2F&empty=&x-id=ListObjects")
    assert target.raw_path == "/bkt"
    assert target.raw_query == "acl&prefix=a%20b%2F&empty=&x-id=ListObjects"
    assert target.params == (
        QueryParam("acl", None, None),
        QueryParam("prefix", "a%20b%2F", "a b/"),
        QueryParam("empty", "", ""),
        QueryParam("x-id", "ListObjects", "ListObjects"),
    )
    assert target.get("prefix") == QueryParam("prefix", "a%20b%2F", "a b/")
    assert target.get("PREFIX") is None


@pytest.mark.parametrize(("target", "query"), [("/bkt", None), ("/bkt?", ""), ("/?a", "a")])
def test_query_presence(target: str, query: str | None) -> None:
    assert parse_target(target).raw_query == query


@given(st.text())
def test_parse_target_only_ever_raises_bad_request(target: str) -> None:
    with contextlib.suppress(BadRequest):
        parse_target(target)
