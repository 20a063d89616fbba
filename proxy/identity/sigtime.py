"""The dates a signed request carries, read as AWS writes them, and AWS's bounds on them.

SigV4 dates read ``YYYYMMDDTHHMMSSZ``; SigV2 and a signed ``Date`` header are
HTTP dates (RFC 7231), in GMT only. A signed date must be within 15 minutes of
the proxy's clock, and a presigned URL is valid for 7 days at most, as with
AWS (the checks against the clock are `proxy.identity.keyring.Keyring`'s).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from proxy.errors import MalformedSignature

# AWS's bounds: a signed date at most 15 minutes from the server's clock, a presigned URL valid 7 days at most.
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600

AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


def amz_time(text: str) -> float:
    """Seconds since 1970 of a YYYYMMDDTHHMMSSZ date (the caller has matched `AMZ_DATE`)."""
    try:
        moment = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                          int(text[13:15]), tzinfo=UTC)
    except ValueError:
        raise MalformedSignature("the signed date is not a valid date") from None
    return moment.timestamp()


def http_time(text: str) -> float:
    """Seconds since 1970 of an HTTP date in GMT. Raises `MalformedSignature` for anything else."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise MalformedSignature("the request's date must be an HTTP date (RFC 7231)") from None
    offset = moment.utcoffset()
    if offset is None:   # "-0000" (how Python's formatdate writes GMT): UTC
        return float(calendar.timegm(moment.timetuple()))
    if offset.total_seconds() != 0:
        raise MalformedSignature("the request's date must be given in GMT")
    return moment.timestamp()


def signed_date(signed: Mapping[str, list[str]]) -> tuple[float, str]:
    """A SigV4 header signature's date, from its signed headers: seconds since 1970, and as YYYYMMDDTHHMMSSZ.

    X-Amz-Date when signed, else a signed Date. Raises `MalformedSignature` when neither is, or one does not read.
    """
    if "x-amz-date" in signed:
        timestamp = signed["x-amz-date"][0]
        if not AMZ_DATE.fullmatch(timestamp):
            raise MalformedSignature("X-Amz-Date must read YYYYMMDDTHHMMSSZ")
        return amz_time(timestamp), timestamp
    if "date" not in signed:
        raise MalformedSignature("a SigV4 request must sign its date: X-Amz-Date or a signed Date")
    moment = http_time(signed["date"][0])
    return moment, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(moment))
