"""Traffic shifting through the lab's real HAProxy and nginx, with its apps under load: every
stage read back from the balancer and checked against the split the clients actually saw."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.traffic import HAProxySettings, NginxSettings
from controller.cli import app
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, LoadReport
from controller.traffic.balancer import BadTrafficInput, TrafficError
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.nginx import NginxBalancer
from controller.traffic.shift import Seen, shift
from tests.trafficfixtures import lab_haproxy

runner = CliRunner()
STAGES = (10, 50, 100, 0)


def served_share(report: LoadReport, since: float, until: float) -> tuple[float, int]:
    """Green's share of the requests sent in [since, until], as the clients saw them."""
    window = [s for s in report.samples if since <= s.at <= until and s.env]
    green = sum(1 for s in window if s.env == "green")
    return (100.0 * green / len(window) if window else float("nan")), len(window)


def run_stages(lb: HAProxyBalancer | NginxBalancer, url: str, settle: float = 0.0) -> None:
    """0 -> 10 -> 50 -> 100 -> 0 under load; after each, the clients' split over the next second
    (from `settle` after the shift returned) must match."""
    with HttpLoad(url, rate=400) as load:
        time.sleep(0.5)
        for target in STAGES:
            result = shift(lb, target, confirm_timeout=10)
            assert result.after is not None
            assert result.after.green_percent == pytest.approx(target, abs=0.01)
            since = time.monotonic() + settle
            # Half a second more, so requests sent late in the window have been answered.
            time.sleep(settle + 1.5)
            share, n = served_share(load.report(), since, since + 1.0)
            assert n > 200, f"too few requests seen at {target} %"
            assert share == pytest.approx(target, abs=5), f"clients saw {share:.1f} % at {target} %"
        report = load.stop()
    assert report.failed == 0


@pytest.mark.check
def test_haproxy_stages_with_two_servers_each_are_read_back_and_observed(
        lab: Lab, hap: HAProxyBalancer) -> None:
    with HttpLoad(lab.state.frontend_url, rate=400):
        time.sleep(0.5)
        result = shift(hap, 10, confirm_timeout=10)
    assert result.observed.seen is Seen.CONFIRMED
    assert result.observed.green_percent == pytest.approx(10, abs=2)
    assert result.after is not None
    assert result.after.detail == {"blue1": 9, "blue2": 9, "green1": 1, "green2": 1}
    run_stages(hap, lab.state.frontend_url)


def test_haproxy_restart_between_stages_is_seen_and_reapplied(lab: Lab, hap: HAProxyBalancer) -> None:
    shift(hap, 50, observe=False)
    lab.restart("haproxy")  # runtime weights are lost: back to the config file's 100 % blue
    real = hap.read()  # the old session is gone; this reconnects
    assert real.green_percent == 0
    with HttpLoad(lab.state.frontend_url, rate=300):
        time.sleep(0.3)
        result = shift(hap, 50, confirm_timeout=10)
    assert result.after is not None
    assert result.after.green_percent == 50
    assert result.observed.seen is Seen.CONFIRMED


def test_haproxy_over_tcp_and_without_traffic(lab: Lab, hap: HAProxyBalancer) -> None:
    tcp = lab_haproxy(lab, socket=None, address=f"127.0.0.1:{lab.state.port('haproxy_admin')}")
    try:
        result = shift(tcp, 30, confirm_timeout=5)
        assert result.after is not None
        assert result.after.green_percent == 30
        assert result.observed.seen is Seen.NO_TRAFFIC  # read back, but nothing to see served
        assert hap.read().green_percent == 30
    finally:
        tcp.close()


def test_unknown_backend_or_server_is_a_clear_error_that_changes_nothing(
        lab: Lab, hap: HAProxyBalancer) -> None:
    before = hap.read()
    ghost = HAProxyBalancer(HAProxySettings(socket=lab.state.haproxy_socket),
                            ["blue1"], ["green1", "green9"])
    with pytest.raises(BadTrafficInput, match="no server 'green9'"):
        shift(ghost, 50)
    nobackend = lab_haproxy(lab, backend="nosuch")
    with pytest.raises(BadTrafficInput, match="no backend 'nosuch'"):
        shift(nobackend, 50)
    with pytest.raises(BadTrafficInput, match="not a usable HAProxy name"):
        HAProxyBalancer(HAProxySettings(socket=lab.state.haproxy_socket), ["blue1"], ["green1;x"])
    assert hap.read() == before
    for lb in (ghost, nobackend):
        lb.close()


def test_unreachable_socket_is_an_error_naming_it(tmp_path: Path) -> None:
    lb = HAProxyBalancer(HAProxySettings(socket=tmp_path / "missing.sock", timeout=0.2),
                         ["blue1"], ["green1"])
    with pytest.raises(TrafficError, match=r"missing\.sock is unreachable"):
        lb.read()


def test_nginx_stages_are_tested_reloaded_read_back_and_served(lab: Lab) -> None:
    lb = NginxBalancer(lab.state.nginx_settings(), lab.state.servers_of("blue"),
                       lab.state.servers_of("green"))
    try:
        # A reload is graceful: old workers finish their requests before the new weights rule.
        run_stages(lb, lab.state.nginx_url, settle=0.3)
    finally:
        shift(lb, 0, observe=False)


def test_nginx_rejected_config_puts_the_previous_file_back(lab: Lab) -> None:
    good = lab.state.nginx_settings()
    before = good.upstream_file.read_text()
    bad = NginxSettings.model_validate({**good.model_dump(), "directives": ["keepalive not-a-number"]})
    lb = NginxBalancer(bad, lab.state.servers_of("blue"), lab.state.servers_of("green"))
    with pytest.raises(TrafficError, match="rejected the new upstream file"):
        shift(lb, 50)
    assert good.upstream_file.read_text() == before
    with HttpLoad(lab.state.nginx_url, rate=200) as load:
        time.sleep(1)
    assert load.report().by_env()["green"] == 0
    assert load.report().failed == 0


def test_cli_shift_traffic_and_rollback_against_the_lab(lab: Lab, hap: HAProxyBalancer) -> None:
    config = ["--config", str(lab.state.config_file)]
    result = runner.invoke(app, ["shift", "--target", "green", "--percentage", "50", "--json", *config])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["after"]["green_percent"] == 50
    assert data["confirmed"] is True
    shown = json.loads(runner.invoke(app, ["traffic", "--json", *config]).stdout)
    assert shown["split"]["green_percent"] == 50
    assert set(shown["counters"]) == {"blue", "green"}
    with HttpLoad(lab.state.frontend_url, rate=300):
        time.sleep(0.3)
        result = runner.invoke(app, ["rollback", "--json", *config])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["after"]["green_percent"] == 0
    assert data["observed"]["seen"] == "confirmed"
    assert hap.read().green_percent == 0
    result = runner.invoke(app, ["shift", "--target", "blue", "--percentage", "101", *config])
    assert result.exit_code == 2


def test_cli_unknown_server_exits_2_naming_it(lab: Lab, tmp_path: Path) -> None:
    text = lab.state.config_file.read_text().replace('green_servers = ["green1", "green2"]',
                                                     'green_servers = ["green1", "nope"]')
    assert '"nope"' in text
    config = tmp_path / "cutover.toml"
    config.write_text(text.replace('socket = "haproxy.sock"',
                                   f'socket = "{lab.state.haproxy_socket}"'))
    result = runner.invoke(app, ["shift", "--target", "green", "--percentage", "10",
                                 "--config", str(config)])
    assert result.exit_code == 2
    assert "no server 'nope'" in result.output
