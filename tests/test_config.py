"""Configuration: one validated value, with errors that name the file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pycountry
import pytest
import yaml

from proxy import jurisdictions
from proxy.config import SETTINGS, Unmatched, UpstreamApi, load_config
from proxy.errors import ConfigError
from proxy.jurisdictions import country_codes, is_country_code, suggest

SECRET = "s" * 40


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bailiwick.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config.listen == ("0.0.0.0", 8080)  # noqa: S104
    assert config.admin_listen == ("127.0.0.1", 9090)
    assert config.unmatched == "deny"
    assert config.upstream.api == "s3"
    assert config.identity.jwt == ()


def test_contract_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """
listen: 0.0.0.0:8080
admin_listen: 0.0.0.0:9090
region: eu-west-1
policies: policies/
unmatched: deny
upstream:
  api: s3
  url: http://127.0.0.1:9000
identity:
  jwt:
    - issuer: https://idp.example.ie
      audience: bailiwick
      jwks_file: keys/idp.jwks.json
      jurisdiction_claim: jurisdiction
  networks:
    - cidr: 10.20.0.0/16
      jurisdiction: IE
tag:
  signing_key_env: BAILIWICK_TAG_KEY
audit:
  path: /var/log/bailiwick/audit.jsonl
""")
    config = load_config(path, environ={"BAILIWICK_TAG_KEY": SECRET})
    assert config.region == "eu-west-1"
    assert config.identity.jwt[0].algorithms == ("RS256", "ES256", "EdDSA")
    assert str(config.identity.networks[0].cidr) == "10.20.0.0/16"
    assert config.tag.signing_key == SECRET.encode()
    assert config.audit.path == "/var/log/bailiwick/audit.jsonl"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:1000\nupstream: {url: 'http://file:1'}\n")
    env = {"BAILIWICK_LISTEN": "127.0.0.1:2000", "BAILIWICK_UPSTREAM": "http://env:2"}
    config = load_config(path, environ=env, overrides={"listen": "127.0.0.1:3000"})
    assert config.listen == ("127.0.0.1", 3000)
    assert config.upstream.url == "http://env:2"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("colour: blue\n", {}, "colour: unknown setting"),
        ("listen: nowhere\n", {}, "listen: expected HOST:PORT"),
        ("unmatched: maybe\n", {}, 'unmatched: expected "deny" or "allow"'),
        ("upstream: {url: 'ftp://x'}\n", {}, "upstream.url: expected an http:// or https:// URL"),
        ("upstream: {url: 'http://x/path'}\n", {}, "upstream.url: must name a server only"),
        ("upstream: {api: gcs}\n", {}, 'upstream.api: expected "s3" or "azure", got \'gcs\''),
        ("identity: {jwt: [{issuer: i, audience: a}]}\n", {}, "set exactly one of jwks_file, jwks_url"),
        ("identity: {jwt: [{issuer: i, audience: a, hs256_secret_env: S}]}\n", {},
         "the environment variable S is not set"),
        ("identity: {jwt: [{issuer: i, audience: a, hs256_secret_env: S}]}\n", {"S": "short"},
         "at least 32 are required"),
        ("identity: {jwt: [{issuer: i, audience: a, hs256_secret_env: S, algorithms: [none]}]}\n",
         {"S": SECRET}, "'none' cannot be used with a shared secret"),
        ("identity: {jwt: [{issuer: i, audience: a, jwks_file: k, algorithms: [HS256]}]}\n", {},
         "'HS256' cannot be used with a JWKS"),
        ("identity: {jwt: [{issuer: i, audience: a, jwks_file: k, leeway_seconds: 300}]}\n", {},
         "leeway_seconds: must be between 0 and 60"),
        ("identity: {jwt: [{issuer: i, audience: a, jwks_file: k, max_lifetime_seconds: 1.0e+308}]}\n", {},
         "identity.jwt[0].max_lifetime_seconds: must be between 60 and 3.16224e+07"),
        ("identity: {jwt: [{issuer: i, audience: a, jwks_file: k, max_lifetime_seconds: 0}]}\n", {},
         "identity.jwt[0].max_lifetime_seconds: must be between 60"),
        ("identity: {jwt: [{issuer: i, audience: a, jwks_file: k, max_lifetime_seconds: .inf}]}\n", {},
         "identity.jwt[0].max_lifetime_seconds: must be between 60"),
        ("identity: {networks: [{cidr: 10.0.0.1/8, jurisdiction: IE}]}\n", {}, "not a network in CIDR notation"),
        ("identity: {networks: [{cidr: 10.0.0.0/8, jurisdiction: UK}]}\n", {},
         "'UK' is not an ISO 3166-1 alpha-2 country code"),
        ("tag: {signing_key_env: T}\n", {}, "tag.signing_key_env: the environment variable T is not set"),
    ],
)
def test_invalid_settings_name_file_and_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ=env)
    assert str(excinfo.value).startswith(f"{path}:1: ")
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "env", "kinds"),
    [
        ("", {}, (Unmatched.DENY, UpstreamApi.S3)),
        ("unmatched: allow\nupstream: {api: azure}\n", {}, (Unmatched.ALLOW, UpstreamApi.AZURE)),
        ("", {"BAILIWICK_UNMATCHED": "allow", "BAILIWICK_UPSTREAM_API": "azure"}, (Unmatched.ALLOW, UpstreamApi.AZURE)),
    ],
)
def test_kinds_are_read_as_enums(
    tmp_path: Path, text: str, env: dict[str, str], kinds: tuple[Unmatched, UpstreamApi],
) -> None:
    config = load_config(write(tmp_path, text), environ=env)
    assert (config.unmatched, config.upstream.api) == kinds
    assert (type(config.unmatched), type(config.upstream.api)) == (Unmatched, UpstreamApi)
    # Written as the words of the file wherever they are compared or shown.
    assert (config.unmatched_allow, f"{config.upstream.api}") == (kinds[0] == "allow", kinds[1].value)


def with_unknown_key(section: str) -> tuple[dict[str, Any], str]:
    """A configuration with the key "bogus" in `section` (e.g. "identity.jwt[]"), and the key an error names."""
    settings: dict[str, Any] = {"bogus": 1}
    named = "bogus"
    for part in reversed(section.split(".") if section else []):
        name = part.removesuffix("[]")
        settings = {name: [settings] if part.endswith("[]") else settings}
        named = f"{name}[0].{named}" if part.endswith("[]") else f"{name}.{named}"
    return settings, named


@pytest.mark.parametrize("section", sorted(SETTINGS))
def test_settings_lists_exactly_the_keys_each_section_accepts(tmp_path: Path, section: str) -> None:
    settings, key = with_unknown_key(section)
    text = yaml.safe_dump(settings)
    line = next(n for n, written in enumerate(text.splitlines(), 1) if "bogus:" in written)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    listed = ", ".join(sorted(SETTINGS[section]))
    assert str(excinfo.value) == f"{path}:{line}: {key}: unknown setting (expected one of: {listed})"


@pytest.mark.parametrize(("keys", "algorithms"), [
    ("jwks_file: k", ("RS256", "ES256", "EdDSA")),
    ("hs256_secret_env: S", ("HS256",)),
])
def test_an_issuer_without_algorithms_takes_its_kind_of_keys_default(
    tmp_path: Path, keys: str, algorithms: tuple[str, ...],
) -> None:
    path = write(tmp_path, f"identity: {{jwt: [{{issuer: i, audience: a, {keys}}}]}}\n")
    assert load_config(path, environ={"S": SECRET}).identity.jwt[0].algorithms == algorithms


def test_secret_never_in_repr(tmp_path: Path) -> None:
    path = write(tmp_path, "identity: {jwt: [{issuer: i, audience: a, hs256_secret_env: S}]}\n")
    config = load_config(path, environ={"S": SECRET})
    assert SECRET not in repr(config)


def test_limits_load_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "limits: {header_timeout_seconds: 2, max_connections: 10}\n")
    limits = load_config(path, environ={}).limits
    assert (limits.header_timeout_seconds, limits.max_connections, limits.body_idle_timeout_seconds) == (2, 10, 60)
    with pytest.raises(ConfigError, match=r"limits\.max_headers: must be between 16 and 1024"):
        load_config(write(tmp_path, "limits: {max_headers: 5}\n"), environ={})


def test_per_peer_limits_and_the_send_deadline_load(tmp_path: Path) -> None:
    path = write(tmp_path, "limits: {max_connections_per_peer: 8, send_idle_timeout_seconds: 2.5}\n"
                           "upstream: {max_connections_per_peer: 3}\n")
    config = load_config(path, environ={})
    assert (config.limits.max_connections_per_peer, config.limits.send_idle_timeout_seconds) == (8, 2.5)
    assert config.upstream.max_connections_per_peer == 3
    defaults = load_config(None, environ={})
    assert (defaults.limits.max_connections_per_peer, defaults.limits.send_idle_timeout_seconds) == (256, 60)
    assert defaults.upstream.max_connections_per_peer == 128


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits: {max_connections_per_peer: 0}\n", r"limits\.max_connections_per_peer: must be between 1 and"),
        ("limits: {send_idle_timeout_seconds: 0}\n", r"limits\.send_idle_timeout_seconds: must be between 0\.1 and"),
        ("limits: {send_idle_timeout_seconds: soon}\n", r"limits\.send_idle_timeout_seconds: expected a number"),
        ("upstream: {max_connections_per_peer: 0}\n", r"upstream\.max_connections_per_peer: must be between 1 and"),
        ("upstream: {max_connections_per_peer: true}\n", r"upstream\.max_connections_per_peer: expected a number"),
    ],
)
def test_per_peer_limits_are_validated(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_bodies_read_before_the_decision_have_a_deadline_and_a_budget(tmp_path: Path) -> None:
    limits = load_config(None, environ={}).limits
    assert (limits.body_read_timeout_seconds, limits.max_inspected_bytes) == (20, 64 * 1024 * 1024)
    path = write(tmp_path, "limits: {body_read_timeout_seconds: 5, max_inspected_bytes: 8388608}\n")
    limits = load_config(path, environ={}).limits
    assert (limits.body_read_timeout_seconds, limits.max_inspected_bytes) == (5, 8 * 1024 * 1024)
    with pytest.raises(ConfigError, match=r"limits\.body_read_timeout_seconds: must be between 0\.1 and 3600"):
        load_config(write(tmp_path, "limits: {body_read_timeout_seconds: 0}\n"), environ={})
    with pytest.raises(ConfigError, match=r"limits\.max_inspected_bytes: must be between"):
        load_config(write(tmp_path, "limits: {max_inspected_bytes: 1000}\n"), environ={})
    # A budget smaller than the largest delete body would refuse every such body, for ever.
    with pytest.raises(ConfigError, match=r"limits\.max_inspected_bytes: must be at least s3\.max_delete_body_bytes"):
        load_config(write(tmp_path, "limits: {max_inspected_bytes: 2000000}\n"), environ={})
    small = write(tmp_path, "s3: {max_delete_body_bytes: 1048576}\nlimits: {max_inspected_bytes: 1048576}\n")
    assert load_config(small, environ={}).limits.max_inspected_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (0, 240, 5.0)),
        ("limits: {min_send_rate_bytes_per_second: 1000, min_rate_window_seconds: 2}\n", (1000, 240, 2.0)),
        ("limits: {min_send_rate_bytes_per_second: 240}\n", (240, 240, 5.0)),
        ("limits: {min_send_rate_bytes_per_second: 0, min_receive_rate_bytes_per_second: 0}\n", (0, 0, 5.0)),
    ],
    ids=["defaults", "set", "kestrel", "off"],
)
def test_minimum_rates_load(tmp_path: Path, text: str, expected: tuple[int, int, float]) -> None:
    limits = load_config(write(tmp_path, text) if text else None, environ={}).limits
    assert (limits.min_send_rate_bytes_per_second, limits.min_receive_rate_bytes_per_second,
            limits.min_rate_window_seconds) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits: {min_send_rate_bytes_per_second: -1}\n",
         r"limits\.min_send_rate_bytes_per_second: must be between 0"),
        ("limits: {min_receive_rate_bytes_per_second: fast}\n",
         r"limits\.min_receive_rate_bytes_per_second: expected a number"),
        ("limits: {min_rate_window_seconds: 0}\n", r"limits\.min_rate_window_seconds: must be between 0\.1 and"),
    ],
)
def test_minimum_rates_are_validated(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(("given", "expected"), [(None, 1), ("3", 3), (2, 2)])
def test_workers_from_file_or_environment(tmp_path: Path, given: object, expected: int) -> None:
    path = write(tmp_path, f"workers: {given}\n" if isinstance(given, int) else "")
    env = {"BAILIWICK_WORKERS": given} if isinstance(given, str) else {}
    assert load_config(path, environ=env).workers == expected


@pytest.mark.parametrize("text", ["workers: 0\n", "workers: 1.5\n", "workers: many\n", "workers: true\n"])
def test_workers_must_be_a_count(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="workers"):
        load_config(write(tmp_path, text), environ={})


def test_jurisdiction_codes_are_pycountrys_without_its_database() -> None:
    """Read from pycountry's data file, the codes are exactly the alpha-2 codes of `pycountry.countries`."""
    assert country_codes() == frozenset(country.alpha_2 for country in pycountry.countries)
    assert [code for code in ("IE", "GB", "ie", "UK", "IRL", "") if is_country_code(code)] == ["IE", "GB"]


