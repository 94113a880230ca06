"""Starting and stopping the lab's server processes, by PID, as an unprivileged user when root."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel


class LabError(Exception):
    """A lab part could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class RunAs:
    """The OS user servers run as: PostgreSQL and PgBouncer refuse to run as root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_lab(cls, name: str | None = None) -> RunAs | None:
        """None (run as ourselves) unless we are root, then the named or 'postgres' user."""
        if os.geteuid() != 0:
            return None
        name = name or os.environ.get("CUTOVER_LAB_USER", "postgres")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LabError(
                f"the lab runs its servers as the unprivileged user {name!r} when started by "
                f"root, and there is no such user; install postgresql (it creates 'postgres') "
                f"or set CUTOVER_LAB_USER to an existing user") from None
        return cls(name, entry.pw_uid, entry.pw_gid)

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


class Proc(BaseModel):
    """A started process: the PID plus its start time, so a recycled PID is never signalled."""

    pid: int
    start_ticks: int


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses; the rest follows the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_running(proc: Proc | None) -> bool:
    if proc is None:
        return False
    child = _CHILDREN.get(proc.pid)
    if child is not None and child.poll() is not None:
        return False
    return _start_ticks(proc.pid) == proc.start_ticks


def spawn(
    argv: Sequence[str],
    log: Path,
    run_as: RunAs | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start a server in its own session with output to log; returns its identity."""
    cwd = _cwd(cwd, run_as)
    with log.open("ab") as out:
        child = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=cwd,
            env=dict(env) if env is not None else None,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    _CHILDREN[child.pid] = child
    ticks = _start_ticks(child.pid)
    if ticks is None:
        raise LabError(f"{argv[0]} exited at once; see {log}:\n{tail(log)}")
    return Proc(pid=child.pid, start_ticks=ticks)


def _cwd(cwd: Path | None, run_as: RunAs | None) -> Path | None:
    # Another user may not be able to enter the caller's directory (a clone in a mode-0700
    # home): tools such as `haproxy -c` then fail on it. The root directory anyone can enter.
    return cwd if cwd is not None or run_as is None else Path("/")


def stop(proc: Proc | None, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a process we started, wait for it, and SIGKILL it past the timeout."""
    if proc is None or not is_running(proc):
        _reap(proc)
        return
    os.kill(proc.pid, sig)
    deadline = time.monotonic() + timeout
    while is_running(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(proc):
        os.kill(proc.pid, signal.SIGKILL)
        while is_running(proc):
            time.sleep(0.05)
    _reap(proc)


def _reap(proc: Proc | None) -> None:
    if proc is None:
        return
    child = _CHILDREN.pop(proc.pid, None)
    if child is not None:
        child.wait()


def run(argv: Sequence[str], run_as: RunAs | None, timeout: float = 120.0,
        env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command to completion; a failure raises LabError with its output."""
    cwd = _cwd(cwd, run_as)
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd,
            env=dict(env) if env is not None else None,
            user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed; run `make setup` (as root it installs "
                       "the lab's Debian packages)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, proc: Proc, log: Path, what: str, timeout: float = 30.0,
                  host: str = "127.0.0.1") -> None:
    """Wait until the server accepts connections; fail fast if it died, with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(proc):
            raise LabError(f"{what} exited while starting; its log {log} ends with:\n{tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise LabError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s; "
                   f"its log {log} ends with:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def find_binary(name: str) -> str:
    path_dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for d in [*path_dirs, Path("/usr/sbin"), Path("/sbin")]:
        if (d / name).exists():
            return str(d / name)
    raise LabError(f"{name} is not installed; run `make setup` (as root it installs the lab's "
                   "Debian packages: postgresql pgbouncer haproxy nginx-light prometheus)")
