"""A match stage (staff first) through the lab's real HAProxy and nginx: only requests that
carry the header's value go to green, every other to blue; green is judged on them; a
rollback ends the match at once; the daemon holds the stage at its gate until promoted."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config import Settings
from config.slo import SloCheck
from config.traffic import HAProxySettings, Match
from controller.cli.run import status_data
from controller.daemon.phases import Phase
from controller.daemon.watch import HAProxyStats
from controller.lab import haproxy as lab_haproxy_config
from controller.lab import nginx as lab_nginx_config
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad
from controller.slo.haproxy_source import HAProxySource
from controller.state.journal import Journal
from controller.traffic.balancer import BadTrafficInput
from controller.traffic.haproxy import HAProxyBalancer, RuntimeApi
from controller.traffic.nginx import NginxBalancer
from controller.traffic.shift import shift
from tests.integration.test_daemon import Running, add_intent

STAFF = Match(header=lab_haproxy_config.MATCH_HEADER, value="1")


def haproxy_match(lab: Lab, acl: Path | None = None) -> HAProxyBalancer:
    settings = HAProxySettings(socket=lab.state.haproxy_socket,
                               match_acl=acl or lab.root / lab_haproxy_config.MATCH_ACL,
                               match_backend=lab_haproxy_config.MATCH_BACKEND)
    return HAProxyBalancer(settings, lab.state.servers_of("blue"), lab.state.servers_of("green"))


@dataclass
class Routed:
    lb: HAProxyBalancer | NginxBalancer
    url: str


@pytest.fixture(params=["haproxy", "nginx"])
def routed(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Routed]:
    if request.param == "haproxy":
        lb: HAProxyBalancer | NginxBalancer = haproxy_match(lab)
        url = lab.state.frontend_url
    else:
        lb = NginxBalancer(lab.state.nginx_settings(sticky=True), lab.state.servers_of("blue"),
                           lab.state.servers_of("green"), sticky_cookie=lab_nginx_config.STICKY_COOKIE,
                           match_header=STAFF.header)
        url = lab.state.nginx_sticky_url
    try:
        yield Routed(lb, url)
    finally:
        shift(lb, 0, observe=False)
        lb.close()


def answered_by(url: str, n: int, headers: dict[str, str]) -> dict[str, int]:
    """Which colour answered each of n requests, each a new client (no cookie)."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        response = httpx.get(f"{url}/api/health", headers=headers, timeout=10)
        response.raise_for_status()
        seen[response.json()["env"]] += 1
    return dict(seen)


def taken(url: str, headers: dict[str, str], colour: str) -> None:
    """nginx reloads in the background (for a moment old and new workers both take new
    connections): wait, 2 s at most, until 10 requests in a row answer as the new file says.
    HAProxy's change is in place when its command returns."""
    deadline = time.monotonic() + 2.0
    while answered_by(url, 10, headers) != {colour: 10} and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_match_stage_sends_only_matching_requests_to_green_until_a_rollback(routed: Routed) -> None:
    shift(routed.lb, 0, match=STAFF, observe=False)
    assert routed.lb.matching() == "1"
    taken(routed.url, {STAFF.header: "1"}, "green")
    assert answered_by(routed.url, 60, {STAFF.header: "1"}) == {"green": 60}
    assert answered_by(routed.url, 60, {}) == {"blue": 60}
    assert answered_by(routed.url, 30, {STAFF.header: "0"}) == {"blue": 30}
    result = shift(routed.lb, 0, observe=False)  # the rollback: the match ends first
    assert result.after is not None
    assert routed.lb.matching() is None
    taken(routed.url, {STAFF.header: "1"}, "blue")
    assert answered_by(routed.url, 60, {STAFF.header: "1"}) == {"blue": 60}