def test_jurisdiction_codes_fall_back_to_pycountry(monkeypatch: pytest.MonkeyPatch) -> None:
    """If pycountry's data file is not where it ships, pycountry's own database is used."""
    expected = country_codes()
    monkeypatch.setattr(jurisdictions, "_DATA_FILE", Path("no-such-database.json"))
    country_codes.cache_clear()
    try:
        assert jurisdictions._codes_from_data_file() is None
        assert country_codes() == expected
    finally:
        country_codes.cache_clear()


@pytest.mark.parametrize(
    ("given", "expected"),
    [("UK", "GB"), ("EL", "GR"), ("ie", "IE"), ("IRL", "IE"), ("Ireland", "IE"), ("XX", None), ("Atlantis", None)],
)
def test_jurisdiction_suggestions(given: str, expected: str | None) -> None:
    assert suggest(given) == expected


def test_an_issuers_longest_token_lifetime_is_a_day_unless_set(tmp_path: Path) -> None:
    path = write(tmp_path, "identity: {jwt: [{issuer: i, audience: a, jwks_file: k},"
                           " {issuer: j, audience: a, jwks_file: k, max_lifetime_seconds: 3600}]}\n")
    issuers = load_config(path, environ={}).identity.jwt
    assert [issuer.max_lifetime_seconds for issuer in issuers] == [86400.0, 3600.0]


