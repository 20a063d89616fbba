"""`proxy.policy.diffreport`: the report of `policy diff` as JSON (the text form: tests/policy/test_diff.py)."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.policy.diff import compare
from proxy.policy.diffreport import as_json
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.policy.replay import SKIP_NOT_JSON, AuditReader
from proxy.policy.samples import Settings

from .test_diff import policy_folder
from .test_replay import lines, record


def test_json_output(tmp_path: Path) -> None:
    reader = AuditReader(Settings(unmatched_allow=True))
    reader.read("audit.jsonl", lines(record(), record(), [1]))
    old: Policy = load_policy(policy_folder(tmp_path, "old"))
    new: Policy = load_policy(policy_folder(tmp_path, "new", [("from: [ADEQUATE]", "from: [EEA]")]))
    data = as_json(compare(old, new, [], reader, old_name="old", new_name="new"))
    json.dumps(data)  # serialisable as it is
    assert data["settings"] == {"region": None, "unmatched": "allow"}
    assert data["summary"] == {"decisions": 2, "changed": 2, "newly_refused": 2, "newly_allowed": 0,
                               "dry_run_changes": 0, "rule_changes": 0}
    assert data["sources"]["audit"] == {"files": ["audit.jsonl"], "lines": 3, "decisions": 2, "skipped": 1,
                                        "skipped_by_reason": {SKIP_NOT_JSON: 1}}
    [change] = data["changes"]
    assert change["change"] == "newly refused"
    assert change["count"] == 2
    assert change["origin"] == {"file": "audit.jsonl", "line": 1}
    assert change["request"] == {"action": "read", "resource": "s3://mail-us-east/bob/inbox/1.eml",
                                 "copy_from": None, "listing": False}
    assert (change["old"]["decision"], change["old"]["rule"]) == ("allow", "adequate-read")
    assert (change["new"]["decision"], change["new"]["dataset"], change["new"]["rule"]) == (
        "deny", "us-mail", "default deny")
