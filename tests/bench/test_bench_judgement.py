"""Judgement: does the watch catch every fault, fast, and never roll back a healthy green?

With the production example's checks (config/examples/production.toml: 5xx ratio max 1 %
and 2 x blue, latency 1.25 x blue + 20 ms, health probes of every server; 1 s intervals,
three failures in a row, or overwhelming counted evidence):

- faults on the real lab (HAProxy, two blue and two green app servers, open-loop HTTP load):
  all of green 50 % and 5 % errors, one of two green servers dead (connection refused) or
  hung, green +60 ms and +300 ms, at the 10 % and 50 % stages. Printed: caught / missed,
  fault -> breach and fault -> green at 0 % (median and max) per kind.
- clean baking on the real lab, with a host-wide slowdown (every server +40 ms at once):
  false rollbacks.
- clean baking in a simulation (tests/bench/judgement_sim.py: HAProxy's counters and rtime
  arithmetic, fed to the real HAProxySource and judge on a simulated clock) long enough to
  count false rollbacks: jittery latency, 0.1 % background errors on both colours, GC-like
  pauses (30 ms every 5 s and 300 ms every 10 minutes per server), load swinging ±30 %,
  host-wide slowdowns, and low traffic (8 req/s); then, as a limit to know rather than a
  goal, pauses of 250 ms every 45 s on every server.

Goals (issue 17): 0 missed of >= 20 faults; 0 false rollbacks in >= 30 minutes of noisy
clean baking including a host-wide slowdown; fault -> green at 0 %: 50 % errors median
<= 1 s, one of two green servers dead <= 3 s, +300 ms <= 5 s.

Knobs: CUTOVER_BENCH_RATE (req/s of the lab load, default 600), CUTOVER_BENCH_SIM_MINUTES
(simulated clean baking, default 60), CUTOVER_BENCH_CLEAN_MINUTES (real clean baking, default 3).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import load_settings
from config.slo import SloCheck, SloSource
from controller.daemon.watch import Watch
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad
from controller.slo.haproxy_source import HAProxySource
from controller.slo.judge import CheckState, Verdict, judge
from controller.slo.probe_source import HttpProbeSource
from controller.slo.readings import MetricSource
from controller.traffic.haproxy import HAProxyBalancer, RuntimeApi
from controller.traffic.shift import shift
from tests.bench.conftest import BENCH_TIMEOUT, env_int, wait_quiet
from tests.bench.judgement_sim import Fault, Noise, SimHAProxy
from tests.labfixtures import running_lab
from tests.trafficfixtures import lab_haproxy, set_fault, set_server_fault

PRODUCTION = Path(__file__).parents[2] / "config" / "examples" / "production.toml"
RATE = env_int("CUTOVER_BENCH_RATE", 600)
SIM_MINUTES = env_int("CUTOVER_BENCH_SIM_MINUTES", 60)
CLEAN_MINUTES = env_int("CUTOVER_BENCH_CLEAN_MINUTES", 3)
FAULTS: list[tuple[str, dict[str, Any], str]] = [
    # (kind, fault switch, which green servers)
    ("50% errors", {"error_ratio": 0.5}, "all"),
    ("5% errors", {"error_ratio": 0.05}, "all"),
    ("one of two dead", {"down_for": 12.0}, "one"),
    ("one of two hung", {"hang": True}, "one"),
    ("+60 ms", {"latency_ms": 60}, "all"),
    ("+300 ms", {"latency_ms": 300}, "all"),
]
GOALS = {"50% errors": 1.0, "one of two dead": 3.0, "+300 ms": 5.0}
DETECT_LIMIT = 30.0


def production_checks(*sources: SloSource) -> list[SloCheck]:
    checks = load_settings(PRODUCTION).slo
    return [c for c in checks if c.source in sources]


@pytest.fixture(scope="module")
def lab2() -> Iterator[Lab]:
    """Two app servers per environment, as in production: one can die while the other serves."""
    with running_lab("judge", servers_per_env=2, with_prometheus=False) as the_lab:
        yield the_lab


@dataclass
class Caught:
    kind: str
    stage: int
    breach_s: float | None
    rollback_s: float | None
    check: str = ""
    reason: str = ""


def _sources(lab: Lab) -> dict[SloSource, MetricSource]:
    servers = {env: lab.state.servers_of(env) for env in ("blue", "green")}
    return {SloSource.HAPROXY: HAProxySource(RuntimeApi(lab.state.haproxy_socket, None, 2.0), "app", servers),
            SloSource.HTTP: HttpProbeSource({env: [f"{lab.state.app_url(s)}/api/health" for s in names]
                                             for env, names in servers.items()})}


def _watch_until_breach(watch: Watch, seconds: float) -> Verdict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for verdict in watch.step(wait=0.05):
            if verdict.breach:
                return verdict
        time.sleep(0.02)
    return None


def _inject(lab: Lab, fault: dict[str, Any], which: str) -> None:
    green = lab.state.servers_of("green")
    for server in (green[-1:] if which == "one" else green):
        set_server_fault(lab, server, **fault)


def _heal(lab: Lab) -> None:
    deadline = time.monotonic() + 20
    for server in lab.state.servers_of("green"):
        while True:
            try:
                set_server_fault(lab, server)
                break
            except httpx.HTTPError:  # a dead server comes back by itself
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _fault_trial(lab: Lab, lb: HAProxyBalancer, kind: str, fault: dict[str, Any], which: str,
                 stage: int) -> Caught:
    shift(lb, stage, observe=False)
    lb.api.execute("clear counters all")
    sources = _sources(lab)
    watch = Watch(production_checks(SloSource.HAPROXY, SloSource.HTTP), sources)
    try:
        early = _watch_until_breach(watch, 4.0)  # a clean start: no breach allowed
        assert early is None, f"false breach before the fault: {early}"
        _inject(lab, fault, which)
        faulted = time.monotonic()
        verdict = _watch_until_breach(watch, DETECT_LIMIT)
        breach_s = time.monotonic() - faulted if verdict else None
        rollback_s = None
        if verdict is not None:
            shift(lb, 0, observe=False)
            rollback_s = time.monotonic() - faulted
        return Caught(kind, stage, breach_s, rollback_s, verdict.check if verdict else "",
                      verdict.reason if verdict else "")
    finally:
        watch.close()
        for source in sources.values():
            source.close()
        _heal(lab)


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_every_injected_fault_is_caught_on_the_lab(lab2: Lab) -> None:
    lb = lab_haproxy(lab2)
    wait_quiet("the judgement benchmark")
    results: list[Caught] = []
    try:
        with HttpLoad(lab2.state.frontend_url, rate=RATE, write_ratio=0.0, connections=512, timeout=10):
            time.sleep(2)
            for _ in range(2):
                for stage in (10, 50):
                    for kind, fault, which in FAULTS:
                        results.append(_fault_trial(lab2, lb, kind, fault, which, stage))
                        print(f"[judge] {kind:>16} at {stage:>2} %: "
                              + (f"breach {results[-1].breach_s:.2f} s, green 0 % at "
                                 f"{results[-1].rollback_s:.2f} s by {results[-1].check}"
                                 if results[-1].breach_s is not None else "MISSED"), flush=True)
    finally:
        set_fault(lab2, "green")
        shift(lb, 0, observe=False)
        lb.close()
    by_kind: dict[str, list[Caught]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
    missed = [r for r in results if r.breach_s is None]
    print(f"\n[judge] lab at {RATE} req/s, production checks: {len(results) - len(missed)} of "
          f"{len(results)} faults caught, {len(missed)} missed")
    for kind, rs in by_kind.items():
        times = [r.rollback_s for r in rs if r.rollback_s is not None]
        goal = f" (goal median <= {GOALS[kind]:g} s)" if kind in GOALS else ""
        if times:
            print(f"[judge]   {kind:>16}: fault -> green 0 % median {statistics.median(times):.2f} s, "
                  f"max {max(times):.2f} s over {len(times)}{goal}; checks: "
                  f"{', '.join(sorted({r.check for r in rs if r.check}))}")
    assert not missed, [(r.kind, r.stage) for r in missed]


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_clean_baking_on_the_lab_with_a_host_wide_slowdown_never_breaches(lab2: Lab) -> None:
    lb = lab_haproxy(lab2)
    wait_quiet("the judgement benchmark")
    sources = _sources(lab2)
    watch = Watch(production_checks(SloSource.HAPROXY, SloSource.HTTP), sources)
    judged: dict[str, int] = defaultdict(int)
    failing: dict[str, int] = defaultdict(int)
    breaches: list[Verdict] = []
    seconds = CLEAN_MINUTES * 60
    try:
        with HttpLoad(lab2.state.frontend_url, rate=RATE, write_ratio=0.0):
            shift(lb, 50, observe=False)
            started = time.monotonic()
            slowed = False
            while time.monotonic() - started < seconds:
                third = (time.monotonic() - started) / seconds
                if not slowed and 1 / 3 <= third < 2 / 3:  # the middle third: a busy host
                    set_fault(lab2, "blue", latency_ms=40)
                    set_fault(lab2, "green", latency_ms=40)
                    slowed = True
                elif slowed and third >= 2 / 3:
                    set_fault(lab2, "blue")
                    set_fault(lab2, "green")
                    slowed = False
                for v in watch.step(wait=0.05):
                    judged[v.check] += 1
                    failing[v.check] += v.outcome.value == "fail"
                    if v.breach:
                        breaches.append(v)
                        watch.states[v.check] = CheckState()
                time.sleep(0.02)
    finally:
        watch.close()
        for source in sources.values():
            source.close()
        set_fault(lab2, "blue")
        set_fault(lab2, "green")
        shift(lb, 0, observe=False)
        lb.close()
    print(f"\n[judge] clean lab baking, {CLEAN_MINUTES} min at {RATE} req/s with a host-wide "
          f"+40 ms for a third of it: {len(breaches)} false rollbacks; failing intervals: "
          + ", ".join(f"{c} {failing[c]}/{judged[c]}" for c in judged))
    assert not breaches, [v.reason for v in breaches]


def _sim_bake(minutes: int, rate: float, seed: int, noise: Noise) -> tuple[int, dict[str, int], list[str]]:
    sim = SimHAProxy(seed, noise)
    source = HAProxySource(sim, "app", {"blue": ["blue1", "blue2"], "green": ["green1", "green2"]},
                           clock=sim.clock)
    checks = production_checks(SloSource.HAPROXY)
    states = {c.name: CheckState() for c in checks}
    failing: dict[str, int] = defaultdict(int)
    breaches: list[str] = []
    intervals = 0
    for c in checks:
        source.measure(c)
    for second in range(minutes * 60):
        sim.green_percent = (10, 50, 95)[second * 3 // (minutes * 60)]
        sim.advance(1.0, rate)
        intervals += 1
        for c in checks:
            v = judge(c, source.measure(c), states[c.name])
            failing[c.name] += v.outcome.value == "fail"
            if v.breach:
                breaches.append(f"t={second}s {v.check}: {v.reason}")
                states[c.name] = CheckState()
    return intervals, failing, breaches


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_simulated_clean_baking_never_rolls_back() -> None:
    minutes = SIM_MINUTES
    slowdowns = [(m * 60.0, 60.0, 2.0) for m in range(5, minutes, 10)]  # every 10 min, 1 min x2
    runs = [("1k req/s", 1000.0, Noise(host_slowdowns=slowdowns)),
            ("8 req/s", 8.0, Noise(host_slowdowns=slowdowns))]
    total_breaches: list[str] = []
    for label, rate, noise in runs:
        intervals, failing, breaches = _sim_bake(minutes, rate, 17, noise)
        total_breaches += breaches
        print(f"\n[judge] simulated clean baking at {label}, {minutes} min (10 %, 50 %, 95 % "
              f"stages; jitter, 0.1 % errors, 30 ms pauses every 5 s and 300 ms every 10 min per "
              f"server, ±30 % load, x2 host slowdowns): {len(breaches)} false rollbacks; failing "
              "intervals: " + ", ".join(f"{c} {n}/{intervals}" for c, n in failing.items()))
    # Not a goal, a limit to know: 250 ms pauses every 45 s on every server.
    intervals, failing, heavy = _sim_bake(minutes, 1000.0, 17, Noise(
        host_slowdowns=slowdowns, pauses=((45.0, 250.0, 0.4),)))
    print(f"[judge] the same at 1k req/s with 250 ms pauses every 45 s per server: {len(heavy)} "
          f"false rollbacks ({'; '.join(heavy[:3])}); failing intervals: "
          + ", ".join(f"{c} {n}/{intervals}" for c, n in failing.items()))
    assert not total_breaches, total_breaches[:5]


def test_simulated_faults_are_caught() -> None:
    """The same simulated HAProxy with the faults of the lab benchmark, at 1 k req/s: a quick
    cross-check of detection times without the lab's own noise."""
    kinds = [("50% errors", Fault("e50", ("green1", "green2"), error_ratio=0.5)),
             ("5% errors", Fault("e5", ("green1", "green2"), error_ratio=0.05)),
             ("one of two dead", Fault("dead", ("green2",), refused=True)),
             ("+60 ms", Fault("l60", ("green1", "green2"), extra_ms=60)),
             ("+300 ms", Fault("l300", ("green1", "green2"), extra_ms=300))]
    checks = production_checks(SloSource.HAPROXY)
    for label, fault in kinds:
        times = []
        for seed in range(5):
            sim = SimHAProxy(seed, Noise())
            source = HAProxySource(sim, "app", {"blue": ["blue1", "blue2"], "green": ["green1", "green2"]},
                                   clock=sim.clock)
            states = {c.name: CheckState() for c in checks}
            for c in checks:
                source.measure(c)
            sim.advance(20.0, 1000.0)
            for c in checks:
                judge(c, source.measure(c), states[c.name])
            sim.fault, start, found = fault, sim.now, None
            while found is None and sim.now - start < DETECT_LIMIT:
                sim.advance(0.1, 1000.0)
                # Each check at its own 1 s cadence; HAProxy is read on a 0.1 s grid here.
                if round((sim.now - start) * 10) % 10 == 0:
                    for c in checks:
                        if judge(c, source.measure(c), states[c.name]).breach:
                            found = sim.now - start
            times.append(found)
        caught = [t for t in times if t is not None]
        print(f"[judge] simulated {label:>16} at 10 %: {len(caught)}/5 caught, breach median "
              f"{statistics.median(caught):.1f} s, max {max(caught):.1f} s" if caught else
              f"[judge] simulated {label:>16}: MISSED")
        assert len(caught) == 5, label
