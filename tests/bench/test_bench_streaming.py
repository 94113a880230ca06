"""Streaming under `pgbench -c 4 -T 60` on blue (scale 10), synced by our logical.start:
heartbeat lag p50/p99 (goal p99 <= 150 ms) and what our monitoring costs in TPS (goal < 2 %).

The monitoring is the loop of `cutover sync --follow` (controller/cli/syncing.py `_follow`) at
a 100 ms period instead of the default 1 s: beat() on blue, read_status() on both, the drift
check every 10 s. Lag is taken from every heartbeat, not only from those read_status happened
to see: a bench-only trigger on green logs each applied heartbeat (seq, beat_at, applied_at),
so a beat overwritten before the loop read it (a slow one) still counts. read_status's own
readings are printed beside, as a cross-check.

What the monitoring costs is measured two ways, because whole pgbench runs with and
without it differ by ~7 % from run to run on this shared machine, more than the 2 % goal:
- Interleaved: within each pgbench run the loop is switched on and off every WINDOW seconds.
  Each on-window's TPS is compared with the mean of its off-neighbours (a linear drift
  cancels), and the cost is the mean of those ratios with two standard errors.
- CPU share: the CPU seconds of the loop's thread and of its two backends (blue, green) over
  the machine's busy CPU seconds while the loop was on. On these saturated CPUs, that share is
  what pgbench loses. The apply of the heartbeats on green is not in it; the TPS figure is.
Each pgbench run is preceded by VACUUM and CHECKPOINT on both servers.
"""

from __future__ import annotations

import re
import statistics
import threading
import time

import pytest

from controller.lab.load import Pgbench, pgbench_init
from sync import logical
from sync.connections import connect, databases
from sync.status import beat, read_status
from tests.bench.conftest import (
    BENCH_TIMEOUT,
    REPEAT,
    SECONDS,
    CpuWatch,
    busy_cpu_seconds,
    checkpoint,
    median,
    percentile,
    proc_cpu_seconds,
    wait_quiet,
)
from tests.syncfixtures import DbPair

STREAM_SCALE = 10
PERIOD = 0.1
DRIFT_EVERY = 10.0
NAME = "bench_stream"
WINDOW = 5
"""Seconds the monitoring loop stays on, then off, then on ... within one pgbench run."""
SKIP = 1
"""Per-second samples left out at the start of each window: the second of the switch."""

LAG_LOG = """
CREATE SCHEMA IF NOT EXISTS cutover_bench;
CREATE TABLE IF NOT EXISTS cutover_bench.heartbeat_log (
    seq bigint PRIMARY KEY, beat_at timestamptz NOT NULL, applied_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION cutover_bench.log_heartbeat() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    INSERT INTO cutover_bench.heartbeat_log VALUES (NEW.seq, NEW.beat_at, NEW.applied_at)
        ON CONFLICT (seq) DO NOTHING;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS log_heartbeat ON cutover.heartbeat;
CREATE TRIGGER log_heartbeat AFTER INSERT OR UPDATE ON cutover.heartbeat
    FOR EACH ROW EXECUTE FUNCTION cutover_bench.log_heartbeat();
ALTER TABLE cutover.heartbeat ENABLE ALWAYS TRIGGER log_heartbeat;
"""


