"""Paths written in the configuration file are relative to the file's folder, as nginx and Prometheus read theirs.

A relative path would otherwise depend on the working directory the proxy
happens to start in. Which settings are paths is read off the model's types
(`proxy.config.model`): a field typed `Path`, or text marked `PathText` (where
"-" names a standard stream), in any section, list item or subsection,
so a setting added later is resolved without being listed here. This runs on
the file's own values before anything reads them, so every check and every
error sees the absolute path; values from ``BAILIWICK_<NAME>`` variables and
flags are the operator's, typed in a shell, and stay relative to the working
directory. An absolute path and "-" are left as written; a relative one is
joined to the folder and cleaned of ``.`` and ``..`` (as Go's ``filepath.Join``,
which Prometheus uses, does), so that errors name a plain absolute path.
"""

from __future__ import annotations

import os
import types
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from proxy.config.model import PATH_TEXT, Config

# A path setting with this value names a standard stream, not a file.
STREAM = "-"


def resolve_paths(raw: dict[str, Any], folder: Path, kind: type = Config) -> None:
    """Make every relative path in `raw` (the file's settings, read as `kind`) relative to `folder`, in place."""
    for name, (is_path, section) in _shape(kind).items():
        value = raw.get(name)
        if is_path:
            if isinstance(value, str) and value and value != STREAM and not os.path.isabs(value):
                raw[name] = os.path.normpath(os.path.join(folder, value))
        elif section is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    resolve_paths(item, folder, section)


@cache
def _shape(kind: type) -> dict[str, tuple[bool, type | None]]:
    """Each field of the dataclass `kind`: whether it is a path, and the dataclass it holds (or a list of)."""
    hints = get_type_hints(kind, include_extras=True)
    return {f.name: (is_path_type(hints[f.name]), _section(hints[f.name])) for f in fields(kind)}


def is_path_type(hint: Any) -> bool:
    """A `Path` (optional or not), or text marked `PATH_TEXT`."""
    if get_origin(hint) is Annotated:
        return PATH_TEXT in hint.__metadata__ or is_path_type(get_args(hint)[0])
    return any(member is Path for member in _members(hint))


def _section(hint: Any) -> type | None:
    """The dataclass a field holds, alone, optional, or as ``tuple[Item, ...]``."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    for member in _members(hint):
        if get_origin(member) is tuple:
            member = get_args(member)[0]
        if isinstance(member, type) and is_dataclass(member):
            return member
    return None


def _members(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, types.UnionType):
        return get_args(hint)
    return (hint,)
