"""`bailiwick demo` runs the whole story and exits 0 only when every decision matches the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_story_comes_out_as_the_policy_says(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(ROOT / "policies") == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("Irish", "German", "US prosecutor"))]
    assert len(rows) == 18
    us_on_dublin = [r for r in rows if r.startswith("US") and "Dublin" in r]
    assert us_on_dublin
    assert all("  deny  " in r for r in us_on_dublin)
    assert all("  deny  " in r for r in rows if "copy Dublin mail to us-east-1" in r)


def test_demo_fails_when_the_policy_disagrees_with_the_story(tmp_path: Path) -> None:
    # Let US callers read Dublin mail: the proxy follows the policy, but the story's claim
    # (no US access to Dublin mail) breaks, so the demo must fail.
    for file in (ROOT / "policies").glob("*.yaml"):
        text = file.read_text()
        if file.name == "mail.yaml":
            text = text.replace("from: [US]", "from: [CN]").replace("from: [EEA]", "from: [EEA, US]", 1)
        (tmp_path / file.name).write_text(text)
    assert run_demo(tmp_path) == 1
