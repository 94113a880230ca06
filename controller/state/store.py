"""Which state store a daemon or command uses: the embedded SQLite journal (the default), or
PostgreSQL for two daemons in HA (controller.state.pgstore). Both keep the same three things: the
journal of events, the daemon's state, the operator's intents."""

from __future__ import annotations

from typing import Any, Protocol

from config import Settings
from controller.state.journal import Event, EventKind, Journal, StoreMissing
from controller.state.pgstore import PgStore


class StateStore(Protocol):
    def record(self, kind: EventKind, data: dict[str, Any]) -> Event: ...

    def events(self, kind: str | None = None, after: int = 0,
               limit: int | None = None) -> list[Event]: ...

    def last_events(self, limit: int, kinds: tuple[str, ...] = ()) -> list[Event]:
        """The newest `limit` events (of these kinds, if given), oldest first."""
        ...

    def load_state(self) -> dict[str, Any] | None: ...

    def save_state(self, data: dict[str, Any]) -> None: ...

    def state_age(self) -> float | None:
        """Seconds since the daemon last saved its state (it saves every tick)."""
        ...

    def add_intent(self, kind: str) -> int: ...

    def take_intents(self) -> list[str]:
        """Pending intents, oldest first, marked taken at once."""
        ...

    def pending_intents(self) -> list[str]: ...

    def close(self) -> None: ...


def open_store(settings: Settings, epoch: int | None = None, *, existing: bool = False) -> StateStore:
    """The configured store; with an epoch, a leader's (PostgreSQL: writes fenced by it).
    existing=True (a reader: status, history, report) opens only a store that is there, and
    creates nothing: StoreMissing otherwise."""
    if settings.state.backend == "postgres":
        return PgStore(settings.state, settings.service, epoch, existing=existing)
    if existing and not settings.state.path.exists():
        raise StoreMissing(f"no state store at {settings.state.path}: `cutover run` has not started "
                           "with this config (set [state] path to the daemon's)")
    return Journal(settings.state.path)
