"""The PKCS#11 key service against a real SoftHSM2 token.

What only PKCS#11 does: the KEK made by `create_kek` cannot leave the token
(its value is not readable, its attributes say sensitive and never
extractable); a KEK that could leave is refused, saying so; a destroyed KEK
refuses; a missing token is unavailable; several services share the token's
one login, and closing one does not log the others out.
"""

from __future__ import annotations

import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

import proxy.crypto.pkcs11
from proxy.crypto.keyservice import Justification
from proxy.crypto.pkcs11 import Pkcs11KeyService, create_kek
from proxy.errors import ConfigError, KeyReleaseRefused, KeyServiceUnavailable
from tests.support.keyservices import SoftHsm, assert_unusable, softhsm_fixture  # noqa: F401  (the fixture "softhsm")

CONTEXT = b"bailiwick-v1\x00dublin-mail\x00eu-west-1\x00mail-eu-dublin\x00inbox/0001.eml"
WHY = Justification("d-p11", "IE", "dublin-mail", "7")


def label(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def find(session: Any, key_label: str) -> Any:
    return session.get_key(object_class=ObjectClass.SECRET_KEY, label=key_label)


@pytest.mark.parametrize(("attribute", "expected"), [
    (Attribute.SENSITIVE, True), (Attribute.ALWAYS_SENSITIVE, True), (Attribute.EXTRACTABLE, False),
    (Attribute.NEVER_EXTRACTABLE, True), (Attribute.TOKEN, True), (Attribute.PRIVATE, True),
    (Attribute.KEY_TYPE, KeyType.AES), (Attribute.VALUE_LEN, 32), (Attribute.WRAP, False),
])
def test_the_kek_cannot_leave_the_token(softhsm: SoftHsm, attribute: Attribute, expected: object) -> None:
    kek = label("kek")
    assert softhsm.create_kek(kek) == f"pkcs11:{softhsm.token_label}/{kek}"
    with softhsm.session() as session:
        key = find(session, kek)
        assert key[attribute] == expected
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]   # C_GetAttributeValue(CKA_VALUE) is refused


def test_create_kek_refuses_a_label_in_use(softhsm: SoftHsm) -> None:
    kek = label("twice")
    softhsm.create_kek(kek)
    with pytest.raises(ConfigError, match="already holds"):
        softhsm.create_kek(kek)


UNSUITABLE: list[tuple[str, dict[Attribute, Any], int, str]] = [
    ("extractable", {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}, 256, "extractable"),
    ("not sensitive", {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: False}, 256, "not sensitive"),
    ("AES-128", {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True}, 128, "not an AES-256 key"),
    ("may not decrypt", {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.DECRYPT: False}, 256,
     "may not encrypt and decrypt"),
]


@pytest.mark.parametrize(("case", "template", "bits", "said"), UNSUITABLE, ids=[c[0] for c in UNSUITABLE])
def test_an_unsuitable_kek_is_refused(softhsm: SoftHsm, case: str, template: dict[Attribute, Any], bits: int,
                                      said: str) -> None:
    kek = label("unsuitable")
    with softhsm.session() as session:
        session.generate_key(KeyType.AES, bits, label=kek, store=True,
                             template={Attribute.TOKEN: True, Attribute.PRIVATE: True, **template})
    service = softhsm.service(kek)
    assert_unusable(service, said, kek)
    service.close()


