"""The `bailiwick` command as operators run it."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.audit import AuditLog
from proxy.cli import _parser, main
from proxy.config import Config
from proxy.policy.loader import load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def test_policy_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(POLICIES)]) == 0
    assert "OK" in capsys.readouterr().out


def test_policy_check_counts_encrypted_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    folder = ROOT / "tests" / "policy" / "fixtures" / "encrypted"
    assert main(["policy", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{folder}: OK, 5 datasets, 2 datasets require encryption, "
                          f"1 dataset migrating to encryption, {len(load_policy(folder).regions)} regions, version ")


def test_policy_check_prints_file_line_path_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mail.yaml").write_text(
        "regions:\n  eu-west-1: IE\n"
        "datasets:\n  - name: m\n    region: eu-west-1\n    resources: [s3://mail-eu-dublin]\n"
        "    rules:\n      - allow: [read]\n        from: [UK]\n"
    )
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    expected = '9: datasets[0].rules[0].from: "UK" is not an ISO 3166-1 code (did you mean GB?)'
    assert err == f"{tmp_path}/mail.yaml:{expected}"


def test_policy_check_refuses_a_folder_others_can_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "mail.yaml").write_text((POLICIES / "mail.yaml").read_text())
    (folder / "jurisdictions.yaml").write_text((POLICIES / "jurisdictions.yaml").read_text())
    assert main(["policy", "check", str(folder)]) == 0
    capsys.readouterr()
    (folder / "mail.yaml").chmod(0o646)
    assert main(["policy", "check", str(folder)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{folder}/mail.yaml: is writable by others (mode 0646), so it can be changed by someone other than "
        "its owner; make it writable by its owner only (chmod go-w)"
    )


def test_policy_test_passes_on_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(POLICIES)]) == 0
    assert capsys.readouterr().out.strip().endswith(" passed, 0 failed")


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for file in POLICIES.glob("*.yaml"):
        (tmp_path / file.name).write_text(file.read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "wrong_test.yaml").write_text(
        "tests:\n  - name: US reads Dublin mail\n    caller: {jurisdiction: US}\n"
        "    request: {action: read, resource: s3://mail-eu-dublin/a}\n    expect: allow\n"
    )
    assert main(["policy", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "US reads Dublin mail" in out
    assert "no-us-access" in out
    assert out.strip().endswith("0 passed, 1 failed")


def test_explain_prints_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--jurisdiction", "US", "--action", "read", "--policies", str(POLICIES),
                 "s3://mail-eu-dublin/alice/inbox/1.eml"]) == 1
    out = capsys.readouterr().out
    assert "decision:  deny" in out
    assert "no-us-access" in out
    assert "dublin-mail" in out


@pytest.mark.parametrize(("action", "extra", "expected"), [
    ("write", ["--sends-to", "s3://mail-us-east"], "sending read s3://mail-eu-dublin/k into: write s3://mail-us-east"),
    # An inventory or access-log destination receives key names: judged as the proxy judges it, a list.
    ("list", ["--listing", "--sends-to", "s3://mail-us-east"],
     "sending list s3://mail-eu-dublin/k (listing everything under this prefix) into: write s3://mail-us-east"),
    ("write", ["--key-region", "us-east-1"], 'the check "remote region" of dataset dublin-mail (remote region)'),
])
def test_explain_a_second_place(
    capsys: pytest.CaptureFixture[str], action: str, extra: list[str], expected: str,
) -> None:
    assert main(["explain", "--jurisdiction", "IE", "--action", action, "--policies", str(POLICIES),
                 "s3://mail-eu-dublin/k", *extra]) == 1
    out = capsys.readouterr().out
    assert "decision:  deny" in out
    assert expected in out


@pytest.mark.parametrize(("jurisdiction", "resource", "status", "decision"), [
    ("IE", "s3://mail-eu-dublin/alice/inbox/1.eml", 0, "decision:  allow"),
    ("US", "s3://mail-eu-dublin/alice/inbox/1.eml", 1, "decision:  deny"),
    # A dry-run deny is recorded and forwarded: the status says what the proxy does with the request.
    ("US", "s3://archive/ie/2019/alice.mbox", 0, "decision:  dry-run deny"),
])
def test_explain_exit_status_says_allow_or_deny(
    capsys: pytest.CaptureFixture[str], jurisdiction: str, resource: str, status: int, decision: str,
) -> None:
    assert main(["explain", "--jurisdiction", jurisdiction, "--action", "read", "--policies", str(POLICIES),
                 resource]) == status
    assert decision in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "said"), [
    (["--region", "eu-wset-1"], '--region: "eu-wset-1" is not a region of the policy in POLICIES '
                                "(did you mean eu-west-1?)"),
    (["--region", "mars-north-9"], '--region: "mars-north-9" is not a region of the policy in POLICIES'),
    (["--jurisdiction", "UK"], '--jurisdiction: "UK" is not an ISO 3166-1 code (did you mean GB?)'),
    (["--policies", "NOWHERE"], "NOWHERE: the policy directory does not exist"),
    (["s3://"], "bailiwick: "),
])
def test_explain_trouble_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str,
) -> None:
    nowhere = str(tmp_path / "nowhere")
    argv = [nowhere if a == "NOWHERE" else a for a in argv]
    resource = [] if argv[0].startswith("s3:") else ["s3://mail-eu-dublin/k"]
    assert main(["explain", "--jurisdiction", "IE", "--action", "read", "--policies", str(POLICIES),
                 *resource, *argv]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert said.replace("POLICIES", str(POLICIES)).replace("NOWHERE", nowhere) in out.err


def test_a_closed_output_ends_the_command_quietly() -> None:
    """`bailiwick explain … | head -1`: the reader is gone before the trace is written; no traceback."""
    reader, writer = os.pipe()
    os.close(reader)   # the reader closed early: every write to the pipe fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "explain", "--jurisdiction", "US", "--action", "read",
             "--policies", str(POLICIES), "s3://mail-eu-dublin/alice/inbox/1.eml"],
            cwd=ROOT, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_pipe_read_in_part_ends_the_command_quietly() -> None:
    """A real `| head -1`: the reader takes one line and closes; the rest of the trace is not written."""
    with subprocess.Popen(
        [sys.executable, "-m", "proxy", "explain", "--jurisdiction", "US", "--action", "read",
         "--policies", str(POLICIES), "s3://mail-eu-dublin/alice/inbox/1.eml"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as explain:
        assert explain.stdout is not None
        assert explain.stderr is not None
        first = explain.stdout.readline()
        explain.stdout.close()
        err = explain.stderr.read()
    assert first == b"caller:    jurisdiction US\n"
    assert explain.wait(timeout=60) in (1, 141)   # 1 when the whole trace fit in the pipe before it closed
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err


def test_counts_agree_with_their_nouns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one.yaml").write_text(
        "regions:\n  eu-west-1: IE\n"
        "datasets:\n  - name: m\n    region: eu-west-1\n    resources: [s3://mail-eu-dublin]\n"
        "    rules:\n      - allow: [read]\n        from: [IE]\n"
    )
    assert main(["policy", "check", str(tmp_path)]) == 0
    # The regions counted include the built-in map's, so never one.
    assert re.match(rf"{re.escape(str(tmp_path))}: OK, 1 dataset, \d+ regions, version ", capsys.readouterr().out)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write({"n": 0})
    log.close()
    assert main(["audit", "verify", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK, 1 line, chain intact\n"


@pytest.mark.parametrize(("regions", "said"), [
    ("eu-west-1: GB\n  europe-west3: FR\n",
     " (eu-west-1 GB, not the built-in IE; europe-west3 FR, not the built-in DE)"),
    ("eu-west-1: IE\n  dublin-dc1: IE\n", ""),   # the same country, or a region of its own: nothing moved
])
def test_policy_check_names_a_built_in_region_the_folder_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], regions: str, said: str,
) -> None:
    """A folder's entry wins over the built-in map's, and moves that region's datasets: the summary says so."""
    (tmp_path / "regions.yaml").write_text(f"regions:\n  {regions}")
    assert main(["policy", "check", str(tmp_path)]) == 0
    assert re.match(rf"{re.escape(str(tmp_path))}: OK, 0 datasets, \d+ regions{re.escape(said)}, version ",
                    capsys.readouterr().out)


