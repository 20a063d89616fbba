"""`bailiwick serve` refuses to start on aiohttp's pure-Python HTTP parser unless it was chosen."""

from __future__ import annotations

import pytest
from aiohttp import http_parser, web_protocol

from proxy.cli import main
from proxy.errors import ConfigError
from proxy.lifecycle import check_http_parser


def test_the_c_parser_is_loaded_here() -> None:
    # The in-process proxy of the attack suite runs on llhttp; the subprocess one on Python.
    assert check_http_parser({}) == "C HTTP parser (llhttp)"


def test_pure_python_parser_without_asking_is_a_start_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    with pytest.raises(ConfigError, match=r"C HTTP parser \(llhttp\) is not loaded"):
        check_http_parser({})


def test_pure_python_parser_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    assert check_http_parser({"AIOHTTP_NO_EXTENSIONS": "1"}).startswith("pure-Python HTTP parser")


def test_serve_exits_with_the_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    monkeypatch.delenv("AIOHTTP_NO_EXTENSIONS", raising=False)
    assert main(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bailiwick: aiohttp's C HTTP parser (llhttp) is not loaded")
    assert "AIOHTTP_NO_EXTENSIONS=1" in err