# ---- S3 addressing: which Host forms the storage server reads as the proxy does ----------------

def test_virtual_hosts_default_to_none_and_load(tmp_path: Path) -> None:
    assert load_config(None, environ={}).s3.virtual_hosts == ()
    path = write(tmp_path, "s3: {endpoints: [localhost, S3.EU-WEST-1.amazonaws.com], "
                           "virtual_hosts: [s3.eu-west-1.amazonaws.com, localhost, localhost]}\n")
    assert load_config(path, environ={}).s3.virtual_hosts == ("s3.eu-west-1.amazonaws.com", "localhost")


@pytest.mark.parametrize(("text", "message"), [
    ("s3: {virtual_hosts: minio.test}\n", "s3.virtual_hosts: expected a list"),
    ("s3: {virtual_hosts: [minio.test]}\n", "s3.virtual_hosts[0]: 'minio.test' is not in s3.endpoints"),
    ("s3: {virtual_hosts: ['127.0.0.1']}\n", "s3.virtual_hosts[0]: '127.0.0.1' is an IP address"),
    ("s3: {virtual_hosts: ['[::1]']}\n", "is an IP address"),
    ("s3: {endpoints: [1.2.3.example], virtual_hosts: [1.2.3.example]}\n", "starts with a numeric label"),
    ("s3: {endpoints: [minio.test, mail.minio.test], virtual_hosts: [minio.test]}\n",
     "s3.endpoints[1]: 'mail.minio.test' is a bucket's name under 'minio.test'"),
    ("s3: {endpoints: [mail.s3.amazonaws.com]}\n",
     "s3.endpoints[0]: 'mail.s3.amazonaws.com' is not one of AWS S3's service names"),
    ("upstream: {url: 'https://s3.eu-west-1.amazonaws.com'}\n",
     "s3.endpoints[0]: 'localhost' would reach AWS S3"),
    ("upstream: {url: 'https://s3.eu-west-1.amazonaws.com'}\ns3: {sign: {region: eu-west-1}}\n",
     "AWS S3 reads a Host that is not one of its own names as the name of a bucket"),
    ("upstream: {url: 'https://mail.s3.eu-west-1.amazonaws.com'}\n"
     "s3: {sign: {region: eu-west-1, rewrite_host: true}}\n",
     "upstream.url: 'mail.s3.eu-west-1.amazonaws.com' is not one of AWS S3's service names"),
])
def test_addressing_settings_that_would_let_the_storage_server_read_another_bucket(
    tmp_path: Path, text: str, message: str,
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text), environ={})
    assert message in str(excinfo.value)


