"""`cutover demo`: the main job on the built-in lab, start to finish, driven by the daemon.

The lab up; live load through HAProxy (HTTP, a fifth of it writes through PgBouncer). Run 1:
`cutover run` syncs blue to green, switches writes, and at the 10 % stage green's fault
switch is turned on: the daemon rolls traffic back on its own and, with rollback.database =
"revert", writes too, nothing lost. Run 2: the fault is fixed, `cutover retry`, and the
daemon takes the whole cutover through 10/50/100 % to finalized. Then every acknowledged
write is checked on the new primary, blue and green are compared by checksum, a status
read-out and the report file; the lab down.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psycopg
from rich.table import Table

from config import Settings, load_settings
from controller.cli.common import out, print_table, styled
from controller.daemon.loop import Daemon
from controller.daemon.phases import Phase, State
from controller.lab.lab import DEFAULT_BASE_PORT, Lab
from controller.lab.load import LoadProcess, LoadReport
from controller.report.page import render_report
from controller.state.store import open_store
from sync import logical

BAKE = "3s"
"""Each stage's bake in the demo (the lab's config says 15 s: a demo should not take minutes)."""


def _print_outcome(runs: tuple[State, State], http: LoadReport, faulted: int) -> None:
    for n, run in enumerate(runs, 1):
        why = f" ({run.reason})" if n == 1 else ""
        out.print(f"  run {n} ended {run.phase.value}{why}; writes on "
                  f"{'green' if run.switched else 'blue'}")
    out.print(f"  requests: {http.total}, failed: {http.failed}, by env: {dict(http.by_env())}, "
              f"p50 {http.latency_ms(50):.1f} ms, p99 {http.latency_ms(99):.1f} ms")
    out.print(f"  failed requests: {http.failed}, all from green's injected fault: "
              f"{http.failed == faulted}")


def run_demo(root: Path, seconds: float, rate: float, keep: bool) -> bool:
    """True when every request succeeded but green's injected faults, every acknowledged
    write is on the new primary, and blue and green hold the same rows."""
    lab = Lab(root, with_prometheus=True, base_port=DEFAULT_BASE_PORT)
    out.rule(styled(("1. the lab", "bold")))
    try:
        lab.up(progress=lambda msg: out.print(f"  {msg}"))
        settings = demo_settings(lab)
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            before = _count(conn)
        with LoadProcess(lab.state.frontend_url, rate, write_ratio=0.2) as load:
            out.rule(styled((f"2. run 1 under load ({rate:g} req/s): sync, switch, 10 %, and green "
                             "breaks", "bold")))
            time.sleep(seconds)
            first = _run(settings, director=_Breaker(lab))
            out.rule(styled(("3. run 2: the fault fixed, `cutover retry`: the whole cutover", "bold")))
            store = open_store(settings)
            store.add_intent("retry")
            store.close()
            second = _run(settings, director=_StopLoadAtPromoted(load, settings))
        http = load.report()
        out.rule(styled(("4. no data lost, and the summary", "bold")))
        # Compared once the follower has every write (finalize waited; after a rollback green
        # follows blue and may still be applying): a busy host is slow, not lossy.
        logical.settle_follower(settings, 60, say=lambda m: out.print(f"  {m}"))
        primary = "green" if second.switched else "blue"
        with psycopg.connect(lab.state.db_dsn(primary)) as conn:
            written = _count(conn) - before
        blue_sum, green_sum = (_checksum_of(lab, env) for env in ("blue", "green"))
        writes_ok = sum(1 for x in http.samples if x.status == 201)
        faulted = sum(1 for x in http.samples if x.status >= 500 and x.env == "green")
        _summary(lab, settings)
        _print_outcome((first, second), http, faulted)
        out.print(f"  writes acknowledged: {writes_ok}, rows found on {primary} (the primary): {written}")
        out.print(f"  lab_items on blue and green: {blue_sum[0]:,} and {green_sum[0]:,} rows, checksums "
                  f"{'equal' if blue_sum == green_sum else 'DIFFER'}")
        out.print(f"  report: {_report(settings, lab)}")
        ok = (first.phase is Phase.ROLLED_BACK and not first.switched
              and second.phase is Phase.FINALIZED and second.switched and http.total > 0
              and http.failed == faulted and written == writes_ok and blue_sum == green_sum)
        out.print(styled(("demo ok", "bold green")) if ok else styled(("demo found a problem", "bold red")))
        return ok
    finally:
        if not keep:
            out.rule(styled(("5. the lab down", "bold")))
            lab.down(purge=True, progress=lambda msg: out.print(f"  {msg}"))


def _checksum_of(lab: Lab, env: str) -> tuple[int, str]:
    with psycopg.connect(lab.state.db_dsn(env)) as conn:
        return _checksum(conn)


def demo_settings(lab: Lab) -> Settings:
    """The lab's config with short bakes and a hold, and rollback.database = "revert"."""
    settings = load_settings(lab.state.config_file)
    data = settings.model_dump(mode="json")
    assert data["traffic"] is not None
    data["traffic"]["stages"] = [{**s, "bake": BAKE} for s in data["traffic"]["stages"]]
    data["traffic"]["hold"] = BAKE
    data["rollback"]["database"] = "revert"
    data["state"]["path"] = str(lab.root / "cutover-state.db")
    Path(data["state"]["path"]).unlink(missing_ok=True)
    return Settings.model_validate(data)


