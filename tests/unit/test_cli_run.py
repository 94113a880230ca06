"""The operator's commands on the daemon's SQLite state store, with no daemon and no servers:
`status` (table, --json, --watch), `history`, and the intents with their refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli import app
from controller.daemon.phases import Phase, State
from controller.state.journal import EventKind, Journal, StoreError

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cutover.toml"
    path.write_text('[state]\npath = "state.db"\n')
    return path


def saved(config: Path, phase: Phase, **state: object) -> Journal:
    store = Journal(config.parent / "state.db")
    store.save_state(State(phase=phase, **state).as_dict())  # type: ignore[arg-type]
    return store


def test_status_json_reads_state_sample_and_intents(config: Path) -> None:
    store = saved(config, Phase.SHIFTING, stage=1, applied=True, switched=True)
    store.record(EventKind.SAMPLE, {"weights": {"blue": 50, "green": 50}, "lag_seconds": 0.004,
                            "lag_bytes": 120, "checks": {"errors": {"outcome": "pass", "green": 0.001}}})
    store.add_intent("pause")
    store.close()
    done = runner.invoke(app, ["status", "--json", "--config", str(config)])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["phase"] == "shifting"
    assert data["stage"] == 1
    assert data["weights"] == {"blue": 50, "green": 50}
    assert data["pending_intents"] == ["pause"]
    assert data["daemon_running"] is True  # saved just now
    table = runner.invoke(app, ["status", "--config", str(config)])
    assert "shifting stage 2" in table.output
    assert "blue 50 % / green 50 %" in table.output


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["history"],
                                     ["report", "-o", "r.html"]])
def test_a_reader_without_a_store_says_where_it_looked_and_creates_nothing(
        config: Path, command: list[str]) -> None:
    done = runner.invoke(app, [*command, "--config", str(config)])
    assert done.exit_code == 1, done.output
    assert "no state store at" in done.output
    assert sorted(p.name for p in config.parent.iterdir()) == ["cutover.toml"]


def test_history_lists_decisions_not_samples(config: Path) -> None:
    store = saved(config, Phase.STREAMING)
    store.record(EventKind.PHASE, {"from": "copying", "to": "streaming", "reason": "green streams"})
    store.record(EventKind.SAMPLE, {"weights": None})
    store.record(EventKind.JOB, {"job": "copy", "ok": True, "detail": "", "seconds": 1.5})
    store.close()
    done = runner.invoke(app, ["history", "--json", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert [e["kind"] for e in json.loads(done.stdout)] == ["phase", "job"]
    every = runner.invoke(app, ["history", "--json", "--all", "--config", str(config)])
    assert [e["kind"] for e in json.loads(every.stdout)] == ["phase", "sample", "job"]
    table = runner.invoke(app, ["history", "--config", str(config)])
    assert "copying \u2192 streaming: green streams" in table.output
    assert "copy ok in 1.5 s" in table.output


def test_history_shows_a_breach_and_its_rollback_whole(config: Path) -> None:
    """Not cut at any width: the verdict with its samples, limit and where the limit came
    from, and the rollback's result."""
    store = saved(config, Phase.ROLLED_BACK)
    verdict: dict[str, Any] = {"check": "latency", "outcome": "fail", "breach": True,
               "reason": "green 49 above limit 42 = blue 22 + noise floor 20", "green": 49.0,
               "baseline": 22.0, "threshold": 42.0, "streak": 3, "derivation": "blue 22 + noise floor 20",
               "green_samples": 480, "blue_samples": 4400, "evidence": None, "dry_run": False}
    store.record(EventKind.BREACH, verdict)
    store.record(EventKind.ROLLBACK, {"reason": "latency: " + verdict["reason"], "verdict": verdict,
                                      "seconds": 0.412, "result": {"after": {"green_percent": 0}},
                                      "error": None})
    store.close()
    narrow = runner.invoke(app, ["history", "--config", str(config)], env={"COLUMNS": "60"})
    assert narrow.exit_code == 0, narrow.output
    assert "\u2026" not in narrow.output  # wrapped, never cut with an ellipsis
    wide = runner.invoke(app, ["history", "--config", str(config)], env={"COLUMNS": "400"})
    for part in ("green 49 over 480 requests", "blue 22 over 4400 requests",
                 "limit 42 = blue 22 + noise floor 20", "3 failing in a row",
                 "traffic back to blue in 0.41 s"):
        assert part in wide.output, (part, wide.output)


@pytest.mark.parametrize(("phase", "intent", "refusal"), [
    (Phase.SHIFTING, "retry", "retry applies after a rollback; the cutover is shifting"),
    (Phase.FINALIZED, "promote", "the cutover is finalized: nothing to promote"),
    (Phase.ROLLED_BACK, "abort", "the cutover is rolled_back: nothing to abort"),
])
def test_intents_that_do_not_apply_are_refused_and_not_recorded(
        config: Path, phase: Phase, intent: str, refusal: str) -> None:
    saved(config, phase).close()
    done = runner.invoke(app, [intent, "--config", str(config)])
    assert done.exit_code == 2
    assert refusal in done.output
    store = Journal(config.parent / "state.db")
    assert store.pending_intents() == []
    store.close()


def test_an_intent_is_recorded_for_the_next_tick(config: Path) -> None:
    saved(config, Phase.ROLLED_BACK).close()
    done = runner.invoke(app, ["retry", "--json", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["intent"] == "retry"
    store = Journal(config.parent / "state.db")
    assert store.pending_intents() == ["retry"]
    assert [e.data["intent"] for e in store.events("intent")] == ["retry"]
    store.close()


def test_status_watch_refreshes_until_interrupted(config: Path) -> None:
    store = saved(config, Phase.STREAMING, reason="waiting for lag under the limits")
    # As on a terminal (FORCE_COLOR): rich redraws the live table in place; off one it would
    # print only the last.
    proc = subprocess.Popen([sys.executable, "-m", "controller", "status", "--watch", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "FORCE_COLOR": "1"})
    seen = bytearray()

    def read() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 4096):
            seen.extend(chunk)

    def shows(word: str) -> bool:
        # Waits on what is drawn, not on a guess of how long a busy machine takes to start.
        deadline = time.monotonic() + 30
        while word.encode() not in seen and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return word.encode() in seen

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert shows("streaming"), seen.decode(errors="replace")
        store.save_state(State(phase=Phase.SWITCHING, reason="lag under the limits").as_dict())
        assert shows("switching"), "the live table did not pick up the new state"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # never leave the child behind a failed test
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        store.close()
    assert proc.returncode == 0, seen.decode(errors="replace")


def test_a_new_journal_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Journal(tmp_path / "state.db")
        store.record(EventKind.INTENT, {"intent": "pause"})
        files = [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
        store.close()
    finally:
        os.umask(old)
    assert modes["state.db"] == "0o600", modes
    assert set(modes.values()) == {"0o600"}, modes


@pytest.mark.parametrize("path", ["/proc/self/status", "/dev/null/state.db"])
def test_a_journal_that_cannot_be_opened_is_a_store_error_naming_it(path: str) -> None:
    with pytest.raises(StoreError, match=f"cannot open the journal {path} \\(\\[state\\] path\\)"):
        Journal(Path(path))


def test_status_on_a_journal_that_is_no_database_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "cutover.toml"
    config.write_text('[state]\npath = "notes.txt"\n')
    (tmp_path / "notes.txt").write_text("not a journal\n" * 200)
    result = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: cannot open the journal {tmp_path}/notes.txt ([state] path): file is not a database"]
