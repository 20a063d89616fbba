"""docs/operations.md cannot drift from the code: its configuration block is the defaults.

The reference block is loaded with the real loader and compared with the
defaults the configuration's dataclasses declare (the one place a default is
written); every key the loader accepts must be mentioned in the reference.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.config import SETTINGS, Config, load_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def reference_block() -> str:
    text = DOC.read_text()
    section = text.split("## Configuration reference", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_documented_block_is_the_defaults(tmp_path: Path) -> None:
    documented = tmp_path / "bailiwick.yaml"
    documented.write_text(reference_block())
    # A relative path written in the file is the file's folder's (the default `policies` is the working directory's).
    assert load_config(documented, environ={}) == replace(Config(), policies=tmp_path / Config().policies)


def test_the_loader_adds_no_default_of_its_own() -> None:
    assert load_config(None, environ={}) == Config()


def documents(text: str, key: str) -> bool:
    """Whether `text` names `key` as a key: written as one in YAML (``key:``), or in code (```key```,
    ```identity.jwt[].key```). Any occurrence of the word would do for keys such as ``path`` or ``api``."""
    name = re.escape(key)
    return re.search(rf"^\s*(?:#\s*)?(?:-\s+)?{name}:|`[^`\n]*\b{name}\b[^`\n]*`", text, re.M) is not None


def test_every_accepted_key_is_documented() -> None:
    accepted: set[str] = set().union(*SETTINGS.values())
    text = DOC.read_text()
    missing = sorted(key for key in accepted if not documents(text, key))
    assert missing == []
    assert len(accepted) > 40


@pytest.mark.parametrize(("text", "key", "named"), [
    ("  path: /var/log\n", "path", True),
    ("    # - cidr: 10.0.0.0/8\n", "cidr", True),
    ("| `jwks_url` | none |", "jwks_url", True),
    ("set `identity.jwt[].audience`", "audience", True),
    ("the file's path on disk", "path", False),
    ("a pathway: here", "path", False),
    ("`jwks_url_file`", "jwks_url", False),
])
def test_a_key_counts_as_documented_only_where_it_is_named_as_one(text: str, key: str, named: bool) -> None:
    assert documents(text, key) is named
