"""The built-in region map (proxy/policy/regions/): every policy can use it, a folder's own entry wins,
and it stays current: the AWS part against botocore's endpoint data, the others by the names' shape."""

from __future__ import annotations

import re
from collections.abc import Callable

import botocore.loaders
import pycountry
import pytest
import yaml

from proxy.cli import main
from proxy.errors import PolicyLoadError
from proxy.policy.loader import load_policy, policy_version
from proxy.policy.model import Policy
from proxy.policy.regions import FILES, region_files

from .conftest import WritePolicy

Load = Callable[..., Policy]

# Each provider's file and the pattern its region names follow, so that a name in the wrong file (or a
# mistyped one) shows: AWS names end in -<digits>, Google Cloud's in digits right after a word, Azure's
# have no hyphen at all.
PROVIDERS = {
    "aws.yaml": re.compile(r"[a-z]+(-[a-z]+)+-\d+"),
    "azure.yaml": re.compile(r"[a-z]+[a-z0-9]*"),
    "google-cloud.yaml": re.compile(r"[a-z]+-[a-z]+\d+"),
}


def dataset_in(region: str) -> str:
    return f"""\
        datasets:
          - name: mail
            region: {region}
            resources: [s3://mail]
            rules: [{{allow: [read], from: [HOME]}}]
        """