class Monitor:
    """The follow loop, in a thread, until stopped."""

    def __init__(self, pair: DbPair) -> None:
        self.settings = pair.settings(name=NAME)
        self.stop = threading.Event()
        self.on = threading.Event()
        """Set: the loop runs; clear: it idles with its connections open."""
        self.seqs: list[int] = []
        self.read_lags: dict[int, float] = {}
        self.error: BaseException | None = None
        self.cpu_seconds = 0.0
        """The loop's thread and its two backends, from start to stop."""
        self.on_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="bench-monitor", daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        try:
            blue_db, green_db = databases(self.settings)
            with connect(blue_db, "follow") as blue, connect(green_db, "follow") as green:
                pids = [c.info.backend_pid for c in (blue, green)]
                cpu0 = time.thread_time() + sum(proc_cpu_seconds(p) for p in pids)
                self._ready.set()
                next_tick = time.monotonic()
                next_drift = 0.0
                while not self.stop.is_set():
                    if not self.on.is_set():
                        self.on.wait(0.05)
                        next_tick = time.monotonic()
                        continue
                    tick_started = time.monotonic()
                    self.seqs.append(beat(blue))
                    now = time.monotonic()
                    status = read_status(blue, green, self.settings.sync, with_drift=now >= next_drift)
                    if now >= next_drift:
                        next_drift = now + DRIFT_EVERY
                    if status.heartbeat_seq is not None and status.heartbeat_lag_seconds is not None:
                        self.read_lags[status.heartbeat_seq] = status.heartbeat_lag_seconds
                    next_tick += PERIOD
                    self.stop.wait(max(0.0, next_tick - time.monotonic()))
                    self.on_seconds += time.monotonic() - tick_started
                self.cpu_seconds = time.thread_time() + sum(proc_cpu_seconds(p) for p in pids) - cpu0
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()


