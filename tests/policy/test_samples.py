"""`proxy.policy.samples`: the requests of the policy tests, each decided once."""

from __future__ import annotations

from proxy.policy.loader import load_policy
from proxy.policy.samples import samples_from_tests
from proxy.policy.testing import load_policy_tests

from .conftest import SHIPPED_POLICIES


def test_tests_written_in_both_folders_count_once() -> None:
    policy = load_policy(SHIPPED_POLICIES)
    cases = load_policy_tests(policy, SHIPPED_POLICIES)
    samples = samples_from_tests([*cases, *cases])
    assert len(samples) == len(samples_from_tests(cases)) < len(cases)  # the shipped tests repeat some requests
    assert samples[0].name == cases[0].name
    assert samples[0].origin == cases[0].location
