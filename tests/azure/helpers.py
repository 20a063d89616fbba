"""Shared helpers of the Azure tests: a settings value, header builders, requests read by the proxy's reader."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.azure.request import AzureRequest, RequestReader
from proxy.config import AzureSettings

ACCOUNT = "devstoreaccount1"
EMULATOR = "127.0.0.1:10000"
VIRTUAL = f"{ACCOUNT}.blob.core.windows.net"
SETTINGS = AzureSettings(
    endpoints=("localhost", "127.0.0.1", "::1", "emulator.example.test"),
    account_host_suffixes=("blob.core.windows.net", "blob.example.test"),
)
READER = RequestReader(SETTINGS)


def headers(host: str | None = EMULATOR, *pairs: tuple[str, str]) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    if host is not None:
        result.add("Host", host)
    for name, value in pairs:
        result.add(name, value)
    return result


def parse(method: str, target: str, host: str = EMULATOR, *pairs: tuple[str, str]) -> AzureRequest:
    """Read a request; `target` is path-style (``/ACCOUNT/...``) unless `host` names the account."""
    return READER.read(method, target, headers(host, *pairs))
