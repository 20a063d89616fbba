"""docs/storage-apis.md (its Azure Blob section) cannot drift from the Azure operation table.

Every entry of the table (`proxy.azure.operations.table`), every copy twin and
the "Unknown" operations must have a row with the same method, path level,
selectors, operation name and action (or "refused"); every row must name an
operation the proxy has.
"""

from __future__ import annotations

from pathlib import Path

from proxy.azure import operations
from proxy.azure.operations import COPY_BLOB_FROM_URL, PUT_BLOB_FROM_URL, Level, Operation

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage-apis.md"
HEADER = "| method | path | query selectors | operation | action | what is checked |"
PATHS = {Level.ACCOUNT: "`/`", Level.CONTAINER: "`/CONTAINER`", Level.BLOB: "`/CONTAINER/BLOB`"}

Row = tuple[str, str, str, str, str, str]


def rows() -> list[Row]:
    text = DOC.read_text().split("\n## Azure Blob", 1)[1]
    table = text.split(HEADER, 1)[1].split("\n\n", 1)[0]
    found: list[Row] = []
    for line in table.strip().splitlines()[1:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        found.append((cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]))
    return found


def _action(op: Operation) -> str:
    return "refused" if op.refusal else f"`{op.action.value}`"


def _documented(method: str, level: Level, tokens: frozenset[str], op: Operation, found: list[Row]) -> bool:
    return any(
        operation == f"`{op.name}`" and action == _action(op)
        and method in [m.strip() for m in methods.split(",")]
        and PATHS[level] in path.split(", ")
        and all(f"`{token}`" in selectors for token in tokens)
        for methods, path, selectors, operation, action, _ in found
    )


def test_every_table_entry_has_its_row() -> None:
    found = rows()
    missing = [f"{method} {level.value} {sorted(tokens)} {op.name}"
               for (level, method, tokens), op in operations.table().items()
               if not _documented(method, level, tokens, op, found)]
    assert missing == []


def test_every_copy_has_its_row() -> None:
    found = rows()
    copies = [(method, level, tokens, op.copy) for (level, method, tokens), op in operations.table().items()
              if op.copy is not None]
    copies += [("PUT", Level.BLOB, frozenset(), COPY_BLOB_FROM_URL),
               ("PUT", Level.BLOB, frozenset(), PUT_BLOB_FROM_URL)]
    copies += [("PUT", Level.BLOB, frozenset({"comp=incrementalcopy"}), op)
               for (_, _, _), op in operations.table().items() if op.needs_copy]
    assert len(copies) == 7
    for method, level, tokens, op in copies:
        assert op is not None
        assert _documented(method, level, tokens, op, found), op.name
        row = next(r for r in found if r[3] == f"`{op.name}`")
        assert "x-ms-copy-source" in row[2]
        assert "the copy source as a read" in row[5]


def test_unknown_rows_and_no_invented_operations() -> None:
    found = rows()
    unknown = [row for row in found if row[3] == "`Unknown`"]
    assert {row[4] for row in unknown} == {"`admin`"}
    assert any("whole container" in line for line in DOC.read_text().splitlines() if "`Unknown`" in line)
    assert any("whole account" in line for line in DOC.read_text().splitlines() if "`Unknown`" in line)
    names = {op.name for op in operations.table().values()} | {"Unknown"}
    names |= {op.copy.name for op in operations.table().values() if op.copy is not None}
    names |= {COPY_BLOB_FROM_URL.name, PUT_BLOB_FROM_URL.name}
    assert {row[3].strip("`") for row in found} <= names
