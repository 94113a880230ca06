"""What the phase machine decides over, pure data: phases, intents, jobs and their results,
the persisted state, a tick's observations and the decision (controller.daemon.phases)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "pending"
    PREFLIGHT = "preflight"
    COPYING = "copying"
    STREAMING = "streaming"
    SWITCHING = "switching"
    SHIFTING = "shifting"
    PROMOTED = "promoted"
    FINALIZING = "finalizing"
    FINALIZED = "finalized"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({Phase.FINALIZED, Phase.ROLLED_BACK})
LIVE_TRAFFIC = frozenset({Phase.SHIFTING, Phase.PROMOTED})
"""Phases where green serves traffic: the SLO watch runs and a breach rolls back."""


class Intent(StrEnum):
    """Operator commands, persisted by the CLI and taken by the daemon on its next tick."""
    PROMOTE = "promote"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    RETRY = "retry"


class Job(StrEnum):
    """Effects; each is idempotent, so a daemon killed mid-job simply runs it again."""
    STARVED = "starved"
    """The stage_starved hooks of a stage that gathers no evidence."""
    PREFLIGHT = "preflight"
    COPY = "copy"
    SWITCH = "switch"
    SHIFT = "shift"
    STAGE_DONE = "stage_done"
    """The after_stage hooks of a baked stage."""
    APPROVE = "approve"
    """The approve_stage hooks of a baked stage whose gate is "hook"."""
    FINALIZE = "finalize"
    ROLLBACK = "rollback"
    SYNC_CYCLE = "sync_cycle"
    """sync.mode = diff, while streaming: one diff cycle (green made equal to blue)."""


class Failure(StrEnum):
    """What a failed job asks for (from the job itself or a hook's on_failure)."""
    HOLD = "hold"
    ROLLBACK = "rollback"
    FINISH = "finish"
    """Past a point it cannot undo (the switch's mark): run it again, it finishes."""


@dataclass(frozen=True)
class Effect:
    job: Job
    weight: int | None = None
    """SHIFT: green's percentage."""
    stage: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class JobResult:
    job: Job
    ok: bool
    detail: str = ""
    failure: Failure = Failure.HOLD
    reverted: bool = False
    """ROLLBACK: writes went back to blue as well (rollback.database = "revert")."""


@dataclass(frozen=True)
class State:
    """What the daemon persists after every tick (JSON in the state store)."""
    phase: Phase = Phase.PENDING
    stage: int = 0
    applied: bool = False
    """SHIFTING: the stage's weights are set, read back and seen served."""
    bake_seconds: float = 0.0
    """SHIFTING: passing time baked so far in this stage (survives a restart)."""
    starved_seconds: float = 0.0
    """SHIFTING: time in this stage not baked because a check had no evidence either way."""
    starved_hooks: bool = False
    """SHIFTING: the stage_starved hooks ran in this stage."""
    gated: bool = False
    """SHIFTING: the stage has baked and waits at its gate."""
    approved: bool = False
    """SHIFTING: the stage's gate is open (`cutover promote`, or its approve_stage hooks)."""
    since_ask: float = 0.0
    """SHIFTING, at a hook gate: time since its hooks were last asked."""
    hold_seconds: float = 0.0
    """PROMOTED: time held at 100 %."""
    since_sync: float = 0.0
    """STREAMING with the diff sync: time since the last diff cycle started."""
    paused: bool = False
    switched: bool = False
    """Writes go to green."""
    abort_requested: bool = False
    attempt: int = 1
    reason: str = "not started"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["phase"] = Phase(known.get("phase", Phase.PENDING))
        return cls(**known)


@dataclass(frozen=True)
class Breach:
    check: str
    reason: str


@dataclass(frozen=True)
class Observations:
    elapsed: float = 0.0
    """Seconds since the previous tick (bounded by the daemon)."""
    intents: tuple[Intent, ...] = ()
    running: Job | None = None
    """A job still in flight."""
    done: JobResult | None = None
    """A job that finished since the previous tick (seen exactly once)."""
    sync_ready: bool = False
    """STREAMING: green streams with lag under the limits."""
    sync_held: str = ""
    """STREAMING: what else keeps green from taking writes (schema drift), if anything."""
    breach: Breach | None = None
    slo_passing: bool = True
    """Every check's latest verdict passes (or there are no checks)."""
    starved: tuple[str, ...] = ()
    """Checks whose latest verdict is inconclusive for lack of evidence (none failing)."""


@dataclass(frozen=True)
class Decision:
    state: State
    effect: Effect | None = None
    reason: str = ""

    @property
    def waits(self) -> bool:
        return self.effect is None
