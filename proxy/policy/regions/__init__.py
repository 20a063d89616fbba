"""The public clouds' region -> country map that ships with bailiwick.

Every policy can name a region of AWS, Azure or Google Cloud (``region:
eu-west-1``) without defining it: the files beside this module map each
public region to the ISO 3166-1 code of the country where it is, one file a
provider. The policy loader reads them before the policy folder
(`proxy.policy.loader`), in the same format and with the same checks; a
folder's own ``regions:`` entry for a name wins over the one here, so an
operator can correct or extend the map without waiting for a release.

The files are package data rather than Python so that they read like a
policy file, and so that docs/policies.md can point operators at them. How
they are kept current: tests/policy/test_builtin_regions.py compares the AWS
part with botocore's endpoint data, and checks the others' names and codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from importlib import resources

from proxy.jurisdictions import is_country_code

# One file a provider; their names never collide (AWS names end in -<digit>,
# Google Cloud's in a digit right after a word, Azure's have no hyphen).
FILES = ("aws.yaml", "azure.yaml", "google-cloud.yaml")


def region_files() -> tuple[tuple[str, str, bytes], ...]:
    """Each built-in file as (its name, where it is, for messages; its bytes)."""
    folder = resources.files(__name__)
    return tuple((name, str(folder / name), (folder / name).read_bytes()) for name in FILES)


def unknown_region_hint(region: str, regions: Collection[str]) -> str:
    """What to add to "`region` is not a region ...": the likeliest region meant, or why none is ("" if no hint).

    One wording for every place a region is named (a dataset, the proxy's `region`, `explain --region`).
    """
    close = difflib.get_close_matches(region, sorted(regions), n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    if is_country_code(region):
        return " (a region is a name defined under regions:, such as eu-west-1, not a country code)"
    return ""
