"""Encrypted datasets: the `encryption:` key, `Check.encryption`, `encryption_of`, what a proxy needs to serve them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.config import Config, EncryptionConfig, KeyFileSettings, KeyServiceKind
from proxy.domain import Access, AccessRequest, Action, Remote, Resource
from proxy.errors import PolicyLoadError
from proxy.policy.decision import Purpose
from proxy.policy.encryption import encrypted_datasets, encryption_problem, encryption_summary
from proxy.policy.engine import decide, encryption_of
from proxy.policy.explain import format_explain
from proxy.policy.loader import load_policy
from proxy.policy.model import Encryption, Policy

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "encrypted"
FIXTURE_FILE = f"{FIXTURE}/encrypted.yaml"

Load = Callable[..., Policy]

NONE, REQUIRED, MIGRATING = Encryption.NONE, Encryption.REQUIRED, Encryption.MIGRATING


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(FIXTURE)


def s3(bucket: str, key: str = "") -> Resource:
    return Resource("s3", bucket, key)


def dataset_text(encryption: str | None) -> str:
    line = f"    encryption: {encryption}\n" if encryption is not None else ""
    return (
        "datasets:\n"
        "  - name: mail\n"
        "    region: eu-west-1\n"
        "    resources: [s3://mail]\n"
        f"{line}"
        "    rules: [{allow: [read], from: [HOME]}]\n"
    )


# The key

@pytest.mark.parametrize(("written", "expected"), [
    ("required", REQUIRED),
    ("migrating", MIGRATING),
    ('"required"', REQUIRED),
    (None, NONE),
])
def test_the_key_is_read_into_the_dataset(load: Load, written: str | None, expected: Encryption) -> None:
    policy = load({"mail.yaml": dataset_text(written)})
    dataset = policy.by_name["mail"]
    assert dataset.encryption is expected
    assert dataset.encryption.encrypts is (expected is not NONE)
    assert policy.encrypted is (expected is not NONE)


@pytest.mark.parametrize(("written", "message"), [
    ("require", 'expected "required" or "migrating", found "require" (did you mean required?)'),
    ("Required", 'expected "required" or "migrating", found "Required" (did you mean required?)'),
    ("migrate", 'expected "required" or "migrating", found "migrate" (did you mean migrating?)'),
    ("none", 'expected "required" or "migrating", found "none"'),
    ("true", 'expected "required" or "migrating", found "true"'),
    ("[required]", 'expected "required" or "migrating", found a list'),
    ("", 'expected "required" or "migrating", found nothing'),
])
def test_a_wrong_value_is_refused_with_file_line_and_the_closest_value(
    write_policy: Callable[..., Path], written: str, message: str,
) -> None:
    directory = write_policy({"mail.yaml": dataset_text(written)})
    with pytest.raises(PolicyLoadError) as excinfo:
        load_policy(directory)
    assert [str(issue) for issue in excinfo.value.issues] == [
        f"policies/mail.yaml:5: datasets[0].encryption: {message}",
    ]


def test_the_fixture_loads_with_each_datasets_encryption(policy: Policy) -> None:
    assert {d.name: d.encryption for d in policy.datasets} == {
        "dublin-mail": REQUIRED, "dublin-mail-public": NONE, "archive": NONE, "archive-ie": MIGRATING,
        "us-mail": REQUIRED,
    }
    assert [d.name for d in encrypted_datasets(policy)] == ["dublin-mail", "archive-ie", "us-mail"]
    assert [d.name for d in encrypted_datasets(policy, "us-east-1")] == ["us-mail"]


# The decision carries it

@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize(("request_", "options", "expected"), [
    pytest.param(AccessRequest((Access(Action.READ, s3("mail-eu-dublin", "a")),)), {},
                 [(Purpose.TARGET, "dublin-mail", REQUIRED)], id="target, encrypted"),
    pytest.param(AccessRequest((Access(Action.READ, s3("mail-eu-dublin", "public/a")),)), {},
                 [(Purpose.TARGET, "dublin-mail-public", NONE)], id="nested dataset, not encrypted"),
    pytest.param(AccessRequest((Access(Action.WRITE, s3("archive", "ie/a")),)), {},
                 [(Purpose.TARGET, "archive-ie", MIGRATING)], id="migrating"),
    pytest.param(AccessRequest((Access(Action.READ, s3("nowhere", "a")),)), {},
                 [(Purpose.TARGET, None, None)], id="in no dataset"),
    pytest.param(AccessRequest((Access(Action.LIST, Resource("s3", "")),)), {},
                 [(Purpose.TARGET, None, None)], id="account listing"),
    pytest.param(AccessRequest((Access(Action.READ, s3("mail-us", "a")),)), {"proxy_region": "eu-west-1"},
                 [(Purpose.TARGET, "us-mail", REQUIRED)], id="another region's data, refused"),
    pytest.param(AccessRequest((Access(Action.LIST, s3("archive"), listing=True),)), {},
                 [(Purpose.TARGET, "archive", NONE), (Purpose.NESTED_DATASET, "archive-ie", MIGRATING)],
                 id="listing with a nested dataset"),
    pytest.param(AccessRequest((Access(Action.WRITE, s3("mail-us", "b")),), copy_from=s3("mail-eu-dublin", "a")),
                 {}, [(Purpose.COPY_SOURCE, "dublin-mail", REQUIRED),
                      (Purpose.COPY_SOURCE_FOR_DESTINATION, "dublin-mail", REQUIRED),
                      (Purpose.TARGET, "us-mail", REQUIRED)], id="copy"),
    pytest.param(AccessRequest((Access(Action.WRITE, s3("nowhere", "b")),), copy_from=s3("archive", "ie/a")),
                 {}, [(Purpose.COPY_SOURCE, "archive-ie", MIGRATING),
                      (Purpose.COPY_SOURCE_FOR_DESTINATION, "archive-ie", MIGRATING),
                      (Purpose.TARGET, None, None)], id="copy into no dataset"),
    pytest.param(AccessRequest((Access(Action.ADMIN, s3("mail-eu-new")),), placement="us-east-1"),
                 {"proxy_region": "eu-west-1"},
                 [(Purpose.TARGET, "dublin-mail", REQUIRED), (Purpose.PLACEMENT, None, None),
                  (Purpose.PLACEMENT, "dublin-mail", REQUIRED)], id="placement"),
    pytest.param(AccessRequest((Access(Action.WRITE, s3("mail-eu-dublin", "a")),),
                               remotes=(Remote("a key in us-east-1", "us-east-1"),)),
                 {"proxy_region": "eu-west-1"},
                 [(Purpose.TARGET, "dublin-mail", REQUIRED), (Purpose.REMOTE_REGION, None, None),
                  (Purpose.REMOTE_REGION, "dublin-mail", REQUIRED)], id="remote region"),
])
def test_every_check_carries_its_datasets_encryption(
    policy: Policy, request_: AccessRequest, options: dict[str, str],
    expected: list[tuple[Purpose, str | None, Encryption | None]], trace: bool,
) -> None:
    decision = decide(policy, "IE", request_, trace=trace, proxy_region=options.get("proxy_region"))
    assert [(c.purpose, c.dataset, c.encryption) for c in decision.checks] == expected


# encryption_of: as the engine finds the dataset

@pytest.mark.parametrize(("resource", "expected"), [
    (s3("mail-eu-dublin", "alice/1.eml"), REQUIRED),
    (s3("mail-eu-dublin"), REQUIRED),
    (s3("mail-eu-dublin", "public/notice.txt"), NONE),     # the nested dataset's pattern is more specific
    (s3("mail-eu-dublin", "publicity/1"), REQUIRED),       # "public/" is a prefix of the key, not "public"
    (s3("mail-eu-cork", "x"), REQUIRED),                   # the bucket-name prefix s3://mail-eu-*
    (s3("archive", "ie/2020/x"), MIGRATING),
    (s3("archive", "ie-old/x"), NONE),
    (s3("archive", "x"), NONE),
    (s3("mail-us", "x"), REQUIRED),
    (s3("nowhere", "x"), NONE),
    (Resource("azure", "mailstoreie", "mailboxes/x"), NONE),
])
def test_encryption_of_takes_the_most_specific_pattern(
    policy: Policy, resource: Resource, expected: Encryption,
) -> None:
    assert encryption_of(policy, resource) is expected
    # The same answer as the decision's check, which is how the proxy finds it on the request path.
    check = decide(policy, "IE", AccessRequest((Access(Action.READ, resource),))).deciding
    assert (check.encryption or NONE) is expected


# What the commands show

def test_explain_shows_the_encryption_of_an_encrypted_dataset_only(policy: Policy) -> None:
    request = AccessRequest((Access(Action.LIST, s3("mail-eu-dublin"), listing=True),))
    lines = format_explain(decide(policy, "IE", request), "IE", request).splitlines()
    assert [line for line in lines if line.startswith("  dataset:")] == [
        "  dataset:  dublin-mail, held in eu-west-1 (IE), mode enforce, encryption required",
        "  dataset:  dublin-mail-public, held in eu-west-1 (IE), mode enforce",
    ]


@pytest.mark.parametrize(("encryptions", "summary"), [
    ((), ""),
    (("required",), ", 1 dataset requires encryption"),
    (("required", "required"), ", 2 datasets require encryption"),
    (("migrating",), ", 1 dataset migrating to encryption"),
    (("required", "migrating", "migrating", None),
     ", 1 dataset requires encryption, 2 datasets migrating to encryption"),
])
def test_the_summary_counts_encrypted_datasets(
    load: Load, encryptions: tuple[str | None, ...], summary: str,
) -> None:
    text = "datasets:\n" + "".join(
        f"  - {{name: d{i}, region: eu-west-1, resources: [s3://data{i}]"
        + (f", encryption: {e}" if e else "") + "}\n"
        for i, e in enumerate(encryptions)
    ) if encryptions else "datasets: []\n"
    assert encryption_summary(load({"d.yaml": text})) == summary


# What a proxy needs to serve them

KEY_FILE = EncryptionConfig(key_service=KeyServiceKind.FILE,
                            key_file=KeyFileSettings(Path("dev-data-key.hex"), allow_insecure=True))


@pytest.mark.parametrize(("region", "encryption", "message"), [
    ("eu-west-1", EncryptionConfig(),
     f"datasets dublin-mail (eu-west-1, encryption: required, at {FIXTURE_FILE}:7), archive-ie (eu-west-1, "
     f"encryption: migrating, at {FIXTURE_FILE}:29) are stored encrypted, but this proxy has no key service "
     "to open them with: set encryption.key_service (docs/encryption.md)"),
    ("us-east-1", EncryptionConfig(),
     f"dataset us-mail (us-east-1, encryption: required, at {FIXTURE_FILE}:37) is stored encrypted, but this "
     "proxy has no key service to open it with: set encryption.key_service (docs/encryption.md)"),
    (None, EncryptionConfig(),
     f"datasets dublin-mail (eu-west-1, encryption: required, at {FIXTURE_FILE}:7), archive-ie (eu-west-1, "
     f"encryption: migrating, at {FIXTURE_FILE}:29), us-mail (us-east-1, encryption: required, at "
     f"{FIXTURE_FILE}:37) are stored encrypted, but this proxy has no key service to open them with: set "
     "encryption.key_service (docs/encryption.md)"),
    ("eu-central-1", EncryptionConfig(), None),
    ("eu-west-1", KEY_FILE, None),
    (None, KEY_FILE, None),
])
def test_encryption_problem_names_the_encrypted_datasets_of_the_proxys_region(
    policy: Policy, region: str | None, encryption: EncryptionConfig, message: str | None,
) -> None:
    assert encryption_problem(policy, replace(Config(), region=region, encryption=encryption)) == message


def test_a_policy_without_encrypted_datasets_needs_no_key_service(load: Load) -> None:
    assert encryption_problem(load({"mail.yaml": dataset_text(None)}), Config()) is None
