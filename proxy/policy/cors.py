"""A dataset's CORS rules (``cors:``; docs/policies.md): what they are, which one matches, how they are read.

Browsers ask before a cross-origin request (a preflight) and read the
``Access-Control-*`` answer headers after it. The proxy answers both from the
policy alone (`proxy.cors`), with these rules, which follow S3's bucket CORS
configuration so that a bucket's rules can be copied into its dataset:

- rules are tried in order; the first whose origins, methods and headers all
  match decides (S3's ``CORSRule`` order);
- an origin is matched exactly, or by a pattern with one ``*`` (``*`` alone:
  any origin; ``https://*.example.com``: any origin that starts and ends so);
- methods are GET, PUT, POST, DELETE and HEAD, written in capitals as S3 does;
- every header a preflight asks for must match one of ``allowed_headers``
  (case-insensitive, one ``*`` allowed, ``*`` alone: any header).

Nothing here looks at requests or HTTP headers beyond plain strings: the pure
matching is tested on its own, and `proxy.cors` turns a match into headers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.policy.yamlsource import Reader, Value, join

CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
RULE_KEYS = ("id", "allowed_origins", "allowed_methods", "allowed_headers", "expose_headers", "max_age_seconds")
# S3's rule names, so that a rule copied from a bucket's configuration is pointed at its key here.
_S3_NAMES = {
    "allowedorigin": "allowed_origins", "allowedorigins": "allowed_origins",
    "allowedmethod": "allowed_methods", "allowedmethods": "allowed_methods",
    "allowedheader": "allowed_headers", "allowedheaders": "allowed_headers",
    "exposeheader": "expose_headers", "exposeheaders": "expose_headers",
    "maxageseconds": "max_age_seconds", "exposedheaders": "expose_headers", "maxage": "max_age_seconds", "id": "id",
}
# S3's limits: rules in one configuration, characters of a rule's ID.
MAX_RULES = 100
MAX_ID_LENGTH = 255
# A day: browsers cap what they keep anyway (Chromium two hours, Firefox a day).
MAX_AGE_LIMIT = 86400
# An HTTP token (RFC 9110), optionally with one "*" in it.
_HEADER = re.compile(r"[!#$%&'+.^_`|~0-9A-Za-z*-]+")
_ORIGIN = re.compile(r"(?:https?://[^\s/?#]+|\*|null)")
# What the "*" of an origin pattern (other than "*" alone) stands for: part of a host and port. Browsers send
# nothing else there; a path, query, fragment or userinfo only comes from a hand-made Origin
# ("https://evil.test/.example.com" for "https://*.example.com"), which is not let in.
_OUTSIDE_HOST = re.compile(r"[\s/?#@\\]")


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A name with at most one ``*``: matches what starts with `head` and ends with `tail` (no overlap)."""

    text: str
    head: str
    tail: str
    star: bool

    @classmethod
    def of(cls, text: str, *, fold: bool) -> Wildcard:
        written = text.lower() if fold else text
        head, star, tail = written.partition("*")
        return cls(text, head, tail, bool(star))

    def matches(self, name: str) -> bool:
        if not self.star:
            return name == self.head
        return len(name) >= len(self.head) + len(self.tail) and name.startswith(self.head) and \
            name.endswith(self.tail)


