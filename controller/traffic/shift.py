"""A shift: set green's share, read back what the balancer really holds, then (where the
balancer counts requests) watch the split it actually serves until it matches. Traffic that
never moved must not be baked: a stage counts only once the split is confirmed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from config.traffic import Match
from controller.traffic.balancer import BadTrafficInput, EnvCounters, LoadBalancer, Split, TrafficError
from sync.callbacks import Clock

MIN_REQUESTS = 50
"""Requests a window needs before its split says anything (at 10 %, 5 land on green)."""
IDLE_AFTER = 2.0
"""No request at all for this long: there is no traffic to confirm the split with."""
POLL = 0.02


class Seen(StrEnum):
    CONFIRMED = "confirmed"
    MISMATCH = "mismatch"
    NO_TRAFFIC = "no traffic"
    NOT_OBSERVABLE = "not observable"
    """The balancer does not count requests per environment (nginx, command, http, sql)."""
    WAITING = "waiting"


@dataclass(frozen=True)
class Observation:
    seen: Seen
    green_percent: float | None = None
    requests: int = 0
    seconds: float = 0.0
    """From the change being applied to the verdict."""

    def as_dict(self) -> dict[str, Any]:
        share = None if self.green_percent is None else round(self.green_percent, 2)
        return {"seen": self.seen.value, "green_percent": share, "requests": self.requests,
                "seconds": round(self.seconds, 3)}


def judge_window(target: float, green: int, total: int, tolerance: float,
                 min_requests: int = MIN_REQUESTS) -> Seen:
    """The split of the requests picked since the change, against the target share."""
    if total < min_requests:
        return Seen.WAITING
    share = 100.0 * green / total
    return Seen.CONFIRMED if abs(share - target) <= tolerance else Seen.MISMATCH


@dataclass(frozen=True)
class ShiftResult:
    target: int
    before: Split | None
    after: Split | None
    """Read back after the change; None when the balancer cannot be read back."""
    observed: Observation
    apply_seconds: float
    overlooked: str | None = None
    """A shift to 0 goes ahead whatever check() said (a rollback must not wait on a cookie line
    or a match rule HAProxy lost): what it said."""

    @property
    def confirmed(self) -> bool:
        """Read back (where possible) and not contradicted by the traffic it serves."""
        return self.after is not None and self.observed.seen is not Seen.MISMATCH

    def as_dict(self) -> dict[str, Any]:
        return {"target_green_percent": self.target,
                "before": self.before.as_dict() if self.before else None,
                "after": self.after.as_dict() if self.after else None,
                "read_back": self.after is not None, "observed": self.observed.as_dict(),
                "apply_seconds": round(self.apply_seconds, 4), "confirmed": self.confirmed,
                **({"overlooked": self.overlooked} if self.overlooked else {})}




def shift(lb: LoadBalancer, green_percent: int, *, match: Match | None = None,
          tolerance: float = 2.0, confirm_timeout: float = 30.0, observe: bool = True,
          clock: Clock = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> ShiftResult:
    """Set green's share, and which requests go to green whatever it (match: a match stage;
    None ends any, as a rollback must); raise TrafficError with the balancer's real state if
    the change did not take, or if the split it then serves stays off the target."""
    if not 0 <= green_percent <= 100:
        raise BadTrafficInput(f"percentage must be 0-100, got {green_percent}")
    overlooked = None
    to_blue = green_percent == 0 and match is None  # a rollback: nothing may hold it up
    try:
        lb.check()  # unknown backends and servers fail here, before anything changes
    except TrafficError as exc:
        if not to_blue:
            raise
        overlooked = str(exc)
    before = _read_before(lb)
    started = clock()
    unrouted = None
    try:
        _route(lb, match)
    except TrafficError as exc:
        if not to_blue:
            raise
        unrouted = exc  # the weights go to 0 first
    after = _apply_and_read(lb, green_percent)
    if unrouted is not None:
        raise TrafficError(f"{unrouted}; green's weights are at 0 ({_show(after) if after else 'set'}), "
                           "but requests matching a stage may still reach green")
    applied = clock()
    seen = Observation(Seen.NOT_OBSERVABLE)
    if observe:
        seen = observe_split(lb, green_percent, tolerance, confirm_timeout, clock, sleep)
        if seen.seen is Seen.MISMATCH:
            raise TrafficError(
                f"{lb.describe()} holds green {green_percent} % but served "
                f"{seen.green_percent:.1f} % of {seen.requests} requests to green for "
                f"{seen.seconds:.1f}s (tolerance {tolerance} points)")
    return ShiftResult(green_percent, before, after, seen, applied - started, overlooked)


def _read_before(lb: LoadBalancer) -> Split | None:
    """What the balancer held, for the record; a file balancer's first shift writes its file
    (check() has refused anything else the read-back could not parse)."""
    try:
        return lb.read()
    except TrafficError:
        return None


def _route(lb: LoadBalancer, match: Match | None) -> None:
    """The match first: a rollback sends matching requests back to blue before the weights."""
    lb.route_matching(match)
    want = None if match is None else match.value
    if (held := lb.matching()) != want:
        raise TrafficError(f"{lb.describe()}: sent requests matching {want!r} to green but it "
                           f"reads back {held!r}")


def _apply_and_read(lb: LoadBalancer, green_percent: int) -> Split | None:
    """Apply, read back; a read-back that differs (the balancer restarted and reverted, or a
    change half-applied) is re-applied once before it counts as a failure."""
    want = lb.expected(green_percent)
    for attempt in (1, 2):
        try:
            lb.apply(green_percent)
        except BadTrafficInput:
            raise
        except TrafficError as exc:
            raise TrafficError(f"{exc}; the balancer now holds: {_real_state(lb)}") from None
        after = lb.read()
        if after is None or (after.detail, after.persistent) == (want.detail, want.persistent):
            return after
        if attempt == 2:
            raise TrafficError(f"{lb.describe()}: set green {green_percent} % but it reads back "
                               f"{_show(after)} (wanted {_show(want)})")
    raise AssertionError("unreachable")


def _real_state(lb: LoadBalancer) -> str:
    try:
        split = lb.read()
    except TrafficError as exc:
        return f"unknown (read-back failed too: {exc})"
    return "unknown (no read-back)" if split is None else _show(split)


def _show(split: Split) -> str:
    detail = ", ".join(f"{k}={v}" for k, v in split.detail.items())
    still = f"; {', '.join(split.persistent)} still serving stuck clients" if split.persistent else ""
    return f"green {split.green_percent:.1f} % ({detail}{still})"


def observe_split(lb: LoadBalancer, target: float, tolerance: float, timeout: float,
                  clock: Clock = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Observation:
    """Watch the balancer's per-environment counters from now until the requests it picks
    match the target share (CONFIRMED), clearly do not (MISMATCH, after timeout), or no
    request arrives at all (NO_TRAFFIC)."""
    first = lb.counters()
    if first is None:
        return Observation(Seen.NOT_OBSERVABLE)
    started = clock()
    anchor, last_total, last_change = first, 0, started
    mismatch: Observation | None = None
    while True:
        sleep(POLL)
        now_counters = lb.counters()
        assert now_counters is not None
        green, total = _delta(anchor, now_counters)
        now = clock()
        if total != last_total:
            last_total, last_change = total, now
        seen = judge_window(target, green, total, tolerance)
        share = 100.0 * green / total if total else None
        if seen is Seen.CONFIRMED:
            return Observation(seen, share, total, now - started)
        if total == 0 and now - last_change >= IDLE_AFTER:
            return Observation(Seen.NO_TRAFFIC, None, 0, now - started)
        if seen is Seen.MISMATCH:
            mismatch = Observation(seen, share, total, now - started)
        if now - started >= timeout:
            return mismatch or Observation(Seen.NO_TRAFFIC, share, total, now - started)
        if seen is Seen.MISMATCH and total >= 4 * MIN_REQUESTS:
            # Requests picked around the change can tilt a window; start a fresh one.
            anchor, last_total = now_counters, 0


def _delta(a: dict[str, EnvCounters], b: dict[str, EnvCounters]) -> tuple[int, int]:
    # A balancer restart resets its counters: a negative delta counts from zero.
    d = {env: b[env].requests - a[env].requests for env in ("blue", "green")}
    d = {env: v if v >= 0 else b[env].requests for env, v in d.items()}
    return d["green"], d["blue"] + d["green"]
