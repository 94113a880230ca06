"""`cutover run` (the daemon), `cutover status`, `cutover history`, and the operator's
intents: `promote`, `pause`, `resume`, `abort`, `retry`. Intents are written to the state
store and taken by the daemon on its next tick, so they work from any shell and survive a
daemon restart."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from config import Settings
from controller.cli.common import (
    ConfigOption,
    Exit,
    JsonOption,
    err,
    out,
    print_json,
    print_table,
    settings_or_exit,
    styled,
)
from controller.daemon.phases import TERMINAL, Intent, Phase, State
from controller.report.page import ROWS
from controller.state.journal import Event, EventKind
from controller.state.store import StateStore, open_store

DAEMON_ALIVE = 5.0
"""The daemon saves its state at least every second; older than this, it is not running."""


def run(
    config: ConfigOption = None,
    until_done: Annotated[bool, typer.Option(
        "--until-done", help="Exit once the cutover is finalized or rolled back (exit 1).")] = False,
    period: Annotated[float, typer.Option(min=0.05, max=5, help="Loop period in seconds.")] = 0.25,
) -> None:
    """The controller daemon: the whole cutover (sync, switch, traffic stages with SLO gates,
    finalize), resumable after any stop; or the continuous sync service without [traffic]."""
    settings = settings_or_exit(config)
    from controller.daemon.loop import Daemon

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = config or _env_config()
    daemon = Daemon(settings, config_path=path, period=period, until_done=until_done,
                    say=lambda m: err.print(f"{_now()} {m}", highlight=False))
    state = daemon.run()
    if daemon.deposed is not None:
        err.print(f"stopped: {daemon.deposed}", highlight=False)
        raise typer.Exit(Exit.FAILED)
    if until_done and state.phase is Phase.ROLLED_BACK:
        raise typer.Exit(Exit.FAILED)


def _env_config() -> Path | None:
    import os

    value = os.environ.get("CUTOVER_CONFIG")
    return Path(value) if value else None


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _store(settings: Settings) -> StateStore:
    """The daemon's store, for reading: nothing is created where there is none (StoreError,
    exit 1)."""
    return open_store(settings, existing=True)


def status_data(store: StateStore) -> dict[str, Any]:
    saved = store.load_state()
    state = State.from_dict(saved) if saved else State()
    sample = store.last_events(1, ("sample",))
    last = sample[0].data if sample else {}
    age = store.state_age()
    return {**state.as_dict(), "daemon_running": age is not None and age < DAEMON_ALIVE,
            "state_age_seconds": None if age is None else round(age, 1),
            "pending_intents": store.pending_intents(), "weights": last.get("weights"),
            "lag_seconds": last.get("lag_seconds"), "lag_bytes": last.get("lag_bytes"),
            "green_not_ready": last.get("not_ready") or [], "checks": last.get("checks", {})}


def _status_table(d: dict[str, Any]) -> Table:
    where = d["phase"] + (f" stage {d['stage'] + 1}" if d["phase"] in ("shifting",) else "")
    held = " (PAUSED)" if d["paused"] else " (AT ITS GATE)" if d.get("gated") else ""
    title = (f"{where}{held} — {d['reason']}"
             f"{'' if d['daemon_running'] else '  [daemon not running]'}")
    table = Table("what", "value", "verdict", title=title, title_justify="left")
    w = d.get("weights")
    table.add_row("weights", "?" if not w else f"blue {w['blue']:g} % / green {w['green']:g} %", "")
    if d.get("lag_seconds") is not None:
        table.add_row("lag", f"{d['lag_seconds'] * 1000:.0f} ms, {d.get('lag_bytes') or 0:,} B", "")
    table.add_row("writes on", "green" if d["switched"] else "blue", "")
    if d.get("green_not_ready"):  # statistics or materialized views missing: `cutover sync` makes them
        table.add_row("green not ready", "; ".join(d["green_not_ready"][:5]), "")
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for name, v in d.get("checks", {}).items():
        value = "-" if v.get("green") is None else f"{v['green']:.4g}"
        if v.get("baseline") is not None:
            value += f" (blue {v['baseline']:.4g})"
        if v.get("threshold") is not None:
            value += f" limit {v['threshold']:.4g}"
        table.add_row(name, value, styled((v['outcome'], colour.get(v['outcome'], 'white'))))
    if d["pending_intents"]:
        table.add_row("intents pending", ", ".join(d["pending_intents"]), "")
    return table


def status(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second until Ctrl-C.")] = False,
) -> None:
    """Phase, weights, lag, each SLO value and verdict, from the daemon's state store."""
    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        if as_json:
            print_json(status_data(store))
            return
        if not watch:
            print_table(_status_table(status_data(store)))
            return
        # Ctrl-C or SIGTERM ends the loop between two reads, never inside rich or SQLite.
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with Live(_status_table(status_data(store)), console=out, refresh_per_second=2) as live:
            while not stop.wait(1):
                live.update(_status_table(status_data(store)))
    finally:
        store.close()