@dataclass(frozen=True, slots=True)
class CorsRule:
    """One rule of a dataset's ``cors:`` list (S3's ``CORSRule``)."""

    origins: tuple[Wildcard, ...]
    methods: frozenset[str]
    headers: tuple[Wildcard, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str = ""
    line: int = 0

    def origin_matches(self, origin: str) -> Wildcard | None:
        """The pattern that lets `origin` in (None: none does)."""
        return next((o for o in self.origins if o.matches(origin) and _in_host(o, origin)), None)

    def headers_match(self, requested: tuple[str, ...]) -> bool:
        """Whether every header name a preflight asks for (lower-case) is allowed."""
        return all(any(h.matches(name) for h in self.headers) for name in requested)


def _in_host(pattern: Wildcard, origin: str) -> bool:
    """Whether what `pattern`'s ``*`` stands for in `origin` stays within the host and port."""
    if not pattern.star or pattern.text == "*":
        return True
    return _OUTSIDE_HOST.search(origin, len(pattern.head), len(origin) - len(pattern.tail)) is None


@dataclass(frozen=True, slots=True)
class CorsMatch:
    """The rule that decided, and whether the origin came in through ``*`` alone (then no credentials)."""

    rule: CorsRule
    any_origin: bool


def match(rules: tuple[CorsRule, ...], origin: str, method: str,
          requested: tuple[str, ...] = ()) -> CorsMatch | None:
    """The first rule allowing `origin`, `method` and every `requested` header name (lower-case), or None."""
    for rule in rules:
        if method not in rule.methods:
            continue
        pattern = rule.origin_matches(origin)
        if pattern is not None and rule.headers_match(requested):
            return CorsMatch(rule, pattern.text == "*")
    return None


def requested_headers(value: str | None) -> tuple[str, ...]:
    """The names of ``Access-Control-Request-Headers``, lower-case, empty entries dropped."""
    if not value:
        return ()
    return tuple(n for n in (part.strip().lower() for part in value.split(",")) if n)


# Reading

_Check = Callable[[str], str | None]


def read_cors(reader: Reader, value: Value, path: str) -> tuple[CorsRule, ...]:
    """A dataset's ``cors:`` list; every problem is reported through `reader` with its line."""
    listed = reader.sequence(value, path, what="a list of CORS rules")
    if listed is not None and len(listed.items) > MAX_RULES:
        reader.error(listed.line, path, f"has {len(listed.items)} rules; S3 takes at most {MAX_RULES}")
    rules: list[CorsRule] = []
    ids: set[str] = set()
    for i, item in enumerate(listed.items if listed is not None else ()):
        rule = _rule(reader, item, f"{path}[{i}]")
        if rule is None:
            continue
        if rule.id and rule.id in ids:
            reader.error(rule.line, join(f"{path}[{i}]", "id"), f'CORS rule id "{rule.id}" is used twice')
            continue
        ids.add(rule.id)
        rules.append(rule)
    return tuple(rules)


def _rule(reader: Reader, node: Value, path: str) -> CorsRule | None:
    before = len(reader.issues)
    entry = reader.mapping(node, path, allowed=None, required=("allowed_origins", "allowed_methods"),
                           what="a CORS rule (a mapping with allowed_origins and allowed_methods)")
    if entry is None:
        return None
    for name, (key, _) in entry.fields.items():
        if name not in RULE_KEYS:
            hint = _S3_NAMES.get(name.replace("_", "").lower())
            if hint is None:
                close = difflib.get_close_matches(name, RULE_KEYS, n=1)
                hint = close[0] if close else None
            more = f"did you mean {hint}? " if hint else ""
            reader.error(key.line, join(path, name), f"unknown key ({more}expected one of: {', '.join(RULE_KEYS)})")
    rule_id = ""
    if (value := entry.get("id")) is not None:
        rule_id = reader.string(value, join(path, "id"), what="a rule id") or ""
        if len(rule_id) > MAX_ID_LENGTH:
            reader.error(value.line, join(path, "id"), f"is longer than {MAX_ID_LENGTH} characters (S3's limit)")
    origins = tuple(Wildcard.of(t, fold=False) for t in _names(reader, entry.get("allowed_origins"),
                                                             join(path, "allowed_origins"), _origin_problem))
    methods = frozenset(_names(reader, entry.get("allowed_methods"), join(path, "allowed_methods"), _method_problem))
    headers = tuple(Wildcard.of(t, fold=True) for t in _names(reader, entry.get("allowed_headers"),
                                                            join(path, "allowed_headers"), _header_problem))
    expose = tuple(_names(reader, entry.get("expose_headers"), join(path, "expose_headers"), _expose_problem))
    max_age = None
    if (value := entry.get("max_age_seconds")) is not None:
        max_age = _max_age(reader, value, join(path, "max_age_seconds"))
    if len(reader.issues) > before:
        return None
    return CorsRule(origins, methods, headers, expose, max_age, rule_id, entry.line)


def _names(reader: Reader, value: Value | None, path: str, problem: _Check) -> list[str]:
    if value is None:
        return []
    listed = reader.sequence(value, path, what="a list of names")
    names: list[str] = []
    for item in listed.items if listed is not None else ():
        text = reader.string(item, path, what="a name")
        if text is None:
            continue
        why = problem(text)
        if why is not None:
            reader.error(item.line, path, f'"{text}" {why}')
            continue
        names.append(text)
    return names


def _origin_problem(text: str) -> str | None:
    if text.count("*") > 1:
        return "has more than one \"*\" (S3's rule: at most one wildcard in an origin)"
    if not _ORIGIN.fullmatch(text.replace("*", "x") if text != "*" else text):
        return 'is not an origin (scheme://host[:port], e.g. "https://app.example.com", or "*")'
    if text.endswith("/"):
        return "is not an origin: an origin has no path (remove the trailing \"/\")"
    return None


def _method_problem(text: str) -> str | None:
    if text in CORS_METHODS:
        return None
    hint = f" (did you mean {text.upper()}?)" if text.upper() in CORS_METHODS else ""
    return f"is not a CORS method (expected one of: {', '.join(CORS_METHODS)}){hint}"


def _header_problem(text: str) -> str | None:
    if text.count("*") > 1:
        return "has more than one \"*\" (S3's rule: at most one wildcard in a header name)"
    return None if _HEADER.fullmatch(text) else "is not a header name"


def _expose_problem(text: str) -> str | None:
    if "*" in text:
        return "is not a header name (expose_headers names headers one by one, as S3 does)"
    return None if _HEADER.fullmatch(text) else "is not a header name"


def _max_age(reader: Reader, value: Value, path: str) -> int | None:
    text = reader.string(value, path, what="a number of seconds")
    if text is None:
        return None
    if not text.isdigit() or int(text) > MAX_AGE_LIMIT:
        reader.error(value.line, path, f'expected a whole number of seconds from 0 to {MAX_AGE_LIMIT}, found "{text}"')
        return None
    return int(text)
