"""Paths written in the configuration file are its folder's, whatever the working directory."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from proxy.config import Config, load_config
from proxy.config.origins import Origins
from proxy.config.paths import is_path_type
from proxy.errors import ConfigError
from tests.support.certs import make_ca, server_certificate, write_crl

SECRET = "s" * 40

# Every path setting, as the file writes it, and a setting that turns its section on (None: none needed).
# A path field added to the model must be added here, or `test_every_path_setting_is_in_the_table` fails.
PATH_SETTINGS = {
    "policies": "policies: {}\n",
    "access_log": "access_log: {}\n",
    "audit.path": "audit: {{path: {}}}\n",
    "identity.jwt[].jwks_file": "identity: {{jwt: [{{issuer: i, audience: a, jwks_file: {}}}]}}\n",
    "identity.access_keys[].secret_access_key_file":
        "identity: {{access_keys: [{{access_key_id: AK, jurisdiction: IE, secret_access_key_file: {}}}]}}\n",
    "identity.geoip.database": "identity: {{geoip: {{database: {}}}}}\n",
    "s3.sign.credentials_file": "s3: {{sign: {{credentials_file: {}}}}}\n",
    "encryption.transit.token_file":
        "s3: {{sign: {{}}}}\nencryption: {{key_service: transit, transit: {{address: 'https://b', key: k, "
        "token_file: {}}}}}\n",
    "encryption.transit.ca_bundle":
        "s3: {{sign: {{}}}}\nencryption: {{key_service: transit, transit: {{address: 'https://b', key: k, "
        "token_env: T, ca_bundle: {}}}}}\n",
    "encryption.pkcs11.module":
        "s3: {{sign: {{}}}}\nencryption: {{key_service: pkcs11, pkcs11: {{module: {}, token_label: t, key_label: k, "
        "pin_env: T}}}}\n",
    "encryption.pkcs11.pin_file":
        "s3: {{sign: {{}}}}\nencryption: {{key_service: pkcs11, pkcs11: {{module: libhsm.so, token_label: t, "
        "key_label: k, pin_file: {}}}}}\n",
    "upstream.ca_bundle": "upstream: {{url: 'https://b', ca_bundle: {}}}\n",
    "listing_token_key_file": "listing_token_key_file: {}\n",
    "encryption.key_file.path":
        "s3: {{sign: {{}}}}\nencryption: {{key_service: file, key_file: {{path: {}, allow_insecure: true}}}}\n",
    "listen_tls.certificate": "listen_tls: {{certificate: {}, key: tls.key}}\n",
    "listen_tls.key": "listen_tls: {{certificate: tls.crt, key: {}}}\n",
    "listen_tls.client_ca": "listen_tls: {{certificate: tls.crt, key: tls.key, client_ca: {}}}\n",
    "listen_tls.crl": "listen_tls: {{certificate: tls.crt, key: tls.key, client_ca: tls-ca.crt, crl: {}}}\n",
}
# A name that says "path" must be a path setting (typed `Path`, or `PathText`), or it is not resolved.
PATH_LIKE_NAME = re.compile(r"(^|_)(path|file|dir|directory|bundle|module|folder)$")


def path_fields(kind: type, prefix: str = "") -> dict[str, bool]:
    """Every field under the dataclass `kind`, by its setting's name, with whether it is a path setting."""
    found: dict[str, bool] = {}
    hints = get_type_hints(kind, include_extras=True)
    for f in fields(kind):
        name = f"{prefix}{f.name}"
        hint = hints[f.name]
        if hint is Origins:
            continue   # not a setting: where the settings were given
        sections = False
        for member in get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,):
            listed = get_origin(member) is tuple
            item = get_args(member)[0] if listed else member
            if isinstance(item, type) and is_dataclass(item):
                found.update(path_fields(item, f"{name}[]." if listed else f"{name}."))
                sections = True
        if not sections:
            found[name] = is_path_type(hint)
    return found


def test_every_path_setting_is_in_the_table() -> None:
    found = path_fields(Config)
    assert {name for name, is_path in found.items() if is_path} == set(PATH_SETTINGS)
    misnamed = [name for name, is_path in found.items()
                if PATH_LIKE_NAME.search(name.rsplit(".", 1)[-1]) and not is_path]
    assert misnamed == [], "a setting named like a path that is not typed as one would not be resolved"


