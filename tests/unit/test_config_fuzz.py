"""Generated configs through `cutover config check` and the read-only `cutover status --json`
and `cutover config show --json`: a valid config with one or two settings replaced by edge
values (huge, non-finite, empty, NUL, non-ASCII digits, hostile names and templates, paths
that are not files, wrong types) or removed. Whatever the input: no traceback, exit codes only
0 or 2 from the check, a refused config is refused (2) by every command alike, an accepted one
runs or fails with exit 1 and a short reason, and nothing is created on disk.

Four bases x 260 examples: 1,040 configs per run (CUTOVER_FUZZ_EXAMPLES changes the count)."""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from config import load_settings
from controller.cli import app
from tests.tomltext import config_toml

EXAMPLES = Path(__file__).parents[2] / "config" / "examples"
EXAMPLES_PER_BASE = int(os.environ.get("CUTOVER_FUZZ_EXAMPLES", "260"))
runner = CliRunner()

EDGE_VALUES: list[Any] = [
    "", " ", "\x00", "a\x00b", "١s", "٣", "999999999999999999999999d", "1e300s", "-1s", "0s",
    "1ms", "99999999999999h", "1.5", "10TB", "1 GB", "16MB", "100%",
    1e300, 1.7e308, float("nan"), float("inf"), float("-inf"), -1, 0, 1, 2**63, 10**30, -(10**30), 0.5,
    True, False, "true", "yes", "0",
    "a.b.c.d", '"a"."b"', "pg_catalog.pg_authid", "information_schema.tables", "pg_authid",
    'x"; DROP TABLE t; --', "Robert'); DROP TABLE students;--",
    "{target:>99999999999}", "{0}", "x}", "{", "{weight!r}", "{__class__}", "{target.__class__}",
    "/proc/self/status", "/", ".", "/dev/null", "/nonexistent/dir/state.db",
    "0.0.0.0:9187", "[::]:1", "127.0.0.1:99999", "127.0.0.1:-1", ":", "localhost",
    "host=127.0.0.1 port=abc", "password=x", "host=127.0.0.1 port=1 dbname=x", "port=",
    "http://user:pw@127.0.0.1:1/", "https://", "ftp://x", "http://[::1", "http://127.0.0.1:1/",
    [], [""], [1], [None], [[]], {}, {"unknown": 1}, ["/bin/true"], ["/bin/echo", "{target}"],
    "\U0001f4a5", "x" * 5000, "\u202e", "\\", "\n", "$(reboot)",
]
"""What careless operators and attackers write; None (removal) is added by the strategy."""

values = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.none(),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.text(max_size=8), max_size=3),
)


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into data: sections and lists too, so a whole one can be replaced."""
    if path:
        yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _leaves(value, (*path, index))


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> None:
    *parents, last = path
    for key in parents:
        data = data[key]
    if value is None and isinstance(data, dict):
        data.pop(last, None)
    elif value is None:
        data[last] = ""
    else:
        data[last] = value


def _bases() -> dict[str, dict[str, Any]]:
    """The examples as written, and as loaded with every default spelled out (so that the
    defaults' fields are mutated too)."""
    bases: dict[str, dict[str, Any]] = {}
    for path in sorted(EXAMPLES.glob("*.toml")):
        bases[path.stem] = tomllib.loads(path.read_text())
        bases[f"{path.stem} (all settings)"] = load_settings(path).model_dump(mode="json")
    return bases


BASES = _bases()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")



def _no_crash(result: Result, command: str) -> None:
    """Exit codes only; an uncaught exception is a crash (CliRunner reports SystemExit as the
    exit code)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{command} crashed: {result.exception!r}\n{result.output[-2000:]}") \
            from result.exception
    assert "Traceback" not in result.output, f"{command}:\n{result.output[-2000:]}"


def _state_paths(data: dict[str, Any], sandbox: Path) -> list[Path]:
    state = data.get("state")
    path = state.get("path") if isinstance(state, dict) else None
    return [sandbox / path] if isinstance(path, str) and "\x00" not in path else []


@pytest.mark.parametrize("base", list(BASES))
def test_no_config_crashes_a_command_or_gets_a_wrong_exit_code(base: str, sandbox: Path) -> None:
    paths = list(_leaves(BASES[base]))

    @settings(max_examples=EXAMPLES_PER_BASE, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(changes=st.lists(st.tuples(st.sampled_from(paths), values), min_size=1, max_size=2))
    def fuzz(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
        data = tomllib.loads(config_toml(BASES[base]))  # a deep copy, Nones dropped
        data.setdefault("state", {})["path"] = str(sandbox / "state.db")
        for path, value in changes:
            # An earlier change may have removed or replaced what this one points into.
            with contextlib.suppress(KeyError, IndexError, TypeError):
                _replace(data, path, value)
        try:
            text = config_toml(data)
        except TypeError:
            return  # not expressible in TOML
        config = sandbox / "cutover.toml"
        config.write_text(text)
        absent = [p for p in _state_paths(data, sandbox) if not os.path.lexists(p)]

        check = runner.invoke(app, ["config", "check", "--config", str(config)])
        _no_crash(check, "config check")
        assert check.exit_code in (0, 2), check.output
        event(f"config check exit {check.exit_code}")
        for command in (["status", "--json"], ["config", "show", "--json"]):
            result = runner.invoke(app, [*command, "--config", str(config)])
            _no_crash(result, " ".join(command))
            event(f"{command[0]} exit {result.exit_code}")
            if check.exit_code == 2:
                assert result.exit_code == 2, f"{command}: check refused, this ran:\n{result.output}"
            else:
                assert result.exit_code in (0, 1), f"{command}:\n{result.output}"
                if result.exit_code == 1:
                    reason = result.stderr.strip().splitlines()
                    assert reason, f"{command} failed without a word"
                    assert len(reason) <= 2, f"{command}:\n{result.stderr}"
        assert not [p for p in absent if os.path.lexists(p)], "a read-only command created its state"

    fuzz()
