"""The HTTP request-target of a storage request: its raw path and query, and the query's parameters.

The input is the raw target exactly as it arrived (aiohttp's
``request.raw_path``), which the proxy forwards unchanged. Everything here is
read strictly (see `proxy.storage.uri`): a target that the storage server, a
file-system backed store or an intermediary could read as naming other data
than the proxy judged is refused with `BadRequest` (InvalidURI), never
repaired. What the path names (a bucket and key, an account, container and
blob) is each API's own reading of `Target.raw_path`.

Most targets are a plain path, perhaps with a plain query: one regular
expression recognises a path that passes every character rule at once, and
the rules are then applied one by one only to a target it does not accept,
to find the first one broken and say which (`target_rules`). The query's
parameters have a single reading, the same on both paths (`_parse_query`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.errors import BadRequest
from proxy.storage.uri import (
    PATH_CHARS,
    QUERY_NAME_CHARS,
    QUERY_VALUE_CHARS,
    describe,
    outside,
    percent_decode,
)

# Spaces, controls, DEL and anything beyond ASCII (aiohttp passes raw bytes >= 0x80
# through as surrogate escapes): never part of a valid request-target.
_NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]")
_PATH_REASONS = {
    "+": 'a raw "+" in the path is ambiguous (some servers read it as a space); send %2B',
    ";": 'a ";" in the path is not accepted (some servers read it as a parameter delimiter)',
    "\\": "a backslash in the path is not accepted",
}
_PATH_OUTSIDE = outside(PATH_CHARS)
_NAME_OUTSIDE = outside(QUERY_NAME_CHARS)
_VALUE_OUTSIDE = outside(QUERY_VALUE_CHARS)
# A path that passes every check of `target_rules` at once: "/" first, then only
# PATH_CHARS (all visible ASCII; neither "#" nor "?" is among them).
_PLAIN_PATH = re.compile("/[" + "".join(re.escape(char) for char in sorted(PATH_CHARS)) + "]*")
# A query part with neither "#" nor a control, space or non-ASCII character.
_PLAIN_QUERY = re.compile(r"[\x21\x22\x24-\x7e]*")
# The parameters of a target without a query: shared, so read-only.
_NO_PARAMS: Mapping[str, QueryParam] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One ``name[=value]`` of the query. Names are never percent-encoded (refused)."""

    name: str
    raw_value: str | None  # None when the parameter has no "=" (``?acl``)
    value: str | None  # percent-decoded `raw_value`


@dataclass(frozen=True, slots=True)
class Target:
    """A request-target read strictly: the raw path and query, and the decoded parameters."""

    raw_path: str
    raw_query: str | None  # None when the target has no "?"
    params: tuple[QueryParam, ...] = ()
    # By exact name; names are unique even ignoring case (duplicates are refused).
    by_name: Mapping[str, QueryParam] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str) -> QueryParam | None:
        return self.by_name.get(name)


def is_plain_path(target: str) -> bool:
    """Whether `target` is a plain path without a query: one `parse_target` reads as
    ``Target(target, None, ())``, which a caller that needs only the path and the (no) parameters can
    skip building (most requests are such)."""
    return "?" not in target and _PLAIN_PATH.fullmatch(target) is not None


def parse_target(target: str) -> Target:
    """Split and check a raw origin-form request-target. Raises `BadRequest` (InvalidURI)."""
    raw_path, question, raw_query = target.partition("?")
    if _PLAIN_PATH.fullmatch(raw_path) is None or (question and _PLAIN_QUERY.fullmatch(raw_query) is None):
        # Not plain: `target_rules` names the first rule broken.
        return target_rules(target)
    if not question:
        return Target(raw_path, None, (), _NO_PARAMS)
    params, by_name = _parse_query(raw_query)
    return Target(raw_path, raw_query, params, by_name)


def target_rules(target: str) -> Target:
    """The rule-by-rule reading behind `parse_target`'s quick patterns, the rules in the order checked."""
    if not target.startswith("/"):
        raise BadRequest(
            "the request target must be a path starting with '/' (origin-form)", code="InvalidURI"
        )
    if "#" in target:
        raise BadRequest("the request target must not contain a fragment ('#')", code="InvalidURI")
    bad_char = _NOT_VISIBLE_ASCII.search(target)
    if bad_char:
        raise BadRequest(
            f"the request target contains a control or non-ASCII character ({describe(bad_char.group())})",
            code="InvalidURI",
        )
    raw_path, question, raw_query = target.partition("?")
    found = _PATH_OUTSIDE.search(raw_path)
    if found is not None:
        bad = found.group()
        reason = _PATH_REASONS.get(bad, f"the path must not contain {describe(bad)} unencoded")
        raise BadRequest(reason, code="InvalidURI")
    if not question:
        return Target(raw_path, None, (), _NO_PARAMS)
    params, by_name = _parse_query(raw_query)
    return Target(raw_path, raw_query, params, by_name)


def _parse_query(raw_query: str) -> tuple[tuple[QueryParam, ...], dict[str, QueryParam]]:
    if not raw_query:
        return (), {}
    params: list[QueryParam] = []
    by_name: dict[str, QueryParam] = {}
    seen: set[str] = set()
    for piece in raw_query.split("&"):
        name, equals, raw_value = piece.partition("=")
        if not name:
            raise BadRequest("the query has an empty parameter name", code="InvalidURI")
        found = _NAME_OUTSIDE.search(name)
        if found is not None:
            raise BadRequest(
                f"query parameter names must be plain tokens; {name!r} contains {describe(found.group())}",
                code="InvalidURI",
            )
        folded = name.lower()
        if folded in seen:
            raise BadRequest(f"the query parameter {name!r} is repeated", code="InvalidURI")
        seen.add(folded)
        if not equals:
            param = QueryParam(name, None, None)
        else:
            found = _VALUE_OUTSIDE.search(raw_value)
            if found is not None:
                raise BadRequest(
                    f"the value of query parameter {name!r} contains {describe(found.group())} unencoded",
                    code="InvalidURI",
                )
            value = percent_decode(raw_value, f"the value of query parameter {name!r}")
            param = QueryParam(name, raw_value, value)
        params.append(param)
        by_name[name] = param
    return tuple(params), by_name
