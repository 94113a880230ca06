"""The lab's HAProxy: one frontend, a backend of blue and green app servers, the Runtime API."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from controller.lab.processes import Proc, RunAs, find_binary, run, spawn

BACKEND = "app"
STICKY_BACKEND = "app_sticky"
"""The same servers behind a second frontend, clients kept on their server by a cookie."""
STICKY_COOKIE = "CUTOVER_SERVER"
SOCKET = "haproxy.sock"


def write_config(root: Path, ports: tuple[int, int, int], servers: Mapping[str, int],
                 weights: Mapping[str, int], run_as: RunAs | None) -> Path:
    """ports: the frontend's, the admin socket's, the sticky frontend's; servers: name ->
    port. No health checks: the lab wants weights to mean exactly what the controller set,
    and its SLO checks are what judge green."""
    front_port, admin_port, sticky_port = ports
    lines = [f"    server {name} 127.0.0.1:{port} weight {weights.get(name, 0)}"
             for name, port in servers.items()]
    sticky = [f"{line} cookie {name}" for line, name in zip(lines, servers, strict=True)]
    cfg = root / "haproxy.cfg"
    cfg.write_text(f"""# written by cutover lab
global
    stats socket {root / SOCKET} mode 600 level admin
    stats socket ipv4@127.0.0.1:{admin_port} level admin
    stats timeout 1m
    maxconn 4000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive

frontend web
    bind 127.0.0.1:{front_port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
{chr(10).join(lines)}

frontend web_sticky
    bind 127.0.0.1:{sticky_port}
    default_backend {STICKY_BACKEND}

backend {STICKY_BACKEND}
    balance roundrobin
    cookie {STICKY_COOKIE} insert indirect nocache
{chr(10).join(sticky)}
""")
    if run_as:
        run_as.chown(cfg)
    # Never -q: it silences the very alert that says what is wrong.
    run([find_binary("haproxy"), "-c", "-f", str(cfg)], run_as, cwd=root)
    return cfg


def start(root: Path, log: Path, run_as: RunAs | None) -> Proc:
    # -db: stay in the foreground so the PID we record is the one serving.
    return spawn([find_binary("haproxy"), "-db", "-f", str(root / "haproxy.cfg")], log, run_as,
                 cwd=root)