def test_audit_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    for n in range(3):
        log.write({"n": n})
    log.close()
    assert main(["audit", "verify", str(path)]) == 0
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert main(["audit", "verify", str(path)]) == 1
    assert f"{path}:2: chain broken" in capsys.readouterr().out


AUDIT_KEY = "checkpoint-key-for-the-cli-tests-0123456789"


def rotated_log(folder: Path, count: int = 20, key: bytes | None = None) -> list[Path]:
    """An audit log rotated into several files: rotated ones by name, then the current one."""
    log = AuditLog(str(folder / "audit.jsonl"), max_bytes=600, checkpoint_every=5, checkpoint_key=key)
    for n in range(count):
        log.write({"n": n})
    log.close()
    files = [*sorted(folder.glob("audit.*Z.jsonl")), folder / "audit.jsonl"]
    assert len(files) > 3
    return files


def cut_tail(files: list[Path], count: int) -> None:
    """Cut `count` lines off the end of the log, whichever files they are in."""
    for file in reversed(files):
        lines = file.read_text().splitlines(keepends=True)
        taken = min(count, len(lines))
        file.write_text("".join(lines[:len(lines) - taken]))
        count -= taken
        if not count:
            return


@pytest.mark.parametrize("how", ["directory", "glob", "files"])
def test_audit_verify_a_rotated_set(tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    files = rotated_log(tmp_path)

    def paths() -> list[str]:
        if how == "directory":
            return [str(tmp_path)]
        if how == "glob":
            return [str(tmp_path / "audit*.jsonl")]
        return [str(f) for f in reversed(files)]     # any order: they are put in chain order

    assert main(["audit", "verify", *paths()]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'audit.jsonl'} ({len(files)} files): OK, 20 lines, chain intact\n"
    files.pop(1).unlink()     # a whole middle file goes missing
    assert main(["audit", "verify", *paths()]) == 1
    assert capsys.readouterr().out.startswith(
        f"{files[1]}:1: chain broken: prev is not the hash of the last line of {files[0]} (line 3)")


def test_audit_verify_checks_each_worker_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for worker in (0, 1):
        log = AuditLog(str(tmp_path / "audit.jsonl"), worker, max_bytes=600)
        for n in range(5):
            log.write({"n": n})
        log.close()
    assert main(["audit", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out] == [str(tmp_path / f"audit.worker{n}.jsonl") for n in (0, 1)]


@pytest.mark.parametrize(("cut", "status", "message"), [
    (0, 0, "checkpoint MACs verified, sealed by its closing checkpoint of 2"),
    (1, 3, "warning: the log ends at a periodic checkpoint"),
    (2, 3, "warning: the log ends 5 lines after its last checkpoint"),
    (4, 3, "warning: the log ends 3 lines after its last checkpoint"),
])
def test_audit_verify_with_the_checkpoint_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    cut: int, status: int, message: str,
) -> None:
    files = rotated_log(tmp_path, key=AUDIT_KEY.encode())
    cut_tail(files, cut)
    monkeypatch.setenv("AUDIT_KEY", AUDIT_KEY)
    assert main(["audit", "verify", str(tmp_path)]) == 0    # without the key: an intact (shorter) chain
    assert main(["audit", "verify", "--checkpoint-key-env", "AUDIT_KEY", str(tmp_path)]) == status
    out = capsys.readouterr().out
    assert message in out
    assert AUDIT_KEY not in out


def test_audit_verify_with_a_wrong_or_missing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = rotated_log(tmp_path, key=AUDIT_KEY.encode())
    monkeypatch.setenv("AUDIT_KEY", "not-the-key-that-signed-these-checkpoints")
    assert main(["audit", "verify", "--checkpoint-key-env", "AUDIT_KEY", str(tmp_path)]) == 1
    file, line = next((f, n) for f in files for n, text in enumerate(f.read_text().splitlines(), 1)
                      if '"checkpoint"' in text)     # the first checkpoint
    assert capsys.readouterr().out.startswith(f"{file}:{line}: chain broken: the checkpoint's MAC does not match")
    monkeypatch.delenv("AUDIT_KEY")
    assert main(["audit", "verify", "--checkpoint-key-env", "AUDIT_KEY", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "bailiwick: the environment variable AUDIT_KEY is not set or empty\n"


def test_audit_verify_names_a_path_without_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(tmp_path / "nothing*.jsonl")]) == 1
    assert "no audit log file there" in capsys.readouterr().err


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []
    pending = [("bailiwick", _parser())]
    while pending:
        name, parser = pending.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", child) for sub, child in action.choices.items()]
    return found


@pytest.mark.parametrize(("command", "parser"), _all_parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flag_has_help_that_shows_its_default(command: str, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
            continue
        assert action.help, f"{command} {action.dest}: no help text"
        if action.option_strings:
            assert "(default" in action.help or "(required" in action.help, f"{command} {action.option_strings}"


def test_serve_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["serve", "--help"])
    assert excinfo.value.code == 0
    assert "BAILIWICK_<NAME>" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("flag", "default"), [
    ("--listen", "{0[0]}:{0[1]}".format(Config().listen)),
    ("--admin-listen", "{0[0]}:{0[1]}".format(Config().admin_listen)),
    ("--upstream", Config().upstream.url),
    ("--policies", str(Config().policies)),
    ("--workers", str(Config().workers)),
])
def test_serve_help_names_the_configuration_default(flag: str, default: str) -> None:
    """A flag left out takes the configuration's default, so its help names that one."""
    serve = dict(_all_parsers())["bailiwick serve"]
    (action,) = [a for a in serve._actions if flag in a.option_strings]
    assert action.help is not None
    assert f"(default: {default})" in action.help


@pytest.mark.parametrize(("argv", "refused"), [
    (["explain", "s3://bucket/k", "--jurisdiction", "IE", "--action", "erase"],
     "argument --action: invalid choice: 'erase' (choose from 'read', 'list', 'write', 'delete', 'admin')"),
    (["explain", "s3://bucket/k", "--jurisdiction", "IE", "--action", "read", "--unmatched", "maybe"],
     "argument --unmatched: invalid choice: 'maybe' (choose from 'deny', 'allow')"),
    (["policy", "diff", "old", "new", "--unmatched", "maybe"],
     "argument --unmatched: invalid choice: 'maybe' (choose from 'deny', 'allow')"),
])
def test_a_word_not_among_the_choices_is_refused_naming_them(
    argv: list[str], refused: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert refused in capsys.readouterr().err


# Modules `bailiwick serve` must not hold: other commands' (the demo's moto and boto3 included),
# test tools, and pycountry (its codes are read from its data file; see proxy/jurisdictions.py).
NOT_SERVED = ("pycountry", "proxy.demo", "proxy.harness", "proxy.localstore", "proxy.policy.testing",
              "proxy.policy.explain", "boto3", "botocore", "moto", "hypothesis", "pytest")


def test_serve_imports_only_what_serving_needs() -> None:
    """A long-lived proxy process keeps every module it imported in memory: serve imports none it does not use."""
    program = textwrap.dedent(f"""
        import sys
        import proxy.workers
        from proxy.policy.loader import load_policy

        def run(config):  # stands in for serving: loads the policy as start_proxy does, lists the modules
            load_policy(config.policies)
            print(" ".join(sorted(sys.modules)))

        proxy.workers.run = run
        from proxy.cli import main
        sys.exit(main(["serve", "--policies", {str(POLICIES)!r}, "--log-level", "WARNING"]))
    """)
    env = {name: value for name, value in os.environ.items() if not name.startswith("BAILIWICK_")}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    assert {"proxy.workers", "proxy.policy.loader"} <= modules
    loaded = sorted(m for m in modules if m in NOT_SERVED or m.split(".")[0] in NOT_SERVED)
    assert loaded == []
