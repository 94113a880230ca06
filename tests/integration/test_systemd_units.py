"""Every unit in systemd/ is valid for systemd 252 and hardened: `systemd-analyze verify` with no
warning about it, and `systemd-analyze security` at an exposure of at most 1.2. Both run
offline on the unit files, so no running systemd (PID 1) is needed; systemd-analyze is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings, secret_paths

SYSTEMD_DIR = Path(__file__).parents[2] / "systemd"
INSTALLED_BINARY = "/usr/local/bin/cutover"
CUTOVER = Path(sys.executable).with_name("cutover")
MAX_EXPOSURE = 1.2
# Deterministic output: warnings to stderr (not the journal), no colours, no pager.
ENV = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_TARGET": "console",
       "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"}


def unit_names() -> list[str]:
    """The units to check, templates as an instance (verify then expands %i)."""
    return sorted(f.name.replace("@.service", "@demo.service") for f in SYSTEMD_DIR.glob("*.service"))


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: `apt-get install systemd` (`make setup` does it)")
    return found


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The unit files as installed, except that ExecStart= runs this checkout's cutover:
    verify fails a unit whose program does not exist."""
    assert CUTOVER.is_file(), f"{CUTOVER} is missing: `make setup` installs the package into .venv"
    for unit in SYSTEMD_DIR.glob("*.service"):
        text = unit.read_text()
        assert f"ExecStart={INSTALLED_BINARY} " in text, f"{unit.name} should run {INSTALLED_BINARY}"
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_BINARY, str(CUTOVER)))
    return tmp_path


def verify(analyze: str, unit: Path) -> tuple[int, list[str]]:
    """verify's exit code and its complaints about our units (not about the host's). With
    --recursive-errors=no the code counts only the unit itself, warnings included (a plain
    verify exits 0 on an unknown key), and a broken unit of the host cannot fail it."""
    done = subprocess.run([analyze, "verify", "--man=no", "--recursive-errors=no", str(unit)],
                          capture_output=True, text=True, env=ENV, check=False, timeout=60)
    ours = [line for line in done.stderr.splitlines()
            if "cutover" in line or str(unit.parent) in line]
    return done.returncode, ours


def test_every_unit_is_checked() -> None:
    assert {"cutover.service", "cutover@demo.service", "cutover-sync@demo.service"} <= set(unit_names())


@pytest.mark.parametrize("name", unit_names())
def test_verify_passes_without_warnings(name: str, analyze: str, installed: Path) -> None:
    code, complaints = verify(analyze, installed / name)
    assert code == 0, complaints
    assert complaints == []


def test_verify_would_catch_a_bad_unit(analyze: str, installed: Path) -> None:
    """The check above is not blind: a misspelt key and a missing program both fail it."""
    unit = installed / "cutover.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    code, complaints = verify(analyze, unit)
    assert code != 0
    assert any("WatchdogSecs" in c for c in complaints), complaints
    unit.write_text(unit.read_text().replace("WatchdogSecs=", "WatchdogSec=")
                    .replace(str(CUTOVER), "/nonexistent/cutover"))
    code, complaints = verify(analyze, unit)
    assert code != 0
    assert any("/nonexistent/cutover" in c for c in complaints), complaints


@pytest.mark.parametrize("name", unit_names())
def test_exposure_is_at_most_1_2(name: str, analyze: str, installed: Path) -> None:
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(installed / name)],
                          capture_output=True, text=True, env=ENV, check=False, timeout=60)
    found = re.search(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)", done.stdout)
    assert found, done.stdout + done.stderr
    assert found.group(1) == name
    exposure = float(found.group(2))
    print(f"{name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


@pytest.mark.parametrize("name", ["cutover.service", "cutover@.service"])
def test_daemon_units_notify_with_a_watchdog_and_real_credentials(name: str) -> None:
    """The daemon's contract with systemd (controller/daemon/sdnotify.py), and every credential named
    like a secret field of the settings (a typo would silently leave the secret unset)."""
    lines = (SYSTEMD_DIR / name).read_text().splitlines()
    for setting in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure",
                    "KillSignal=SIGTERM", "TimeoutStopSec=60s", "DynamicUser=yes"):
        assert setting in lines, f"{name}: {setting} missing"
    secrets = {"__".join(p for p in path if p != "*") for path in secret_paths(Settings)}
    credentials = {line.split("=", 1)[1].split(":", 1)[0] for line in lines
                   if line.startswith("LoadCredential=")}
    assert credentials == {"blue__database__password", "green__database__password",
                           "switchover__pgbouncer__admin_password", "notify__webhook"}
    assert credentials <= secrets
