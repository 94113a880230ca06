"""Rollback with sticky stages beside without (issue 21's goal: rollback time unchanged with
stickiness on), through the lab's HAProxy and nginx, 8 trials each, in turn:

- rollback: the shift from 50 % to 0 as the daemon's rollback runs it (apply and read back);
  sticky adds the servers' maintenance state (HAProxy) or the colour maps (nginx);
- clients: 200 returning clients keep coming back throughout, in both; the time from the rollback's
  start to the last request green answered (HAProxy: none once its command has run; nginx:
  once its reload has taken).
"""

from __future__ import annotations

import time

import pytest

from config.traffic import HAProxySettings
from controller.lab.lab import Lab
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.nginx import NginxBalancer
from controller.traffic.shift import shift
from tests.bench.conftest import BENCH_TIMEOUT, median, wait_quiet
from tests.integration.test_sticky import Browsers, Client, sticky_balancer, sticky_nginx

TRIALS = 8
CLIENTS = 200


def _rollback(lb: HAProxyBalancer | NginxBalancer, url: str) -> tuple[float, float]:
    """(ms the rollback's shift took, s from its start to green's last answer) from 50 %,
    clients coming back through url throughout."""
    shift(lb, 50, observe=False)
    browsers = Browsers(url)
    clients = [Client() for _ in range(CLIENTS)]
    try:
        browsers.run(clients, 3)
        with browsers.coming_back(lambda: clients):
            time.sleep(0.3)
            started = time.monotonic()
            took = shift(lb, 0, observe=False).apply_seconds * 1000
            time.sleep(1.5)
    finally:
        browsers.close()
    greens = [at - started for c in clients for at, env in zip(c.sent, c.seen, strict=True)
              if env == "green" and at >= started]
    return took, max(greens, default=0.0)


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_rollback_with_and_without_stickiness(lab: Lab) -> None:
    blue, green = lab.state.servers_of("blue"), lab.state.servers_of("green")
    Balancer = HAProxyBalancer | NginxBalancer
    pairs: dict[str, tuple[tuple[Balancer, str], tuple[Balancer, str]]] = {
        "HAProxy": ((HAProxyBalancer(HAProxySettings(socket=lab.state.haproxy_socket), blue, green),
                     lab.state.frontend_url), (sticky_balancer(lab), lab.state.sticky_url)),
        "nginx": ((NginxBalancer(lab.state.nginx_settings(), blue, green),
                   f"http://127.0.0.1:{lab.state.port('nginx')}"),
                  (sticky_nginx(lab), lab.state.nginx_sticky_url)),
    }
    wait_quiet("the sticky rollback benchmark")
    print(f"\nrollback from 50 % to 0, {TRIALS} trials each, in turn (medians):")
    for name, ((plain, plain_url), (sticky, url)) in pairs.items():
        plain_ms: list[float] = []
        sticky_ms: list[float] = []
        last_green: list[float] = []
        try:
            for _ in range(TRIALS):
                plain_ms.append(_rollback(plain, plain_url)[0])
                took, seen = _rollback(sticky, url)
                sticky_ms.append(took)
                last_green.append(seen)
        finally:
            for lb in (plain, sticky):
                shift(lb, 0, observe=False)
                lb.close()
        print(f"    {name:8} plain {median(plain_ms):6.1f} ms, sticky {median(sticky_ms):6.1f} ms: "
              f"sticky / plain {median(sticky_ms) / median(plain_ms):.2f}; green's last answer "
              f"{median(last_green) * 1000:.0f} ms after the start (max {max(last_green) * 1000:.0f})")
        assert max(last_green) <= 1.0
