"""Where settings come from, strongest first: flags, ``BAILIWICK_<NAME>`` variables, the YAML file.

The three are merged into one raw mapping, shaped like the file, that
`proxy.config.load` then checks; what none of them sets takes its default
from `proxy.config.model`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.config.origins import Origins
from proxy.config.paths import resolve_paths
from proxy.config.yamlfile import read_yaml

# Settings that flags and BAILIWICK_<NAME> variables may set, with the config key they override.
OVERRIDABLE: dict[str, str] = {
    "listen": "listen",
    "admin_listen": "admin_listen",
    "upstream": "upstream.url",
    "upstream_url": "upstream.url",
    "upstream_api": "upstream.api",
    "policies": "policies",
    "region": "region",
    "unmatched": "unmatched",
    "audit_path": "audit.path",
    "dry_run": "dry_run",
    "workers": "workers",
    "access_log": "access_log",
}


def merged_settings(
    path: Path | None, overrides: Mapping[str, str | None], env: Mapping[str, str],
) -> tuple[dict[str, Any], Origins]:
    """The file's mapping (empty without a file) with the variables' and then the flags' values set in it.

    The file's relative paths are made relative to its folder first (`proxy.config.paths`); a variable's
    or a flag's stay as given. The origins say where each setting came from, for errors.
    """
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        raw, lines = read_yaml(path)
        resolve_paths(raw, Path(os.path.abspath(path)).parent)
    overridden: dict[str, str] = {}
    for name, key in OVERRIDABLE.items():
        variable = f"BAILIWICK_{name.upper()}"
        value = env.get(variable)
        if value:
            _set_path(raw, key, value)
            overridden[key] = variable
    for name, value in overrides.items():
        if value is not None:
            _set_path(raw, OVERRIDABLE[name], value)
            overridden[OVERRIDABLE[name]] = "--" + name.replace("_", "-")
    file = str(path) if path is not None else None
    return raw, Origins(file, MappingProxyType(lines), MappingProxyType(overridden))


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value
