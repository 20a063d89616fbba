"""The storage APIs stand side by side on `proxy.storage`: neither imports the other, nor does the ground."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "proxy"


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (``from a import b`` counts as ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reaches(path: Path, package: str) -> list[str]:
    return sorted(name for name in imported(path) if name == package or name.startswith(package + "."))


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("azure", ("proxy.s3",)),
    ("s3", ("proxy.azure",)),
    ("storage", ("proxy.s3", "proxy.azure")),
])
def test_a_package_imports_neither_api_it_stands_beside(folder: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((PROXY / folder).glob("*.py"))
    assert files
    found = {f"{path.name}: {name}" for path in files for package in forbidden for name in reaches(path, package)}
    assert not found


@pytest.mark.parametrize(("source", "package", "expected"), [
    ("from proxy.s3.names import check_key\n", "proxy.s3", ["proxy.s3.names", "proxy.s3.names.check_key"]),
    ("import proxy.s3.uri\n", "proxy.s3", ["proxy.s3.uri"]),
    ("def f() -> None:\n    from proxy import s3\n", "proxy.s3", ["proxy.s3"]),
    ("from proxy.storage.uri import percent_decode\n", "proxy.s3", []),
    ("from proxy.s3x import y\n", "proxy.s3", []),
])
def test_the_check_sees_every_form_of_import(tmp_path: Path, source: str, package: str,
                                             expected: list[str]) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)
    assert reaches(path, package) == expected