def value_at(config: Any, name: str) -> Any:
    for part in name.split("."):
        config = getattr(config, part.removesuffix("[]"))
        if part.endswith("[]"):
            config = config[0]
    return config


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the configuration file's folder; returns that folder."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    folder = tmp_path / "etc" / "bailiwick"
    folder.mkdir(parents=True)
    for name in ("secret", "token", "ca.pem", "pin", "k.hex", "libhsm.so", "idp.jwks"):
        (folder / name).write_text(SECRET)
    (folder / "listing.key").write_text("ab" * 32)   # read at load: 64 hex digits
    (folder / "sub").mkdir()
    (folder / "sub" / "secret").write_text(SECRET)
    ca = make_ca()   # listen_tls's files are loaded at start: they must be a CA, a certificate and its key
    ca.write(folder, "tls-ca")
    server_certificate(ca).write(folder, "tls")
    write_crl(folder / "tls.crl", ca, ())
    return folder


FILE_OF = {"identity.access_keys[].secret_access_key_file": "secret", "encryption.transit.ca_bundle": "ca.pem",
           "encryption.pkcs11.module": "libhsm.so", "listen_tls.certificate": "tls.crt", "listen_tls.key": "tls.key",
           "listen_tls.client_ca": "tls-ca.crt", "listing_token_key_file": "listing.key",
           "listen_tls.crl": "tls.crl"}   # checked (or read) at load: they must exist


@pytest.mark.parametrize("name", sorted(PATH_SETTINGS))
@pytest.mark.parametrize("written", ["{}", "./{}", "sub/../{}", "ABSOLUTE"])
def test_a_relative_path_is_the_config_files_folders(elsewhere: Path, name: str, written: str) -> None:
    file = FILE_OF.get(name, "secret")
    value = str(elsewhere / file) if written == "ABSOLUTE" else written.format(file)
    config_file = elsewhere / "bailiwick.yaml"
    config_file.write_text("region: eu-west-1\n" + PATH_SETTINGS[name].format(value))
    config = load_config(Path("..") / "etc" / "bailiwick" / "bailiwick.yaml", environ={"T": SECRET})
    got = value_at(config, name)
    assert Path(got).is_absolute(), got
    assert Path(got).resolve() == (elsewhere / file).resolve()
    if written == "ABSOLUTE":
        assert str(got) == value   # left as written


@pytest.mark.parametrize(("written", "expected"), [
    ("audit: {path: '-'}\n", ("-", None)),                       # standard output
    ("access_log: '-'\n", ("-", "-")),                           # standard error
    ("audit: {path: null}\n", (None, None)),                     # no audit log
])
def test_a_stream_or_nothing_is_not_a_path(elsewhere: Path, written: str, expected: tuple[str | None, ...]) -> None:
    (elsewhere / "bailiwick.yaml").write_text(written)
    config = load_config(elsewhere / "bailiwick.yaml", environ={})
    assert (config.audit.path, config.access_log) == expected


def test_paths_from_flags_and_variables_stay_the_working_directorys(elsewhere: Path) -> None:
    (elsewhere / "bailiwick.yaml").write_text("policies: p\naudit: {path: a.jsonl}\naccess_log: l.jsonl\n")
    config = load_config(elsewhere / "bailiwick.yaml", environ={"BAILIWICK_AUDIT_PATH": "audit.jsonl"},
                         overrides={"policies": "mine", "access_log": None})
    assert (config.policies, config.audit.path) == (Path("mine"), "audit.jsonl")
    assert config.access_log == str(elsewhere / "l.jsonl")
    # Without a file, nothing is resolved: the default folder is the working directory's.
    assert load_config(None, environ={}).policies == Path("policies")


@pytest.mark.parametrize(("written", "key", "said"), [
    ("identity: {access_keys: [{access_key_id: AK, jurisdiction: IE, secret_access_key_file: gone}]}\n",
     "identity.access_keys[0].secret_access_key_file", "cannot read {}/gone: No such file or directory"),
    ("s3: {sign: {}}\nencryption: {key_service: transit, transit: {address: 'https://b', key: k, token_env: T, "
     "ca_bundle: gone.pem}}\n", "encryption.transit.ca_bundle", "{}/gone.pem is not a readable file"),
])
def test_an_error_names_the_absolute_path_it_tried(elsewhere: Path, written: str, key: str, said: str) -> None:
    (elsewhere / "bailiwick.yaml").write_text("region: eu-west-1\n" + written)
    with pytest.raises(ConfigError) as refused:
        load_config(Path("../etc/bailiwick/bailiwick.yaml"), environ={"T": SECRET})
    assert str(refused.value).endswith(f": {key}: {said.format(elsewhere)}")