def test_green_is_judged_on_the_matched_requests(lab: Lab) -> None:
    lb = haproxy_match(lab)
    source = HAProxySource(HAProxyStats(RuntimeApi(lab.state.haproxy_socket, None, 2.0)), "app",
                           {"blue": lab.state.servers_of("blue"), "green": lab.state.servers_of("green")},
                           match_backend=lab_haproxy_config.MATCH_BACKEND)
    check = SloCheck.model_validate({"name": "errors", "source": "haproxy", "metric": "error_ratio",
                                     "max": 0.05})
    try:
        shift(lb, 0, match=STAFF, observe=False)
        source.measure(check)
        staff = answered_by(lab.state.frontend_url, 40, {STAFF.header: "1"})
        others = answered_by(lab.state.frontend_url, 80, {})
        measured = source.measure(check)
    finally:
        shift(lb, 0, observe=False)
        lb.close()
        source.close()
    assert staff == {"green": 40}
    assert others == {"blue": 80}
    assert measured.green.samples == 40
    assert measured.green.value == 0
    assert measured.blue.samples == 80


def test_a_match_acl_haproxy_did_not_load_is_refused_naming_the_setting(lab: Lab) -> None:
    lb = haproxy_match(lab, acl=Path("/etc/haproxy/not-loaded.acl"))
    try:
        with pytest.raises(BadTrafficInput, match=r"traffic.haproxy.match_acl: HAProxy loaded no ACL"):
            shift(lb, 0, match=STAFF, observe=False)
        assert haproxy_match(lab).matching() is None  # nothing changed
    finally:
        lb.close()


@pytest.mark.timeout(300)
def test_the_daemon_holds_a_staff_stage_at_its_gate_until_promoted(lab: Lab, tmp_path: Path) -> None:
    """`cutover run` on one shared database: staff first (judged on their requests alone), the
    gate holds the stage baked until `cutover promote`, then 50 %, where an abort ends it all
    on blue."""
    haproxy = {"socket": str(lab.state.haproxy_socket), "backend": "app",
               "match_acl": str(lab.root / lab_haproxy_config.MATCH_ACL),
               "match_backend": lab_haproxy_config.MATCH_BACKEND}
    settings = Settings.model_validate({
        "service": "shop", "switchover": {"method": "none"},
        "traffic": {"driver": "haproxy", "haproxy": haproxy,
                    "blue_servers": lab.state.servers_of("blue"),
                    "green_servers": lab.state.servers_of("green"),
                    "stages": [{"match": STAFF.model_dump(), "bake": "1s", "gate": "promote"},
                               {"weight": 50, "bake": "1m"}, {"weight": 100, "bake": "1s"}]},
        "slo": [{"name": "5xx-ratio", "source": "haproxy", "metric": "error_ratio", "max": 0.05,
                 "interval": "500ms", "failure_limit": 2, "min_samples": 10}],
        "state": {"path": str(tmp_path / "state.db")}, "metrics": {"enabled": False}})
    lb = haproxy_match(lab)
    with HttpLoad(lab.state.frontend_url, rate=150, write_ratio=0), \
            HttpLoad(lab.state.frontend_url, rate=60, write_ratio=0, headers={STAFF.header: "1"}):
        run = Running(settings, until_done=True)
        try:
            run.wait_for(lambda s: s.phase is Phase.SHIFTING and s.gated, 60, "the staff stage's gate")
            time.sleep(3)  # baked long since: it waits
            assert (run.daemon.state.stage, run.daemon.state.gated) == (0, True)
            assert lb.matching() == "1"
            assert lb.read().green_percent == 0
            assert answered_by(lab.state.frontend_url, 20, {STAFF.header: "1"}) == {"green": 20}
            assert answered_by(lab.state.frontend_url, 20, {}) == {"blue": 20}
            store = Journal(settings.state.path)
            status = status_data(store)
            store.close()
            assert status["gated"]
            assert "waiting at its gate for `cutover promote`" in status["reason"]
            add_intent(settings, "promote")
            run.wait_for(lambda s: s.stage == 1 and s.applied, 60, "the 50 % stage")
            assert lb.matching() is None
            assert lb.read().green_percent == 50
            add_intent(settings, "abort")
            run.wait_for(lambda s: s.phase is Phase.ROLLED_BACK, 60, "the rollback")
        finally:
            run.stop()
    assert lb.read().green_percent == 0
    assert lb.matching() is None
    lb.close()
