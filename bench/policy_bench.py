"""The policy engine alone: decisions per second and per-call latency by policy size.

Generates a policy folder with the repository's jurisdiction groups (the
regions are the built-in map) plus N datasets, each on its own bucket (``bench-000001``…) with the
three rules of policies/mail.yaml, loads it with the real loader and times
`proxy.policy.engine.decide` for reads of random buckets, one
``perf_counter_ns`` pair per call. Runs in its own process (the harness pins
it to one CPU) so that nothing else shares its interpreter.

Run: ``python3 bench/policy_bench.py --datasets 100000 --calls 200000``;
prints one JSON object. ``--trace`` times ``decide(..., trace=True)`` instead,
the way of deciding that records every rule looked at (what `bailiwick
explain` shows) rather than the proxy's.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.domain import Access, AccessRequest, Action, Resource  # noqa: E402
from proxy.policy.engine import decide  # noqa: E402
from proxy.policy.loader import load_policy  # noqa: E402
from proxy.policy.model import Policy  # noqa: E402

# The three rules of policies/mail.yaml's dublin-mail; ids are left to the loader (they must be unique).
RULES = ("rules: [{allow: [read, list, write, delete], from: [HOME]}, "
         "{allow: [read, list], from: [EEA]}, {deny: ['*'], from: [US]}]")


def bucket(i: int) -> str:
    return f"bench-{i:06d}"


def write_policy(directory: Path, datasets: int) -> None:
    """The repository's groups (regions are built in), and `datasets` generated datasets."""
    shutil.copy(ROOT / "policies" / "jurisdictions.yaml", directory / "jurisdictions.yaml")
    lines = ["datasets:"]
    for i in range(1, datasets + 1):
        lines.append(f"  - {{name: ds-{i:06d}, region: eu-west-1, resources: [s3://{bucket(i)}], {RULES}}}")
    (directory / "bench.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _round(policy: Policy, requests: list[AccessRequest], calls: int, *, trace: bool) -> dict[str, float]:
    """One timed round of `calls` decisions: throughput and per-call percentiles."""
    timings = [0] * calls
    clock = time.perf_counter_ns
    count = len(requests)
    allowed = 0
    for i in range(calls):
        request = requests[i % count]
        t0 = clock()
        decision = decide(policy, "IE", request, trace=trace)
        timings[i] = clock() - t0
        allowed += decision.outcome.value == "allow"
    timings.sort()
    return {
        "allowed": allowed,
        "decisions_per_second": calls / (sum(timings) / 1e9),
        "p50_us": timings[len(timings) // 2] / 1e3,
        "p99_us": timings[min(len(timings) - 1, int(len(timings) * 0.99))] / 1e3,
        "max_us": timings[-1] / 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, required=True)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds over the same loaded policy")
    parser.add_argument("--trace", action="store_true", help="time decide(..., trace=True) (default: off)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bailiwick-policy-") as tmp:
        directory = Path(tmp)
        write_policy(directory, args.datasets)
        started = time.perf_counter()
        policy = load_policy(directory)
        load_seconds = time.perf_counter() - started
    rng = random.Random(args.seed)  # noqa: S311 - not cryptographic, just spread over buckets
    requests = [
        AccessRequest((Access(Action.READ, Resource("s3", bucket(rng.randint(1, args.datasets)), "k/1")),))
        for _ in range(min(args.calls, 50_000))
    ]
    for request in requests[:2000]:  # warm caches and the interpreter's specialisation
        decide(policy, "IE", request, trace=args.trace)
    rounds = [_round(policy, requests, args.calls, trace=args.trace) for _ in range(args.repeats)]
    result = {
        "datasets": args.datasets, "calls": args.calls, "trace": args.trace, "load_seconds": load_seconds,
        "rounds": rounds,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
