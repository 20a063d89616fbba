"""bailiwick: a data residency enforcement proxy for storage APIs.

A request reaches the storage server only if the policy says the caller's
jurisdiction may perform that action on data that lives in that region. The
request flows through the package in one direction::

    identity -> resources -> policy -> forward -> audit/metrics
    (identity/)  (s3/)      (policy/)  (upstream/)  (recording.py)

`gateway.py` walks each request through those steps, asking `evaluate.py`
(no I/O) what to send; `lifecycle.py` starts, drains and stops a proxy,
`workers.py` runs its processes; `cli.py` is the command line.
"""

from __future__ import annotations

import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES

__version__ = "0.1.0"


def build() -> str:
    """Which build runs: ``"compiled with mypyc"`` (the compiled wheel, scripts/build-compiled) or ``"pure Python"``.

    Told by where the request evaluator would be loaded from (an extension module or a .py file), without
    importing it: `bailiwick --version` says it.
    """
    spec = importlib.util.find_spec("proxy.evaluate")
    origin = spec.origin if spec is not None else None
    return "compiled with mypyc" if origin and origin.endswith(tuple(EXTENSION_SUFFIXES)) else "pure Python"
