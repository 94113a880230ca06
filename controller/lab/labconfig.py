"""The Cutover config for a running lab, written next to it as cutover.toml."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.lab import pgbouncer

if TYPE_CHECKING:
    from controller.lab.state import LabState


def _names(names: list[str]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def render_config(lab: LabState) -> str:
    prometheus = ""
    if lab.with_prometheus:
        prometheus = f"""
[sources.prometheus]
url = "{lab.prometheus_url}"

[[slo]]
name = "app-5xx-ratio"
source = "prometheus"
# `or vector(0)`: an environment with no 5xx series yet has zero errors, not "no data".
query = '''(sum(rate(lab_app_requests_total{{env="{{env}}",code=~"5.."}}[5s])) or vector(0))
  / sum(rate(lab_app_requests_total{{env="{{env}}"}}[5s]))'''
# The requests behind that ratio, so it is weighed by how many there were.
metric = "error_ratio"
samples_query = 'sum(increase(lab_app_requests_total{{env="{{env}}"}}[5s]))'
max = 0.05
"""

    def urls(env: str) -> str:
        return _names([f"{lab.app_url(s)}/api/health" for s in lab.servers_of(env)])
    return f"""# Cutover config for the lab in {lab.root} (written by `cutover lab up`).
service = "lab"

[blue]
health_urls = {urls("blue")}
[blue.database]
dsn = "{lab.db_dsn('blue')}"

[green]
health_urls = {urls("green")}
[green.database]
dsn = "{lab.db_dsn('green')}"

[sync]
mode = "logical"
copy_jobs = 2

[switchover]
method = "pgbouncer"
fence_timeout = "5s"
[switchover.pgbouncer]
admin_dsn = "{lab.pgbouncer_admin_dsn}"
databases = ["app"]
databases_file = "{pgbouncer.DATABASES_FILE}"

[traffic]
driver = "haproxy"
blue_servers = {_names(lab.servers_of("blue"))}
green_servers = {_names(lab.servers_of("green"))}
stages = [
  {{ weight = 10, bake = "15s" }},
  {{ weight = 50, bake = "15s" }},
  {{ weight = 100, bake = "15s" }},
]
[traffic.haproxy]
socket = "haproxy.sock"
backend = "app"

[[slo]]
name = "5xx-ratio"
source = "haproxy"
metric = "error_ratio"
max = 0.05
max_vs_blue = 2.0
noise_floor = 0.01
interval = "500ms"
failure_limit = 2
min_samples = 20

# Two seconds slower in a row: the lab shares its cores with everything, and one app server
# starved for a second is the host, not green (the error check weighs its evidence instead).
[[slo]]
name = "latency"
source = "haproxy"
metric = "latency_ms"
max_vs_blue = 1.25
noise_floor = 20
interval = "500ms"
failure_limit = 4

[[slo]]
name = "health"
source = "http"
max = 1000
interval = "1s"
failure_limit = 2
{prometheus}
[rollback]
on_breach = "rollback"
database = "stay"

[state]
path = "cutover-state.db"

[metrics]
listen = "127.0.0.1:{lab.port('metrics')}"
"""
