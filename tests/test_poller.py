"""Poller: a step runs every interval, an error in one does not end the task, and stop ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.poller import Poller


@pytest.mark.parametrize("fails", [False, True])
async def test_steps_go_on_after_an_error_and_stop_ends_them(fails: bool, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if fails:
            raise RuntimeError("surprise")

    poller = Poller(0.01, step, logging.getLogger("test.poller"), "look failed")
    poller.start()
    for _ in range(200):   # bounded: at most 2 s
        if calls >= 3:
            break
        await asyncio.sleep(0.01)
    await poller.stop()
    assert calls >= 3
    seen = calls
    await asyncio.sleep(0.05)
    assert calls == seen   # nothing runs after stop
    assert ("look failed" in caplog.text) is fails


async def test_stop_before_start_is_harmless() -> None:
    async def step() -> None:
        raise AssertionError("never called")

    await Poller(0.01, step, logging.getLogger("test.poller"), "look failed").stop()
