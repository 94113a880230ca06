"""The fault-injection matrix of the switch: each step, in logical and diff mode, through
PgBouncer and through the user's own commands, x {an exception of an unexpected type, SIGKILL
of the controller, the databases file unwritable, PgBouncer's admin console cut off, green
cut off}. Each cell: writes flow again within fence_timeout + 1 s of the fault, no
acknowledged write is lost, the next `cutover switch` reconciles, and blue and green end equal
by checksum. The matrix is printed with the worst stall per cell.

The whole matrix (4 x 16 steps x 5 faults, about 25 minutes here) runs with `make matrix`;
the default run takes the steps between the pause and the resume, where writers are held,
through PgBouncer with logical replication (at each, an exception of an unexpected type and
SIGKILL, and the three other faults in turn, so each meets several of these steps), and the
endpoint's own steps through commands with the diff sync, every fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.lab.lab import Lab
from tests.faultmatrix import FAULTS, FENCE_TIMEOUT, Cell, render, rig
from tests.syncfixtures import DbPair

COMBOS = [("logical", "pgbouncer"), ("diff", "command"), ("logical", "command"), ("diff", "pgbouncer")]
HELD = ("pause", "resume")
"""The first and the last step during which writers are held."""


def held_faults(index: int) -> tuple[str, ...]:
    """The default run's faults at the index-th held step: the two that matter at every step,
    and one of the other three in turn."""
    return ("exception", "sigkill", FAULTS[2 + index % 3])


def run_matrix(lab: Lab, pair: DbPair, tmp_path: Path, mode: str, endpoint: str,
               which: tuple[str, ...] | None = None) -> None:
    cells: dict[tuple[str, str], Cell] = {}
    with rig(lab, pair, tmp_path, mode, endpoint) as r:
        steps = r.steps()
        if which == HELD:
            steps = steps[steps.index(HELD[0]):steps.index(HELD[1]) + 1]
        elif which is not None:
            steps = [s for s in steps if s in which]
        for i, step in enumerate(steps):
            for fault in held_faults(i) if which == HELD else FAULTS:
                cells[(fault, step)] = r.run(fault, step)
    print("\n" + render(f"switch fault matrix: {mode} sync, {endpoint} endpoint (worst stall "
                        f"between two acknowledged writes; fence_timeout {FENCE_TIMEOUT:g}s; "
                        "! marks a cell with a problem)", steps, cells))
    limit = FENCE_TIMEOUT + 1
    bad = [f"{c.step} x {c.fault}: " + "; ".join(
        c.problems + ([] if c.stall is None or c.stall <= limit else [f"writes stalled {c.stall:.2f}s"]))
        for c in cells.values() if c.problems or c.stall is None or c.stall > limit]
    assert not bad, "\n".join(bad)


@pytest.mark.timeout(900)
def test_every_fault_while_writers_are_held_through_pgbouncer(lab: Lab, pair: DbPair,
                                                               tmp_path: Path) -> None:
    run_matrix(lab, pair, tmp_path, "logical", "pgbouncer", HELD)


@pytest.mark.timeout(900)
def test_every_fault_at_the_endpoint_steps_through_the_users_commands(lab: Lab, pair: DbPair,
                                                                      tmp_path: Path) -> None:
    run_matrix(lab, pair, tmp_path, "diff", "command", ("repoint", "mark", "resume"))


@pytest.mark.matrix
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("mode", "endpoint"), COMBOS)
def test_every_fault_at_every_step(lab: Lab, pair: DbPair, tmp_path: Path, mode: str,
                                   endpoint: str) -> None:
    run_matrix(lab, pair, tmp_path, mode, endpoint)
