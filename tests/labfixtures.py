"""The lab as pytest fixtures: real servers, started once per session, stopped by PID."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controller.lab.lab import Lab


def new_lab_dir(name: str) -> Path:
    # Under /tmp, not pytest's tmp_path: that is 0700 root, and when run as root the lab's
    # servers run as an unprivileged user who must reach their directory.
    return Path(tempfile.mkdtemp(prefix=f"cutover-test-{name}-", dir="/tmp"))


@contextmanager
def running_lab(name: str, *, servers_per_env: int, with_prometheus: bool) -> Iterator[Lab]:
    """A lab of its own, up for the block and purged after it."""
    the_lab = Lab(new_lab_dir(name), servers_per_env=servers_per_env, with_prometheus=with_prometheus)
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down(purge=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The shared lab: two app servers per environment and Prometheus. Tests that change
    weights or faults put them back."""
    with running_lab("lab", servers_per_env=2, with_prometheus=True) as the_lab:
        yield the_lab
