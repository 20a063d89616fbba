"""Resource patterns and concrete resources: what parses, what it means, what is refused."""

from __future__ import annotations

import pytest

from proxy.domain import Resource
from proxy.policy.patterns import PatternError, parse_pattern, parse_resource


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("s3://mail-eu-dublin", ("s3", "mail-eu-dublin", False, "")),
        ("s3://mail-eu-dublin/", ("s3", "mail-eu-dublin", False, "")),
        ("s3://archive/ie/", ("s3", "archive", False, "ie/")),
        ("s3://archive/ie", ("s3", "archive", False, "ie")),
        ("s3://mail-eu-*", ("s3", "mail-eu-", True, "")),
        ("s3://m*/logs/", ("s3", "m", True, "logs/")),
        ("s3://*", ("s3", "", True, "")),
        ("s3://my.bucket.example/a b/", ("s3", "my.bucket.example", False, "a b/")),
        ("azure://mailstoreie/mailboxes", ("azure", "mailstoreie", False, "mailboxes/")),
        ("azure://mailstoreie/mailboxes/", ("azure", "mailstoreie", False, "mailboxes/")),
        ("azure://mailstoreie/mailboxes/vip/", ("azure", "mailstoreie", False, "mailboxes/vip/")),
        ("azure://mail*/$root", ("azure", "mail", True, "$root/")),
    ],
)
def test_parse_pattern(text: str, fields: tuple[str, str, bool, str]) -> None:
    pattern = parse_pattern(text)
    assert (pattern.scheme, pattern.bucket, pattern.bucket_prefix, pattern.key_prefix) == fields
    assert str(pattern) == text


def test_patterns_that_mean_the_same_are_equal() -> None:
    assert parse_pattern("s3://mail") == parse_pattern("s3://mail/")
    assert parse_pattern("s3://mail") != parse_pattern("s3://mail*")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://mail", '"http://mail" is not a resource (expected s3://BUCKET[/KEY-PREFIX] or '
                        "azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])"),
        ("s3://", "the bucket name is missing (s3://BUCKET[/KEY-PREFIX] or azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])"),
        ("s3://ab", '"ab" is not a valid S3 bucket name (3 to 63 lower-case letters, digits, dots and hyphens, '
                    "starting and ending with a letter or digit)"),
        ("s3://a..b", '"a..b" is not a valid S3 bucket name (3 to 63 lower-case letters, digits, dots and hyphens, '
                      "starting and ending with a letter or digit)"),
        ("s3://" + "a" * 64, f'"{"a" * 64}" is not a valid S3 bucket name (3 to 63 lower-case letters, digits, '
                             "dots and hyphens, starting and ending with a letter or digit)"),
        ("s3://-mail*", '"s3://-mail*": "-mail" before "*" does not start a valid S3 bucket name (3 to 63 '
                        "lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit)"),
        ("s3://mail*x", '"s3://mail*x": "*" may appear once, at the end of the bucket or account name'),
        ("s3://mail/ie/*", '"s3://mail/ie/*": "*" is a wildcard only at the end of the bucket or account name; '
                           "key prefixes match literally, so leave it out"),
        ("azure://Mail/box",
         '"Mail" is not a valid Azure storage account name (3 to 24 lower-case letters and digits)'),
        ("azure://mail_1*/box", '"azure://mail_1*/box": "mail_1" before "*" does not start a valid storage '
                                "account name (3 to 24 lower-case letters and digits)"),
        ("azure://mailstore/-box", '"-box" is not a valid Azure container name (3 to 63 lower-case letters, digits '
                                   "and single hyphens, starting and ending with a letter or digit)"),
        ("azure://mailstore/", '"azure://mailstore/": an Azure pattern names an account and a container '
                               "(s3://BUCKET[/KEY-PREFIX] or azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])"),
    ],
)
def test_invalid_patterns(text: str, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        parse_pattern(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("pattern", "resource", "matches"),
    [
        ("s3://archive/ie", Resource("s3", "archive", "ie-x"), True),
        ("s3://archive/ie/", Resource("s3", "archive", "ie-x"), False),
        ("s3://archive/ie/", Resource("s3", "archive", "ie/"), True),
        ("s3://arch*", Resource("s3", "archive", ""), True),
        ("s3://arch*", Resource("s3", "arc", ""), False),
        ("s3://archive", Resource("s3", "archives", "x"), False),
        ("s3://archive", Resource("azure", "archive", "x"), False),
        ("azure://store/box", Resource("azure", "store", "box/x"), True),
        ("azure://store/box", Resource("azure", "store", "boxes/x"), False),
    ],
)
def test_matches(pattern: str, resource: Resource, matches: bool) -> None:
    assert parse_pattern(pattern).matches(resource) is matches


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("s3://archive", "bucket 'archive', every key"),
        ("s3://archive/ie/", "bucket 'archive', keys starting with 'ie/'"),
        ("s3://mail-*", "any bucket whose name starts with 'mail-', every key"),
        ("s3://*/logs/", "any bucket, keys starting with 'logs/'"),
        ("azure://store/box", "storage account 'store', container 'box', every blob"),
        ("azure://store/box/vip", "storage account 'store', container 'box', blobs whose name starts with 'vip'"),
    ],
)
def test_describe(pattern: str, words: str) -> None:
    assert parse_pattern(pattern).describe() == words


@pytest.mark.parametrize(
    ("text", "resource"),
    [
        ("s3://mail-eu-dublin/alice/inbox/1.eml", Resource("s3", "mail-eu-dublin", "alice/inbox/1.eml")),
        ("s3://mail-eu-dublin", Resource("s3", "mail-eu-dublin", "")),
        ("s3://mail-eu-dublin/", Resource("s3", "mail-eu-dublin", "")),
        ("azure://mailstoreie/mailboxes/alice/1", Resource("azure", "mailstoreie", "mailboxes/alice/1")),
        ("azure://mailstoreie/mailboxes", Resource("azure", "mailstoreie", "mailboxes/")),
        ("azure://mailstoreie", Resource("azure", "mailstoreie", "")),
    ],
)
def test_parse_resource(text: str, resource: Resource) -> None:
    assert parse_resource(text) == resource


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://mail-*/x", '"s3://mail-*/x": a resource names one bucket and key; "*" is not allowed here'),
        ("s3://Mail/x", '"Mail" is not a valid S3 bucket name (3 to 63 lower-case letters, digits, dots and '
                        "hyphens, starting and ending with a letter or digit)"),
        ("ftp://x/y", '"ftp://x/y" is not a resource (expected s3://BUCKET[/KEY-PREFIX] or '
                      "azure://ACCOUNT/CONTAINER[/BLOB-PREFIX])"),
    ],
)
def test_invalid_resources(text: str, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        parse_resource(text)
    assert str(caught.value) == message
