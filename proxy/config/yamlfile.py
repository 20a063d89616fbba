"""The configuration file read as YAML, remembering the line every setting is written on.

``yaml.safe_load`` forgets positions, and its errors name ``<unicode string>``
and a column in the parser's words. An operator needs the file and the line,
as the policy errors give them (`proxy.policy.yamlsource`): the file is
composed into nodes, the line of every key (and of every list item) is
noted under its setting's name, and the nodes are then built into plain
values as ``safe_load`` would build them, so what the settings mean does
not change. The pure-Python parser is used: a configuration file is small,
and its syntax errors say what it found where libyaml's do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from proxy.errors import ConfigError


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's top-level mapping (an empty file: empty) and the line of each setting in it.

    Lines are by the setting's name as errors give it: ``{"upstream.url": 4, "identity.jwt[0]": 9}``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: not UTF-8 text ({exc.reason})") from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        loaded = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = ", ".join(p for p in (exc.context, exc.problem) if p) or "cannot be read"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if node is None or loaded is None:
        return {}, {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: expected a mapping of settings at the top level")
    lines: dict[str, int] = {}
    _note(node, "", lines, set())
    return loaded, lines


def _note(node: Node, key: str, lines: dict[str, int], seen: set[int]) -> None:
    """Note the line of every key and list item under `node`, named as `proxy.config.reader` names them.

    An alias is the node of its anchor again: each node is gone through once (`seen`), under the first name it
    has, so that an alias of itself does not recurse for ever and aliases of aliases do not multiply the work
    (``safe_load`` shares such a value, it does not copy it). A setting under an alias is named by the line of
    the alias's key, its nearest setting written out (`proxy.config.origins`).
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            child = f"{key}.{key_node.value}" if key else str(key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _note(value_node, child, lines, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{key}[{i}]"
            lines[child] = item.start_mark.line + 1
            _note(item, child, lines, seen)
