"""Where each setting was given, so that an error about it points there.

A setting is written in the configuration file (at a line), set by a
``BAILIWICK_<NAME>`` variable or a flag, or left to its default. An error
names the file and line (``bailiwick.yaml:7: upstream.url: ...``), or the
variable or flag that set the value, as the policy errors name theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Origins:
    """The file (None: none), the line of each setting written in it, and the settings set otherwise."""

    file: str | None = None
    # By the setting's name as errors give it: {"upstream.url": 4, "identity.jwt[0]": 9}.
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Settings a variable or a flag set, with its name: {"region": "--region"}.
    overridden: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def where(self, key: str) -> str:
        """``FILE:LINE`` of `key` (else of the nearest section of it written), ``FILE``, or the variable or flag."""
        if key in self.overridden:
            return self.overridden[key]
        if self.file is None:
            return "configuration"
        name = key
        while name:
            line = self.lines.get(name)
            if line is not None:
                return f"{self.file}:{line}"
            cut = max(name.rfind("."), name.rfind("["))
            name = name[:cut] if cut > 0 else ""
        return self.file

    def error(self, key: str, message: str) -> ConfigError:
        """An error about the setting `key`, naming where it was given."""
        return ConfigError(f"{self.where(key)}: {key}: {message}" if key else f"{self.where(key)}: {message}")
