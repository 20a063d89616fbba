"""A PKCS#11 HSM as the region's key service (through `python-pkcs11`).

The key-encryption key (KEK) is an AES-256 secret key on the token, found by
its label, sensitive and not extractable: it never leaves the token, and a
KEK that could is refused (at `probe` and at first use), saying so.
`create_kek` makes a suitable one.

A data key is 32 random bytes from the operating system, wrapped on the token
with CKM_AES_GCM (random 12-byte IV, 128-bit tag, associated data the SHA-256
of the context):
``p11v1:`` + base64url without padding of (12-byte IV || ciphertext || 16-byte tag).
Random IVs bound one KEK to about 2^32 wraps (NIST SP 800-38D); tokens that
insist on making the IV themselves (some in FIPS mode) are not supported.
PKCS#11 keys have no versions: `rewrap` re-wraps under the key the label
names now, with a fresh IV.

PKCS#11 logs in an application, not a session, and closing a logged-in
session logs every session of the token out. So the process keeps one
logged-in session per token (`_LOGINS`, counted by its users), and each
service works in a session of its own that does not log in; its operations
run one at a time under a lock (a session is not for concurrent use).
The PIN is a string or a function called when the service logs in; a token
already logged in by another service of this process is not asked again.

PKCS#11 has no channel for the release's `Justification`: bailiwick's own
audit line is the record of why a key was released (the HSM's own log, where
it has one, records the operations).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, cast

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from proxy.crypto.keyservice import (
    DATA_KEY_BYTES,
    DataKey,
    Justification,
    b64url,
    checked_data_key,
    context_digest,
    from_b64url,
)
from proxy.errors import ConfigError, KeyReleaseRefused, KeyServiceUnavailable

PREFIX = "p11v1:"
IV_BYTES, TAG_BITS = 12, 128

# The token is gone or broken: nothing was decided about the key.
_UNREACHABLE = (p11.DeviceError, p11.DeviceMemory, p11.DeviceRemoved, p11.TokenNotPresent,
                p11.TokenNotRecognised, p11.SessionClosed, p11.SessionHandleInvalid, p11.SessionCount)
# A wrapped key that does not authenticate. SoftHSM2 answers a wrong tag with CKR_GENERAL_ERROR.
_NOT_AUTHENTIC = (p11.EncryptedDataInvalid, p11.EncryptedDataLenRange, p11.GeneralError, p11.FunctionFailed)
_PIN_REFUSED = (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired,
                p11.UserPinNotInitialized)


class _Kek(Protocol):
    def __getitem__(self, key: Attribute) -> Any: ...
    def encrypt(self, data: bytes, **kwargs: Any) -> Any: ...
    def decrypt(self, data: bytes, **kwargs: Any) -> Any: ...


class _Login:
    """One logged-in session of a token, shared by every user of the token in this process."""

    def __init__(self, session: Any | None) -> None:
        self.session = session   # None: logged in by someone else in this process
        self.users = 0


_LOGINS: dict[tuple[str, str], _Login] = {}   # (module, token label) -> the process's login
_INITIALIZED_BY: dict[str, int] = {}   # module -> the process that initialized it
_LOGINS_LOCK = threading.Lock()


def load_module(module: Path) -> Any:
    """The PKCS#11 library at `module` (loaded once per process); `ConfigError` when it cannot be."""
    if not module.is_file():
        raise ConfigError(f"the PKCS#11 module {module} does not exist")
    try:
        lib = pkcs11.lib(str(module))
    except (p11.PKCS11Error, OSError) as error:
        raise ConfigError(f"the PKCS#11 module {module} cannot be loaded: {error or type(error).__name__}") from None
    with _LOGINS_LOCK:
        owner = _INITIALIZED_BY.setdefault(str(module), os.getpid())
        if owner != os.getpid():
            # A forked worker: the library's state, sessions and login are the parent's (PKCS#11 asks a
            # child to initialize again), so this process starts afresh.
            try:
                lib.reinitialize()
            except p11.PKCS11Error as error:
                raise ConfigError(f"the PKCS#11 module {module} cannot be initialized again in a forked process: "
                                  f"{type(error).__name__}") from None
            _INITIALIZED_BY[str(module)] = os.getpid()
            for inherited in [k for k in _LOGINS if k[0] == str(module)]:
                del _LOGINS[inherited]
    return lib


def _log_in(token: Any, module: Path, token_label: str, pin: str) -> None:
    with _LOGINS_LOCK:
        login = _LOGINS.get((str(module), token_label))
        if login is None:
            try:
                login = _Login(token.open(user_pin=pin))
            except p11.UserAlreadyLoggedIn:
                login = _Login(None)
            _LOGINS[(str(module), token_label)] = login
        login.users += 1