def test_a_destroyed_kek_refuses(softhsm: SoftHsm) -> None:
    kek = label("shredded")
    softhsm.create_kek(kek)
    service = softhsm.service(kek)
    made = service.generate(CONTEXT, WHY)
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    with softhsm.session() as session:
        find(session, kek).destroy()
    with pytest.raises(KeyReleaseRefused, match="does not exist"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    with pytest.raises(KeyReleaseRefused, match="does not exist"):
        service.generate(CONTEXT, WHY)
    assert "does not exist" in (service.probe() or "")
    # Another key under the same label is another key: what the first wrapped stays shut.
    softhsm.create_kek(kek)
    with pytest.raises(KeyReleaseRefused, match="does not authenticate"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    assert service.probe() is None
    service.close()


def test_freeze_and_thaw(softhsm: SoftHsm) -> None:
    """Withdrawing the KEK's use (CKA_ENCRYPT, CKA_DECRYPT false) refuses every release; restoring it thaws."""
    kek = label("frozen")
    softhsm.create_kek(kek)
    service = softhsm.service(kek)
    made = service.generate(CONTEXT, WHY)

    def allow(allowed: bool) -> None:
        with softhsm.session() as session:
            key = find(session, kek)
            key[Attribute.ENCRYPT] = allowed
            key[Attribute.DECRYPT] = allowed

    allow(False)
    with pytest.raises(KeyReleaseRefused, match="may not encrypt and decrypt"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    with pytest.raises(KeyReleaseRefused, match="may not encrypt and decrypt"):
        service.generate(CONTEXT, WHY)
    assert "may not encrypt and decrypt" in (service.probe() or "")
    allow(True)
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    assert service.probe() is None
    service.close()


def test_a_missing_key_is_refused_and_a_missing_token_unavailable(softhsm: SoftHsm) -> None:
    never = softhsm.service(label("never"))
    assert "does not exist" in (never.probe() or "")
    with pytest.raises(KeyReleaseRefused, match="does not exist"):
        never.generate(CONTEXT, WHY)
    elsewhere = Pkcs11KeyService(softhsm.module, "no-such-token", "kek", pin=softhsm.pin)
    with pytest.raises(KeyServiceUnavailable, match="no token with that label"):
        elsewhere.generate(CONTEXT, WHY)
    assert "no token with that label" in (elsewhere.probe() or "")


@pytest.mark.parametrize(("module", "said"), [
    (Path("/nonexistent/libpkcs11.so"), "does not exist"),
    (Path(__file__), "cannot be loaded"),
])
def test_a_module_that_is_not_one_is_a_configuration_error(module: Path, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        Pkcs11KeyService(module, "t", "k", pin="1234")
    with pytest.raises(ConfigError, match=said):
        create_kek(module, "t", "k", "1234")


def test_services_share_the_login_and_close_alone(softhsm: SoftHsm) -> None:
    kek = label("shared")
    softhsm.create_kek(kek)
    asked: list[int] = []

    def pin() -> str:
        asked.append(1)
        return softhsm.pin

    first, second = softhsm.service(kek), Pkcs11KeyService(softhsm.module, softhsm.token_label, kek, pin=pin)
    made = first.generate(CONTEXT, WHY)
    assert second.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    first.close()   # must not log the token out under the second
    assert second.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    assert second.probe() is None
    second.close()
    assert len(asked) == 1   # asked when the service logged in


def test_several_threads_on_one_session(softhsm: SoftHsm) -> None:
    kek = label("threads")
    softhsm.create_kek(kek)
    service = softhsm.service(kek)
    made = [service.generate(CONTEXT + bytes([n]), WHY) for n in range(16)]
    def unwrap(n: int) -> bytes:
        return service.unwrap(made[n % 16].wrapped, CONTEXT + bytes([n % 16]), WHY)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(unwrap, range(160)))
    assert results == [made[n % 16].plaintext for n in range(160)]
    service.close()


def test_the_wrapped_form(softhsm: SoftHsm) -> None:
    kek = label("form")
    softhsm.create_kek(kek)
    service = softhsm.service(kek)
    wrapped = service.generate(CONTEXT, WHY).wrapped
    assert wrapped.startswith("p11v1:")
    assert len(wrapped) == len("p11v1:") + 80   # base64url of 12 + 32 + 16 bytes, no padding
    assert "=" not in wrapped
    assert service.key_ref == f"pkcs11:{softhsm.token_label}/{kek}"
    assert softhsm.pin not in repr(service)
    service.close()


def test_a_forked_worker_initializes_the_module_again(softhsm: SoftHsm) -> None:
    kek = label("forked")
    softhsm.create_kek(kek)
    service = softhsm.service(kek)
    made = service.generate(CONTEXT, WHY)   # the parent has its session and login
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: a fork while other threads exist
        pid = os.fork()
    if pid == 0:   # pragma: no cover - the child reports through its exit status only
        status = 1
        try:
            same = service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
            fresh = service.generate(CONTEXT, WHY)
            mine = proxy.crypto.pkcs11._INITIALIZED_BY[str(softhsm.module)] == os.getpid()
            status = 0 if same and mine and service.unwrap(fresh.wrapped, CONTEXT, WHY) == fresh.plaintext else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext   # the parent's session is untouched
    service.close()
