"""The lab's generated config is valid, and config/examples/lab.toml is exactly what
`cutover lab up --with-prometheus` writes for a lab on the default ports."""

from __future__ import annotations

from pathlib import Path

from config import load_settings
from config.settings import need_traffic
from controller.lab.lab import DEFAULT_BASE_PORT, DEFAULT_ROOT, example_config
from controller.lab.labconfig import render_config
from controller.lab.state import LabState, plan_ports, server_names

EXAMPLE = Path(__file__).parents[2] / "config" / "examples" / "lab.toml"


def default_lab() -> LabState:
    servers = server_names(1)
    return LabState(root=DEFAULT_ROOT, user=None, servers=servers,
                    ports=plan_ports(servers, DEFAULT_BASE_PORT, probe=False), with_prometheus=True)


def test_example_lab_config_matches_what_the_lab_writes() -> None:
    assert EXAMPLE.read_text() == example_config(), "config/examples/lab.toml is stale: make docs"


def test_rendered_lab_config_is_valid(tmp_path: Path) -> None:
    state = default_lab().model_copy(update={"root": tmp_path, "with_prometheus": False})
    path = tmp_path / "cutover.toml"
    path.write_text(render_config(state))
    settings = load_settings(path)
    traffic = need_traffic(settings, 'test')
    assert traffic.haproxy is not None
    assert traffic.haproxy.socket == tmp_path / "haproxy.sock"
    assert [s.weight for s in traffic.stages] == [10, 50, 100]
    assert settings.blue.database is not None
    assert f"port={state.port('blue_pg')}" in settings.blue.database.dsn
