"""The unit files are valid for systemd and hardened (systemd-analyze, offline: no running
systemd needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
CUTOVER = Path(sys.executable).with_name("cutover")


def installed_copy(unit: Path, tmp_path: Path) -> Path:
    # verify checks that ExecStart's program exists: point it at this checkout's cutover.
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/cutover", str(CUTOVER)))
    return copy


def test_there_are_unit_files() -> None:
    assert any(u.name == "cutover-sync@.service" for u in UNITS)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make setup` installs the systemd package"
    done = subprocess.run([analyze, "verify", str(installed_copy(unit, tmp_path))],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "cutover" not in done.stderr, done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_exposure_is_at_most_2(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                           str(installed_copy(unit, tmp_path))],
                          capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0