HISTORY_KINDS = tuple(k.value for k in EventKind if k is not EventKind.SAMPLE)
"""Everything but the periodic samples (`--all` shows those too)."""


def _describe(e: Event) -> str:
    d = e.data
    if e.kind == EventKind.DECISION:
        effect = d.get("effect")
        return str(d.get("reason", "")) + (f" => {effect['job']}" if effect else "")
    if e.kind in ROWS:  # as the report says it, whole
        return ROWS[EventKind(e.kind)](d)
    if e.kind == EventKind.SWITCH:
        return f"to {d.get('to')}: {d.get('step')}"
    if e.kind == EventKind.INTENT:
        return str(d.get("intent"))
    return ", ".join(f"{k}={v}" for k, v in d.items() if k != "state")


def history(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="The newest N events.")] = 50,
    everything: Annotated[bool, typer.Option("--all", help="Also the per-second samples.")] = False,
) -> None:
    """What the controller decided and did, with the inputs of each decision."""
    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        events = store.last_events(limit, () if everything else HISTORY_KINDS)
    finally:
        store.close()
    if as_json:
        print_json([{"id": e.id, "at": e.at, "kind": e.kind, "data": e.data} for e in events])
        return
    table = Table("time (UTC)", "kind", "what")
    for e in events:
        table.add_row(datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S"), e.kind, _describe(e))
    print_table(table)


def _intent(kind: Intent, config: Path | None, as_json: bool) -> None:
    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        saved = store.load_state()
        phase = State.from_dict(saved).phase if saved else Phase.PENDING
        if kind is Intent.RETRY and phase is not Phase.ROLLED_BACK:
            err.print(f"retry applies after a rollback; the cutover is {phase.value}")
            raise typer.Exit(Exit.USAGE)
        if kind is not Intent.RETRY and phase in TERMINAL:
            err.print(f"the cutover is {phase.value}: nothing to {kind.value} "
                      "(after a rollback: `cutover retry`)")
            raise typer.Exit(Exit.USAGE)
        ident = store.add_intent(kind.value)
        store.record(EventKind.INTENT, {"intent": kind.value, "id": ident})
        running = status_data(store)["daemon_running"]
    finally:
        store.close()
    if as_json:
        print_json({"intent": kind.value, "id": ident, "daemon_running": running})
        return
    out.print(f"{kind.value}: recorded; the daemon takes it on its next tick"
              + ("" if running else " (it is not running now: it will when started)"))


def promote(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The next step now: switch writes (from streaming), skip the rest of a stage's bake, or
    finalize (from promoted)."""
    _intent(Intent.PROMOTE, config, as_json)


def pause(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Hold where it is (an SLO breach still rolls back)."""
    _intent(Intent.PAUSE, config, as_json)


def resume(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Continue after a pause or a failed step (which is run again)."""
    _intent(Intent.RESUME, config, as_json)


def abort(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Roll back: traffic to blue at once (writes too with rollback.database = "revert")."""
    _intent(Intent.ABORT, config, as_json)


def retry(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """After a rollback, start again."""
    _intent(Intent.RETRY, config, as_json)
