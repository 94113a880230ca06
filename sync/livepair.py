"""Blue and green connections for a loop that runs for days: reopened after a server restart
or a dropped connection, and telling which side is unreachable, so the loop reports and
retries at its own cadence instead of dying."""

from __future__ import annotations

import time

from config.settings import Settings
from sync.connections import Conn, connect, databases
from sync.errors import SyncError

ENVS = ("blue", "green")


class LivePair:
    def __init__(self, settings: Settings, purpose: str) -> None:
        self.dbs = dict(zip(ENVS, databases(settings), strict=True))
        self.purpose = purpose
        self._conns: dict[str, Conn] = {}
        self.down: dict[str, str] = {}
        """Side -> why it is unreachable, while it is."""
        self.down_since: dict[str, float] = {}

    def open(self) -> tuple[Conn, Conn]:
        """Both connections, (re)connecting what is missing or broken. Both sides are tried,
        so `down` is right for each; then SyncError naming the first that cannot be reached."""
        failure: SyncError | None = None
        for env in ENVS:
            conn = self._conns.get(env)
            if conn is not None and not (conn.broken or conn.closed):
                continue
            self._forget(env)
            try:
                self._conns[env] = connect(self.dbs[env], self.purpose)
            except SyncError as exc:
                self._mark_down(env, str(exc))
                failure = failure or exc
        if failure is not None:
            raise failure
        return self._conns["blue"], self._conns["green"]

    def failed(self, error: BaseException) -> None:
        """After a failed tick: connections the error broke are dropped and their sides
        marked down (a query error on a live connection marks nothing)."""
        for env in ENVS:
            conn = self._conns.get(env)
            if conn is not None and (conn.broken or conn.closed):
                self._forget(env)
                self._mark_down(env, str(error).strip() or type(error).__name__)

    def succeeded(self) -> dict[str, float]:
        """A whole tick worked: the sides that were down are up again; returns how long each
        was down (seconds)."""
        now = time.monotonic()
        back = {env: now - self.down_since.get(env, now) for env in self.down}
        self.down.clear()
        self.down_since.clear()
        return back

    def up(self, env: str) -> bool:
        return env not in self.down

    def close(self) -> None:
        for env in ENVS:
            self._forget(env)

    def _mark_down(self, env: str, why: str) -> None:
        self.down[env] = why
        self.down_since.setdefault(env, time.monotonic())

    def _forget(self, env: str) -> None:
        conn = self._conns.pop(env, None)
        if conn is not None:
            conn.close()
