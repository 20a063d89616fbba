"""Fixtures for the identity tests: keys made once per session, a JWKS server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import FakeClock, JwksServer, SigningKey, ec_key, ed_key, rsa_key, start_jwks_server


@pytest.fixture(scope="session")
def rsa() -> SigningKey:
    return rsa_key()


@pytest.fixture(scope="session")
def ec() -> SigningKey:
    return ec_key()


@pytest.fixture(scope="session")
def ed() -> SigningKey:
    return ed_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer()
    server = await start_jwks_server(state)
    try:
        yield state
    finally:
        # Let held requests finish, so closing the server does not wait on them.
        state.release.set()
        await server.close()
