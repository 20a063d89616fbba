"""ISO 3166-1 alpha-2 country codes, and help when an operator writes a near miss.

The list of codes comes from pycountry (the ISO 3166 data Debian's iso-codes
maintains), not from a table kept here. A jurisdiction is only ever an assigned
alpha-2 code in upper case; anything else is refused, with a suggestion where
the slip is a common one (``UK`` for ``GB``, ``EL`` for ``GR``, an alpha-3
code, a lower-case code or a country's name).

Memory: the proxy checks codes at start and on every request, but needs only
the set of about 250 two-letter codes. Importing pycountry and building its
``countries`` database would cost the serving process about 1.3 MiB (the
package, ``importlib.metadata`` that it imports for its version, and one object
per country with every name indexed), so `country_codes` reads the codes from
the file ``pycountry.countries`` itself is built from (pycountry's
``databases/iso3166-1.json``) and keeps only a frozenset. pycountry is imported
only to suggest a code for a value that is not one (an error path), or if its
data file is not where pycountry ships it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.util import find_spec
from pathlib import Path

# Where pycountry keeps ISO 3166-1 (pycountry.DATABASE_DIR) and the key its Database reads.
_DATA_FILE = Path("databases", "iso3166-1.json")
_ROOT_KEY = "3166-1"

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
def country_codes() -> frozenset[str]:
    """Every assigned ISO 3166-1 alpha-2 code: the alpha_2 of each of ``pycountry.countries``."""
    codes = _codes_from_data_file()
    if codes is None:
        import pycountry

        codes = frozenset(str(country.alpha_2) for country in pycountry.countries)
    return codes


def _codes_from_data_file() -> frozenset[str] | None:
    """The codes read straight from pycountry's data file, without importing pycountry; None if unreadable."""
    spec = find_spec("pycountry")  # finds the package without running it
    for location in (spec.submodule_search_locations or ()) if spec is not None else ():
        try:
            with Path(location, _DATA_FILE).open(encoding="utf-8") as file:
                tree = json.load(file)
        except (OSError, ValueError):
            continue
        entries = tree.get(_ROOT_KEY) if isinstance(tree, dict) else None
        if isinstance(entries, list) and entries and all(
            isinstance(entry, dict) and isinstance(entry.get("alpha_2"), str) for entry in entries
        ):
            return frozenset(str(entry["alpha_2"]) for entry in entries)
    return None


def is_country_code(value: str) -> bool:
    """True only for an assigned ISO 3166-1 alpha-2 code, in upper case."""
    return value in country_codes()


def suggest(value: str) -> str | None:
    """The code the operator most likely meant, or None."""
    text = value.strip()
    upper = text.upper()
    if upper in _COMMON_SLIPS:
        return _COMMON_SLIPS[upper]
    if upper in country_codes():
        return upper
    if len(upper) == 3:
        import pycountry

        country = pycountry.countries.get(alpha_3=upper)
        if country is not None:
            return str(country.alpha_2)
    if len(text) > 3:
        import pycountry

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