def built_in(name: str) -> dict[str, str]:
    """One built-in file's regions as written (the base loader keeps "NO" as text)."""
    data = {file: data for file, _, data in region_files()}[name]
    document = yaml.load(data, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list and dict
    assert set(document) == {"regions"}, f"{name} holds only regions"
    regions: dict[str, str] = document["regions"]
    return regions


def botocore_regions() -> dict[str, str]:
    """Every region of every partition botocore knows, in both of its files, with the partition's name.

    Left out: each partition's ``<partition>-global``, an endpoint for the whole partition rather than a
    place where data is kept (see proxy/policy/regions/aws.yaml).
    """
    loader = botocore.loaders.create_loader()
    regions: dict[str, str] = {}
    for data, key in ((loader.load_data("endpoints"), "partition"), (loader.load_data("partitions"), "id")):
        for partition in data["partitions"]:
            for name in partition["regions"]:
                if name != f"{partition[key]}-global":
                    regions[name] = partition[key]
    return regions


# A folder with no regions: of its own names the public regions of the three providers.
@pytest.mark.parametrize(
    ("region", "country"),
    [
        ("eu-west-1", "IE"), ("us-gov-west-1", "US"), ("cn-north-1", "CN"), ("me-central-1", "AE"),
        ("eusc-de-east-1", "DE"), ("eu-isoe-west-1", "GB"),
        ("uaenorth", "AE"), ("brazilsouth", "BR"), ("switzerlandnorth", "CH"), ("norwayeast", "NO"),
        ("westeurope", "NL"), ("northeurope", "IE"), ("eastasia", "HK"), ("usgovvirginia", "US"),
        ("europe-west3", "DE"), ("me-central2", "SA"), ("me-central1", "QA"), ("asia-east1", "TW"),
        ("europe-west1", "BE"), ("australia-southeast2", "AU"),
    ],
)
def test_a_folder_without_regions_can_name_a_public_region(load: Load, region: str, country: str) -> None:
    policy = load({"mail.yaml": dataset_in(region)}, base=False)
    (dataset,) = policy.datasets
    assert (dataset.region, dataset.jurisdiction) == (region, country)
    assert policy.regions[region] == country


def test_the_folders_own_region_wins_and_check_names_it(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policy({
        "mail.yaml": dataset_in("eu-west-1"),
        "regions.yaml": "regions:\n  eu-west-1: GB\n  dublin-dc1: IE\n",
    }, base=False)
    policy = load_policy(folder)
    assert policy.datasets[0].jurisdiction == "GB"
    assert (policy.regions["eu-west-1"], policy.regions["dublin-dc1"], policy.regions["westeurope"]) == (
        "GB", "IE", "NL",
    )
    capsys.readouterr()
    assert main(["policy", "check", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert err == ""   # allowed: no error, no warning
    assert out.startswith(f"{folder}: OK,")
    assert "regions (eu-west-1 GB, not the built-in IE), version" in out   # but the move is said


def test_a_region_defined_twice_in_the_folder_is_still_an_error(load: Load) -> None:
    files = {"a.yaml": "regions:\n  eu-west-1: GB\n", "b.yaml": "regions:\n  eu-west-1: FR\n"}
    with pytest.raises(PolicyLoadError) as caught:
        load(files, base=False)
    assert [str(issue) for issue in caught.value.issues] == [
        'policies/b.yaml:2: regions.eu-west-1: region "eu-west-1" is already mapped to GB at policies/a.yaml:2',
    ]


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("eu-wset-1", '"eu-wset-1" is not a defined region (did you mean eu-west-1?)'),
        ("westeurpe", '"westeurpe" is not a defined region (did you mean westeurope?)'),
        ("europe-west33", '"europe-west33" is not a defined region (did you mean europe-west3?)'),
        ("dublin-dc1", '"dublin-dc1" is not a defined region'),
        # A partition's global endpoint is not a place data is kept (aws.yaml says why).
        ("aws-global", '"aws-global" is not a defined region'),
        ("IE", '"IE" is not a defined region (a region is a name defined under regions:, such as eu-west-1, '
               "not a country code)"),
    ],
)
def test_an_unknown_region_names_its_line_and_the_closest_built_in_name(
    load: Load, region: str, expected: str
) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load({"mail.yaml": dataset_in(region)}, base=False)
    assert [str(issue) for issue in caught.value.issues] == [f"policies/mail.yaml:3: datasets[0].region: {expected}"]


def test_the_built_in_map_is_part_of_the_version(write_policy: WritePolicy) -> None:
    folder = write_policy({"mail.yaml": dataset_in("eu-west-1")}, base=False)
    own = [(p.name, p.read_bytes()) for p in folder.glob("*.yaml")]
    with_map = own + [(f"built-in/{name}", data) for name, _, data in region_files()]
    assert load_policy(folder).version == policy_version(with_map) != policy_version(own)


# Keeping the AWS part current: botocore's endpoint data is the list of AWS regions.
def test_every_region_botocore_knows_is_built_in() -> None:
    missing = sorted(set(botocore_regions()) - set(built_in("aws.yaml")))
    assert not missing, (
        f"botocore knows AWS regions the built-in map lacks: {missing}; add each to proxy/policy/regions/aws.yaml "
        "with the ISO 3166-1 code of its country"
    )


def test_every_built_in_aws_region_is_known_to_botocore() -> None:
    unknown = sorted(set(built_in("aws.yaml")) - set(botocore_regions()))
    assert not unknown, f"not AWS regions by botocore's endpoint data (mistyped, or botocore is too old): {unknown}"


@pytest.mark.parametrize("name", FILES)
def test_names_follow_the_providers_pattern_and_codes_are_iso_3166(name: str) -> None:
    regions = built_in(name)
    assert regions, f"{name} maps no region"
    assert [r for r in regions if not PROVIDERS[name].fullmatch(r)] == []
    invalid = {c for c in regions.values() if not re.fullmatch("[A-Z]{2}", c) or not pycountry.countries.get(alpha_2=c)}
    assert sorted(invalid) == []


def test_no_name_is_in_two_providers_files() -> None:
    seen: dict[str, str] = {}
    for name in FILES:
        for region in built_in(name):
            assert region not in seen, f"{region} is in both {seen[region]} and {name}"
            seen[region] = name



def test_policy_regions_lists_the_map_with_where_each_entry_is(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policy({"regions.yaml": "regions:\n  eu-west-1: GB\n  dublin-dc1: IE\n"}, base=False)
    azure = {file: data for file, _, data in region_files()}["azure.yaml"].decode().splitlines()
    line = next(i for i, text in enumerate(azure, 1) if text.startswith("  westeurope:"))
    assert main(["policy", "regions", str(folder)]) == 0
    listed = {row.split()[0]: " ".join(row.split()[1:]) for row in capsys.readouterr().out.splitlines()}
    assert (listed["eu-west-1"], listed["dublin-dc1"], listed["westeurope"]) == (
        "GB policies/regions.yaml:2 (replaces the built-in IE)",
        "IE policies/regions.yaml:3",
        f"NL built-in azure.yaml:{line}",
    )
    assert main(["policy", "regions", "--built-in", "no-such-folder"]) == 0
    built_in_only = capsys.readouterr().out.splitlines()
    assert len(built_in_only) == sum(len(built_in(name)) for name in FILES)
    assert [row for row in built_in_only if row.startswith("dublin-dc1 ")] == []


def test_policy_regions_reports_a_folder_that_does_not_load(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policy({"regions.yaml": "regions:\n  eu-west-1: UK\n"}, base=False)
    assert main(["policy", "regions", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", 'policies/regions.yaml:2: regions.eu-west-1: "UK" is not an ISO 3166-1 code '
                              "(did you mean GB?)\n")
