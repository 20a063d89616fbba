"""Which build runs (`proxy.build`): the compiled wheel or pure Python, and `bailiwick --version` saying so.

The same tests run against both: in the pure tree (the whole suite) and against the compiled wheel
(.ci/run installs it and runs them with BAILIWICK_EXPECT_COMPILED=1), where every module the mypyc
hook lists must have been loaded from its extension, not from a .py left beside it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from proxy import __version__, build

ROOT = Path(__file__).resolve().parent.parent
HOOK = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]["build"]["targets"][
    "wheel"]["hooks"]["mypyc"]
COMPILED = os.environ.get("BAILIWICK_EXPECT_COMPILED") == "1"


def test_the_compiled_build_is_optional() -> None:
    # `pip install .` and `pip install -e .` build pure Python, with no compiler and no mypyc.
    assert HOOK["enable-by-default"] is False
    assert HOOK["include"], "the compiled build compiles something"


def test_build_names_the_build_that_runs() -> None:
    assert build() == ("compiled with mypyc" if COMPILED else "pure Python")


@pytest.mark.parametrize("path", HOOK["include"])
def test_each_listed_module_is_loaded_from_the_build_that_runs(path: str) -> None:
    assert (ROOT / path).is_file(), f"{path}: listed for mypyc, not in the package"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    origin = str(module.__file__)
    assert origin.endswith(tuple(EXTENSION_SUFFIXES)) is COMPILED, origin


def test_version_says_which_build() -> None:
    result = subprocess.run([sys.executable, "-m", "proxy", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout == f"bailiwick {__version__} ({build()})\n"
