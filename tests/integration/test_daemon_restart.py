"""`cutover run` as a real process, SIGKILLed in each phase, then started again on the same
state store: it reconciles and ends correct. A client writes through PgBouncer the whole
time; at the end every write it saw acknowledged is on the primary, blue and green are equal by
checksum (the replication that runs then, either way, has caught up), and HAProxy holds the
weights of the phase the cutover ended in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, pgbench_init
from controller.state.journal import Journal
from controller.traffic.haproxy import HAProxyBalancer
from sync.status import wait_applied
from tests.integration.test_daemon import BUSY_HOST_LATENCY_FLOOR, daemon_settings
from tests.switchfixtures import AckedWriter, Routed
from tests.syncfixtures import assert_same_data
from tests.tomltext import config_toml
from tests.trafficfixtures import set_fault

Status = dict[str, Any]


class DaemonProcess:
    """`python -m controller run --config FILE`, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.settings_listen = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, listen: str) -> None:
        self.settings_listen = listen
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "controller", "run", "--config",
                                          str(self.config), "--period", "0.1"],
                                         stdout=out, stderr=subprocess.STDOUT)

    def status(self) -> Status | None:
        try:
            data: Status = httpx.get(f"http://{self.settings_listen}/status", timeout=2).json()
            return data
        except (httpx.HTTPError, ValueError):
            return None

    def wait_for(self, ok: Callable[[Status], bool], timeout: float, what: str) -> Status:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            assert self.proc.poll() is None, f"the daemon exited before {what}:\n{self.tail()}"
            status = self.status()
            if status is not None and ok(status):
                return status
            assert time.monotonic() < deadline, f"no {what} within {timeout}s:\n{self.tail()}"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


def phase_is(*phases: str) -> Callable[[Status], bool]:
    return lambda s: s["phase"] in phases


def switch_step(settings: Settings, step: str) -> Callable[[Status], bool]:
    """The running switch has journaled this step (read from the daemon's store)."""
    def ok(_: Status) -> bool:
        store = Journal(settings.state.path)
        try:
            return any(e.data.get("step") == step for e in store.events("switch"))
        finally:
            store.close()
    return ok


Scenario = tuple[dict[str, Any], Callable[[DaemonProcess, Settings, Lab], None]]


def at_phase(*phases: str) -> Callable[[DaemonProcess, Settings, Lab], None]:
    def wait(d: DaemonProcess, _s: Settings, _lab: Lab) -> None:
        d.wait_for(phase_is(*phases), 120, f"phase {'/'.join(phases)}")
    return wait


def at_switch_step(step: str) -> Callable[[DaemonProcess, Settings, Lab], None]:
    def wait(d: DaemonProcess, s: Settings, _lab: Lab) -> None:
        d.wait_for(switch_step(s, step), 120, f"switch step {step!r}")
    return wait


def at_stage(stage: int) -> Callable[[DaemonProcess, Settings, Lab], None]:
    def wait(d: DaemonProcess, _s: Settings, _lab: Lab) -> None:
        d.wait_for(lambda s: s["phase"] == "shifting" and s["stage"] == stage and s["applied"]
                   and s["bake_seconds"] > 1.0, 120, f"stage {stage + 1} baking")
    return wait


def in_rollback(d: DaemonProcess, _s: Settings, lab: Lab) -> None:
    d.wait_for(lambda s: s["phase"] == "shifting" and s["applied"], 120, "stage 1 live")
    set_fault(lab, "green", error_ratio=0.5)
    d.wait_for(phase_is("rolling_back"), 60, "the rollback")


# Stages: 10 % then 100 %, bakes long enough to be killed in; finalize by hand (the test
# compares both sides while the reverse replication still runs).
SCENARIOS: dict[str, Scenario] = {
    "copying": ({}, at_phase("copying")),
    "streaming": ({"switchover": {"auto": False}}, at_phase("streaming")),
    "switch fenced": ({"switchover": {"verify_at": "in_pause", "verify": "checksums"}},
                      at_switch_step("fence: done")),
    "switch resumed": ({"switchover": {"verify": "checksums"}}, at_switch_step("resume: done")),
    "stage 1": ({}, at_stage(0)),
    "stage 2": ({}, at_stage(1)),
    "rolling back": ({"rollback": {"database": "revert"}}, in_rollback),
}


