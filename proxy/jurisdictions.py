"""ISO 3166-1 alpha-2 country codes, and help when an operator writes a near miss.

The list of codes comes from pycountry (the ISO 3166 data Debian's iso-codes
maintains), not from a table kept here. A jurisdiction is only ever an assigned
alpha-2 code in upper case; anything else is refused, with a suggestion where
the slip is a common one (``UK`` for ``GB``, ``EL`` for ``GR``, an alpha-3
code, a lower-case code or a country's name).
"""

from __future__ import annotations

from functools import cache

import pycountry

# Codes people reach for that ISO 3166-1 assigns to no one, or to someone else.
_COMMON_SLIPS: dict[str, str] = {
    "UK": "GB",   # the United Kingdom's ISO code is GB
    "EL": "GR",   # the EU's own code for Greece
    "EN": "GB",
    "KO": "KR",
    "JA": "JP",
    "DA": "DK",
    "SW": "SE",
}


@cache
def _codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


def is_country_code(value: str) -> bool:
    """True only for an assigned ISO 3166-1 alpha-2 code, in upper case."""
    return value in _codes()


def suggest(value: str) -> str | None:
    """The code the operator most likely meant, or None."""
    text = value.strip()
    upper = text.upper()
    if upper in _COMMON_SLIPS:
        return _COMMON_SLIPS[upper]
    if upper in _codes():
        return upper
    if len(upper) == 3:
        country = pycountry.countries.get(alpha_3=upper)
        if country is not None:
            return str(country.alpha_2)
    if len(text) > 3:
        try:
            matches = pycountry.countries.search_fuzzy(text)
        except LookupError:
            return None
        if matches:
            return str(matches[0].alpha_2)
    return None


def describe_invalid(value: object) -> str:
    """A message for a value that is not a country code, with a suggestion where one fits."""
    hint = suggest(value) if isinstance(value, str) else None
    base = f"{value!r} is not an ISO 3166-1 alpha-2 code" if not isinstance(value, str) else (
        f'"{value}" is not an ISO 3166-1 code'
    )
    return f"{base} (did you mean {hint}?)" if hint and hint != value else base