class _Director(threading.Thread):
    """Watches the running daemon's state and acts at one moment of the cutover."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.daemon_: Daemon | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            d = self.daemon_
            if d is not None and self.due(d.state):
                self.act()
                return
            time.sleep(0.05)

    def due(self, state: State) -> bool:
        raise NotImplementedError

    def act(self) -> None:
        raise NotImplementedError


class _Breaker(_Director):
    """Green's fault switch on two seconds into the 10 % stage; off again afterwards."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self.at = 0.0

    def due(self, state: State) -> bool:
        if state.phase is Phase.SHIFTING and state.applied and not self.at:
            self.at = time.monotonic() + 2
        return bool(self.at) and time.monotonic() >= self.at

    def act(self) -> None:
        self.fault({"error_ratio": 0.5})
        out.print(styled("  ", ("fault on", "bold red"), ": green answers 500 to half its requests"))

    def fault(self, body: dict[str, float]) -> None:
        for server in self.lab.state.servers_of("green"):
            httpx.post(f"{self.lab.state.app_url(server)}/admin/fault", json=body, timeout=5)


class _StopLoadAtPromoted(_Director):
    """At 100 %, the load stops, so blue (following green) holds every row at the end. The
    daemon is paused meanwhile: a busy host can take longer to drain the load than the hold
    lasts, and a write that reached green after finalize would never reach blue."""

    def __init__(self, load: LoadProcess, settings: Settings) -> None:
        super().__init__()
        self.load, self.settings = load, settings

    def due(self, state: State) -> bool:
        return state.phase is Phase.PROMOTED

    def act(self) -> None:
        self._intent("pause")
        self.load.stop()
        self._intent("resume")
        out.print("  load stopped at 100 % (the daemon paused while it drained); the hold, then finalize")

    def _intent(self, what: str) -> None:
        store = open_store(self.settings)
        try:
            store.add_intent(what)
        finally:
            store.close()


def _run(settings: Settings, director: _Director) -> State:
    daemon = Daemon(settings, until_done=True, period=0.1,
                    say=lambda m: out.print(styled("  ", (time.strftime('%H:%M:%S'), "dim"), f" {m}")))
    director.daemon_ = daemon
    director.start()
    try:
        return daemon.run()
    finally:
        director.done.set()
        if isinstance(director, _Breaker):
            director.fault({})


def _summary(lab: Lab, settings: Settings) -> None:
    table = Table("part", "port", "pid", "state")
    for c in lab.components():
        table.add_row(c.name, str(c.port), str(c.pid), "running" if c.running else "stopped")
    print_table(table)
    store = open_store(settings)
    try:
        for e in store.events("rollback"):
            out.print(f"  rollback: {e.data['reason']} -> traffic on blue in "
                      f"{e.data['seconds'] * 1000:.0f} ms")
        for e in store.events("job"):
            if e.data["job"] == "switch" and e.data["ok"]:
                out.print(f"  switch: {e.data['detail']}")
    finally:
        store.close()


def _report(settings: Settings, lab: Lab) -> Path:
    store = open_store(settings)
    try:
        html = render_report(store.events(), settings.service)
    finally:
        store.close()
    path = Path.cwd() / "cutover-demo-report.html"
    try:
        path.write_text(html)
    except OSError:
        path = lab.root.parent / "cutover-demo-report.html"
        path.write_text(html)
    return path


def _checksum(conn: psycopg.Connection[tuple[int, str]]) -> tuple[int, str]:
    row = conn.execute("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                       "FROM lab_items t").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM lab_items").fetchone()
    return int(row[0]) if row else 0
