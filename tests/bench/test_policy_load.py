"""Part (g) of the benchmark: the generated policy loads as described, and its report has the per-dataset table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.policy_load import measure, write_policy
from bench.report import policy_load_targets, render_policy_load
from proxy.domain import Action
from proxy.policy.loader import load_policy


def test_the_generated_policy_has_one_dataset_per_bucket_with_three_rules(tmp_path: Path) -> None:
    written = write_policy(tmp_path / "policy", 25)
    policy = load_policy(tmp_path / "policy")
    assert written == sum(p.stat().st_size for p in (tmp_path / "policy").iterdir())
    assert len(policy.datasets) == 25
    assert {len(d.resources) for d in policy.datasets} == {1}
    assert len({d.resources[0].bucket for d in policy.datasets}) == 25
    assert {len(d.rules) for d in policy.datasets} == {3}
    assert len({d.region for d in policy.datasets}) == 5
    partners = next(d for d in policy.datasets if d.name == "tenant-000002")
    assert partners.deciding_rule(Action.READ, "NO") is partners.rules[1]   # NORDICS, inside PARTNERS
    assert partners.deciding_rule(Action.READ, "US") is partners.rules[2]


def test_a_small_run_measures_every_size_and_renders_a_row_each() -> None:
    results: dict[str, Any] = measure([20, 40], [40], 1)
    assert set(results["load"]) == {"20", "40"}
    for entry in results["load"].values():
        assert entry["seconds"] > 0
        assert entry["process_peak_kib"] >= entry["peak_kib"]
    ways = results["reload"]["40"]
    assert ways["proxy_way"] == "thread"   # a few KiB of YAML: the proxy reloads it on a thread
    assert ways["thread"]["installed"] == ways["child"]["installed"] == 1
    assert ways["child"]["ticks"] > 0
    lines = render_policy_load(results)
    assert lines[0].startswith("## (g) Policies that grow")
    assert sum(line.startswith(("| 20 |", "| 40 |")) for line in lines) == 4   # two loads, two reloads
    rows = policy_load_targets(results)
    assert [row[0] for row in rows] == [
        "policy load, 100,000 datasets (smoke: 40 datasets)", "policy load peak RSS, 100,000 datasets "
        "(smoke: 40 datasets)", "reload: longest hold-up of the serving loop (the proxy's way, any size)",
    ]
