"""Reading one sample from a running proxy's Prometheus exposition on its admin port."""

from __future__ import annotations

import urllib.request

from proxy.harness import ProxyThread


def metric(proxy: ProxyThread, line_start: str) -> float:
    """The value of the first sample whose line starts with `line_start`; 0 if there is none yet."""
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
