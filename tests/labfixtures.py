"""The lab as pytest fixtures: real servers, started once per session, stopped by PID."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lab.lab import Lab


def new_lab_dir(name: str) -> Path:
    # Under /tmp, not pytest's tmp_path: that is 0700 root, and when run as root the lab's
    # servers run as an unprivileged user who must reach their directory.
    return Path(tempfile.mkdtemp(prefix=f"cutover-test-{name}-", dir="/tmp"))


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The shared lab: two app servers per environment and Prometheus. Tests that change
    weights or faults put them back."""
    the_lab = Lab(new_lab_dir("lab"), servers_per_env=2, with_prometheus=True)
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down(purge=True)