def _window_tps(output: str) -> dict[int, float]:
    """Mean TPS per window from pgbench's per-second progress lines (-P 1), the first SKIP
    seconds of each window left out."""
    samples: dict[int, list[float]] = {}
    for at, tps in re.findall(r"progress: ([\d.]+) s, ([\d.]+) tps", output):
        start = float(at) - 1  # the line covers the second before `at`
        window = int(start // WINDOW)
        if start - window * WINDOW >= SKIP:
            samples.setdefault(window, []).append(float(tps))
    return {w: statistics.mean(v) for w, v in samples.items()}


def _on_window_costs(tps: dict[int, float], on: set[int]) -> list[float]:
    """Per on-window: 1 - its TPS / the mean TPS of its off-window neighbours."""
    costs = []
    for w in sorted(on & tps.keys()):
        neighbours = [tps[n] for n in (w - 1, w + 1) if n in tps and n not in on]
        if neighbours:
            costs.append(1 - tps[w] / statistics.mean(neighbours))
    return costs


def _settle(pair: DbPair) -> None:
    pair.wait_caught_up(timeout=120)
    for conn in (pair.blue(), pair.green()):
        with conn:
            conn.execute("VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, "
                         "pgbench_history")
    checkpoint(pair.lab)


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_streaming_lag_and_monitoring_cost(pair: DbPair) -> None:
    pgbench_init(pair.dsn("blue"), STREAM_SCALE)
    with pair.blue() as b:
        # pgbench's history has no key; it only gets INSERTs, but be explicit.
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    settings = pair.settings(name=NAME, copy_jobs=2)
    try:
        logical.start(settings)
        with pair.green() as g:
            g.execute(LAG_LOG)
        _measure(pair)
    finally:
        logical.drop(settings)


def _measure(pair: DbPair) -> None:
    costs: list[float] = []
    shares: list[float] = []
    tps_runs: list[float] = []
    seqs: list[int] = []
    read_lags: dict[int, float] = {}
    disturbed = 0
    on_seconds = 0.0
    windows = -(-SECONDS // WINDOW)
    for i in range(REPEAT):
        _settle(pair)
        wait_quiet("a pgbench run")
        on_windows = {w for w in range(windows) if (w + i) % 2 == 0}  # on first, then off first
        busy_on = 0.0
        with CpuWatch(pair.lab) as watch, Monitor(pair) as monitor:
            bench = Pgbench(pair.dsn("blue"), clients=4, seconds=SECONDS)
            started = time.monotonic()
            bench.start()
            for w in range(windows):
                busy = busy_cpu_seconds()
                (monitor.on.set if w in on_windows else monitor.on.clear)()
                time.sleep(max(0.0, started + (w + 1) * WINDOW - time.monotonic()))
                if w in on_windows:
                    busy_on += busy_cpu_seconds() - busy
            monitor.on.clear()
            result = bench.wait(timeout=SECONDS + 120)
        assert result.failed == 0, result.output[-1000:]
        assert monitor.error is None, f"monitoring loop failed: {monitor.error!r}"
        seqs += monitor.seqs
        on_seconds += monitor.on_seconds
        read_lags.update(monitor.read_lags)
        run_costs = _on_window_costs(_window_tps(result.output), on_windows)
        assert run_costs, f"no progress lines to compare:\n{result.output[-1000:]}"
        costs += run_costs
        shares.append(monitor.cpu_seconds / max(busy_on, 1e-9))
        tps_runs.append(result.tps)
        disturbed += bool(watch.note())
        print(f"[bench] run {i + 1}/{REPEAT} pgbench -c 4 -T {SECONDS}, monitoring on/off every "
              f"{WINDOW} s: {result.tps:,.0f} TPS; on-windows "
              f"{100 * statistics.mean(run_costs):+.2f} % against their neighbours; the loop took "
              f"{100 * shares[-1]:.2f} % of the busy CPUs while on{watch.note()}")
    pair.wait_caught_up(timeout=120)
    with pair.green() as g:
        rows = g.execute("SELECT seq, extract(epoch FROM applied_at - beat_at)::float8 "
                         "FROM cutover_bench.heartbeat_log WHERE seq = ANY(%s)", [seqs]).fetchall()
    lags = [float(r[1]) * 1000 for r in rows]
    seen = [v * 1000 for v in read_lags.values()]
    assert len(lags) == len(seqs), f"{len(seqs) - len(lags)} heartbeat(s) never reached green"
    p99 = percentile(lags, 99)
    cost = 100 * statistics.mean(costs)
    margin = 200 * statistics.stdev(costs) / len(costs) ** 0.5 if len(costs) > 1 else float("inf")
    share = 100 * median(shares)
    # The servers' share of replicating the heartbeats is bounded by their share of the
    # transactions replicated while the loop was on.
    beats = 100 * len(seqs) / max(1.0, len(seqs) + median(tps_runs) * on_seconds)
    if cost - margin >= 2:
        verdict = "MISSED (the TPS interval lies above 2 %)"
    elif cost + margin < 2:
        verdict = "met (the TPS interval lies below 2 %)"
    elif share + beats < 2:
        verdict = (f"met by the CPU bound ({share:.2f} % + {beats:.2f} % < 2 %); the TPS interval "
                   "is too wide on this machine to decide alone, and does not contradict it")
    else:
        verdict = "not proven"
    print(f"\nstreaming, pgbench -s {STREAM_SCALE} -c 4 -T {SECONDS} on blue, "
          f"heartbeat every {PERIOD * 1000:.0f} ms, {REPEAT} run(s):\n"
          f"    heartbeat lag p50   {percentile(lags, 50):7.1f} ms\n"
          f"    heartbeat lag p99   {p99:7.1f} ms   (goal <= 150 ms){'' if p99 <= 150 else '  MISSED'}\n"
          f"    heartbeat lag max   {max(lags):7.1f} ms   ({len(lags):,} heartbeats, every one "
          "logged on green)\n"
          f"    as read_status saw  p50 {percentile(seen, 50):.1f} ms, p99 {percentile(seen, 99):.1f} ms "
          f"({len(seen):,} of {len(seqs):,} heartbeats seen)\n"
          f"    TPS of the runs     {' '.join(f'{t:,.0f}' for t in tps_runs)}\n"
          f"    monitoring cost     {cost:+.2f} % +- {margin:.2f} % (two standard errors, "
          f"{len(costs)} on-windows against their off-neighbours)\n"
          f"    monitoring CPU      {share:.2f} % of the busy CPUs while on (median of runs)\n"
          f"    heartbeats          {beats:.2f} % of the transactions replicated while on\n"
          f"    monitoring cost, goal < 2 %: {verdict}"
          + (f"\n    {disturbed} of {REPEAT} pgbench runs disturbed by other work (>= 5 % of the "
             "CPUs): the TPS comparison is unreliable" if disturbed else ""))
