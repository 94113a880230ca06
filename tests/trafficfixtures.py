"""The lab's HAProxy as a fixture for traffic and SLO tests: whatever a test shifts or breaks,
the shared lab goes back to 100 % blue with healthy green apps."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from config.traffic import HAProxySettings
from controller.lab.lab import Lab
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.shift import shift


def set_fault(lab: Lab, env: str, error_ratio: float = 0.0, latency_ms: float = 0.0) -> None:
    """The fault switch of every app server of env (no arguments: healthy)."""
    for server in lab.state.servers_of(env):
        set_server_fault(lab, server, error_ratio=error_ratio, latency_ms=latency_ms)


def set_server_fault(lab: Lab, server: str, **fault: object) -> None:
    """One app server's fault switch: hang=True, down_for=seconds, ... (none: healthy)."""
    httpx.post(f"{lab.state.app_url(server)}/admin/fault", timeout=5, json=fault).raise_for_status()


def lab_haproxy(lab: Lab, **settings: object) -> HAProxyBalancer:
    return HAProxyBalancer(HAProxySettings.model_validate({"socket": str(lab.state.haproxy_socket),
                                                           **settings}),
                           lab.state.servers_of("blue"), lab.state.servers_of("green"))


@pytest.fixture
def hap(lab: Lab) -> Iterator[HAProxyBalancer]:
    lb = lab_haproxy(lab)
    try:
        yield lb
    finally:
        for server in lab.state.servers_of("green"):  # also lifts a hang
            set_server_fault(lab, server)
        shift(lb, 0, observe=False)
        # Zeroed counters, rtime's 1024-request averages included: the next test's latency
        # checks start from no history rather than from what this one's faults left.
        lb.api.execute("clear counters all")
        lb.close()
