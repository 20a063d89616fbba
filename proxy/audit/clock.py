"""UTC timestamps to the millisecond, as audit lines (and access log lines) carry them.

Why a clock object: formatting the date and time costs more than the rest of
a timestamp, and a busy proxy asks for thousands a second, so the seconds are
formatted once a second and only the milliseconds every time.
"""

from __future__ import annotations

import time


class UtcClock:
    """UTC timestamps to the millisecond, as audit lines carry them; the seconds are formatted once a second.

    One per thread that uses it (it keeps the last second it formatted).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"