def _log_out(module: Path, token_label: str) -> None:
    with _LOGINS_LOCK:
        login = _LOGINS.get((str(module), token_label))
        if login is None:
            return
        login.users -= 1
        if login.users <= 0:
            del _LOGINS[(str(module), token_label)]
            if login.session is not None:
                with suppress(p11.PKCS11Error):   # the token is gone: so is its login
                    login.session.close()


def kek_problem(key: Any) -> str | None:
    """Why `key` cannot be bailiwick's KEK (None: it can): AES-256, sensitive, not extractable, encrypts."""
    try:
        if key[Attribute.KEY_TYPE] != KeyType.AES or key[Attribute.VALUE_LEN] != DATA_KEY_BYTES:
            return "it is not an AES-256 key"
        if key[Attribute.EXTRACTABLE]:
            return ("it is extractable (its value could leave the token wrapped): create one with "
                    "CKA_EXTRACTABLE false and CKA_SENSITIVE true")
        if not key[Attribute.SENSITIVE]:
            return ("it is not sensitive (its value can be read from the token): create one with "
                    "CKA_EXTRACTABLE false and CKA_SENSITIVE true")
        if not (key[Attribute.ENCRYPT] and key[Attribute.DECRYPT]):
            return "it may not encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)"
    except p11.PKCS11Error as error:
        return f"its attributes cannot be read ({type(error).__name__})"
    if not (isinstance(key, pkcs11.types.EncryptMixin) and isinstance(key, pkcs11.types.DecryptMixin)):
        return "it may not encrypt and decrypt"
    return None


@contextmanager
def logged_in(module: Path, token_label: str, pin: str) -> Iterator[Any]:
    """The token labelled `token_label`, logged in (through the process's shared login) while in the block.

    `ConfigError` when the module, the token or the PIN cannot be used. Sessions opened on the token
    inside the block need no PIN (the login is the application's).
    """
    lib = load_module(module)
    try:
        token = lib.get_token(token_label=token_label)
        _log_in(token, module, token_label, pin)
    except p11.PKCS11Error as error:
        raise ConfigError(f"the token {token_label!r} of {module} cannot be used: {type(error).__name__}") from None
    try:
        yield token
    finally:
        _log_out(module, token_label)


def create_kek(module: Path, token_label: str, key_label: str, pin: str) -> str:
    """A new KEK labelled `key_label` on the token (AES-256, sensitive, never extractable); its key_ref.

    Refused (`ConfigError`) when the token already holds a secret key with that label.
    """
    with logged_in(module, token_label, pin) as token, token.open(rw=True) as session:
        if list(session.get_objects({Attribute.LABEL: key_label, Attribute.CLASS: ObjectClass.SECRET_KEY})):
            raise ConfigError(f"the token {token_label!r} already holds a key labelled {key_label!r}")
        session.generate_key(KeyType.AES, 8 * DATA_KEY_BYTES, label=key_label, store=True, template={
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
            Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False, Attribute.VERIFY: False,
            Attribute.DERIVE: False,
        })
    return f"pkcs11:{token_label}/{key_label}"


