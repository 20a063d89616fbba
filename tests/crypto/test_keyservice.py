"""The key services' common contract (each kind against its real service), and the release cache (pure).

Every kind must: give back the data key it made for the same context; refuse
(`KeyReleaseRefused`) another context, an altered, truncated or foreign
wrapped key; rewrap to a key that opens to the same data key; answer from
several threads at once. The cache is tested with a fake clock and a fake
inner service that counts its calls.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.keyservice import CachingKeyService, DataKey, Justification, KeyService
from proxy.errors import KeyReleaseRefused, KeyServiceUnavailable
from tests.support.keyservices import Bao, SoftHsm, bao_fixture, softhsm_fixture  # noqa: F401  (the fixtures)

WHY = Justification("d-0001", "IE", "dublin-mail", "2026-12-01")
CONTEXT = b"bailiwick-v1\x00dublin-mail\x00eu-west-1\x00mail-eu-dublin\x00" + b"k" * 1000   # ~1 KiB, as objects
KINDS = ["transit", "pkcs11", "file"]


@pytest.fixture(params=KINDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyService]:
    made: KeyService
    if request.param == "transit":
        server: Bao = request.getfixturevalue("bao")
        made = server.service()
    elif request.param == "pkcs11":
        hsm: SoftHsm = request.getfixturevalue("softhsm")
        label = f"contract-{request.node.name}"
        hsm.create_kek(label)
        made = hsm.service(label)
    else:
        write_key_file(tmp_path / "key.hex")
        made = KeyFileService(tmp_path / "key.hex", allow_insecure=True)
    yield made
    made.close()


def altered(wrapped: str) -> str:
    """`wrapped` with one character of its body changed (both base64 alphabets have A and B)."""
    at = len(wrapped) // 2
    return wrapped[:at] + ("B" if wrapped[at] == "A" else "A") + wrapped[at + 1:]


def test_round_trip(service: KeyService) -> None:
    made = service.generate(CONTEXT, WHY)
    assert len(made.plaintext) == 32
    assert made.wrapped.isascii()
    assert made.plaintext.hex() not in made.wrapped
    assert made.plaintext not in made.wrapped.encode()
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    again = service.generate(CONTEXT, WHY)
    assert again.plaintext != made.plaintext
    assert again.wrapped != made.wrapped


def test_key_ref_names_the_kind(service: KeyService) -> None:
    assert service.key_ref.startswith(f"{service.kind}:")
    assert service.probe() is None


REFUSALS: list[tuple[str, Callable[[str], tuple[str, bytes]]]] = [
    ("another object's context", lambda w: (w, CONTEXT + b"x")),
    ("an empty context", lambda w: (w, b"")),
    ("one character altered", lambda w: (altered(w), CONTEXT)),
    ("truncated", lambda w: (w[:-6], CONTEXT)),
    ("empty", lambda w: ("", CONTEXT)),
    ("not base64", lambda w: (w[: w.rindex(":") + 1] + "!!!!" * 10, CONTEXT)),
    ("another kind's", lambda w: ("vault:v1:" + "A" * 80 if not w.startswith("vault:") else "p11v1:" + "A" * 80,
                                  CONTEXT)),
]


@pytest.mark.parametrize(("case", "change"), REFUSALS, ids=[case for case, _ in REFUSALS])
def test_refused(service: KeyService, case: str, change: Callable[[str], tuple[str, bytes]]) -> None:
    made = service.generate(CONTEXT, WHY)
    wrapped, context = change(made.wrapped)
    with pytest.raises(KeyReleaseRefused) as refused:
        service.unwrap(wrapped, context, WHY)
    assert service.key_ref.split(":", 1)[1].rsplit("/", 1)[-1] in refused.value.message   # names the key
    for material in (made.plaintext.hex(), base64.b64encode(made.plaintext).decode(), repr(made.plaintext)):
        assert material not in refused.value.message


def test_rewrap_keeps_the_data_key(service: KeyService) -> None:
    made = service.generate(CONTEXT, WHY)
    rewrapped = service.rewrap(made.wrapped, CONTEXT)
    assert service.unwrap(rewrapped, CONTEXT, WHY) == made.plaintext
    with pytest.raises(KeyReleaseRefused):
        service.rewrap(made.wrapped, CONTEXT + b"x")


def test_several_threads_at_once(service: KeyService) -> None:
    keys = [service.generate(CONTEXT + bytes([n]), WHY) for n in range(8)]

    def unwrap_all(offset: int) -> list[bytes]:
        return [service.unwrap(keys[(offset + n) % 8].wrapped, CONTEXT + bytes([(offset + n) % 8]), WHY)
                for n in range(8)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(unwrap_all, range(12)))
    for offset, got in enumerate(results):
        assert got == [keys[(offset + n) % 8].plaintext for n in range(8)]


# -- the cache (pure)


class FakeService:
    kind = "fake"
    key_ref = "fake:key"

    def __init__(self) -> None:
        self.unwraps = 0
        self.fail: Exception | None = None
        self.lock = threading.Lock()

    def generate(self, context: bytes, why: Justification) -> DataKey:
        return DataKey(b"g" * 32, "fake:generated")

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        with self.lock:
            self.unwraps += 1
        if self.fail is not None:
            raise self.fail
        return (wrapped.encode() + context)[:32].ljust(32, b"-")

    def rewrap(self, wrapped: str, context: bytes) -> str:
        return wrapped + "'"

    def probe(self) -> str | None:
        return "fake is down"

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cached() -> tuple[CachingKeyService, FakeService, Clock, list[bool]]:
    inner, clock, lookups = FakeService(), Clock(), list[bool]()
    return CachingKeyService(inner, 3, 10.0, clock=clock, on_lookup=lookups.append), inner, clock, lookups


# Each step: (wrapped, context, seconds to advance before) ; expected: inner calls after all steps, lookups seen.
CACHE_CASES = [
    ("miss then hit", [("a", b"1", 0), ("a", b"1", 1)], 1, [False, True]),
    ("another context misses", [("a", b"1", 0), ("a", b"2", 0)], 2, [False, False]),
    ("another wrapped key misses", [("a", b"1", 0), ("b", b"1", 0)], 2, [False, False]),
    ("hit just before the TTL", [("a", b"1", 0), ("a", b"1", 9.9)], 1, [False, True]),
    ("expired at the TTL", [("a", b"1", 0), ("a", b"1", 10)], 2, [False, False]),
    ("expired entry released again is cached again", [("a", b"1", 0), ("a", b"1", 11), ("a", b"1", 1)], 2,
     [False, False, True]),
    ("bounded: the least recently used goes", [("a", b"", 0), ("b", b"", 0), ("c", b"", 0), ("d", b"", 0),
                                              ("a", b"", 0)], 5, [False] * 5),
    ("a hit refreshes recency", [("a", b"", 0), ("b", b"", 0), ("c", b"", 0), ("a", b"", 0), ("d", b"", 0),
                                 ("a", b"", 0), ("b", b"", 0)], 5, [False, False, False, True, False, True, False]),
]


@pytest.mark.parametrize(("case", "steps", "calls", "seen"), CACHE_CASES, ids=[c[0] for c in CACHE_CASES])
def test_cache(cached: tuple[CachingKeyService, FakeService, Clock, list[bool]], case: str,
               steps: list[tuple[str, bytes, float]], calls: int, seen: list[bool]) -> None:
    cache, inner, clock, lookups = cached
    for wrapped, context, advance in steps:
        clock.now += advance
        assert cache.unwrap(wrapped, context, WHY) == inner.unwrap(wrapped, context, WHY)
        inner.unwraps -= 1   # the reference call above is not the cache's
    assert inner.unwraps == calls
    assert lookups == seen
    assert len(cache) <= 3


@pytest.mark.parametrize("error", [KeyReleaseRefused("no"), KeyServiceUnavailable("down")], ids=["refused", "down"])
def test_cache_never_keeps_a_failure(cached: tuple[CachingKeyService, FakeService, Clock, list[bool]],
                                     error: Exception) -> None:
    cache, inner, _, lookups = cached
    inner.fail = error
    for _ in range(2):
        with pytest.raises(type(error)):
            cache.unwrap("a", b"1", WHY)
    assert inner.unwraps == 2
    assert lookups == [False, False]
    assert len(cache) == 0
    inner.fail = None
    cache.unwrap("a", b"1", WHY)
    assert inner.unwraps == 3


def test_cache_passes_the_rest_through(cached: tuple[CachingKeyService, FakeService, Clock, list[bool]]) -> None:
    cache, inner, _, lookups = cached
    layered: KeyService = cache   # a cache is itself a key service
    assert (layered.kind, layered.key_ref) == ("fake", "fake:key")
    assert cache.generate(b"c", WHY) == DataKey(b"g" * 32, "fake:generated")
    assert cache.rewrap("w", b"c") == "w'"
    assert cache.probe() == "fake is down"
    assert lookups == []
    assert inner.unwraps == 0


def test_cache_clear_forgets(cached: tuple[CachingKeyService, FakeService, Clock, list[bool]]) -> None:
    cache, inner, _, _ = cached
    cache.unwrap("a", b"1", WHY)
    cache.clear()
    cache.unwrap("a", b"1", WHY)
    assert inner.unwraps == 2


@pytest.mark.parametrize(("max_keys", "ttl"), [(0, 10.0), (-1, 10.0), (3, 0.0), (3, -1.0)])
def test_cache_bounds_must_be_positive(max_keys: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="key cache"):
        CachingKeyService(FakeService(), max_keys, ttl)


def test_cache_from_several_threads() -> None:
    inner = FakeService()
    counts = {True: 0, False: 0}
    lock = threading.Lock()

    def count(hit: bool) -> None:
        with lock:
            counts[hit] += 1

    cache = CachingKeyService(inner, 4, 60.0, on_lookup=count)

    def work(n: int) -> bytes:
        return cache.unwrap(f"w{n % 6}", b"c", WHY)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(400)))
    assert results == [inner.unwrap(f"w{n % 6}", b"c", WHY) for n in range(400)]
    assert counts[True] + counts[False] == 400
    assert inner.unwraps - 400 == counts[False]   # every miss, and only a miss, asked the inner service
    assert len(cache) <= 4


def test_data_key_repr_hides_the_key() -> None:
    made = DataKey(bytes(range(32)), "vault:v1:abc")
    for shown in (repr(made), str(made), f"{made}", repr([made])):
        assert bytes(range(32)).hex() not in shown
        assert "\\x00\\x01" not in shown
        assert "vault:v1:abc" in shown
