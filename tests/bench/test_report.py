"""The benchmark's report: what a run writes, and that bench/README.md changes only when asked.

smoke-report.json is the report.json of a real smoke run (`python3 bench/run.py --smoke`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.report import README_HEADING, render, replace_readme_report, target_row
from bench.run import main, publish

SMOKE = Path(__file__).with_name("smoke-report.json")
README = f"# Benchmarks\n\nHow to run it.\n\n{README_HEADING}\n\n### bailiwick benchmark report\n\nold figures\n"


def smoke_results() -> dict[str, Any]:
    results: dict[str, Any] = json.loads(SMOKE.read_text())
    return results


@pytest.mark.parametrize(("value", "target", "higher_is_better", "status", "margin"), [
    (9000.0, 8000.0, True, "met", "above by 1,000 req/s (+12% of the goal)"),
    (6000.0, 8000.0, True, "**not met**", "short by 2,000 req/s (-25% of the goal)"),
    (0.2, 0.3, False, "met", "under by 0 req/s (-33% of the goal)"),
    (0.5, 0.3, False, "**not met**", "over by 0 req/s (+67% of the goal)"),
    (math.nan, 0.3, False, "not measured", ""),
])
def test_a_target_row_says_whether_the_goal_is_met_and_by_how_much(
    value: float, target: float, higher_is_better: bool, status: str, margin: str,
) -> None:
    row = target_row("throughput", value, target, "req/s", higher_is_better, 0)
    assert row[3:] == [status, margin]


def test_the_report_of_a_smoke_run_has_every_part_and_its_targets() -> None:
    report = render(smoke_results())
    headings = [line for line in report.splitlines() if line.startswith("#")]
    assert [h.split(":")[0].split(",")[0] for h in headings] == [
        "# bailiwick benchmark report", "## (a) Small-object capacity", "## (b) Added latency",
        "## (c) Streaming 256 MiB objects (curl", "## (d) Policy engine alone (`decide`",
        "## (e) Encryption at rest", "## Targets",
    ]
    assert "(smoke run, 1 run(s) per measurement" in report
    # A smoke run stops short of 100,000 datasets: the policy target is reported as not measured.
    assert "| policy p99 at 100,000 datasets |" in report
    assert "smoke runs stop at 10,000 datasets" in report


def test_a_run_writes_its_artifacts_and_leaves_the_readme_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    report = render(smoke_results())
    written = publish(report, tmp_path / "out", smoke_results())
    assert (tmp_path / "out" / "report.md").read_text() == report
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == smoke_results()
    assert readme.read_text() == README
    assert str(readme) not in written


def test_the_readme_report_is_replaced_when_asked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    report = render(smoke_results())
    for _ in range(2):  # a second time replaces the first, never appends
        written = publish(report, tmp_path / "out", None, readme=readme)
        text = readme.read_text()
        assert text.startswith(f"# Benchmarks\n\nHow to run it.\n\n{README_HEADING}\n\n"
                               "### bailiwick benchmark report\n")
        assert "old figures" not in text
        assert text.count(README_HEADING) == 1
        assert "#### (a) Small-object capacity" in text  # the report's headings one level down
        assert str(readme) in written
    assert not (tmp_path / "out" / "report.json").exists()  # --render rewrites report.md only


def test_replace_readme_report_creates_a_missing_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    replace_readme_report(readme, "# r\n\nfigures\n")
    assert readme.read_text().endswith(f"{README_HEADING}\n\n### r\n\nfigures\n")


@pytest.mark.parametrize("argv", [
    ["--smoke", "--update-readme"],
    ["--render", str(SMOKE), "--update-readme"],  # a smoke run's figures, later
    ["--only", "encryption", "--update-readme"],  # one part would replace every other part's figures
    ["--only", "tls", "--update-readme"],
])
def test_a_smoke_or_partial_run_never_becomes_the_readme_report(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "report.md").exists()


def test_render_rewrites_the_report_from_a_runs_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--render", str(SMOKE), "--output", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == render(smoke_results())
    assert capsys.readouterr().out.startswith("# bailiwick benchmark report")
