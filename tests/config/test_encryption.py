"""The `encryption` section: the region's key service and the data-key cache, read and refused with clear errors."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from proxy.config import (
    Config,
    EncryptionConfig,
    KeyCacheSettings,
    KeyFileSettings,
    KeyServiceKind,
    Pkcs11Settings,
    TransitSettings,
    load_config,
)
from proxy.errors import ConfigError

TOKEN = "s.transit-token-for-the-tests"
PIN = "1234"
SIGNED = "s3: {sign: {}}\n"
TRANSIT = "encryption:\n  key_service: transit\n  transit: {address: 'https://bao.eu-west-1.internal:8200', " \
          "key: bailiwick-eu-west-1}\n"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The configuration file's folder, where the files named in the settings are; the current directory too."""
    monkeypatch.chdir(tmp_path)
    Path("token").write_text(TOKEN + "\n")
    Path("pin").write_text(PIN)
    Path("libhsm.so").write_bytes(b"\x7fELF")
    Path("ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


def load(folder: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = folder / "bailiwick.yaml"
    # A key service is one region's: every configuration here names the region (but the one test of that rule).
    path.write_text(text if text.startswith("region:") or "\nregion:" in text else "region: eu-west-1\n" + text)
    return load_config(path, environ={"BAO_TOKEN": TOKEN} if env is None else env)


def test_the_default_is_no_key_service_and_no_cache() -> None:
    assert Config().encryption == EncryptionConfig()
    assert EncryptionConfig() == EncryptionConfig(key_service=None, transit=None, pkcs11=None, key_file=None,
                                                  key_cache=KeyCacheSettings(max_keys=0, ttl_seconds=60.0))
    assert not Config().encryption.enabled
    assert load_config(None, environ={}).encryption == EncryptionConfig()


@pytest.mark.parametrize(("text", "env", "expected"), [
    pytest.param(SIGNED + TRANSIT, {"BAO_TOKEN": TOKEN}, EncryptionConfig(
        key_service=KeyServiceKind.TRANSIT,
        transit=TransitSettings(address="https://bao.eu-west-1.internal:8200", key="bailiwick-eu-west-1",
                                token=TOKEN),
    ), id="transit, every default"),
    pytest.param(SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'http://127.0.0.1:8200/', "
                 "key: k, mount: /eu/transit/, token_env: MY_TOKEN, ca_bundle: ca.pem, timeout_seconds: 2.5}\n"
                 "  key_cache: {max_keys: 1000, ttl_seconds: 30}\n",
                 {"MY_TOKEN": TOKEN}, EncryptionConfig(
        key_service=KeyServiceKind.TRANSIT,
        transit=TransitSettings(address="http://127.0.0.1:8200", key="k", mount="eu/transit", token_env="MY_TOKEN",
                                token=TOKEN, ca_bundle=Path("ca.pem"), timeout_seconds=2.5),
        key_cache=KeyCacheSettings(max_keys=1000, ttl_seconds=30.0),
    ), id="transit on loopback, every setting"),
    pytest.param(SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'https://[::1]:8200', "
                 "key: k, token_file: token}\n", {}, EncryptionConfig(
        key_service=KeyServiceKind.TRANSIT,
        transit=TransitSettings(address="https://[::1]:8200", key="k", token_file=Path("token")),
    ), id="transit, token in a file"),
    pytest.param(SIGNED + "encryption:\n  key_service: pkcs11\n  pkcs11: {module: libhsm.so, token_label: bailiwick, "
                 "key_label: bailiwick-eu-west-1}\n", {"BAILIWICK_PKCS11_PIN": PIN}, EncryptionConfig(
        key_service=KeyServiceKind.PKCS11,
        pkcs11=Pkcs11Settings(module=Path("libhsm.so"), token_label="bailiwick", key_label="bailiwick-eu-west-1",
                              pin=PIN),
    ), id="pkcs11, pin from the environment"),
    pytest.param(SIGNED + "encryption:\n  key_service: pkcs11\n  pkcs11: {module: libhsm.so, token_label: t, "
                 "key_label: k, pin_file: pin}\n", {}, EncryptionConfig(
        key_service=KeyServiceKind.PKCS11,
        pkcs11=Pkcs11Settings(module=Path("libhsm.so"), token_label="t", key_label="k", pin_file=Path("pin")),
    ), id="pkcs11, pin in a file"),
    pytest.param(SIGNED + "encryption:\n  key_service: file\n"
                 "  key_file: {path: dev-data-key.hex, allow_insecure: true}\n", {}, EncryptionConfig(
        key_service=KeyServiceKind.FILE,
        key_file=KeyFileSettings(path=Path("dev-data-key.hex"), allow_insecure=True),
    ), id="key file, allowed"),
    pytest.param("encryption:\n  key_service: null\n  key_cache: {max_keys: 5}\n", {},
                 EncryptionConfig(key_cache=KeyCacheSettings(max_keys=5)), id="no key service, a cache setting"),
    pytest.param("encryption: {key_service: null, transit: {}, pkcs11: {}, key_file: {}}\n", {},
                 EncryptionConfig(), id="no key service, empty sections"),
])
def test_a_key_service_is_read(folder: Path, text: str, env: dict[str, str], expected: EncryptionConfig) -> None:
    encryption = load(folder, text, env).encryption
    assert encryption == in_folder(folder, expected)
    assert encryption.enabled is (expected.key_service is not None)


def in_folder(folder: Path, value: Any) -> Any:
    """`value` with each relative path in it made the folder's, as the configuration file's paths are read."""
    if isinstance(value, Path):
        return folder / value
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: in_folder(folder, getattr(value, f.name)) for f in fields(value)})
    return value


