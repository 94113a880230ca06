"""The fence guardian: writes flow again after a switch's pause even when the controller that
paused them is gone.

A PgBouncer PAUSE outlives the admin session that set it, the old primary keeps
default_transaction_read_only, and a command endpoint's pause is whatever the user's tooling
holds: a controller killed (or hung, or its host lost) between pause and resume would hold
every writer until someone intervened. So before pausing, the switch starts this small process
of its own, in its own session, and hands it what it needs on its stdin (never argv or the
environment: it holds passwords). Then it tells the guardian, line by line, how far it got:

- "repointing": the endpoint is being pointed at the new primary (no write reaches it
  before the resume);
- "forward": the switch reached its point of no return (sync.objects.SWITCH_MARK_DDL), just
  before the resume: from here it only goes forward, to the new primary;
- "back": the mark could not be written after all: back to the old primary;
- "done": the switch is done or undone: the guardian leaves without touching anything;
- "act": the controller asks it to release the writers now (its own undo failed).

The pipe closing (the controller died), SIGTERM, or the deadline passing (the controller hung)
count as "act". Acting follows the one rule every part of the switch follows: before the point
of no return, point the endpoint back if it may have moved, lift the old primary's fence and
resume; after it, make sure the mark is on the new primary and the endpoint points there, and
resume.
The next `cutover switch` (or the daemon's restart) then finds the same state and finishes or
undoes the switch accordingly.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from config.environments import DatabaseSettings
from config.replication import SwitchoverSettings
from sync import objects
from sync.connections import connect
from sync.endpoint import PgBouncerEndpoint, WriteEndpoint, endpoint_from, target_of
from sync.errors import SyncError

READY_TIMEOUT = 10.0
RELEASE_FOR = 60.0
"""How long the guardian keeps trying to release the writers."""


class Guardian:
    """The controller's handle on its guardian process."""

    def __init__(self, proc: subprocess.Popen[str], lines: _Lines) -> None:
        self.proc, self.lines = proc, lines

    @classmethod
    def start(cls, switchover: SwitchoverSettings, old_primary: DatabaseSettings,
              new_primary: DatabaseSettings, mark: tuple[str, str], deadline: float) -> Guardian:
        """Started before the pause (its start-up is no part of it); returns once it listens.
        mark: (sync name, side) of the switch's mark on the new primary."""
        proc = subprocess.Popen([sys.executable, "-m", "sync.guardian"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # a signal to our group spares it
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps({"switchover": _secret_dump(switchover),
                                     "old_primary": _secret_dump(old_primary),
                                     "new_primary": _secret_dump(new_primary),
                                     "mark": list(mark), "deadline": deadline}) + "\n")
        proc.stdin.flush()
        lines = _Lines(proc.stdout.fileno())
        if not lines.readline(READY_TIMEOUT).startswith("ready"):
            proc.kill()
            proc.wait()
            raise SyncError("the fence guardian did not start; the switch did not pause")
        return cls(proc, lines)

    def _send(self, line: str) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except OSError:  # it acted already (deadline) and left
            return False
        return True

    def repointing(self) -> None:
        self._send("repointing")

    def forward(self) -> None:
        self._send("forward")

    def back(self) -> None:
        self._send("back")

    def release(self, timeout: float = 10.0) -> str:
        """Ask it to release the writers now; what it did."""
        if not self._send("act"):
            return "the guardian had already released the writers"
        return self.lines.readline(timeout).strip() or "the guardian did not answer in time"

    def done(self) -> None:
        """The switch is done or undone: the guardian leaves without touching anything."""
        if self._send("done"):
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _secret_dump(model: SwitchoverSettings | DatabaseSettings) -> dict[str, Any]:
    """The settings with their secrets in clear, for the guardian's pipe only."""
    data = model.model_dump(mode="json")
    if isinstance(model, DatabaseSettings):
        if model.password is not None:
            data["password"] = model.password.get_secret_value()
        return data
    if model.pgbouncer is not None and model.pgbouncer.admin_password is not None:
        data["pgbouncer"]["admin_password"] = model.pgbouncer.admin_password.get_secret_value()
    return data


class _Lines:
    """Lines from a pipe with a timeout. Read from the descriptor itself: a buffered stream
    may hold a second line already read ahead, which select() on the descriptor never sees."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.eof = fd, b"", False

    def readline(self, timeout: float) -> str:
        """The next line, "" at end of file or when none came within timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            with selectors.DefaultSelector() as sel:
                sel.register(self.fd, selectors.EVENT_READ)
                if not sel.select(left):
                    return ""
            chunk = os.read(self.fd, 4096)
            self.eof = not chunk
            self.buffer += chunk
        line, sep, self.buffer = self.buffer.partition(b"\n")
        return (line + sep).decode()


# -- the guardian process ----------------------------------------------------------------------


class _Signalled(Exception):
    pass


def _on_signal(*_: object) -> None:
    raise _Signalled


def _points_at(endpoint: WriteEndpoint, db: DatabaseSettings) -> bool:
    """PgBouncer can be read back (its file and what it serves); a command endpoint cannot."""
    if isinstance(endpoint, PgBouncerEndpoint):
        return endpoint.points_at() == endpoint.serving() == target_of(db)
    return False


def _forward(endpoint: WriteEndpoint, new_primary: DatabaseSettings, mark: tuple[str, str]) -> str:
    try:  # the mark may not have been written yet: the next run must find it
        with connect(new_primary, "guardian") as conn:
            conn.execute(objects.SWITCH_MARK_DDL)
            objects.mark_switch(conn, *mark)
    except (SyncError, psycopg.Error):
        pass  # the new primary is unreachable: the writers will find it so
    repointed = ""
    if not _points_at(endpoint, new_primary):
        try:
            endpoint.repoint(new_primary)
        except (SyncError, OSError) as exc:
            # Pointed neither way: resume where it points. The old primary stays fenced, so
            # writes land on the new one or nowhere, and the mark makes the next run finish.
            repointed = f" (repointing failed: {str(exc).strip()}; the endpoint stays where it was)"
    endpoint.resume()
    return "released: the switch went forward, writes resumed on the new primary" + repointed


def release(switchover: SwitchoverSettings, old_primary: DatabaseSettings,
            new_primary: DatabaseSettings, mark: tuple[str, str], progress: set[str]) -> str:
    """Writes flow again, by the rule of the point of no return; what was done."""
    endpoint = endpoint_from(switchover)
    if "forward" in progress:
        return _forward(endpoint, new_primary, mark)
    # Before the mark no write reached the new primary: point back (if the repoint may have
    # run), lift the old primary's fence, resume.
    if isinstance(endpoint, PgBouncerEndpoint):
        serving_new = endpoint.serving() == target_of(new_primary)
        if not _points_at(endpoint, old_primary):
            try:
                endpoint.repoint(old_primary)
            except (SyncError, OSError):
                if serving_new:  # it serves the new primary and cannot be moved: go there
                    return _forward(endpoint, new_primary, mark)
    elif "repointing" in progress:
        # Should it fail both ways for fence_timeout, the endpoint most likely never moved.
        with contextlib.suppress(SyncError, OSError):
            Retrying(stop=stop_after_delay(switchover.fence_timeout), wait=wait_exponential(0.05, max=0.5),
                     retry=retry_if_exception_type((SyncError, OSError)), reraise=True)(
                endpoint.repoint, old_primary)
    with connect(old_primary, "guardian") as conn:
        objects.unfence(conn)
    endpoint.resume()
    return "released: old primary unfenced, writes resumed on it"


def main() -> int:
    stdin = _Lines(sys.stdin.fileno())
    spec = json.loads(stdin.readline(READY_TIMEOUT))
    switchover = SwitchoverSettings.model_validate(spec["switchover"])
    old_primary = DatabaseSettings.model_validate(spec["old_primary"])
    new_primary = DatabaseSettings.model_validate(spec["new_primary"])
    mark = (str(spec["mark"][0]), str(spec["mark"][1]))
    deadline = time.monotonic() + float(spec["deadline"])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    print("ready", flush=True)
    progress: set[str] = set()
    try:
        while True:
            line = stdin.readline(max(0.0, deadline - time.monotonic())).strip()
            if line == "done":
                return 0
            if line == "back":
                progress.discard("forward")
            elif line in ("repointing", "forward"):
                progress.add(line)
            else:
                break  # "act", the pipe closed (EOF), or the deadline
    except _Signalled:
        pass
    # PgBouncer, a command's target or the database may be restarting: keep trying a while.
    retrying = Retrying(stop=stop_after_delay(RELEASE_FOR), wait=wait_exponential(0.05, max=1.0),
                        retry=retry_if_exception_type((SyncError, psycopg.Error, OSError)),
                        reraise=True)
    try:
        what = retrying(release, switchover, old_primary, new_primary, mark, progress)
    except (SyncError, psycopg.Error, OSError) as exc:
        _tell(f"failed: {str(exc).strip() or type(exc).__name__}")
        return 1
    _tell(what)
    return 0


def _tell(line: str) -> None:
    with contextlib.suppress(OSError):  # the controller may be gone: nobody to tell then
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
