"""load_policy: what loads, and every kind of error with its exact `file:line: path: message`."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.domain import Action
from proxy.errors import PolicyLoadError
from proxy.policy.loader import load_policy
from proxy.policy.model import Effect, Mode, Policy

from .conftest import SHIPPED_POLICIES, WritePolicy

Load = Callable[..., Policy]

S3_BUCKET_RULE = (
    "3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"
)

UK_IN_FROM = """\
datasets:
  - name: dublin-mail
    description: Irish mailboxes.
    region: eu-west-1
    resources:
      - s3://mail-eu-dublin
    rules:
      - id: local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: uk-read
        allow:
          - read
        from: [EEA, UK]
"""

MANY_DATASET_ERRORS = """\
datasets:
  - name: dublin-mail
    region: eu-wst-1
    resources: [s3://Mail-EU, "s3://mail/*.eml", gs://bucket]
    mode: dryrun
    colour: blue
    rules:
      - allow: [get]
        deny: [read]
        from: [IE]
      - from: [IE]
      - id: region
        allow: ["*"]
        from: [HOME]
"""

RULE_IDS = """\
datasets:
  - name: mail
    region: eu-west-1
    resources: [s3://mail-eu]
    rules:
      - id: read-all
        allow: [read]
        from: ["*"]
      - id: read-all
        allow: [list]
        from: ["*"]
      - id: mail#3
        allow: [write]
        from: [HOME]
      - allow: [delete]
        from: [HOME]
"""

SAME_PATTERN_A = """\
datasets:
  - name: mail
    region: eu-west-1
    resources: [s3://mail-eu, s3://mail-eu/]
"""

SAME_PATTERN_B = """\
datasets:
  - name: mail
    region: us-east-1
    resources: [s3://mail-us]
  - name: other
    region: us-east-1
    resources:
      - s3://mail-eu
"""

LOAD_ERRORS = [
    pytest.param(
        {"mail.yaml": UK_IN_FROM},
        ['policies/mail.yaml:14: datasets[0].rules[1].from: "UK" is not an ISO 3166-1 code (did you mean GB?)'],
        id="documented example: UK in from",
    ),
    pytest.param(
        {"x.yaml": "regionz:\n  eu-x: IE\n"},
        ["policies/x.yaml:1: regionz: unknown key (did you mean regions? expected one of: datasets, jurisdictions, "
            "regions)"],
        id="unknown top-level key",
    ),
    pytest.param(
        {"x.yaml": "- regions\n"},
        ["policies/x.yaml:1: expected a mapping with any of: jurisdictions, regions, datasets, found a list"],
        id="top level not a mapping",
    ),
    pytest.param(
        {"x.yaml": "regions:\n  eu-west-9: IE\n  eu-west-9: IE\n"},
        ["policies/x.yaml:3: regions.eu-west-9: duplicate key (first written at line 2)"],
        id="duplicate key",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  A: [B]\n  B: [C]\n  C: [A, IE]\n"},
        ["policies/x.yaml:4: jurisdictions.C: groups form a cycle: A -> B -> C -> A"],
        id="cycle",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  SELF: [IE, SELF]\n"},
        ["policies/x.yaml:2: jurisdictions.SELF: groups form a cycle: SELF -> SELF"],
        id="group containing itself",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  B: [A]\n", "y.yaml": "jurisdictions:\n  A: [B]\n"},
        ["policies/y.yaml:2: jurisdictions.A: groups form a cycle: B -> A -> B"],
        id="cycle across files",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  IE: [DE]\n"},
        ['policies/x.yaml:2: jurisdictions.IE: "IE" is an ISO 3166-1 country code and cannot name a group'],
        id="group named like a country code",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  HOME: [IE]\n  '*': [IE]\n"},
        [
            'policies/x.yaml:2: jurisdictions.HOME: "HOME" is built in and cannot be redefined',
            'policies/x.yaml:3: jurisdictions.*: "*" is built in and cannot be redefined',
        ],
        id="built-in names redefined",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  eea2: [IE]\n"},
        [
            'policies/x.yaml:2: jurisdictions.eea2: "eea2" is not a valid group name '
            '(upper-case letters, digits, "_" and "-", starting with a letter)'
        ],
        id="invalid group name",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  EU: [IE]\n"},
        ['policies/x.yaml:2: jurisdictions.EU: group "EU" is already defined at policies/base.yaml:2'],
        id="group defined in two files",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  NORDIC: [SE, FI, eea, Germany, XX]\n"},
        [
            'policies/x.yaml:2: jurisdictions.NORDIC: "eea" is neither an ISO 3166-1 code nor a defined group'
            " (did you mean EEA?)",
            'policies/x.yaml:2: jurisdictions.NORDIC: "Germany" is not an ISO 3166-1 code (did you mean DE?)',
            'policies/x.yaml:2: jurisdictions.NORDIC: "XX" is neither an ISO 3166-1 code nor a defined group',
        ],
        id="unknown group members with suggestions",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  MINE: [HOME, '*']\n"},
        [
            'policies/x.yaml:2: jurisdictions.MINE: "HOME" can be used only in a rule\'s "from" list, not in a group',
            'policies/x.yaml:2: jurisdictions.MINE: "*" can be used only in a rule\'s "from" list, not in a group',
        ],
        id="built-ins inside a group",
    ),
    pytest.param(
        {"x.yaml": "regions:\n  eu-x: EEA\n  london-dc: UK\n  nowhere:\n"},
        [
            'policies/x.yaml:2: regions.eu-x: "EEA" is not a country code; a region is governed by the law '
            "of one country: give its ISO 3166-1 code",
            'policies/x.yaml:3: regions.london-dc: "UK" is not an ISO 3166-1 code (did you mean GB?)',
            "policies/x.yaml:4: regions.nowhere: expected an ISO 3166-1 country code, found nothing",
        ],
        id="region jurisdictions",
    ),
    pytest.param(
        {"x.yaml": "regions:\n  eu-west-1: GB\n"},
        ['policies/x.yaml:2: regions.eu-west-1: region "eu-west-1" is already mapped to IE at policies/base.yaml:5'],
        id="region mapped twice differently",
    ),
    pytest.param(
        {"mail.yaml": MANY_DATASET_ERRORS},
        [
            'policies/mail.yaml:3: datasets[0].region: "eu-wst-1" is not a defined region (did you mean eu-west-1?)',
            'policies/mail.yaml:4: datasets[0].resources[0]: "Mail-EU" is not a valid S3 bucket name '
            f"({S3_BUCKET_RULE})",
            'policies/mail.yaml:4: datasets[0].resources[1]: "s3://mail/*.eml": "*" is a wildcard only at the end '
            "of the bucket or account name; key prefixes match literally, so leave it out",
            'policies/mail.yaml:4: datasets[0].resources[2]: "gs://bucket" is not a resource '
            "(expected s3://BUCKET[/KEY-PREFIX] or azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])",
            'policies/mail.yaml:5: datasets[0].mode: expected "enforce" or "dry-run", found "dryrun"',
            "policies/mail.yaml:6: datasets[0].colour: unknown key "
            "(did you mean cors? expected one of: cors, description, encryption, mode, name, region, resources, rules)",
            'policies/mail.yaml:8: datasets[0].rules[0]: a rule has either "allow" or "deny", not both',
            'policies/mail.yaml:8: datasets[0].rules[0].allow: "get" is not an action '
            '(expected read, list, write, delete, admin or "*"; did you mean read?)',
            'policies/mail.yaml:11: datasets[0].rules[1]: missing "allow" or "deny" '
            "(the actions the rule allows or denies)",
            'policies/mail.yaml:12: datasets[0].rules[2].id: "region" is reserved for the proxy\'s own checks; '
            "choose another id",
        ],
        id="every problem of a dataset at once",
    ),
    pytest.param(
        {"x.yaml": "datasets:\n  - name: x\n"},
        [
            'policies/x.yaml:2: datasets[0]: missing required key "region"',
            'policies/x.yaml:2: datasets[0]: missing required key "resources"',
        ],
        id="missing required keys",
    ),
    pytest.param(
        {"x.yaml": "datasets:\n  name: x\n"},
        ["policies/x.yaml:2: datasets: expected a list of datasets, found a mapping"],
        id="datasets not a list",
    ),
    pytest.param(
        {"x.yaml": "datasets:\n  - name: x y\n    region: eu-west-1\n    resources: []\n    rules:\n"
                   "      - allow: read\n        from: []\n        to: [US]\n"},
        [
            'policies/x.yaml:2: datasets[0].name: "x y" is not a valid dataset name '
            '(letters, digits, ".", "_" and "-", starting with a letter or digit)',
            "policies/x.yaml:4: datasets[0].resources: expected a list of resource patterns, found an empty list",
            "policies/x.yaml:6: datasets[0].rules[0].allow: expected a list of actions, "
            'e.g. [read, list] or ["*"], found "read"',
            "policies/x.yaml:7: datasets[0].rules[0].from: expected a list of jurisdictions, "
            "e.g. [HOME] or [EEA], found an empty list",
            "policies/x.yaml:8: datasets[0].rules[0].to: unknown key (expected one of: allow, deny, from, id, "
            "location)",
        ],
        id="shapes of values",
    ),
    pytest.param(
        {"a.yaml": SAME_PATTERN_A, "b.yaml": SAME_PATTERN_B},
        [
            'policies/a.yaml:4: datasets[0].resources[1]: "s3://mail-eu/" (the same as "s3://mail-eu") '
            "is already listed in this dataset at policies/a.yaml:4",
            'policies/b.yaml:2: datasets[0].name: dataset "mail" is already defined at policies/a.yaml:2',
            'policies/b.yaml:8: datasets[1].resources[0]: "s3://mail-eu" is already a resource of dataset "mail" '
            "at policies/a.yaml:4; a resource pattern belongs to one dataset",
        ],
        id="duplicate names and patterns",
    ),
    pytest.param(
        {"x.yaml": RULE_IDS},
        [
            'policies/x.yaml:9: datasets[0].rules[1].id: rule id "read-all" is already used at policies/x.yaml:6',
            'policies/x.yaml:15: datasets[0].rules[3]: rule id "mail#3" is already used at policies/x.yaml:12',
        ],
        id="rule ids unique, defaults included",
    ),
    pytest.param(
        {"x.yaml": "datasets:\n  - name: x\n    region: eu-west-1\n"
                   "    resources: [azure://mailstoreie, azure://ab/mail, azure://mailstoreie/Mail--box]\n"},
        [
            'policies/x.yaml:4: datasets[0].resources[0]: "azure://mailstoreie": an Azure pattern names an '
            "account and a container (s3://BUCKET[/KEY-PREFIX] or azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])",
            'policies/x.yaml:4: datasets[0].resources[1]: "ab" is not a valid Azure storage account name '
            "(3 to 24 lower-case letters and digits)",
            'policies/x.yaml:4: datasets[0].resources[2]: "Mail--box" is not a valid Azure container name '
            "(3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit)",
        ],
        id="azure patterns",
    ),
    pytest.param(
        {"x.yaml": "jurisdictions:\n  NORDIC: &n [SE, FI]\n  NORDIC2: *n\n"},
        ["policies/x.yaml:2: YAML anchors (&n) are not supported; write the value out"],
        id="anchor",
    ),
    pytest.param(
        {"x.yaml": "regions:\n  <<: {eu-x: IE}\n"},
        ["policies/x.yaml:2: regions: YAML merge keys (<<) are not supported; write the keys out"],
        id="merge key",
    ),
    pytest.param(
        {"x.yaml": "regions:\n  eu-x: !country IE\n"},
        ["policies/x.yaml:2: YAML tags (!country) are not supported; remove the tag"],
        id="custom tag",
    ),
    pytest.param(
        {"x.yaml": "datasets:\n  - name: x\n    rules:\n      - deny: [*]\n"},
        [
            "policies/x.yaml:4: not valid YAML: while scanning an alias, expected alphabetic or numeric "
            "character, but found ']' (a bare * starts a YAML alias: write \"*\" in quotes)"
        ],
        id="bare star",
    ),
    pytest.param(
        {"x.yaml": "regions: {}\n---\nregions: {}\n"},
        ["policies/x.yaml:2: not valid YAML: expected a single document in the stream, but found another document"],
        id="two documents",
    ),
]


@pytest.mark.parametrize(("files", "expected"), LOAD_ERRORS)
def test_load_errors_name_file_line_path(load: Load, files: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load(files)
    assert [str(issue) for issue in caught.value.issues] == expected
    assert str(caught.value) == "\n".join(expected)


def test_issue_fields_are_separate(load: Load) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load({"mail.yaml": UK_IN_FROM})
    (issue,) = caught.value.issues
    assert (issue.file, issue.line, issue.path) == ("policies/mail.yaml", 14, "datasets[0].rules[1].from")


def test_not_utf8(write_policy: WritePolicy) -> None:
    directory = write_policy({})
    (directory / "x.yaml").write_bytes(b"regions:\n  caf\xe9: IE\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(directory)
    assert [str(i) for i in caught.value.issues] == ["policies/x.yaml:2: is not UTF-8 text"]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param("missing", "nowhere: the policy directory does not exist", id="missing"),
        pytest.param("file", "nowhere: is not a directory", id="a file"),
        pytest.param("empty", "nowhere: holds no policy files (*.yaml, *.yml)", id="empty"),
        pytest.param("only-tests", "nowhere: holds no policy files (*.yaml, *.yml)", id="only tests"),
    ],
)
def test_directory_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    target = Path("nowhere")
    if setup == "file":
        target.write_text("regions: {}\n")
    elif setup == "empty":
        target.mkdir()
        (target / "README.md").write_text("not policy\n")
    elif setup == "only-tests":
        (target / "tests").mkdir(parents=True)
        (target / "tests" / "x_test.yaml").write_text("tests: []\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(target)
    assert str(caught.value) == expected


def test_norway_stays_norway(load: Load) -> None:
    policy = load({
        "x.yaml": """\
            jurisdictions:
              NORDIC: [NO, SE, FI, DK, IS]
            regions:
              oslo-dc: NO
            datasets:
              - name: oslo
                region: oslo-dc
                resources: [s3://oslo-data]
                rules:
                  - allow: [read]
                    from: [NO]
                  - allow: [list]
                    from: [HOME, NORDIC]
            """,
    })
    assert "NO" in policy.groups["EEA"]
    assert policy.groups["NORDIC"] == frozenset({"NO", "SE", "FI", "DK", "IS"})
    assert policy.regions["oslo-dc"] == "NO"
    read, listing = policy.by_name["oslo"].rules
    assert read.jurisdictions == frozenset({"NO"})
    assert listing.jurisdictions == frozenset({"NO", "SE", "FI", "DK", "IS"})


def test_lower_case_no_is_refused_with_a_hint(load: Load) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load({"x.yaml": "regions:\n  oslo-dc: no\n"})
    assert [str(i) for i in caught.value.issues] == [
        'policies/x.yaml:2: regions.oslo-dc: "no" is not an ISO 3166-1 code (did you mean NO?)'
    ]


def test_a_full_dataset_is_read_as_written(load: Load) -> None:
    policy = load({
        "mail.yaml": """\
            datasets:
              - name: dublin-mail
                description: Customer mailboxes.
                region: eu-west-1
                resources:
                  - s3://mail-eu-dublin
                  - s3://archive/ie/
                  - s3://mail-eu-*
                  - azure://mailstoreie/mailboxes
                mode: dry-run
                rules:
                  - id: local-full-access
                    allow: [read, list, write, delete]
                    from: [HOME]
                  - allow: [read, list]
                    from: [EEA]
                  - deny: ["*"]
                    from: [US]
            """,
    })
    (dataset,) = policy.datasets
    assert (dataset.name, dataset.description, dataset.region, dataset.jurisdiction, dataset.mode) == (
        "dublin-mail", "Customer mailboxes.", "eu-west-1", "IE", Mode.DRY_RUN,
    )
    assert [(p.scheme, p.bucket, p.bucket_prefix, p.key_prefix, p.text) for p in dataset.resources] == [
        ("s3", "mail-eu-dublin", False, "", "s3://mail-eu-dublin"),
        ("s3", "archive", False, "ie/", "s3://archive/ie/"),
        ("s3", "mail-eu-", True, "", "s3://mail-eu-*"),
        ("azure", "mailstoreie", False, "mailboxes/", "azure://mailstoreie/mailboxes"),
    ]
    rules = [(r.id, r.effect, r.actions, r.sources, r.any_jurisdiction, r.line) for r in dataset.rules]
    assert rules == [
        ("local-full-access", Effect.ALLOW,
         frozenset({Action.READ, Action.LIST, Action.WRITE, Action.DELETE}), ("HOME",), False, 12),
        ("dublin-mail#1", Effect.ALLOW, frozenset({Action.READ, Action.LIST}), ("EEA",), False, 15),
        ("dublin-mail#2", Effect.DENY, frozenset(Action), ("US",), False, 17),
    ]
    assert dataset.rules[0].jurisdictions == frozenset({"IE"})
    assert dataset.rules[1].jurisdictions == frozenset({"AT", "BE", "DE", "FR", "IE", "NL", "IS", "LI", "NO"})
    assert dataset.rules[1].via["DE"] == "EEA"


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({"empty.yaml": ""}, id="empty file"),
        pytest.param({"comments.yaml": "# nothing here yet\n"}, id="comments only"),
        pytest.param({"x.yaml": "jurisdictions:\nregions:\ndatasets:\n"}, id="empty sections"),
        pytest.param({"x.yml": "regions:\n  dublin-dc1: IE\n"}, id=".yml extension"),
        pytest.param({"x.yaml": "regions:\n  eu-west-1: IE\n"}, id="same region, same value"),
        pytest.param({"tests/broken_test.yaml": "tests: [\n", "tests/notes.yaml": "{"}, id="tests folder ignored"),
        pytest.param({".#mail.yaml": "{"}, id="dot files ignored"),
    ],
)
def test_loads_cleanly(load: Load, files: dict[str, str]) -> None:
    policy = load(files)
    assert policy.regions["eu-west-1"] == "IE"
    assert ".#mail.yaml" not in " ".join(policy.files)


def test_files_are_listed_in_sorted_order(load: Load) -> None:
    policy = load({"zz.yaml": "", "aa.yml": ""})
    assert policy.files == ("policies/aa.yml", "policies/base.yaml", "policies/zz.yaml")


def test_groups_nest_across_files(load: Load) -> None:
    policy = load({"a.yaml": "jurisdictions:\n  WIDER: [EEA, CH]\n"})
    assert policy.groups["WIDER"] == policy.groups["EEA"] | {"CH"}


def test_version_hashes_names_and_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_policy: WritePolicy
) -> None:
    directory = write_policy({"mail.yaml": UK_IN_FROM.replace("UK", "GB")})
    version = load_policy(directory).version
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    elsewhere = tmp_path / "elsewhere" / "policy-copy"
    shutil.copytree(directory, elsewhere)
    assert load_policy(elsewhere).version == version, "the folder's own path is not part of the version"
    (elsewhere / "mail.yaml").rename(elsewhere / "mail2.yaml")
    assert load_policy(elsewhere).version != version, "file names are part of the version"
    (directory / "mail.yaml").write_text(UK_IN_FROM.replace("UK", "CH"))
    assert load_policy(directory).version != version, "contents are part of the version"


# The shipped example policies (policies/): the demo and the policy tests depend on them.

@pytest.fixture(scope="module")
def shipped() -> Policy:
    return load_policy(SHIPPED_POLICIES)


def test_shipped_policies_load(shipped: Policy) -> None:
    policy = shipped
    assert [d.name for d in policy.datasets] == ["dublin-mail", "us-mail", "irish-archive"]
    assert [Path(f).name for f in policy.files] == ["jurisdictions.yaml", "mail.yaml"]
    dublin, us, archive = policy.datasets
    assert [r.id for r in dublin.rules] == ["local-full-access", "eea-read", "no-us-access"]
    assert [r.id for r in us.rules] == ["us-local-full-access", "adequate-read"]
    assert (dublin.region, us.region, archive.region) == ("eu-west-1", "us-east-1", "eu-west-1")
    assert archive.mode is Mode.DRY_RUN
    assert [p.text for p in archive.resources] == ["s3://archive/ie/"]


def test_shipped_groups(shipped: Policy) -> None:
    groups = shipped.groups
    assert len(groups["EU"]) == 27
    assert groups["EEA"] == groups["EU"] | {"IS", "LI", "NO"}
    assert groups["ADEQUATE"] > groups["EEA"]
    assert {"GB", "CH", "JP", "KR", "CA", "NZ"} <= groups["ADEQUATE"]
    assert "US" not in groups["ADEQUATE"]


@pytest.mark.parametrize(
    ("region", "jurisdiction"),
    [
        ("eu-west-1", "IE"), ("eu-west-2", "GB"), ("eu-west-3", "FR"), ("eu-central-1", "DE"),
        ("eu-central-2", "CH"), ("eu-north-1", "SE"), ("eu-south-1", "IT"), ("eu-south-2", "ES"),
        ("us-east-1", "US"), ("ca-central-1", "CA"), ("ap-northeast-1", "JP"), ("ap-east-1", "HK"),
        ("sa-east-1", "BR"), ("me-central-1", "AE"),
        ("westeurope", "NL"), ("northeurope", "IE"), ("germanywestcentral", "DE"), ("uksouth", "GB"),
        ("eastus", "US"), ("swedencentral", "SE"), ("switzerlandnorth", "CH"),
        ("europe-west1", "BE"), ("europe-west2", "GB"), ("europe-west3", "DE"), ("europe-west4", "NL"),
        ("europe-north1", "FI"), ("us-central1", "US"), ("asia-east1", "TW"), ("me-central1", "QA"),
    ],
)
def test_shipped_regions(shipped: Policy, region: str, jurisdiction: str) -> None:
    assert shipped.regions[region] == jurisdiction


TEMPLATED = """\
datasets:
""" + "".join(f"""\
  - name: tenant-{i}
    region: {region}
    resources: [s3://tenant-{i}]
    rules:
      - allow: [read, list]
        from: [EEA, HOME]
      - deny: ["*"]
        from: [US]
""" for i, region in enumerate(("eu-west-1", "eu-west-1", "us-east-1")))


def test_datasets_written_from_one_template_share_their_expansions(load: Load) -> None:
    first, second, elsewhere = load({"tenants.yaml": TEMPLATED}).datasets
    for a, b in ((first, second), (first, elsewhere)):
        assert a.rules[1].via is b.rules[1].via                    # "from: [US]" wherever the dataset is
        assert a.rules[0].actions is b.rules[0].actions
    assert first.rules[0].via is second.rules[0].via               # the same names and the same HOME
    assert first.rules[0].jurisdictions is second.rules[0].jurisdictions
    assert first.rules[0].via is not elsewhere.rules[0].via        # HOME is another country there
    assert elsewhere.rules[0].jurisdictions == first.rules[0].jurisdictions | {"US"}
    assert elsewhere.rules[0].via["US"] == "HOME"
    assert first.rules[0].via["IE"] == "EEA"                       # the first name that brings a code in


def test_the_plan_is_made_when_a_trace_asks_and_agrees_with_the_answers(load: Load) -> None:
    dataset = load({"tenants.yaml": TEMPLATED}).datasets[0]
    assert dataset._plan is None
    for action in Action:
        for jurisdiction in ("IE", "US", "JP"):
            assert dataset.trace(action, jurisdiction)[0] == dataset.deciding_rule(action, jurisdiction)
    assert dataset.plan is dataset.plan


@pytest.mark.parametrize("enabled", [True, False])
def test_a_load_leaves_the_garbage_collector_as_it_found_it(load: Load, enabled: bool) -> None:
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        load({"tenants.yaml": TEMPLATED})
        assert gc.isenabled() is enabled
        with pytest.raises(PolicyLoadError):
            load({"tenants.yaml": "datasets: [\n"})
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def dataset(name: str, bucket: str, source: str = "HOME") -> str:
    return (f"  - name: {name}\n    region: eu-west-1\n    resources: [s3://{bucket}]\n"
            f"    rules:\n      - id: {name}-r\n        allow: [read]\n        from: [{source}]\n")


@pytest.mark.parametrize(("files", "expected"), [
    # A file refused whole after some of its datasets were read claims nothing: not their names, not their ids.
    pytest.param({"a.yaml": "datasets:\n" + dataset("one", "bucket-one") + "  - *x\n",
                  "b.yaml": "datasets:\n" + dataset("one", "bucket-one")},
                 ["policies/a.yaml:9: YAML aliases (*name) are not supported; write the value out"
                  ' (a bare * starts an alias: write "*" in quotes)'], id="refused file claims nothing"),
    pytest.param({"a.yaml": "datasets:\n" + dataset("one", "bucket-one") + dataset("two", "x") + "  - [\n"},
                 ["policies/a.yaml:17: not valid YAML: while parsing a flow node, expected the node content, "
                  "but found '<stream end>'"], id="syntax error after datasets"),
    # Groups and regions from files read after the datasets' are known to them.
    pytest.param({"a.yaml": "datasets:\n" + dataset("one", "bucket-one", "LATER") + dataset("one", "b2", "NONE"),
                  "z.yaml": "jurisdictions:\n  LATER: [FR]\n"},
                 ['policies/a.yaml:9: datasets[1].name: dataset "one" is already defined at policies/a.yaml:2',
                  'policies/a.yaml:11: datasets[1].resources[0]: "b2" is not a valid S3 bucket name '
                  f"({S3_BUCKET_RULE})",
                  'policies/a.yaml:13: datasets[1].rules[0].id: rule id "one-r" is already used at policies/a.yaml:6',
                  'policies/a.yaml:15: datasets[1].rules[0].from: "NONE" is not an ISO 3166-1 code (did you mean IT?)'],
                 id="group in a later file"),
    pytest.param({"a.yaml": "datasets:\n" + dataset("one", "bucket-one", "LATER"),
                  "z.yaml": '"jurisdiction\\x73":\n  LATER: [FR]\nextra: 1\n'},
                 ["policies/z.yaml:3: extra: unknown key (expected one of: datasets, jurisdictions, regions)"],
                 id="group under an escaped key"),
    pytest.param({"a.yaml": "datasets: {name: x}\nextra: 1\n"},
                 ["policies/a.yaml:1: datasets: expected a list of datasets, found a mapping",
                  "policies/a.yaml:2: extra: unknown key (expected one of: datasets, jurisdictions, regions)"],
                 id="not a list"),
])
def test_datasets_read_while_their_file_is_parsed_are_judged_as_the_whole_file_would_be(
    load: Load, files: dict[str, str], expected: list[str],
) -> None:
    with pytest.raises(PolicyLoadError) as raised:
        load(files)
    assert [str(issue) for issue in raised.value.issues] == expected
