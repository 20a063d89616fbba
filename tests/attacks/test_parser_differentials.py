"""Class 1: request-targets and hosts that another parser could read as naming other data.

Every case is a US caller (refused on Dublin data by the policy) trying to reach
Dublin mail through a spelling the proxy might read as another bucket or key,
or an Irish caller with a spelling S3 could read as another resource. Each is
refused with nothing sent upstream.

Every case runs under both of aiohttp's parsers. Refused by aiohttp's own parser,
before our handler runs (plain-text 400, no audit line): the asterisk-form and
a target without a leading "/", a repeated Host (either spelling), raw NUL, control,
DEL, tab and CR bytes in the target; with the C parser (llhttp) also raw
non-ASCII bytes in the target, which the pure-Python parser hands to our handler
(refused there, audited). Everything else is refused by our handler.
"""

from __future__ import annotations

import pytest

from tests.attacks.conftest import Target, assert_refused
from tests.conftest import DUBLIN, US

FILE = "alice/inbox/1.eml"


def get(target: str, caller: str = "US", host: str = "127.0.0.1", extra: str = "") -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Bailiwick-Token: {{{caller}}}\r\n"
            f"{{SIGV4}}{extra}Connection: close\r\n\r\n").encode()


def raw_get(target: bytes, caller: str = "US") -> bytes:
    return (b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {" + caller.encode()
            + b"}\r\n{SIGV4}Connection: close\r\n\r\n")


VIA_US = f"/{US}/"
TARGETS = {
    # dot segments, raw and encoded, in every case
    "dotdot-raw": f"{VIA_US}../{DUBLIN}/{FILE}",
    "dotdot-encoded": f"{VIA_US}%2e%2e/{DUBLIN}/{FILE}",
    "dotdot-mixed": f"{VIA_US}.%2E/{DUBLIN}/{FILE}",
    "dotdot-upper": f"{VIA_US}%2E%2E/{DUBLIN}/{FILE}",
    "dot-raw": f"/{DUBLIN}/./{FILE}",
    "dot-encoded": f"/{DUBLIN}/%2e/{FILE}",
    "dotdot-trailing": f"/{DUBLIN}/alice/..",
    "dotdot-bucket": f"/../{DUBLIN}/{FILE}",
    "dotdot-encoded-slash": f"{VIA_US}..%2f{DUBLIN}%2f{FILE}",
    # backslashes
    "backslash-encoded": f"{VIA_US}..%5c{DUBLIN}%5c{FILE}",
    "backslash-encoded-upper": f"{VIA_US}..%5C{DUBLIN}/{FILE}",
    "backslash-raw": f"{VIA_US}..\\{DUBLIN}\\{FILE}",
    # encoded slashes in the bucket
    "slash-in-bucket": f"/{US}%2F..%2F{DUBLIN}/{FILE}",
    "slash-in-bucket-lower": f"/{DUBLIN}%2f{FILE}",
    "encoded-bucket": "/mail-eu-%64ublin/" + FILE,
    # double encoding
    "double-dot": f"{VIA_US}%252e%252e/{DUBLIN}/{FILE}",
    "double-slash": f"{VIA_US}..%252f{DUBLIN}/{FILE}",
    "double-backslash": f"{VIA_US}..%255c{DUBLIN}/{FILE}",
    # overlong and invalid UTF-8
    "overlong-dot": f"{VIA_US}%c0%ae%c0%ae/{DUBLIN}/{FILE}",
    "overlong-slash": f"{VIA_US}..%c0%af{DUBLIN}/{FILE}",
    "overlong-3byte-dot": f"{VIA_US}%e0%80%ae%e0%80%ae/{DUBLIN}/{FILE}",
    "invalid-ff": f"/{DUBLIN}/alice/%ff",
    "lone-continuation": f"/{DUBLIN}/alice/%80",
    "surrogate": f"/{DUBLIN}/alice/%ed%a0%80",
    "bad-escape": f"/{DUBLIN}/alice/%zz",
    "truncated-escape": f"/{DUBLIN}/alice/%2",
    # encoded NUL and controls
    "nul-encoded": f"/{DUBLIN}/alice/inbox/1.eml%00.txt",
    "crlf-encoded": f"/{DUBLIN}/alice%0d%0aX-Bailiwick-Jurisdiction:%20IE",
    "tab-encoded": f"/{DUBLIN}/alice%09x",
    "del-encoded": f"/{DUBLIN}/alice%7f",
    "c1-encoded": f"/{DUBLIN}/alice%c2%85",
    "nul-in-query": f"/{DUBLIN}?prefix=alice%00",
    "crlf-in-response-override": f"/{DUBLIN}/{FILE}?response-content-type=a%0d%0aX-Bailiwick-Jurisdiction:%20IE",
    # ";" parameters next to dot segments
    "semicolon-dotdot": f"{VIA_US}..;/{DUBLIN}/{FILE}",
    "semicolon-bucket": f"/{US};/../{DUBLIN}/{FILE}",
    "semicolon-encoded-dotdot": f"{VIA_US}%2e%2e;x/{DUBLIN}/{FILE}",
    "semicolon-in-query": f"/{DUBLIN}?prefix=a;x",
    # fragments
    "fragment-dotdot": f"{VIA_US}x#/../../{DUBLIN}/{FILE}",
    "fragment": f"/{DUBLIN}/{FILE}#x",
    # "//" and empty segments
    "leading-double-slash": f"//{DUBLIN}/{FILE}",
    "empty-segment": f"{VIA_US}/{DUBLIN}/{FILE}",
    "empty-key-segment": f"/{DUBLIN}/alice//inbox/1.eml",
    "key-leading-slash": f"/{DUBLIN}//alice/inbox/1.eml",
    # query tricks that would change the operation or prefix
    "repeated-param": f"/{DUBLIN}?prefix=bob&prefix=alice",
    "repeated-param-case": f"/{DUBLIN}?prefix=bob&PREFIX=alice",
    "encoded-param-name": f"/{DUBLIN}?%70refix=alice",
    "plus-in-path": f"/{DUBLIN}/alice+inbox",
    "prefix-dotdot": f"/{US}?prefix=../{DUBLIN}/",
    # absolute-form and other request-target forms
    "absolute-form": f"http://127.0.0.1/{DUBLIN}/{FILE}",
    "absolute-form-vhost": f"http://{DUBLIN}.localhost/{FILE}",
    "absolute-form-https": f"https://127.0.0.1/{DUBLIN}/{FILE}",
    "asterisk-form": "*",
    "no-leading-slash": f"{DUBLIN}/{FILE}",
    # case variants and look-alikes of the bucket
    "bucket-upper": f"/MAIL-EU-DUBLIN/{FILE}",
    "bucket-mixed-case": f"/Mail-Eu-Dublin/{FILE}",
    "bucket-lookalike-encoded": f"/mail-eu-dubl%C4%B1n/{FILE}",  # dotless i
    "bucket-fullwidth-encoded": f"/mail-eu-dubli%EF%BD%8E/{FILE}",
    "bucket-trailing-dot": f"/{DUBLIN}./{FILE}",
    # access-point aliases and ARNs
    "s3alias": f"/myap-abcdefghijklmnopqrstuvwxyz0123-s3alias/{FILE}",
    "olap-alias": f"/myap-abc--ol-s3/{FILE}",
    "mrap": f"/mfzwi23gnjvgw.mrap/{FILE}",
    "arn-path": f"/arn:aws:s3:eu-west-1:123456789012:accesspoint/ap/object/{FILE}",
    "arn-encoded": f"/arn%3Aaws%3As3%3Aeu-west-1%3A123456789012%3Aaccesspoint%2Fap/{FILE}",
}


# Cases aiohttp refuses itself, under both parsers / under llhttp only.
AIOHTTP_REFUSES = frozenset({"asterisk-form", "no-leading-slash", "duplicate-host", "duplicate-host-case",
                             "nul-raw", "control-raw", "del-raw", "tab-raw", "cr-raw"})
LLHTTP_REFUSES = frozenset({"overlong-raw", "invalid-utf8-raw", "lookalike-raw", "cyrillic-raw"})


def refused_by(name: str, target: Target) -> str:
    if name in AIOHTTP_REFUSES or (name in LLHTTP_REFUSES and target.name == "c"):
        return "aiohttp"
    return "proxy"


@pytest.mark.parametrize(("name", "path"), TARGETS.items(), ids=TARGETS.keys())
def test_ambiguous_request_target(any_parser: Target, name: str, path: str) -> None:
    assert_refused(any_parser, get(path), by=refused_by(name, any_parser))


RAW_TARGETS = {
    "nul-raw": f"/{DUBLIN}/alice\x00/../../{US}/x".encode(),
    "control-raw": f"/{DUBLIN}/alice\x01".encode(),
    "del-raw": f"/{DUBLIN}/alice\x7f".encode(),
    "tab-raw": f"/{DUBLIN}/al\tice".encode(),
    "cr-raw": f"/{DUBLIN}/alice\r/x".encode(),
    "overlong-raw": f"/{US}/".encode() + b"\xc0\xae\xc0\xae/" + f"{DUBLIN}/{FILE}".encode(),
    "invalid-utf8-raw": f"/{DUBLIN}/alice/".encode() + b"\xff",
    "lookalike-raw": "/mail-eu-dubl\u0131n/alice".encode(),
    "cyrillic-raw": "/mail-\u0435u-dublin/alice".encode(),
}


@pytest.mark.parametrize(("name", "path"), RAW_TARGETS.items(), ids=RAW_TARGETS.keys())
def test_raw_bytes_in_request_target(any_parser: Target, name: str, path: bytes) -> None:
    assert_refused(any_parser, raw_get(path), by=refused_by(name, any_parser))


HOSTS = {
    # Host vs the headers some servers prefer over it
    "x-forwarded-host": get(f"/{FILE}", host=f"{US}.localhost", extra=f"X-Forwarded-Host: {DUBLIN}.localhost\r\n"),
    "x-forwarded-host-lower": get(f"/{US}/x", extra=f"x-forwarded-host: {DUBLIN}.localhost\r\n"),
    "forwarded-host": get(f"/{FILE}", host=f"{US}.localhost", extra=f"Forwarded: host={DUBLIN}.localhost\r\n"),
    "duplicate-host": get(f"/{FILE}", host=f"{US}.localhost", extra=f"Host: {DUBLIN}.localhost\r\n"),
    "duplicate-host-case": get(f"/{FILE}", host=f"{US}.localhost", extra=f"host: {DUBLIN}.localhost\r\n"),
    "empty-host": get(f"/{DUBLIN}/{FILE}", host=""),
    "host-with-userinfo": get(f"/{FILE}", host=f"{US}.localhost@{DUBLIN}.localhost"),
    "host-with-path": get(f"/{FILE}", host=f"{DUBLIN}.localhost/x"),
    "host-trailing-dot": get(f"/{FILE}", host=f"{DUBLIN}.localhost."),
    "host-bad-port": get(f"/{FILE}", host=f"{DUBLIN}.localhost:99999"),
    "host-two-ports": get(f"/{FILE}", host=f"{DUBLIN}.localhost:1:2"),
    # case variants and look-alikes in Host
    "host-bucket-upper": get(f"/{FILE}", host="MAIL-EU-DUBLIN.localhost"),
    "host-bucket-mixed": get(f"/{FILE}", host="Mail-Eu-Dublin.localhost"),
    "host-punycode": get(f"/{FILE}", host="xn--mail-eu-dubln-8ib.localhost"),
    # virtual-hosted Host with another bucket in the path: judged by the Host bucket
    "vhost-vs-path": get(f"/{US}/bob/inbox/1.eml", host=f"{DUBLIN}.localhost"),
    "vhost-vs-path-port": get(f"/{US}/bob/inbox/1.eml", host=f"{DUBLIN}.localhost:{{PORT}}"),
    "vhost-s3-endpoint": get(f"/{US}/bob/inbox/1.eml", host=f"{DUBLIN}.s3.amazonaws.com"),
    # hosts under unknown endpoint suffixes
    "unknown-suffix": get(f"/{FILE}", host=f"{DUBLIN}.s3.evil.example"),
    "endpoint-as-prefix": get(f"/{FILE}", host=f"{DUBLIN}.localhost.evil.example"),
    "regional-endpoint-unconfigured": get(f"/{FILE}", host=f"{DUBLIN}.s3.eu-west-1.amazonaws.com"),
    "dualstack-unconfigured": get(f"/{FILE}", host=f"{DUBLIN}.s3.dualstack.eu-west-1.amazonaws.com"),
    # IP-literal hosts not in the endpoint list
    "ipv4-other": get(f"/{DUBLIN}/{FILE}", host="10.0.0.1"),
    "ipv4-short": get(f"/{DUBLIN}/{FILE}", host="127.1"),
    "ipv4-hex": get(f"/{DUBLIN}/{FILE}", host="0x7f.0.0.1"),
    "ipv4-decimal": get(f"/{DUBLIN}/{FILE}", host="2130706433"),
    "ipv4-leading-zeros": get(f"/{DUBLIN}/{FILE}", host="127.000.000.001"),
    "ipv6-other": get(f"/{DUBLIN}/{FILE}", host="[::2]"),
    "ipv6-mapped": get(f"/{DUBLIN}/{FILE}", host="[::ffff:10.0.0.1]"),
    "ipv6-zone": get(f"/{DUBLIN}/{FILE}", host="[fe80::1%25eth0]"),
    "bucket-under-ip": get(f"/{FILE}", host=f"{DUBLIN}.127.0.0.1"),
    # access-point aliases and ARNs as the Host bucket
    "host-s3alias": get(f"/{FILE}", host="myap-abcdefghijklmnopqrstuvwxyz0123-s3alias.localhost"),
    "host-olap": get(f"/{FILE}", host="myap-abc--ol-s3.localhost"),
    "host-accesspoint": get(f"/{FILE}", host="myap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com"),
}


@pytest.mark.parametrize(("name", "request_bytes"), HOSTS.items(), ids=HOSTS.keys())
def test_ambiguous_host(any_parser: Target, name: str, request_bytes: bytes) -> None:
    assert_refused(any_parser, request_bytes, by=refused_by(name, any_parser))


NON_ASCII_HOSTS = {
    "host-cyrillic": "mail-\u0435u-dublin.localhost",
    "host-dotless-i": "mail-eu-dubl\u0131n.localhost",
    "host-fullwidth-dot": "mail-eu-dublin\uff0elocalhost",
}


@pytest.mark.parametrize("host", NON_ASCII_HOSTS.values(), ids=NON_ASCII_HOSTS.keys())
def test_non_ascii_host(any_parser: Target, host: str) -> None:
    request = (b"GET /alice/inbox/1.eml HTTP/1.1\r\nHost: " + host.encode() +
               b"\r\nX-Bailiwick-Token: {US}\r\n{SIGV4}Connection: close\r\n\r\n")
    assert_refused(any_parser, request, by="proxy")
