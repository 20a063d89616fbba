"""The proxy's `region` must be a region of the policy it serves.

A region the policy does not know (``eu-wset-1`` for ``eu-west-1``) would
start, report ready, and then refuse every request to the data of its
region. A region of the policy is one its region map names (`regions:`, the
map every dataset's region must be in; see docs/policies.md): a proxy may run
in a region that holds no dataset yet, but not in one the policy has never
heard of. At start such a region stops the proxy (`UnknownRegion`, exit 2);
on a live reload, a policy that no longer knows the proxy's region is
rejected like one that does not load, and the policy in force stays.
"""

from __future__ import annotations

from collections.abc import Collection

from proxy.config.model import Config
from proxy.errors import ConfigError
from proxy.policy.regions import unknown_region_hint

# Up to this many of the policy's regions are listed when none is close to the one configured.
_LISTED = 8


class UnknownRegion(ConfigError):
    """The proxy's region is not a region of the policy that loaded: the start is refused (exit 2)."""


def region_problem(regions: Collection[str], config: Config) -> str | None:
    """Why the policy with these `regions` cannot be served by a proxy configured as `config`; None: it can.

    The message names where `region` was set (the file and its line, or the variable or flag), the
    policy folder, and the likeliest region meant, as the policy's own errors suggest one.
    """
    region = config.region
    if region is None or region in regions:
        return None
    hint = unknown_region_hint(region, regions)
    message = f'"{region}" is not a region of the policy in {config.policies}{hint}'
    if not hint and not regions:
        message += " (it defines no regions)"
    elif not hint and len(regions) <= _LISTED:
        message += f" (its regions: {', '.join(sorted(regions))})"
    return str(config.origins.error("region", message))


def check_region(regions: Collection[str], config: Config) -> None:
    """Raise `UnknownRegion` if the proxy's region is not one of `regions`."""
    problem = region_problem(regions, config)
    if problem is not None:
        raise UnknownRegion(problem)
