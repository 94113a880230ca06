"""`cutover shift`, `cutover rollback`, `cutover traffic`: the third job, by hand. Each change is
read back from the balancer and, where it counts requests, confirmed by the split it serves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer

from config.settings import need_traffic
from config.traffic import TrafficSettings
from controller.cli.common import (
    ConfigOption,
    JsonOption,
    err,
    out,
    print_json,
    settings_or_exit,
)
from controller.traffic.balancer import LoadBalancer
from controller.traffic.buckets import goes_green, position
from controller.traffic.factory import balancer_for
from controller.traffic.shift import Seen, ShiftResult, shift


class Target(StrEnum):
    GREEN = "green"
    BLUE = "blue"


def _traffic(config: Any, what: str) -> TrafficSettings:
    return need_traffic(settings_or_exit(config), what)


@contextmanager
def _balancer(traffic: TrafficSettings) -> Iterator[LoadBalancer]:
    lb = balancer_for(traffic)
    try:
        yield lb
    finally:
        lb.close()


def _report(result: ShiftResult, as_json: bool, lb: LoadBalancer) -> None:
    if as_json:
        print_json({"balancer": lb.describe(), **result.as_dict()})
    else:
        after = result.after
        read = (f"read back: green {after.green_percent:.1f} % "
                f"({', '.join(f'{k}={v}' for k, v in after.detail.items())})"
                if after else "no read-back configured: the change is unconfirmed")
        out.print(f"green {result.target} % set on {lb.describe()} in "
                  f"{result.apply_seconds * 1000:.1f} ms; {read}")
        seen = result.observed
        if seen.seen is Seen.CONFIRMED:
            out.print(f"observed: {seen.green_percent:.1f} % of {seen.requests} requests went to "
                      f"green within {seen.seconds:.2f}s")
        elif seen.seen is Seen.NO_TRAFFIC:
            out.print("observed: no traffic yet, so the split is read back but not seen served")
    if result.after is None:
        err.print("warning: the balancer cannot be read back; set traffic.command.readback or "
                  "traffic.http.readback_url to confirm changes")


def _run_shift(traffic: TrafficSettings, green_percent: int, as_json: bool, observe: bool) -> None:
    with _balancer(traffic) as lb:
        result = shift(lb, green_percent, tolerance=traffic.split_tolerance,
                       confirm_timeout=traffic.confirm_timeout, observe=observe)
        _report(result, as_json, lb)


def shift_cmd(
    target: Annotated[Target, typer.Option("--target", help="The environment the percentage is for.")],
    percentage: Annotated[int, typer.Option("--percentage", min=0, max=100,
                                            help="Its share of requests, 0-100.")],
    config: ConfigOption = None,
    no_observe: Annotated[bool, typer.Option("--no-observe", help="Do not wait to see the "
                                             "split served; read-back only.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Move a share of traffic (like `traffic-shift.sh --target green --percentage 10`), read it
    back from the balancer, and confirm the split it serves. Exit 1 if it did not take."""
    traffic = _traffic(config, "cutover shift")
    green = percentage if target is Target.GREEN else 100 - percentage
    _run_shift(traffic, green, as_json, observe=not no_observe)


def rollback(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """All traffic back on blue at once (needs no daemon). Exit 0 only once the balancer reads
    back 100 % blue and serves no request to green."""
    traffic = _traffic(config, "cutover rollback")
    _run_shift(traffic, 0, as_json, observe=True)


def traffic_cmd(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """What the balancer holds now, and its per-environment counters where it has them."""
    traffic = _traffic(config, "cutover traffic")
    with _balancer(traffic) as lb:
        split = lb.read()
        counters = lb.counters()
    data: dict[str, Any] = {
        "balancer": lb.describe(), "split": split.as_dict() if split else None,
        "counters": {env: vars(c) for env, c in counters.items()} if counters else None}
    if as_json:
        print_json(data)
        return
    if split is None:
        out.print(f"{lb.describe()}: no read-back configured")
    else:
        out.print(f"{lb.describe()}: green {split.green_percent:.1f} % "
                  f"({', '.join(f'{k}={v}' for k, v in split.detail.items())})")
    for env, c in (counters or {}).items():
        out.print(f"  {env}: {c.requests} requests, {c.errors} 5xx")


def bucket(
    user: Annotated[list[str], typer.Argument(help="One or more user ids (the header's values).")],
    percentage: Annotated[float | None, typer.Option(
        "--percentage", min=0, max=100, help="Also say which colour each is on at this share.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Where a user falls in sticky stages by header: green once green's share is above its
    position, and from then on. Applications behind a feature flag (the sql driver) check users
    with the same hash (controller.traffic.buckets, nginx's split_clients): use this to test
    theirs."""
    rows = [{"user": u, "position": round(position(u), 4),
             **({} if percentage is None else
                {"colour": "green" if goes_green(u, percentage) else "blue"})} for u in user]
    if as_json:
        print_json(rows if len(rows) > 1 else rows[0])
        return
    for r in rows:
        at = "" if percentage is None else f"; at {percentage:g} %: {r['colour']}"
        out.print(f"{r['user']}: green once green's share is above {r['position']:.2f} %{at}")