class Pkcs11KeyService:
    """The AES-256 key labelled `key_label` on the token labelled `token_label` of the PKCS#11 `module`."""

    kind = "pkcs11"

    def __init__(self, module: Path, token_label: str, key_label: str, *, pin: str | Callable[[], str]) -> None:
        self.module = module
        self.token_label = token_label
        self.key_label = key_label
        self.key_ref = f"pkcs11:{token_label}/{key_label}"
        self._pin = pin
        self._lib = load_module(module)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._session: Any | None = None
        self._kek: _Kek | None = None
        self._where = f"PKCS#11 key {key_label!r} on token {token_label!r}"

    def __repr__(self) -> str:
        return f"Pkcs11KeyService({self.key_ref} in {self.module})"   # never the PIN

    # -- the session and the key, under self._lock

    def _open(self) -> Any:
        if self._session is None:
            try:
                token = self._lib.get_token(token_label=self.token_label)
            except (p11.NoSuchToken, p11.MultipleTokensReturned) as error:
                raise KeyServiceUnavailable(f"{self._where}: the module {self.module} has "
                                            f"{'no' if isinstance(error, p11.NoSuchToken) else 'more than one'} "
                                            "token with that label") from None
            try:
                _log_in(token, self.module, self.token_label, self._pin() if callable(self._pin) else self._pin)
            except _PIN_REFUSED as error:
                raise KeyReleaseRefused(f"{self._where}: the token refused the PIN ({type(error).__name__})") from None
            try:
                self._session = token.open()
            except BaseException:
                _log_out(self.module, self.token_label)
                raise
        return self._session

    def _find(self) -> _Kek:
        if self._pid != os.getpid():   # first use in a forked worker: nothing of the parent's is usable here
            try:
                self._lib = load_module(self.module)
            except ConfigError as error:
                raise KeyServiceUnavailable(f"{self._where}: {error}") from None
            self._session, self._kek, self._pid = None, None, os.getpid()
        if self._kek is None:
            session = self._open()
            try:
                key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=self.key_label)
            except p11.NoSuchKey:
                raise KeyReleaseRefused(f"{self._where} does not exist (destroyed, or never created)") from None
            except p11.MultipleObjectsReturned:
                raise KeyReleaseRefused(f"{self._where} is ambiguous: several keys have that label") from None
            problem = kek_problem(key)
            if problem is not None:
                raise KeyReleaseRefused(f"{self._where} cannot be used: {problem}")
            self._kek = cast(_Kek, key)
        return self._kek

    def _drop(self) -> None:
        """Forget the session (and the key's handle, which belongs to it): the next call opens again."""
        if self._pid != os.getpid():   # a forked worker's copy: the session is the parent's to close
            self._session = None
        if self._session is not None:
            session, self._session = self._session, None
            with suppress(p11.PKCS11Error):   # the token is gone
                session.close()
            _log_out(self.module, self.token_label)
        self._kek = None

    def _with_kek(self, operation: str, work: Callable[[_Kek], bytes]) -> bytes:
        """`work(kek)` under the lock; the token's errors mapped to bailiwick's."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return work(self._find())
                except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                    self._kek = None   # destroyed, or re-created under the same label: look again, once
                    if attempt == 2:
                        raise KeyReleaseRefused(f"{self._where} does not exist (destroyed)") from None
                except _UNREACHABLE as error:
                    self._drop()
                    raise KeyServiceUnavailable(f"{self._where}: the token is unavailable "
                                                f"({type(error).__name__})") from None
                except (KeyReleaseRefused, KeyServiceUnavailable):
                    raise
                except p11.PKCS11Error as error:
                    # Perhaps the key's use was withdrawn (CKA_DECRYPT false, the freeze): a fresh look says so
                    # with a refusal; otherwise the token failed.
                    self._kek = None
                    with suppress(p11.PKCS11Error):
                        self._find()
                    raise KeyServiceUnavailable(f"{self._where}: {operation} failed ({type(error).__name__})") from None
        raise AssertionError("unreachable")   # pragma: no cover - the loop returns or raises

    def _wrap(self, plaintext: bytes, context: bytes) -> str:
        iv = os.urandom(IV_BYTES)
        params = GCMParams(iv, context_digest(context), TAG_BITS)
        sealed = self._with_kek("wrap", lambda kek: bytes(
            kek.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)))
        return PREFIX + b64url(iv + sealed)

    def generate(self, context: bytes, why: Justification) -> DataKey:
        plaintext = os.urandom(DATA_KEY_BYTES)
        return DataKey(plaintext, self._wrap(plaintext, context))

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        return self._unwrap(wrapped, context)

    def rewrap(self, wrapped: str, context: bytes) -> str:
        return self._wrap(self._unwrap(wrapped, context), context)

    def _unwrap(self, wrapped: str, context: bytes) -> bytes:
        if not wrapped.startswith(PREFIX):
            raise KeyReleaseRefused(f"{self._where}: the wrapped key is not one of a PKCS#11 key service "
                                    f"(no {PREFIX} prefix)")
        try:
            raw = from_b64url(wrapped.removeprefix(PREFIX))
        except ValueError:
            raise KeyReleaseRefused(f"{self._where}: the wrapped key is not valid base64url") from None
        if len(raw) < IV_BYTES + TAG_BITS // 8:
            raise KeyReleaseRefused(f"{self._where}: the wrapped key is too short")
        params = GCMParams(raw[:IV_BYTES], context_digest(context), TAG_BITS)

        def decrypt(kek: _Kek) -> bytes:
            try:
                return bytes(kek.decrypt(raw[IV_BYTES:], mechanism=Mechanism.AES_GCM, mechanism_param=params))
            except _NOT_AUTHENTIC:
                raise KeyReleaseRefused(f"{self._where}: the wrapped key does not authenticate (another key, "
                                        "another object's context, or altered)") from None

        return checked_data_key(self._with_kek("unwrap", decrypt), self._where)

    def probe(self) -> str | None:
        try:
            with self._lock:
                self._kek = None   # look at the token now, not at what was found before
                try:
                    self._find()
                except _UNREACHABLE as error:
                    self._drop()
                    raise KeyServiceUnavailable(f"{self._where}: the token is unavailable "
                                                f"({type(error).__name__})") from None
        except (KeyReleaseRefused, KeyServiceUnavailable) as error:
            return error.message
        except p11.PKCS11Error as error:
            return f"{self._where}: the token cannot be used ({type(error).__name__})"
        return None

    def close(self) -> None:
        with self._lock:
            self._drop()
