"""The fence guardian: writes flow again after a switch's pause even when the controller that
paused them is gone.

PgBouncer keeps a PAUSE after the admin session that set it ends, and the old primary keeps
default_transaction_read_only: a controller killed (or hung, or its host lost) between PAUSE
and RESUME would hold every writer until someone intervened. So before pausing, the switch
starts this small process of its own, in its own session, and hands it what it needs on its
stdin (never argv or the environment: it holds passwords). The guardian waits for one line.
"done" ends it. Anything else, the pipe closing (the controller died), SIGTERM, or the
deadline passing (the controller hung), and it acts: if PgBouncer still serves the old
primary, it lifts that side's fence; then it RESUMEs. Writes then flow to whichever side
PgBouncer points at, and the next `cutover switch` (or the daemon's restart) reconciles.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from typing import IO, Any

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from config.environments import DatabaseSettings
from config.replication import PgBouncerSettings
from sync.endpoint import PgBouncerEndpoint, target_of
from sync.errors import SyncError

READY_TIMEOUT = 10.0
RELEASE_FOR = 60.0
"""How long the guardian keeps trying to release the writers."""


class Guardian:
    """The controller's handle on its guardian process."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, pgbouncer: PgBouncerSettings, old_primary: DatabaseSettings, deadline: float) -> Guardian:
        """Started before the pause (its start-up is no part of it); returns once it listens."""
        proc = subprocess.Popen([sys.executable, "-m", "sync.guardian"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # a signal to our group spares it
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps({"pgbouncer": _secret_dump(pgbouncer),
                                     "old_primary": _secret_dump(old_primary),
                                     "deadline": deadline}) + "\n")
        proc.stdin.flush()
        if not _readline(proc.stdout, READY_TIMEOUT).startswith("ready"):
            proc.kill()
            proc.wait()
            raise SyncError("the fence guardian did not start; the switch did not pause")
        return cls(proc)

    def done(self) -> None:
        """The switch is done or undone: the guardian leaves without touching anything."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("done\n")
            self.proc.stdin.close()
        except OSError:  # it acted already (deadline) and left
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _secret_dump(model: PgBouncerSettings | DatabaseSettings) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    for key in ("password", "admin_password"):
        secret = getattr(model, key, None)
        if secret is not None:
            data[key] = secret.get_secret_value()
    return data


def _readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        return stream.readline() if sel.select(timeout) else ""


# -- the guardian process ----------------------------------------------------------------------


class _Signalled(Exception):
    pass


def _on_signal(*_: object) -> None:
    raise _Signalled


def release(pgbouncer: PgBouncerSettings, old_primary: DatabaseSettings) -> str:
    """Lift the old primary's fence if PgBouncer still serves it, then RESUME; what was done."""
    endpoint = PgBouncerEndpoint(pgbouncer)
    serving = endpoint.serving()
    lifted = serving is None or serving == target_of(old_primary)
    if lifted:
        with psycopg.connect(old_primary.conninfo(application_name="cutover-guardian"),
                             autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
                sql.Identifier(str(conn.info.dbname))))
    endpoint.resume()
    return "old primary unfenced, writes resumed" if lifted else "writes resumed on the new primary"


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    pgbouncer = PgBouncerSettings.model_validate(spec["pgbouncer"])
    old_primary = DatabaseSettings.model_validate(spec["old_primary"])
    deadline = time.monotonic() + float(spec["deadline"])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    print("ready", flush=True)
    try:
        line = _readline(sys.stdin, max(0.0, deadline - time.monotonic()))
    except _Signalled:
        line = ""
    if line.strip() == "done":
        return 0
    # PgBouncer or the database may be restarting: keep trying for a while.
    retrying = Retrying(stop=stop_after_delay(RELEASE_FOR), wait=wait_exponential(0.05, max=1.0),
                        retry=retry_if_exception_type((SyncError, psycopg.Error, OSError)),
                        reraise=True)
    try:
        retrying(release, pgbouncer, old_primary)
    except (SyncError, psycopg.Error, OSError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
