"""Hook commands: their placeholders filled from the phase, a literal brace kept."""

from __future__ import annotations

import sys
from pathlib import Path

from config.operations import Hook, HookPoint
from controller.daemon.hooks import run_hooks

WRITE_ARGS = "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))"


def test_a_hook_command_gets_its_placeholders_filled(tmp_path: Path) -> None:
    out = tmp_path / "args"
    hook = Hook(at=HookPoint.AFTER_STAGE, command=[
        sys.executable, "-c", WRITE_ARGS, str(out), "{at}", "{service}", "{phase}", "{stage}",
        "weight={weight}", "{{literal}}"])
    outcomes = run_hooks([hook], HookPoint.AFTER_STAGE,
                         {"service": "records", "phase": "traffic", "stage": 1, "weight": None})
    assert [o.ok for o in outcomes] == [True]
    assert out.read_text() == "after_stage records traffic 1 weight= {literal}"


def test_a_hook_at_another_point_does_not_run(tmp_path: Path) -> None:
    out = tmp_path / "args"
    hook = Hook(at=HookPoint.BEFORE_SWITCH, command=[sys.executable, "-c", WRITE_ARGS, str(out)])
    assert run_hooks([hook], HookPoint.AFTER_SWITCH, {"phase": "switch"}) == []
    assert not out.exists()
