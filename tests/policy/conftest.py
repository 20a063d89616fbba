"""Fixtures for the policy tests: policy folders written into a temporary directory.

Tests run from the temporary directory and name the folder ``policies``, so
error messages read exactly as an operator would see them
(``policies/mail.yaml:14: ...``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.policy.loader import load_policy
from proxy.policy.model import Policy

REPO = Path(__file__).resolve().parents[2]
SHIPPED_POLICIES = REPO / "policies"

BASE = """\
jurisdictions:
  EU: [AT, BE, DE, FR, IE, NL]
  EEA: [EU, IS, LI, NO]
regions:
  eu-west-1: IE
  eu-central-1: DE
  us-east-1: US
"""

WritePolicy = Callable[..., Path]


@pytest.fixture
def write_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WritePolicy:
    """Writes files (name -> YAML text, dedented) into ./policies and returns Path("policies")."""
    monkeypatch.chdir(tmp_path)
    directory = Path("policies")

    def write(files: dict[str, str], *, base: bool = True) -> Path:
        directory.mkdir(exist_ok=True)
        if base:
            (directory / "base.yaml").write_text(BASE, encoding="utf-8")
        for name, text in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return directory

    return write


@pytest.fixture
def load(write_policy: WritePolicy) -> Callable[..., Policy]:
    """Writes the files as `write_policy` does and loads the folder."""

    def write_and_load(files: dict[str, str], *, base: bool = True) -> Policy:
        return load_policy(write_policy(files, base=base))

    return write_and_load
