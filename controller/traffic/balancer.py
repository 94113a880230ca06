"""The LoadBalancer interface every driver implements, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from config.traffic import Match


class TrafficError(Exception):
    """A traffic operation failed; the message says what the balancer really holds."""


class BadTrafficInput(TrafficError):
    """An unknown backend, server or flag, or a bad argument: nothing was changed. Exit 2."""


@dataclass(frozen=True)
class Split:
    """What a balancer holds now."""

    green_percent: float
    """Green's share of new requests, 0-100."""
    detail: dict[str, int] = field(default_factory=dict)
    """Per-server weights where the balancer has them, else {"blue": %, "green": %}."""
    persistent: tuple[str, ...] = ()
    """Servers at weight 0 that still serve the clients stuck to them (sticky stages): they
    take traffic the weights do not show."""

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"green_percent": round(self.green_percent, 2), "detail": self.detail}
        if self.persistent:
            out["persistent"] = list(self.persistent)
        return out


@dataclass(frozen=True)
class EnvCounters:
    """Cumulative counters of one environment's servers, as the balancer counts them."""

    requests: int
    """Times a server of this environment was picked for a request."""
    errors: int
    """5xx responses."""


class LoadBalancer(Protocol):
    """A balancer Cutover can move: set green's share, read back what it really holds and,
    where it can tell, what it has actually sent where."""

    def describe(self) -> str:
        """Where it is, for messages (never a secret)."""
        ...

    def check(self) -> None:
        """Reachable, and every configured backend/server/flag exists; raises
        BadTrafficInput (nothing changed) or TrafficError (unreachable)."""
        ...

    def apply(self, green_percent: int) -> None:
        """Send green_percent of new requests to green, the rest to blue."""
        ...

    def read(self) -> Split | None:
        """What the balancer holds now, read from the balancer itself; None when this
        balancer offers no way to read it back (a command or URL without read-back)."""
        ...

    def expected(self, green_percent: int) -> Split:
        """What read() returns once apply(green_percent) has fully taken effect."""
        ...

    def counters(self) -> dict[str, EnvCounters] | None:
        """Per-environment counters ("blue", "green"), or None when it cannot tell."""
        ...

    def route_matching(self, match: Match | None) -> None:
        """Send the requests that match to green whatever the weights; None: none. A driver
        that cannot route by header refuses a match (BadTrafficInput)."""
        ...

    def matching(self) -> str | None:
        """The value of the match the balancer routes to green now, read from it (None: none)."""
        ...

    def close(self) -> None: ...


def share_split(green: float) -> Split:
    """A split known only as green's share (a flag, a command, an API): no servers."""
    return Split(green, {"blue": round(100 - green), "green": round(green)})


class ShareBalancer:
    """What the drivers that know only green's share have in common: they expect exactly the
    share they set, and cannot count requests."""

    def expected(self, green_percent: int) -> Split:
        return share_split(green_percent)

    def counters(self) -> dict[str, EnvCounters] | None:
        return None

    def route_matching(self, match: Match | None) -> None:
        if match is not None:
            raise BadTrafficInput("this driver cannot send requests to green by header")

    def matching(self) -> str | None:
        return None

    def close(self) -> None:
        pass
