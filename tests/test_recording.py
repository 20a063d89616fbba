"""Decision ids: random, unique, and never shared by two processes of a fork."""

from __future__ import annotations

import os
import re

from proxy.recording import DecisionIds


def test_ids_are_sixteen_random_bytes_in_hex_and_never_repeat() -> None:
    ids = DecisionIds()
    drawn = [ids.next() for _ in range(1000)]   # several draws of the pool
    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_forked_process_draws_its_own_ids() -> None:
    ids = DecisionIds()
    ids.next()                                   # the parent holds a drawn pool
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover - the child's coverage is not collected
        os.write(write_end, ids.next().encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = pipe.read()
    os.waitpid(child, 0)
    assert in_child
    assert in_child != ids.next()                # the parent's next id was the child's to take, had it kept the pool
