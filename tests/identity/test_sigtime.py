"""The dates a signed request carries: SigV4's YYYYMMDDTHHMMSSZ and HTTP dates in GMT, nothing looser."""

from __future__ import annotations

import pytest

from proxy.errors import MalformedSignature
from proxy.identity.sigtime import AMZ_DATE, amz_time, http_time

# 2013-05-24T00:00:00Z, AWS's example date, as seconds since 1970.
MAY_24 = 1369353600.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("20130524T000000Z", MAY_24),
    ("20130524T235959Z", MAY_24 + 86399),
    ("20240229T120000Z", 1709208000.0),   # a leap day
])
def test_amz_dates(text: str, seconds: float) -> None:
    assert AMZ_DATE.fullmatch(text)
    assert amz_time(text) == seconds


@pytest.mark.parametrize("text", ["20130230T000000Z", "20131324T000000Z", "20130524T250000Z"])
def test_an_amz_date_that_is_no_date_is_refused(text: str) -> None:
    with pytest.raises(MalformedSignature, match="not a valid date"):
        amz_time(text)


@pytest.mark.parametrize("text", ["2013-05-24T00:00:00Z", "20130524T000000", "20130524t000000z", " 20130524T000000Z"])
def test_other_spellings_are_not_amz_dates(text: str) -> None:
    assert not AMZ_DATE.fullmatch(text)


@pytest.mark.parametrize("text", [
    "Fri, 24 May 2013 00:00:00 GMT",
    "Fri, 24 May 2013 00:00:00 +0000",
    "Fri, 24 May 2013 00:00:00 -0000",   # how Python's formatdate writes GMT
])
def test_http_dates_in_gmt(text: str) -> None:
    assert http_time(text) == MAY_24


@pytest.mark.parametrize(("text", "message"), [
    ("Fri, 24 May 2013 02:00:00 +0200", "in GMT"),
    ("yesterday", "an HTTP date"),
    ("", "an HTTP date"),
])
def test_other_http_dates_are_refused(text: str, message: str) -> None:
    with pytest.raises(MalformedSignature, match=message):
        http_time(text)