@pytest.mark.parametrize("text", [
    # In front of AWS S3: its own names only, or the proxy sends it its own name (rewrite_host).
    "upstream: {url: 'https://s3.eu-west-1.amazonaws.com'}\n"
    "s3: {endpoints: [s3.eu-west-1.amazonaws.com, s3.amazonaws.com], virtual_hosts: [s3.eu-west-1.amazonaws.com]}\n",
    "upstream: {url: 'https://s3.eu-west-1.amazonaws.com'}\ns3: {sign: {region: eu-west-1, rewrite_host: true}}\n",
    "upstream: {url: 'https://vpce-0a1b-c2d3.s3.eu-west-1.vpce.amazonaws.com'}\n"
    "s3: {sign: {region: eu-west-1, rewrite_host: true}}\n",
    "s3: {endpoints: [s3-eu-west-1.amazonaws.com, s3.dualstack.eu-west-1.amazonaws.com,\n"
    "                 s3.cn-north-1.amazonaws.com.cn]}\n",
])
def test_addressing_settings_the_storage_server_reads_alike(tmp_path: Path, text: str) -> None:
    load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(("text", "message"), [
    # Not YAML: the line of the problem, in the parser's words, never "<unicode string>" or a column.
    ("listen: 127.0.0.1:1\nupstream: {url: 'http://x'\nregion: eu-west-1\n", "3: not valid YAML: while parsing a flow "
     "mapping, expected ',' or '}', but got '<scalar>'"),
    ("listen: 127.0.0.1:1\naudit:\n  path: a\n   max_bytes: 0\n", "4: not valid YAML: mapping values are not allowed "
     "here"),
    ("region: eu-west-1\nlisten: [a\n", "3: not valid YAML: while parsing a flow sequence, expected ',' or ']', "
     "but got '<stream end>'"),
    ("region: \"eu-west-1\n", "2: not valid YAML: while scanning a quoted scalar, found unexpected end of stream"),
    ("- listen: 127.0.0.1:1\n", "1: expected a mapping of settings at the top level"),
    # Unknown keys: their own line, the closest known key when there is one.
    ("region: eu-west-1\n\ntag:\n  ttl_second: 5\n",
     "4: tag.ttl_second: unknown setting (did you mean ttl_seconds? expected one of: signing_key_env, ttl_seconds)"),
    ("listen: 127.0.0.1:1\nregoin: eu-west-1\n", "2: regoin: unknown setting (did you mean region? expected one of:"),
    ("identity:\n  jwt:\n    - issuer: i\n      audience: a\n      jwks_fil: k\n",
     "5: identity.jwt[0].jwks_fil: unknown setting (did you mean jwks_file? expected one of:"),
    # A wrong value: the line of its key; a list item: its own line; a missing key: its section's.
    ("region: eu-west-1\nlimits:\n  max_headers: 5\n", "3: limits.max_headers: must be between 16 and 1024, got 5"),
    ("s3:\n  endpoints:\n    - localhost\n    - 7\n", "4: s3.endpoints[1]: expected a non-empty string, got 7"),
    ("identity:\n  jwt:\n    - audience: a\n      jwks_file: k\n", "3: identity.jwt[0].issuer: is required"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    assert str(excinfo.value).startswith(f"{path}:{message}")
    assert "<unicode string>" not in str(excinfo.value)


@pytest.mark.parametrize(("env", "overrides", "where", "key"), [
    ({"BAILIWICK_LISTEN": "nowhere"}, {}, "BAILIWICK_LISTEN", "listen"),
    ({"BAILIWICK_LISTEN": "127.0.0.1:1"}, {"listen": "nowhere"}, "--listen", "listen"),
    ({}, {"admin_listen": "nowhere"}, "--admin-listen", "admin_listen"),
])
def test_an_error_in_a_value_a_variable_or_flag_set_names_it(
    tmp_path: Path, env: dict[str, str], overrides: dict[str, str | None], where: str, key: str,
) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:1\nadmin_listen: 127.0.0.1:2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ=env, overrides=overrides)
    assert str(excinfo.value) == f"{where}: {key}: expected HOST:PORT, got 'nowhere'"
