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

__version__ = "0.1.0"
