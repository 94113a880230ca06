"""The plan: the static part of the settings the phase decisions depend on (pure, like them;
the loop makes it from the settings)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    FULL = "full"
    """Sync, switch writes, shift traffic."""
    SHARED = "shared"
    """switchover.method = "none": both versions share one database; traffic stages only."""
    SYNC_ONLY = "sync_only"
    """No [traffic]: the continuous sync service, streaming forever."""


@dataclass(frozen=True)
class Stage:
    weight: int
    bake: float
    gate: str = "none"
    """What the stage waits for once baked: "none", "promote" or "hook"."""


@dataclass(frozen=True)
class Plan:
    """The static part of the settings the decisions depend on."""
    mode: Mode
    stages: tuple[Stage, ...] = ()
    auto_switch: bool = True
    hold: float = 600.0
    auto_finalize: bool = True
    on_breach: str = "rollback"
    diff_every: float | None = None
    """sync.mode = diff: seconds between diff cycles while streaming (None: logical)."""
    control: int = 0
    """Percent kept on blue as a live control while the last stage (100) bakes."""
    starved_after: float = 3.0
    """Multiples of a stage's bake it may go without evidence before its hooks, then a hold."""
    gate_poll: float = 15.0
    """Seconds between asks of a hook gate's approve_stage hooks."""

    def weight(self, stage: int) -> int:
        """What a stage gives green while it bakes: the last one keeps the control on blue."""
        weight = self.stages[stage].weight
        return weight - self.control if weight == 100 else weight
