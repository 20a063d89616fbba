"""Class 3: a caller's own X-Bailiwick-* headers, forwarded identities, method overrides.

An allowed request carrying forged tags is forwarded, but the storage server
must see exactly one of each tag, with the proxy's value: asserted on the bytes
that reached it. A forwarded-for address from an untrusted peer never changes
who the caller is, and a method override is refused.
"""

from __future__ import annotations

import uuid

import pytest

from tests.attacks.conftest import Target, assert_refused, audit_line, send
from tests.conftest import DUBLIN

TAGS = ("x-bailiwick-jurisdiction", "x-bailiwick-subject", "x-bailiwick-decision", "x-bailiwick-policy")


def allowed_get(extra: str) -> bytes:
    return (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n"
            f"{{SIGV4}}{extra}Connection: close\r\n\r\n").encode()


def allowed_chunked_put(key: str, head_extra: str, trailers: str) -> bytes:
    return (f"PUT /{DUBLIN}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{{SIGV4}}"
            f"{head_extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            f"5\r\nhello\r\n0\r\n{trailers}\r\n").encode()


FORGED = "X-Bailiwick-Jurisdiction: US\r\nX-Bailiwick-Subject: mallory\r\nX-Bailiwick-Decision: forged\r\n" \
         "X-Bailiwick-Policy: forged\r\nX-Bailiwick-Tag: eyJhbGciOiJub25lIn0.e30.\r\n"
SPOOFS = {
    "all-forged": allowed_get(FORGED),
    "upper-case": allowed_get(FORGED.upper()),
    "lower-case": allowed_get(FORGED.lower()),
    "repeated": allowed_get(FORGED + FORGED),
    "underscores": allowed_get(FORGED.replace("-", "_").replace("X_Bailiwick_Tag: eyJhbGciOiJub25lIn0.e30.",
                                                                 "X_Bailiwick_Tag: x")),
    "mixed-separators": allowed_get("x-Bailiwick_jurisdiction: US\r\nX_BAILIWICK-SUBJECT: mallory\r\n"),
    "empty-values": allowed_get("X-Bailiwick-Jurisdiction:\r\nX-Bailiwick-Subject: \r\n"),
    "comma-list": allowed_get("X-Bailiwick-Jurisdiction: US, IE\r\n"),
    "named-in-connection": allowed_get("Connection: X-Bailiwick-Jurisdiction, x_bailiwick_policy\r\n"
                                       "X-Bailiwick-Jurisdiction: US\r\n"),
    "connection-names-all": allowed_get("Connection: keep-alive, X-Bailiwick-Jurisdiction, X-Bailiwick-Subject, "
                                        "X-Bailiwick-Decision, X-Bailiwick-Policy\r\n"),
    "chunked-trailers": allowed_chunked_put("{KEY}", "Trailer: X-Bailiwick-Jurisdiction\r\n",
                                            "X-Bailiwick-Jurisdiction: US\r\nX-Bailiwick-Subject: mallory\r\n"),
    "chunked-trailers-underscore": allowed_chunked_put("{KEY}", "", "X_Bailiwick_Jurisdiction: US\r\n"),
}


@pytest.mark.parametrize("template", SPOOFS.values(), ids=SPOOFS.keys())
def test_forged_tags_are_replaced(any_parser: Target, template: bytes) -> None:
    key = f"spoof/{uuid.uuid4().hex}"
    mark = any_parser.recorder.mark()
    answer = send(any_parser, any_parser.render(template.replace(b"{KEY}", key.encode())))
    assert answer.status == 200, answer.raw[:300]
    sent = any_parser.recorder.since(mark)
    assert sent.count(b"HTTP/1.1\r\n") == 1, sent[:600]  # one request reached the storage server
    lines = [line.decode().lower() for line in sent.split(b"\r\n")]
    tags: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        normal = name.strip().replace("_", "-")
        if normal.startswith("x-bailiwick"):
            tags.setdefault(normal, []).append(value.strip())
    assert sorted(tags) == sorted(TAGS), tags
    assert all(len(values) == 1 for values in tags.values()), tags
    assert tags["x-bailiwick-jurisdiction"] == ["ie"]
    assert tags["x-bailiwick-subject"] == ["attacker-ie"]
    record = audit_line(any_parser, tags["x-bailiwick-decision"][0])  # the proxy's id: it has an audit line
    assert record["decision"] in ("allow", "dry_run_deny")
    assert record["caller"]["jurisdiction"] == "IE"
    assert tags["x-bailiwick-policy"] == [record["policy_version"].lower()]
    assert b"mallory" not in sent
    assert b"forged" not in sent


REFUSED = {
    # X-Forwarded-For from an untrusted peer: 127.0.0.2 is an Irish network, the peer is 127.0.0.1
    "xff-no-token": "X-Forwarded-For: 127.0.0.2\r\n",
    "xff-list-no-token": "X-Forwarded-For: 127.0.0.2, 127.0.0.2\r\n",
    "x-real-ip-no-token": "X-Real-IP: 127.0.0.2\r\n",
    "forwarded-for-no-token": "Forwarded: for=127.0.0.2\r\n",
    "xff-with-us-token": "X-Forwarded-For: 127.0.0.2\r\nX-Bailiwick-Token: {US}\r\n",
    "xff-underscore": "X_Forwarded_For: 127.0.0.2\r\n",
    # method overrides, in every spelling
    "method-override": "X-Bailiwick-Token: {IE}\r\nX-HTTP-Method-Override: DELETE\r\n",
    "method-override-lower": "X-Bailiwick-Token: {IE}\r\nx-http-method-override: PUT\r\n",
    "x-http-method": "X-Bailiwick-Token: {IE}\r\nX-HTTP-Method: DELETE\r\n",
    "x-method-override": "X-Bailiwick-Token: {IE}\r\nX-Method-Override: DELETE\r\n",
    "method-override-underscore": "X-Bailiwick-Token: {IE}\r\nX_HTTP_Method_Override: DELETE\r\n",
    "method-override-empty": "X-Bailiwick-Token: {IE}\r\nX-HTTP-Method-Override:\r\n",
    # other headers a server could fold "_" into "-" for
    "copy-source-underscore": "X-Bailiwick-Token: {IE}\r\nx_amz_copy_source: /mail-us-east/bob/inbox/1.eml\r\n",
    "host-underscore": "X-Bailiwick-Token: {IE}\r\nX_Forwarded_Host: mail-us-east.localhost\r\n",
    "token-underscore-only": "X_Bailiwick_Token: {IE}\r\n",  # stripped as a tag look-alike, never an identity
    "token-twice": "X-Bailiwick-Token: {IE}\r\nX-Bailiwick-Token: {US}\r\n",
    "token-and-bearer": "X-Bailiwick-Token: {IE}\r\nAuthorization: Bearer {US}\r\n",
}


@pytest.mark.parametrize("extra", REFUSED.values(), ids=REFUSED.keys())
def test_identity_and_method_cannot_be_overridden(any_parser: Target, extra: str) -> None:
    request = (f"GET /{DUBLIN}/alice/inbox/1.eml HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
               "Connection: close\r\n\r\n").encode()
    assert_refused(any_parser, request, by="proxy")
