"""Standalone PostgreSQL clusters of other majors (18, 17), started once per session with the
lab's own code on free loopback ports under /tmp, and pairs of the shared lab's blue (15) with
one of them as green. Each fixture stops exactly the server it started, by PID."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.lab import pginstall, postgres
from controller.lab.lab import Lab
from controller.lab.processes import Proc, RunAs, free_port
from tests.labfixtures import new_lab_dir
from tests.syncfixtures import DbPair, new_pair


@dataclass
class Cluster:
    root: Path
    port: int
    proc: Proc
    install: pginstall.ServerInstall

    def dsn(self, dbname: str = "postgres") -> str:
        return postgres.dsn(self.port, dbname)


def start_cluster(major: int) -> Cluster:
    """A green-like cluster of that major: the lab's initdb, settings and start."""
    run_as = RunAs.for_lab()
    root = new_lab_dir(f"pg{major}")
    if run_as:
        root.chmod(0o755)
        run_as.chown(root)
    install = pginstall.lab_install(major, run_as)
    port = free_port()
    datadir, log = root / "green", root / "green.log"
    postgres.init_cluster(datadir, port, run_as, install)
    proc = postgres.start(datadir, log, run_as, install)
    cluster = Cluster(root, port, proc, install)
    try:
        postgres.wait_ready(port, proc, log)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    postgres.stop_cluster(cluster.proc)  # by PID (and start time), nothing else
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg18() -> Iterator[Cluster]:
    cluster = start_cluster(18)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def pg17() -> Iterator[Cluster]:
    cluster = start_cluster(17)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def pair_18(lab: Lab, pg18: Cluster) -> Iterator[DbPair]:
    """Blue from the shared lab (PostgreSQL 15), green on the PostgreSQL 18 cluster."""
    with new_pair(lab, pg18.port) as the_pair:
        yield the_pair


@pytest.fixture
def pair_17(lab: Lab, pg17: Cluster) -> Iterator[DbPair]:
    with new_pair(lab, pg17.port) as the_pair:
        yield the_pair