@pytest.fixture
def healthy_green(lab: Lab) -> Iterator[None]:
    yield
    set_fault(lab, "green")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("where", list(SCENARIOS))
def test_killed_then_restarted_ends_correct(routed: Routed, lab: Lab, hap: HAProxyBalancer,
                                           tmp_path: Path, healthy_green: None, where: str) -> None:
    over, wait = SCENARIOS[where]
    pgbench_init(routed.pair.dsn("blue"), 5 if where == "copying" else 1)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    base = daemon_settings(routed, lab, tmp_path, traffic={
        "finalize": "manual", "stages": [{"weight": 10, "bake": "4s"}, {"weight": 100, "bake": "4s"}]},
        latency_floor=BUSY_HOST_LATENCY_FLOOR)
    data = base.model_dump(mode="json")
    for section, values in over.items():
        data[section] = {**data[section], **values}
    settings = Settings.model_validate(data)
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml(data))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    listen = settings.metrics.listen
    try:
        with AckedWriter(routed) as writer, HttpLoad(lab.state.frontend_url, rate=400):
            daemon.start(listen)
            wait(daemon, settings, lab)
            before = daemon.status()
            daemon.kill()
            set_fault(lab, "green")  # the restarted daemon finds a healthy green
            daemon.start(listen)
            if where == "streaming":
                daemon.wait_for(phase_is("streaming"), 60, "streaming again")
                Journal(settings.state.path).add_intent("promote")
            rolled_back = where == "rolling back"
            final = daemon.wait_for(phase_is("rolled_back" if rolled_back else "promoted"), 180,
                                    "the end of the cutover")
            if where.startswith("stage") and before is not None:
                store = Journal(settings.state.path)
                resumed = [e.data["state"] for e in store.events("start")][-1]
                store.close()
                assert resumed["stage"] == before["stage"], "the restart lost its stage"
                assert resumed["bake_seconds"] >= before["bake_seconds"] - 1.0, \
                    "the bake started over instead of continuing"
    finally:
        daemon.terminate()
    assert writer.written, "the client never got a write through"
    assert final["switched"] is not rolled_back
    primary, follower = ("blue", "green") if rolled_back else ("green", "blue")
    assert routed.primary() == primary
    assert hap.read().green_percent == (0 if rolled_back else 100)
    with routed.pair.connect(primary) as p, routed.pair.connect(follower) as f:
        assert not writer.missing_on(p), "an acknowledged write is missing on the primary"
        assert wait_applied(p, f, 60), f"{follower} does not follow {primary}"
    assert_same_data(routed.pair)


@pytest.mark.timeout(300)
def test_database_restarts_while_streaming_leave_the_daemon_running(
        routed: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path, healthy_green: None) -> None:
    """Blue, then green, restart while the daemon waits in streaming: it keeps running (the
    sync probe reports them unreachable, then reconnects), and the cutover then completes on a
    green that missed nothing."""
    pgbench_init(routed.pair.dsn("blue"), 1)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    data = daemon_settings(routed, lab, tmp_path, traffic={
        "finalize": "manual", "stages": [{"weight": 10, "bake": "2s"}, {"weight": 100, "bake": "2s"}]},
        latency_floor=BUSY_HOST_LATENCY_FLOOR).model_dump(mode="json")
    data["switchover"] = {**data["switchover"], "auto": False}
    settings = Settings.model_validate(data)
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml(data))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        with HttpLoad(lab.state.frontend_url, rate=400):  # samples for the stages' SLO checks
            daemon.start(settings.metrics.listen)
            daemon.wait_for(phase_is("streaming"), 120, "streaming")
            for n, env in enumerate(("blue", "green")):
                lab.restart(f"{env}_pg")
                with routed.pair.blue() as b:
                    b.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %s",
                              [1000 * (n + 1)])
                daemon.wait_for(phase_is("streaming"), 30, f"the daemon alive after {env}'s restart")
            log = daemon.log.read_text(errors="replace")
            for env in ("blue", "green"):
                assert f"{env} reachable again after" in log, log
            Journal(settings.state.path).add_intent("promote")
            daemon.wait_for(phase_is("promoted"), 180, "the end of the cutover")
    finally:
        daemon.terminate()
    assert routed.primary() == "green"
    assert hap.read().green_percent == 100
    with routed.pair.connect("green") as g, routed.pair.connect("blue") as b:
        assert wait_applied(g, b, 60), "blue does not follow green"
    assert_same_data(routed.pair)
