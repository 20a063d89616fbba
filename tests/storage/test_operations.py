"""The operation table both APIs write theirs into: one entry a key, selectors in any order."""

from __future__ import annotations

import pytest

from proxy.storage.operations import OperationTable


def test_an_entry_written_twice_is_refused_whatever_the_order_of_its_selectors() -> None:
    table: OperationTable[str, str] = OperationTable()
    table.add("bucket", "GET", ["acl", "versionId"], "GetBucketAcl")
    with pytest.raises(AssertionError, match="duplicate operation table entry"):
        table.add("bucket", "GET", ["versionId", "acl"], "Other")
    assert table.entries == {("bucket", "GET", frozenset({"acl", "versionId"})): "GetBucketAcl"}


@pytest.mark.parametrize(("level", "method", "selectors"), [
    ("object", "GET", ["acl", "versionId"]),   # another level
    ("bucket", "PUT", ["acl", "versionId"]),   # another method
    ("bucket", "GET", ["acl"]),                # fewer selectors
])
def test_another_key_is_another_entry(level: str, method: str, selectors: list[str]) -> None:
    table: OperationTable[str, str] = OperationTable()
    table.add("bucket", "GET", ["acl", "versionId"], "first")
    table.add(level, method, selectors, "second")
    assert len(table.entries) == 2


def test_plain_holds_exactly_the_entries_without_selectors() -> None:
    table: OperationTable[str, str] = OperationTable()
    table.add("object", "GET", [], "GetObject")
    table.add("object", "GET", ["acl"], "GetObjectAcl")
    table.add("bucket", "HEAD", (), "HeadBucket")
    assert table.plain() == {("object", "GET"): "GetObject", ("bucket", "HEAD"): "HeadBucket"}