def test_secrets_are_never_in_a_repr(folder: Path) -> None:
    transit = load(folder, SIGNED + TRANSIT).encryption
    pkcs11 = load(folder, SIGNED + "encryption:\n  key_service: pkcs11\n  pkcs11: {module: libhsm.so, "
                  "token_label: t, key_label: k}\n", {"BAILIWICK_PKCS11_PIN": PIN}).encryption
    assert (transit.transit, pkcs11.pkcs11) != (None, None)
    assert TOKEN not in repr(transit)
    assert TOKEN not in repr(Config(encryption=transit))
    assert f"'{PIN}'" not in repr(pkcs11)


def test_a_secret_file_is_read_again_on_every_use(folder: Path) -> None:
    settings = load(folder, SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'https://b', "
                    "key: k, token_file: token}\n  pkcs11: null\n", {}).encryption.transit
    assert settings is not None
    assert settings.token is None
    assert settings.current_token() == TOKEN
    Path("token").write_text("s.renewed\n")
    assert settings.current_token() == "s.renewed"
    # A file not written yet (an agent's token sink) does not stop the start; using it fails until it is.
    later = load(folder, SIGNED + TRANSIT_WITH % "token_file: later", {}).encryption.transit
    assert later is not None
    with pytest.raises(FileNotFoundError):
        later.current_token()
    Path("later").write_text(TOKEN)
    assert later.current_token() == TOKEN
    from_env = TransitSettings(address="https://b", key="k", token=TOKEN)
    assert from_env.current_token() == TOKEN
    assert Pkcs11Settings(Path("m"), "t", "k", pin_file=Path("pin")).current_pin() == PIN
    assert Pkcs11Settings(Path("m"), "t", "k", pin="9876").current_pin() == "9876"


NO_SIGN = "encryption requires re-sign mode (s3.sign): a caller's signature cannot cover a body the proxy encrypts"
AZURE = "encrypted datasets are not supported on an Azure Blob upstream yet"
INSECURE = ("a key file keeps the key-encryption key on the proxy's own disk, outside any key service: it is for "
            "development and the demo only; set allow_insecure: true to use it anyway")
TRANSIT_WITH = "encryption:\n  key_service: transit\n  transit: {address: 'https://b', key: k, %s}\n"
PKCS11_WITH = "encryption:\n  key_service: pkcs11\n  pkcs11: {%s}\n"


