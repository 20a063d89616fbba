"""docs/storage-apis.md cannot drift from the S3 operation table or from the client matrix.

Every entry of the S3 operation table (`proxy.s3.operations._TABLE`), the copy
each one becomes with an ``x-amz-copy-source``, POST Object, and the "Unknown" operations
must have a row in the page's operation table with the same method, path
level, query selectors, operation name and policy action; every row must name
an operation the proxy has. Every client of ``tests/test_client_matrix.py``
must have a subsection under "Client configuration".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.s3 import operations
from proxy.s3.operations import Level, Operation
from tests.test_client_matrix import CLIENTS

DOC = Path(__file__).resolve().parent.parent / "docs" / "storage-apis.md"
HEADER = "| method | path | query selectors | operation | action | what is checked |"
CLIENT_SECTION = "### Client configuration"
COPY_SOURCE = "x-amz-copy-source"
PATHS = {Level.SERVICE: "`/`", Level.BUCKET: "`/BUCKET`", Level.OBJECT: "`/BUCKET/KEY`"}


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the operation table, each cell as written (backticks kept)."""

    method: str
    path: str
    selectors: str
    operation: str
    action: str


@dataclass(frozen=True, slots=True)
class Expected:
    """What one classification must look like in the table."""

    method: str | None  # None: any method the row names (the Unknown operations)
    level: Level
    selectors: frozenset[str]
    operation: Operation

    def describe(self) -> str:
        query = " ".join(sorted(self.selectors)) or "no selectors"
        method = self.method or "any method"
        return f"{self.operation.name} ({method} {PATHS[self.level]}, {query}) -> {self.operation.action.value}"

    def matches(self, row: Row) -> bool:
        return (
            row.operation == f"`{self.operation.name}`"
            and row.action == f"`{self.operation.action.value}`"
            and row.path == PATHS[self.level]
            and (self.method is None or row.method == self.method)
            and all(f"`{token}`" in row.selectors for token in self.selectors)
        )


def operation_rows(text: str) -> list[Row]:
    """The rows of every S3 operation table: each table headed by `HEADER`, up to its first non-table line."""
    lines = text.split("\n## Azure Blob", 1)[0].splitlines()   # the Azure section has tables of its own
    assert HEADER in lines, f"the operation table header is missing: {HEADER}"
    rows: list[Row] = []
    in_table = False
    for number, line in enumerate(lines):
        if line == HEADER:
            assert lines[number + 1].startswith("|---"), f"line {number + 2}: the header is not followed by |---"
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 6, f"line {number + 1}: an operation table row has {len(cells)} cells, not 6"
        method, path, selectors, operation, action, _checked = cells
        rows.append(Row(method, path, selectors, operation, action))
    return rows


def expected_entries() -> list[Expected]:
    """Every classification the proxy makes: the table, its copies, and the Unknown operations."""
    found: list[Expected] = []
    for (level, method, tokens), op in operations._TABLE.items():
        found.append(Expected(method, level, tokens, op))
        if op.copy is not None:
            found.append(Expected(method, level, tokens | {COPY_SOURCE}, op.copy))
    # Selected by its Content-Type (multipart/form-data), not by the table.
    found.append(Expected("POST", Level.BUCKET, frozenset(), operations.POST_OBJECT))
    found.append(Expected(None, Level.OBJECT, frozenset(), operations.UNKNOWN_OBJECT))
    found.append(Expected(None, Level.BUCKET, frozenset(), operations.UNKNOWN_BUCKET))
    return found


def missing_rows(text: str) -> list[str]:
    """The classifications without a matching row in `text`'s operation table."""
    rows = operation_rows(text)
    return [entry.describe() for entry in expected_entries() if not any(entry.matches(row) for row in rows)]


def client_headings(text: str) -> list[str]:
    """The ``####`` headings of the client configuration section, up to the next section."""
    lines = text.splitlines()
    assert CLIENT_SECTION in lines, f"the section {CLIENT_SECTION!r} is missing"
    headings: list[str] = []
    for line in lines[lines.index(CLIENT_SECTION) + 1:]:
        if line.startswith(("# ", "## ", "### ")):
            break
        if line.startswith("#### "):
            headings.append(line)
    return headings


def test_every_operation_has_a_row_with_its_action() -> None:
    assert missing_rows(DOC.read_text()) == []


def test_every_row_names_a_real_operation() -> None:
    known = {f"`{entry.operation.name}`" for entry in expected_entries()}
    stale = [row.operation for row in operation_rows(DOC.read_text()) if row.operation not in known]
    assert stale == []


def test_the_table_covers_enough_to_be_the_table() -> None:
    # A guard on the guard: the table is large, and every entry above was looked for.
    assert len(operations._TABLE) > 100
    assert len(operation_rows(DOC.read_text())) > 80


def test_a_missing_row_is_noticed() -> None:
    text = DOC.read_text()
    kept = [line for line in text.splitlines() if "`GetObjectAcl`" not in line]
    assert len(kept) < len(text.splitlines())
    missing = missing_rows("\n".join(kept))
    assert missing
    assert all(entry.startswith("GetObjectAcl ") for entry in missing)


def test_a_wrong_action_is_noticed() -> None:
    text = DOC.read_text().replace("| `PutObjectAcl` | `admin` |", "| `PutObjectAcl` | `write` |")
    assert [entry for entry in missing_rows(text) if entry.startswith("PutObjectAcl ")]


def test_every_client_of_the_matrix_has_a_subsection() -> None:
    headings = client_headings(DOC.read_text())
    assert [name for name in CLIENTS if not any(name in heading for heading in headings)] == []

