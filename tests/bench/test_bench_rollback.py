"""Breach to rollback: the lab at a 10 % green stage under ~1 k req/s, `watch` running with the
lab config's checks; at t0 green's fault switch turns on (50 % errors). Measured over 10 trials:
when HAProxy reads back green weight 0 (an independent poller, every 5 ms, over its own
Runtime API session), which check breached, and how many client requests failed after t0.
Goal: median <= 2 s (design goal: median <= 1 s, worst <= 2 s). Beside it, the Flagger-style
equivalent the issue names: a 60 s analysis interval x its failure threshold.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from config import load_settings
from config.settings import Settings
from controller.daemon.watch import WatchResult, watch
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad
from controller.traffic.haproxy import RuntimeApi
from controller.traffic.shift import shift
from tests.bench.conftest import BENCH_TIMEOUT, median, wait_quiet
from tests.trafficfixtures import lab_haproxy, set_fault

TRIALS = 10
RATE = 1000
FLAGGER_INTERVAL = 60.0


def green_off_at(api: RuntimeApi, server: str, seen: list[float], timeout: float = 35.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.execute(f"get weight app/{server}").split()[0] == "0":
            seen.append(time.monotonic())
            return
        time.sleep(0.005)


def _watch_into(settings: Settings, outcome: list[WatchResult]) -> None:
    outcome.append(watch(settings, duration=30))


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_breach_to_rollback(lab: Lab, tmp_path: Path) -> None:
    loaded = load_settings(lab.state.config_file)
    settings = loaded.model_copy(update={"state": loaded.state.model_copy(
        update={"path": tmp_path / "state.db"})})
    lb = lab_haproxy(lab)
    poller = RuntimeApi(lab.state.haproxy_socket, None, 2.0)
    green1 = lab.state.servers_of("green")[0]
    rollback_s: list[float] = []
    failed_after: list[int] = []
    checks: list[str] = []
    wait_quiet("the rollback benchmark")
    try:
        with HttpLoad(lab.state.frontend_url, rate=RATE, write_ratio=0.0) as load:
            for trial in range(1, TRIALS + 1):
                set_fault(lab, "green")
                shift(lb, 10)
                outcome: list[WatchResult] = []
                watcher = threading.Thread(target=_watch_into, args=(settings, outcome))
                watcher.start()
                # The watch has its first readings; then a random phase against its cadence.
                time.sleep(2.0 + random.uniform(0, 1))
                off = list[float]()
                observer = threading.Thread(target=green_off_at, args=(poller, green1, off))
                observer.start()
                t0 = time.monotonic()
                set_fault(lab, "green", error_ratio=0.5)
                watcher.join()
                observer.join()
                set_fault(lab, "green")
                result = outcome[0]
                assert result.breach is not None, f"trial {trial}: no breach within 30 s"
                assert off, f"trial {trial}: HAProxy never read back green weight 0: {result.as_dict()}"
                rollback_s.append(off[0] - t0)
                failed_after.append(sum(1 for s in load.report().samples
                                        if s.at >= t0 and (s.status == 0 or s.status >= 500)))
                checks.append(result.breach.check)
                print(f"[bench] trial {trial:2}: green weight 0 {rollback_s[-1] * 1000:5.0f} ms after "
                      f"the fault; breach by {checks[-1]}; {failed_after[-1]} client requests failed")
                time.sleep(1.0)
            report = load.stop()
    finally:
        set_fault(lab, "green")
        shift(lb, 0, observe=False)
        lb.close()
        poller.close()
    med = median(rollback_s)
    print(f"\nbreach -> rollback at {RATE} req/s, 10 % green, 50 % errors injected, {TRIALS} trials:")
    print(f"    fault -> HAProxy reads green weight 0   median {med:.2f} s, max {max(rollback_s):.2f} s, "
          f"min {min(rollback_s):.2f} s   (goal: median <= 2 s)")
    failed_median = median([float(x) for x in failed_after])
    print(f"    client requests failed after the fault  median {failed_median:.0f},"
          f" max {max(failed_after)} (of ~{RATE * med:.0f} sent in the median time)")
    print(f"    breached first: {', '.join(sorted(set(checks)))}")
    for threshold in (1, 5):
        flagger = FLAGGER_INTERVAL * threshold
        print(f"    Flagger-style {FLAGGER_INTERVAL:.0f} s interval x threshold {threshold}: {flagger:.0f} s;"
              f" ours / that {med / flagger:.3f}")
    print(f"    load: {report.total} requests, {report.failed} failed in all")
    assert med <= 2.0
