"""Reading YAML values as settings: the checks every section shares, each error naming its key.

A `Section` is one mapping of the file read as one of `proxy.config.model`'s
dataclasses: a key the file leaves out takes that dataclass's field default,
so no default is written twice. The default goes through the same checks as
a written value, in the form YAML would give it (a list, a string).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from dataclasses import MISSING, fields
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from proxy.config.credentials import MIN_HMAC_SECRET_BYTES
from proxy.config.model import IPNetwork
from proxy.config.origins import Origins
from proxy.errors import ConfigError
from proxy.jurisdictions import is_country_code

K = TypeVar("K", bound=StrEnum)


@cache
def defaults(kind: type) -> Mapping[str, Any]:
    """The field defaults of the dataclass `kind`, by field name (fields without one are left out)."""
    return MappingProxyType({f.name: f.default for f in fields(kind) if f.default is not MISSING})


def as_written(value: Any) -> Any:
    """A default as the YAML would write it: a tuple as a list, a path as a string."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


class Reader:
    """Checks one value at a time against what its key expects; `fail` names the key and where it was given."""

    def __init__(self, origins: Origins, env: Mapping[str, str]) -> None:
        self.origins = origins
        self.env = env

    def fail(self, key: str, message: str) -> ConfigError:
        return self.origins.error(key, message)

    def section(self, value: Any, key: str, kind: type, allowed: frozenset[str]) -> Section:
        """The mapping at `key`, read as the dataclass `kind` (an absent or null mapping: all defaults)."""
        return Section(self, key, kind, self.mapping(value, key, allowed))

    def mapping(self, value: Any, key: str, allowed: frozenset[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a mapping")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown setting ({hint}expected one of: {', '.join(sorted(allowed))})",
            )
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, value: Any, key: str, kind: type[K]) -> K:
        """One of the enum `kind`'s words; the error lists them all, e.g. expected "s3" or "azure"."""
        for member in kind:
            if value == member:
                return member
        words = " or ".join(f'"{member}"' for member in kind)
        raise self.fail(key, f"expected {words}, got {value!r}")

    def number(self, value: Any, key: str, *, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low:g} and {high:g}, got {value:g}")
        return float(value)

    def count(self, value: Any, key: str, *, high: int) -> int:
        """A whole number from 1 to `high`; digits in a string (from BAILIWICK_<NAME>) count too."""
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, got {value!r}")
        return int(self.number(value, key, low=1, high=high))

    def address(self, value: Any, key: str) -> tuple[str, int]:
        text = self.string(str(value) if isinstance(value, int) else value, key)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise self.fail(key, f"expected HOST:PORT, got {text!r}")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104
        return host, int(port)

    def network(self, value: Any, key: str) -> IPNetwork:
        try:
            return ipaddress.ip_network(self.string(value, key), strict=True)
        except ValueError as exc:
            raise self.fail(key, f"not a network in CIDR notation: {exc}") from exc

    def jurisdiction(self, value: Any, key: str) -> str:
        code = self.string(value, key)
        if not is_country_code(code):
            raise self.fail(key, f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return code

    def secret_from_env(self, value: Any, key: str) -> bytes:
        name = self.string(value, key)
        secret = self.env.get(name)
        if not secret:
            raise self.fail(key, f"the environment variable {name} is not set or empty")
        data = secret.encode()
        if len(data) < MIN_HMAC_SECRET_BYTES:
            raise self.fail(
                key, f"the secret in {name} is {len(data)} bytes; at least {MIN_HMAC_SECRET_BYTES} are required"
            )
        return data


class Section:
    """One mapping of the file read as the dataclass `kind`: what is left out is the field's default."""

    def __init__(self, reader: Reader, key: str, kind: type, raw: dict[str, Any]) -> None:
        self.reader = reader
        self.key = key
        self.kind = kind
        self.raw = raw

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str) -> Any:
        """The value written for `name`, or else the field's default as the YAML would write it."""
        if name in self.raw:
            return self.raw[name]
        return as_written(defaults(self.kind)[name])

    def string(self, name: str) -> str:
        return self.reader.string(self.get(name), self.path(name))

    def optional_string(self, name: str) -> str | None:
        value = self.get(name)
        return None if value is None else self.reader.string(value, self.path(name))

    def boolean(self, name: str) -> bool:
        return self.reader.boolean(self.get(name), self.path(name))

    def choice(self, name: str, kind: type[K]) -> K:
        return self.reader.choice(self.get(name), self.path(name), kind)

    def number(self, name: str, *, low: float, high: float) -> float:
        return self.reader.number(self.get(name), self.path(name), low=low, high=high)

    def whole(self, name: str, *, low: int, high: int) -> int:
        """A number checked like `number`, then truncated to a whole number."""
        return int(self.number(name, low=low, high=high))

    def count(self, name: str, *, high: int) -> int:
        return self.reader.count(self.get(name), self.path(name), high=high)
