"""`bailiwick policy diff OLD NEW`: its output and its exit status (0 same, 1 changes, 2 trouble, as diff(1))."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from proxy.cli import main

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"

EEA_READ = "      - id: eea-read\n        allow: [read, list]\n        from: [EEA]\n"
DE_DENIED = "      - id: eea-read\n        deny: [read, list]\n        from: [DE]\n"
SCRATCH = """datasets:
  - name: scratch
    region: eu-west-1
    resources: [s3://unknown-bucket]
    rules:
      - id: scratch-local
        allow: [read]
        from: [HOME]
"""
SUMMARY = re.compile(r"^(\d+) of (\d+) decisions would change: (\d+) newly refused, (\d+) newly allowed, "
                     r"(\d+) rule changes?$")


def folder(root: Path, name: str, *edits: tuple[str, str], tests: bool = True) -> Path:
    """The shipped policies copied to root/name, with `edits` (text, replacement) made to mail.yaml."""
    target = root / name
    shutil.copytree(POLICIES, target)
    if not tests:
        shutil.rmtree(target / "tests")
    mail = target / "mail.yaml"
    text = mail.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    mail.write_text(text, encoding="utf-8")
    return target


def audit_line(jurisdiction: str | None, action: str | None, resource: str | None, operation: str | None) -> str:
    return json.dumps({
        "caller": {"jurisdiction": jurisdiction, "source": "10.20.0.7", "subject": "alice"},
        "dataset": None, "decision": "allow", "decision_id": "d", "error_code": None, "policy_version": "x",
        "reason": "", "rule": None, "status": 200, "time": "2026-11-23T18:00:00.000Z", "prev": "0" * 64,
        "hash": "1" * 64,
        "request": {"action": action, "api": "s3", "copy_from": None, "method": "GET", "operation": operation,
                    "resource": resource, "resources": 1},
    }) + "\n"


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main(["policy", "diff", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return status, out, err


def last(out: str) -> tuple[int, ...]:
    match = SUMMARY.match(out.splitlines()[-1])
    assert match, out
    return tuple(int(n) for n in match.groups())


@pytest.mark.parametrize(("edits", "status", "summary", "lines"), [
    pytest.param((), 0, (0, 0, 0, 0), [], id="identical policies: exit 0"),
    pytest.param(((EEA_READ, DE_DENIED),), 1, (3, 3, 0, 0), [
        r"^allow -> deny  DE list s3://mail-eu-dublin \(listing\) +\(rule eea-read\)  at .*mail_test\.yaml:\d+$",
        r"^allow -> deny  DE read s3://mail-eu-dublin/alice/inbox/1\.eml  \(rule eea-read\)  at ",
        r"^allow -> deny  NO read s3://mail-eu-dublin/alice/inbox/1\.eml  \(rule eea-read -> default deny "
        r"in dublin-mail\)  at ",
    ], id="a rule turned to deny: newly refused"),
    pytest.param((("datasets:\n", SCRATCH),), 1, (2, 0, 1, 1), [
        r"^deny -> allow   IE read s3://unknown-bucket/x +\(rule unmatched -> scratch-local\)  at ",
        r"^allow -> allow  IE read s3://unknown-bucket/x \[unmatched allow\]  "
        r"\(rule unmatched: allow -> scratch-local\)  at ",
    ], id="a dataset added: newly allowed and a rule change"),
    pytest.param((("id: local-full-access", "id: dublin-local"),), 1, (6, 0, 0, 6), [
        r"^allow -> allow  IE read +s3://mail-eu-dublin/alice/inbox/1\.eml +"
        r"\(rule local-full-access -> dublin-local\)  at ",
    ], id="a rule renamed: rule changes"),
])
def test_policy_diff_of_policy_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    edits: tuple[tuple[str, str], ...], status: int, summary: tuple[int, ...], lines: list[str],
) -> None:
    code, out, err = run(capsys, folder(tmp_path, "old"), folder(tmp_path, "new", *edits))
    assert (code, err) == (status, "")
    changed, compared, *counts = last(out)
    assert (changed, *counts) == summary
    assert compared > 20
    changes = out.split("\n\n")[0].splitlines() if changed else []
    assert len(changes) == changed  # one line per change; each test request counts once
    for pattern in lines:
        assert any(re.search(pattern, line) for line in changes), (pattern, changes)
    assert f"compared {tmp_path}/old (version " in out


def test_repeated_audit_lines_are_grouped_with_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    read = audit_line("GB", "read", "s3://mail-us-east/bob/inbox/1.eml", "GetObject")
    checkpoint = json.dumps({"checkpoint": {"kind": "interval", "lines": 1000, "mac": "ab"}, "prev": "0", "hash": "1"})
    audit.write_text(read * 3 + audit_line(None, None, None, None) + checkpoint + "\n" + "garbage\n")
    old = folder(tmp_path, "old", tests=False)
    new = folder(tmp_path, "new", ("from: [ADEQUATE]", "from: [EEA]"), tests=False)
    code, out, err = run(capsys, old, new, "--audit", audit)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "allow -> deny  GB read s3://mail-us-east/bob/inbox/1.eml  (rule adequate-read -> default deny in us-mail)"
        f"  [x3]  at {audit}:1",
        "",
        f"compared {old} (version {_version(out, 0)}) with {new} (version {_version(out, 1)})",
        "requests: 0 from policy tests; 3 from audit log lines, decided with unmatched deny; "
        "3 of 6 audit log lines skipped (1 no caller jurisdiction, 1 not a JSON object, 1 not a decision)",
        "3 of 3 decisions would change: 3 newly refused, 0 newly allowed, 0 rule changes",
    ]


def _version(out: str, which: int) -> str:
    versions: list[str] = re.findall(r"\(version ([0-9a-f]{12})\)", out)
    return versions[which]


def test_audit_requests_follow_region_and_unmatched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text(audit_line("IE", "read", "s3://unknown-bucket/x", "GetObject"))
    old = folder(tmp_path, "old", tests=False)
    new = folder(tmp_path, "new", ("datasets:\n", SCRATCH), tests=False)
    assert run(capsys, old, new, "--audit", audit)[0] == 1                           # unmatched -> scratch-local
    code, out, _ = run(capsys, old, new, "--audit", audit, "--unmatched", "allow")
    assert code == 1
    assert "(rule unmatched: allow -> scratch-local)" in out
    code, out, _ = run(capsys, old, new, "--audit", audit, "--region", "us-east-1")    # refused either way
    assert code == 1
    assert "deny -> deny  IE read s3://unknown-bucket/x  (rule unmatched -> region in scratch)" in out
    assert "decided with proxy region us-east-1, unmatched deny" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text(audit_line("GB", "read", "s3://mail-us-east/bob/inbox/1.eml", "GetObject") * 2)
    old, new = folder(tmp_path, "old"), folder(tmp_path, "new", ("from: [ADEQUATE]", "from: [EEA]"))
    code, out, err = run(capsys, old, new, "--audit", audit, "--json")
    assert (code, err) == (1, "")
    data = json.loads(out)
    assert data["old"]["policies"] == str(old)
    assert data["summary"]["changed"] == data["summary"]["newly_refused"] == 2
    assert data["sources"]["audit"]["decisions"] == 2
    [change] = data["changes"]
    assert (change["source"], change["count"], change["caller"]) == ("audit", 2, {"jurisdiction": "GB"})


def test_identical_json_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, folder(tmp_path, "old"), folder(tmp_path, "new"), "--json")
    assert code == 0
    assert json.loads(out)["changes"] == []


def test_a_policy_that_does_not_load_is_trouble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = folder(tmp_path, "new", ("from: [EEA]", "from: [UK]"))
    code, out, err = run(capsys, folder(tmp_path, "old"), new)
    assert (code, out) == (2, "")
    assert re.fullmatch(
        re.escape(str(new)) + r"/mail\.yaml:\d+: datasets\[0\]\.rules\[1\]\.from: "
        r'"UK" is not an ISO 3166-1 code \(did you mean GB\?\)\n',
        err,
    )


def test_a_malformed_policy_test_is_trouble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = folder(tmp_path, "new")
    (new / "tests" / "bad_test.yaml").write_text("tests:\n  - name: no caller\n    expect: allow\n")
    code, _, err = run(capsys, folder(tmp_path, "old"), new)
    assert code == 2
    assert err.startswith(f"{new}/tests/bad_test.yaml:2: tests[0]: ")


def test_an_unreadable_audit_file_is_trouble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    code, out, err = run(capsys, folder(tmp_path, "old"), folder(tmp_path, "new"), "--audit", missing)
    assert (code, out) == (2, "")
    assert err == f"bailiwick: {missing}: No such file or directory\n"


def test_nothing_to_compare_is_trouble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, folder(tmp_path, "old", tests=False), folder(tmp_path, "new", tests=False))
    assert code == 2
    assert "nothing to compare" in err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["policy", "diff", str(POLICIES)])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["policy", "diff", str(POLICIES), str(POLICIES), "--unmatched", "maybe"])
    assert exited.value.code == 2
    assert "usage: bailiwick policy diff" in capsys.readouterr().err


def test_help_shows_every_default_and_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["policy", "diff", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    for default in ("(default: none, only the policy tests)", "(default: none)", "(default: deny)",
                    "(default: off)"):
        assert default in text
    assert "0 nothing changes, 1 something changes, 2 trouble" in text
