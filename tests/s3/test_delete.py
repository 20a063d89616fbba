"""Multi-object delete bodies -> one DELETE access per key; anything ambiguous is refused."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.domain import Access, Action, Resource
from proxy.errors import BadRequest
from proxy.s3.delete import MAX_KEYS, parse_delete_body

from .helpers import wire
from .test_target import KEYS, key_is_acceptable

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def deletes(*keys: str) -> tuple[Access, ...]:
    return tuple(Access(Action.DELETE, Resource("s3", "bkt", key)) for key in keys)


def body_for(*keys: str) -> bytes:
    objects = "".join(f"<Object><Key>{key}</Key></Object>" for key in keys)
    return f"<Delete {NS}>{objects}</Delete>".encode()


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        (body_for("a"), ("a",)),
        (body_for("a", "b/c", "a"), ("a", "b/c", "a")),  # one access per <Object>, in order
        (b"<Delete><Object><Key>no-namespace</Key></Object></Delete>", ("no-namespace",)),
        (f'<?xml version="1.0" encoding="UTF-8"?>\n<Delete {NS}>\n  <Quiet>true</Quiet>\n'
         "  <Object>\n    <Key>k1</Key>\n    <VersionId>v1</VersionId>\n  </Object>\n"
         "  <Object><Key>k2</Key><ETag>e</ETag><LastModifiedTime>t</LastModifiedTime><Size>1</Size></Object>\n"
         "</Delete>".encode(), ("k1", "k2")),
        (b"\xef\xbb\xbf<?xml version='1.0' encoding='utf-8'?><Delete><Object><Key>bom</Key></Object></Delete>",
         ("bom",)),
        (body_for("a &amp; b &lt;c&gt;"), ("a & b <c>",)),
        (body_for("a&#x2F;&#46;x"), ("a/.x",)),  # character references are plain XML
        (body_for("<![CDATA[a<b]]>"), ("a<b",)),
        (body_for("folder/"), ("folder/",)),
        (body_for(" spaced "), (" spaced ",)),
        (body_for("ä/ö"), ("ä/ö",)),
    ],
)
def test_valid_bodies(body: bytes, keys: tuple[str, ...]) -> None:
    assert parse_delete_body("bkt", body) == deletes(*keys)


def test_a_thousand_keys_are_accepted() -> None:
    keys = [f"k{i}" for i in range(MAX_KEYS)]
    assert len(parse_delete_body("bkt", body_for(*keys))) == MAX_KEYS


def test_more_than_a_thousand_keys_are_refused() -> None:
    with pytest.raises(BadRequest, match="at most 1000"):
        parse_delete_body("bkt", body_for(*(f"k{i}" for i in range(MAX_KEYS + 1))))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (BILLION_LAUGHS, "DTD"),
        (EXTERNAL, "DTD"),
        (b'<!DOCTYPE Delete SYSTEM "http://evil.example/d.dtd"><Delete/>', "DTD"),
        (b"<!DOCTYPE Delete><Delete><Object><Key>a</Key></Object></Delete>", "DTD"),
        (b"", "not well-formed"),
        (b"not xml", "not well-formed"),
        (b"<Delete><Object><Key>a</Key></Object>", "not well-formed"),
        (b"<Delete><Object><Key>&undefined;</Key></Object></Delete>", "not well-formed"),
        (b"<Delete/>", "no keys"),
        (b"<Delete><Quiet>true</Quiet></Delete>", "no keys"),
        (b"<Remove><Object><Key>a</Key></Object></Remove>", "<Delete>"),
        (b'<Delete xmlns="urn:other"><Object><Key>a</Key></Object></Delete>', "namespace"),
        (b'<Delete><o:Object xmlns:o="urn:other"><Key>a</Key></o:Object></Delete>', "namespace"),
        (b"<Delete><Object/></Delete>", "no <Key>"),
        (b"<Delete><Object><Key/></Object></Delete>", "empty <Key>"),
        (b"<Delete><Object><Key></Key></Object></Delete>", "empty <Key>"),
        (b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>", "more than once"),
        (b"<Delete><Object><Key>a<b/>c</Key></Object></Delete>", "only text"),
        (b"<Delete><Object><Key>a<!-- x -->b</Key></Object></Delete>", "comments"),
        (b"<Delete><Object><Key>a<?pi x?>b</Key></Object></Delete>", "processing instructions"),
        (b"<Delete><Object><Key>a</Key><Other/></Object></Delete>", "unexpected element"),
        (b"<Delete><Objects><Key>a</Key></Objects></Delete>", "unexpected element"),
        (b"<Delete>junk<Object><Key>a</Key></Object></Delete>", "text outside"),
        (b"<Delete><Object>junk<Key>a</Key></Object></Delete>", "text outside"),
        (b"<Delete><Object><Key>a</Key>junk</Object></Delete>", "text outside"),
        (b"<Delete><Quiet>true</Quiet><Quiet>false</Quiet><Object><Key>a</Key></Object></Delete>", "once"),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><Delete><Object><Key>\xe4</Key></Object></Delete>', "UTF-8"),
        (b'<?xml version="1.0" encoding="latin-1"?><Delete><Object><Key>a</Key></Object></Delete>', "UTF-8"),
        ("<Delete><Object><Key>a</Key></Object></Delete>".encode("utf-16"), "UTF-8"),
        (b"<Delete><Object><Key>\xff</Key></Object></Delete>", "UTF-8"),
        # keys follow the same rules as keys in the path
        (body_for("a/../b"), "dot segment"),
        (body_for(".."), "dot segment"),
        (body_for("a//b"), "empty segment"),
        (body_for("/a"), "empty segment"),
        (body_for("a\\b"), "backslash"),
        (body_for("a&#10;b"), "control"),
        (body_for("a&#x85;b"), "control"),
        (body_for("a%2e%2e"), "double-encoded"),
        (body_for("x" * 1025), "longer than 1024"),
    ],
)
def test_refused_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        parse_delete_body("bkt", body)
    assert caught.value.status == 400


# botocore builds and signs each request: slower than a pure parser, and its first call builds the client.
@settings(deadline=None)
@given(st.lists(KEYS, min_size=1, max_size=5))
def test_any_keys_botocore_sends_round_trip(keys: list[str]) -> None:
    request = wire("delete_objects", {"Bucket": "bkt", "Delete": {"Objects": [{"Key": k} for k in keys]}})
    # XML 1.0 cannot carry U+FFFE or U+FFFF; botocore writes them anyway and the body is malformed.
    if all(key_is_acceptable(k) and not {"\ufffe", "\uffff"} & set(k) for k in keys):
        assert parse_delete_body("bkt", request.body) == deletes(*keys)
    else:
        with pytest.raises(BadRequest):
            parse_delete_body("bkt", request.body)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        parse_delete_body("bkt", body)


@given(st.text(max_size=200))
def test_any_text_in_a_delete_element_parses_or_raises_bad_request(inner: str) -> None:
    with contextlib.suppress(BadRequest):
        parse_delete_body("bkt", f"<Delete><Object><Key>{inner}</Key></Object></Delete>".encode("utf-8", "replace"))


# The worst bodies for a parser, each 2 MiB (the default s3.max_delete_body_bytes).
TWO_MIB = 2 * 1024 * 1024


def filled(head: bytes, unit: bytes, tail: bytes, size: int = TWO_MIB) -> bytes:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


# Every object as long as it can be (a key of the longest length, a version id of character
# references): the whole body is parsed and every key checked, then refused at the very end.
THOUSAND_LONGEST = b"<Delete>" + b"".join(
    b"<Object><Key>" + b"%04d" % i + b"k" * 1020 + b"</Key><VersionId>" + b"&#65;" * 204 + b"</VersionId></Object>"
    for i in range(MAX_KEYS)) + b"<Other/></Delete>"
WORST_CASES = {
    "a thousand keys of the longest length": THOUSAND_LONGEST,
    "keys of character references": b"<Delete>" + b"".join(
        b"<Object><Key>" + b"&#x10000;" * 200 + b"</Key></Object>" for _ in range(MAX_KEYS)) + b"</Delete>",
    "many objects": filled(b"<Delete>", b"<Object><Key>a</Key></Object>", b"</Delete>"),
    "deep nesting": filled(b"<Delete>", b"<a>", b""),
    "many attributes": b"<Delete><Object " + b" ".join(
        b"a%07d='1'" % i for i in range(TWO_MIB // 14)) + b"><Key>a</Key></Object></Delete>",
    "many namespace declarations": b"<Delete><Object " + b" ".join(
        b"xmlns:n%07d='u'" % i for i in range(TWO_MIB // 20)) + b"><Key>a</Key></Object></Delete>",
    "character references between elements": filled(b"<Delete>", b"&#32;", b"<Object><Key>a</Key></Object></Delete>"),
    "comments": filled(b"<Delete>", b"<!---->", b"<Object><Key>a</Key></Object></Delete>"),
    "processing instructions": filled(b"<Delete>", b"<?p?>", b"<Object><Key>a</Key></Object></Delete>"),
    "one long name": filled(b"<Delete><", b"a", b"/></Delete>"),
    "one long comment": filled(b"<Delete><!--", b"-a", b"--></Delete>"),
    "one long text": filled(b"<Delete><Object><Key>", b"a", b"</Key></Object></Delete>"),
    "CDATA": filled(b"<Delete><Object><Key><![CDATA[", b"a", b"]]></Key></Object></Delete>"),
}


@pytest.mark.parametrize("name", WORST_CASES)
def test_the_worst_bodies_are_read_in_linear_time(name: str) -> None:
    # Measured at 0.4-20 ms each (the old whole-tree parse took up to 1.3 s on deep nesting);
    # the bound leaves room for a slow, shared machine.
    body = WORST_CASES[name]
    assert len(body) <= TWO_MIB
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with contextlib.suppress(BadRequest):
            parse_delete_body("bkt", body)
        best = min(best, time.perf_counter() - started)
    assert best < 0.25, f"{name}: {best * 1000:.0f} ms"


def test_the_largest_legitimate_bodies_still_parse() -> None:
    # Pretty-printed, optional elements, keys of the longest length, some written as character references.
    objects = "".join(
        f"\n  <Object>\n    <Key>{'&#x10000;' * 8}{'k' * 988}{i:04d}</Key>\n    <VersionId>{'v' * 32}</VersionId>\n"
        f"    <ETag>&quot;{'e' * 32}&quot;</ETag>\n  </Object>" for i in range(MAX_KEYS))
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Delete {NS}>\n  <Quiet>true</Quiet>{objects}\n</Delete>\n'
    assert len(body) <= TWO_MIB
    accesses = parse_delete_body("bkt", body.encode())
    assert len(accesses) == MAX_KEYS
    assert accesses[7].resource.key == "\U00010000" * 8 + "k" * 988 + "0007"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (filled(b"<Delete>", b"<a>", b"", 4096), "deeper"),
        (b"<Delete><Object><Key>a</Key></Object>" + b"<Object/>" * 7000 + b"</Delete>", "more elements"),
        (b"<Delete><Object " + b"a" * 40_000 + b"='1'><Key>a</Key></Object></Delete>", "longer than"),
        (b"<Delete><!--" + b"x" * 40_000 + b"--></Delete>", "longer than"),
        (b"<Delete><Object><Key>" + b"&#65;" * 20_000 + b"</Key></Object></Delete>", "text longer than"),
        (b"<Delete>" + b" " * 20_000 + b"<Object><Key>a</Key></Object></Delete>", "text longer than"),
    ],
    ids=["deep", "many elements", "long attribute name", "long comment", "long key", "long space"],
)
def test_bodies_beyond_the_format_are_refused_as_they_are_read(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_delete_body("bkt", body)