@pytest.mark.parametrize(("text", "env", "key", "message"), [
    # The key service's kind, and its section
    (SIGNED + "encryption: {key_service: vault}\n", None, "encryption.key_service",
     "expected \"transit\" or \"pkcs11\" or \"file\", got 'vault'"),
    (SIGNED + "encryption: {key_service: transit}\n", None, "encryption.transit",
     "is required with key_service: transit"),
    (SIGNED + "encryption: {key_service: file, transit: {key: k}}\n", None, "encryption.transit",
     "encryption.key_service is file, and a proxy uses one key service: remove this section"),
    (SIGNED + TRANSIT + "  pkcs11: {module: libhsm.so}\n", None, "encryption.pkcs11",
     "encryption.key_service is transit, and a proxy uses one key service: remove this section"),
    (SIGNED + "encryption: {key_file: {path: k, allow_insecure: true}}\n", None, "encryption.key_file",
     "no key service is named: set encryption.key_service: file to use this section, or remove it"),
    (SIGNED + "encryption: {key_service: file, pkcs11: {modul: x}}\n", None, "encryption.pkcs11.modul",
     "unknown setting (did you mean module? expected one of: key_label, module, pin_env, pin_file, token_label)"),
    (SIGNED + "encryption: [transit]\n", None, "encryption", "expected a mapping"),
    # The upstream it needs
    (TRANSIT, None, "encryption.key_service", NO_SIGN),
    ("upstream: {api: azure}\n" + TRANSIT, None, "encryption.key_service", AZURE),
    ("upstream: {api: azure}\n" + SIGNED + TRANSIT, None, "encryption.key_service", AZURE),
    # Transit
    (SIGNED + "encryption:\n  key_service: transit\n  transit: {key: k}\n", None, "encryption.transit.address",
     "is required"),
    (SIGNED + "encryption: {key_service: transit, transit: {}, pkcs11: {}}\n", None, "encryption.transit.address",
     "is required"),
    (SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'https://b'}\n", None,
     "encryption.transit.key", "is required"),
    (SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'bao:8200', key: k}\n", None,
     "encryption.transit.address", "expected an https:// URL of the server, got 'bao:8200'"),
    (SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'https://b?x=1', key: k}\n", None,
     "encryption.transit.address", "expected an https:// URL of the server, got 'https://b?x=1'"),
    (SIGNED + "encryption:\n  key_service: transit\n  transit: {address: 'http://bao.internal:8200', key: k}\n",
     None, "encryption.transit.address",
     "an http:// address would send the token and every data key in the clear: use https:// (http:// only on "
     "loopback)"),
    (SIGNED + TRANSIT_WITH.replace("key: k", "key: transit/k") % "mount: transit", None, "encryption.transit.key",
     "expected the name of a Transit key, without '/', got 'transit/k'"),
    (SIGNED + TRANSIT_WITH % "mount: /", None, "encryption.transit.mount",
     "expected the path the Transit engine is mounted at"),
    (SIGNED + TRANSIT_WITH % "token_file: token, token_env: T", None, "encryption.transit",
     "set one of token_file or token_env, not both"),
    (SIGNED + TRANSIT_WITH % "mount: transit", {}, "encryption.transit.token_env",
     "the environment variable BAO_TOKEN is not set or empty (or set token_file to a mounted file)"),
    (SIGNED + TRANSIT_WITH % "token_env: T", {"T": ""}, "encryption.transit.token_env",
     "the environment variable T is not set or empty (or set token_file to a mounted file)"),
    (SIGNED + TRANSIT_WITH % "ca_bundle: missing.pem", None, "encryption.transit.ca_bundle",
     "{}/missing.pem is not a readable file"),
    (SIGNED + TRANSIT_WITH % "timeout_seconds: 0", None, "encryption.transit.timeout_seconds",
     "must be between 0.1 and 300, got 0"),
    (SIGNED + TRANSIT_WITH % "timeout_seconds: fast", None, "encryption.transit.timeout_seconds",
     "expected a number, got 'fast'"),
    # PKCS#11
    (SIGNED + PKCS11_WITH % "module: libhsm.so, token_label: t", None, "encryption.pkcs11.key_label", "is required"),
    (SIGNED + PKCS11_WITH % "module: missing.so, token_label: t, key_label: k", None, "encryption.pkcs11.module",
     "{}/missing.so is not a file: expected the PKCS#11 module (.so) of the HSM"),
    (SIGNED + PKCS11_WITH % "module: libhsm.so, token_label: t, key_label: k", {}, "encryption.pkcs11.pin_env",
     "the environment variable BAILIWICK_PKCS11_PIN is not set or empty (or set pin_file to a mounted file)"),
    (SIGNED + PKCS11_WITH % "module: libhsm.so, token_label: t, key_label: k, pin_file: pin, pin_env: P", None,
     "encryption.pkcs11", "set one of pin_file or pin_env, not both"),
    (SIGNED + PKCS11_WITH % "module: libhsm.so, token_label: '', key_label: k, pin_file: pin", None,
     "encryption.pkcs11.token_label", "expected a non-empty string, got ''"),
    # The key file
    (SIGNED + "encryption: {key_service: file, key_file: {path: k}}\n", None, "encryption.key_file.allow_insecure",
     INSECURE),
    (SIGNED + "encryption: {key_service: file, key_file: {path: k, allow_insecure: false}}\n", None,
     "encryption.key_file.allow_insecure", INSECURE),
    (SIGNED + "encryption: {key_service: file, key_file: {path: k, allow_insecure: 'yes'}}\n", None,
     "encryption.key_file.allow_insecure", "expected true or false, got 'yes'"),
    (SIGNED + "encryption: {key_service: file, key_file: {allow_insecure: true}}\n", None,
     "encryption.key_file.path", "is required"),
    # The cache
    ("encryption: {key_cache: {max_keys: -1}}\n", None, "encryption.key_cache.max_keys",
     "must be between 0 and 100000, got -1"),
    ("encryption: {key_cache: {ttl_seconds: 0}}\n", None, "encryption.key_cache.ttl_seconds",
     "must be between 0.1 and 3600, got 0"),
    ("encryption: {key_cache: {ttl_seconds: 86400}}\n", None, "encryption.key_cache.ttl_seconds",
     "must be between 0.1 and 3600, got 86400"),
])
def test_a_wrong_setting_is_refused_naming_file_and_key(
    folder: Path, text: str, env: dict[str, str] | None, key: str, message: str,
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load(folder, text, env)
    # The line is that of the key, or of the nearest section of it the file writes; paths are the folder's.
    expected = re.escape(f"{folder / 'bailiwick.yaml'}") + r":\d+: " + re.escape(f"{key}: {message}".format(folder))
    assert re.fullmatch(expected, str(excinfo.value)), str(excinfo.value)


def test_a_key_service_needs_the_proxys_region(folder: Path) -> None:
    text = "encryption:\n  key_service: file\n  key_file: {path: k.hex, allow_insecure: true}\n"
    (folder / "k.hex").write_text("00" * 32)
    with pytest.raises(ConfigError, match="set `region` to the region whose key service this is"):
        load(folder, "region: null\n" + text)
