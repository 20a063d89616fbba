"""XML text and header tokens for both APIs' error answers: whatever the caller sent, it parses and injects nothing."""

from __future__ import annotations

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from proxy.storage.xmltext import header_token, xml_text


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"),
    ("<b>&amp;</b>", "&lt;b&gt;&amp;amp;&lt;/b&gt;"),
    ("a\x00b\x1fc", "a\ufffdb\ufffdc"),
    ("tab\tnewline\n", "tab\tnewline\n"),
    ("\ud800 lone", "\ufffd lone"),
    ("\ufffe", "\ufffd"),
])
def test_xml_text(value: str, text: str) -> None:
    assert xml_text(value) == text


def carried(char: str) -> bool:
    """Whether XML 1.0 can carry `char` (its Char production)."""
    code = ord(char)
    return char in "\t\n\r" or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000


@given(st.text())
def test_any_text_reads_back_as_itself_less_what_xml_cannot_carry(value: str) -> None:
    element = fromstring(f"<Message>{xml_text(value)}</Message>".encode())
    assert len(element) == 0   # no markup got in
    expected = "".join(char if carried(char) else "\ufffd" for char in value)
    # A parser reads every line break as "\n" (XML 1.0, 2.11).
    assert (element.text or "") == expected.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize(("value", "token"), [("req-1", "req-1"), ("a b\r\nX-Evil: 1", "abX-Evil:1"), ("é", "")])
def test_header_token(value: str, token: str) -> None:
    assert header_token(value) == token
