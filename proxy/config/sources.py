"""Where settings come from, strongest first: flags, ``BAILIWICK_<NAME>`` variables, the YAML file.

The three are merged into one raw mapping, shaped like the file, that
`proxy.config.load` then checks; what none of them sets takes its default
from `proxy.config.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from proxy.errors import ConfigError

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
) -> dict[str, Any]:
    """The file's mapping (empty without a file) with the variables' and then the flags' values set in it."""
    raw = read_file(path) if path is not None else {}
    for name, key in OVERRIDABLE.items():
        value = env.get(f"BAILIWICK_{name.upper()}")
        if value:
            _set_path(raw, key, value)
    for name, value in overrides.items():
        if value is not None:
            _set_path(raw, OVERRIDABLE[name], value)
    return raw


def read_file(path: Path) -> dict[str, Any]:
    """The YAML file's top-level mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return loaded


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
