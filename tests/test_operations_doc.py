"""docs/operations.md cannot drift from the code: its configuration block is the defaults.

The reference block is loaded with the real loader and compared with the
defaults the configuration's dataclasses declare (the one place a default is
written); every key the loader accepts must be mentioned in the reference.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    assert load_config(documented, environ={}) == Config()


def test_the_loader_adds_no_default_of_its_own() -> None:
    assert load_config(None, environ={}) == Config()


def test_every_accepted_key_is_documented() -> None:
    accepted: set[str] = set().union(*SETTINGS.values())
    text = DOC.read_text()
    missing = sorted(key for key in accepted if f"{key}" not in text)
    assert missing == []
    assert len(accepted) > 40
