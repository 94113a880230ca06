"""What a switch is and what it reports: its direction, its report, its failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.environments import DatabaseSettings
from config.settings import Settings, need_switchover
from sync import objects
from sync.connections import databases
from sync.endpoint import WriteEndpoint, endpoint_from
from sync.errors import BadInputError, SyncError


@dataclass
class SwitchReport:
    to: str
    dry_run: bool = False
    already: bool = False
    """The endpoint already pointed at the target: only the leftovers were finished."""
    undid_interrupted: bool = False
    pause_ms: float | None = None
    lsn: str | None = None
    sequences: int = 0
    tables_verified: int = 0
    verified: str | None = None
    """Where the comparison ran: "in pause", "after resume", "after resume, live", or None
    (not compared)."""
    not_compared: list[str] = field(default_factory=list)
    """Tables a live comparison could not settle: they kept changing under writes."""
    difference: str | None = None
    """A difference found and left as it is (a rollback does not go back to the side it left)."""
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds per step."""

    def as_dict(self) -> dict[str, Any]:
        return {"to": self.to, "dry_run": self.dry_run, "already": self.already,
                "undid_interrupted": self.undid_interrupted,
                "pause_ms": None if self.pause_ms is None else round(self.pause_ms, 1),
                "lsn": self.lsn, "sequences": self.sequences,
                "tables_verified": self.tables_verified, "verified": self.verified,
                "not_compared": self.not_compared, "difference": self.difference,
                "steps_ms": {k: round(v * 1000, 1) for k, v in self.steps.items()}}


def endpoint_for(settings: Settings) -> WriteEndpoint:
    return endpoint_from(need_switchover(settings, "the switch"))


@dataclass(frozen=True)
class Direction:
    to: str
    src_db: DatabaseSettings
    dst_db: DatabaseSettings
    old: str
    """The replication src -> dst running now: subscription on dst, slot on src."""
    new: str
    """The one to create dst -> src: publication and slot on dst, subscription on src."""


def direction(settings: Settings, to: str) -> Direction:
    blue, green = databases(settings)
    name, reverse = objects.pg_name(settings.sync), objects.reverse_name(settings.sync)
    if to == "green":
        return Direction("green", blue, green, name, reverse)
    if to == "blue":
        return Direction("blue", green, blue, reverse, name)
    raise BadInputError(f"--to must be green or blue, not {to!r}")


class VerifyDifference(SyncError):
    """The two sides differed at the fence."""


class SwitchUnfinished(SyncError):
    """A switch that failed past its point of no return: writes go to the new primary (or
    will, once the endpoint takes them); running it again finishes it."""
