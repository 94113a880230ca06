"""`cutover watch`: the seed's monitor-metrics.sh, made to act. Judges green against its SLO
checks and, on a breach, puts all traffic back on blue at once."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from config.settings import Settings
from controller.cli.common import (
    ConfigOption,
    Exit,
    JsonOption,
    out,
    print_json,
    settings_or_exit,
    styled,
)
from controller.daemon.watch import WatchResult, outcome_colour, require_checks, watch
from controller.slo.judge import Outcome, Verdict
from controller.traffic.factory import balancer_for


def watch_cmd(
    config: ConfigOption = None,
    duration: Annotated[float, typer.Option(min=0, help="Seconds to watch; 0: until a breach "
                                            "or Ctrl-C.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Judge and report, never roll "
                                          "back.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Watch green's SLOs and roll traffic back to blue on a breach (exit 1 after one)."""
    settings = settings_or_exit(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    last: dict[str, Outcome] = {}

    def show(v: Verdict) -> None:
        # A line when a check's outcome changes, and every failure.
        if as_json or (last.get(v.check) is v.outcome and v.outcome is not Outcome.FAIL):
            return
        last[v.check] = v.outcome
        value = "-" if v.green is None else f"{v.green:.4g}"
        base = "" if v.baseline is None else f", blue {v.baseline:.4g}"
        limit = "" if v.threshold is None else f", limit {v.threshold:.4g}"
        out.print(styled(f"  {v.check}: ", (v.outcome.value, outcome_colour(v.outcome)),
                         f" green {value}{base}{limit} ({v.reason})"))

    require_checks(settings)  # before anything is printed as if it would watch
    if not as_json:
        _show_split(settings)
    result = watch(settings, duration=duration or None, act=not dry_run, stop=stop, on_verdict=show)
    if as_json:
        print_json(result.as_dict())
    else:
        _print_result(result, dry_run)
    if result.breach is not None:
        raise typer.Exit(Exit.FAILED)


def _show_split(settings: Settings) -> None:
    """The live split the watch guards, read from the balancer."""
    if settings.traffic is None:
        return
    lb = balancer_for(settings.traffic)
    try:
        split = lb.read()
    finally:
        lb.close()
    where = "no read-back" if split is None else f"green {split.green_percent:.1f} %"
    out.print(f"watching {len(settings.slo)} check(s); {lb.describe()}: {where}")


def _print_result(result: WatchResult, dry_run: bool) -> None:
    if result.breach is None:
        out.print("no breach")
        return
    b = result.breach
    out.print(styled(("breach", "bold red"), f": {b.check}: {b.reason}"))
    if result.rollback is not None:
        out.print(styled(("rolled back", "bold"), ": traffic 100 % blue, read back, "
                         f"{(result.detect_to_rollback_seconds or 0) * 1000:.0f} ms after the breach"))
    elif result.rollback_error:
        out.print(styled(("rollback failed", "bold red"), f": {result.rollback_error}"))
    elif dry_run:
        out.print("dry run: nothing changed")
    else:
        out.print("rollback.on_breach = pause: traffic left as it is; an operator decides")
