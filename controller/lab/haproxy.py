"""The lab's HAProxy: one frontend, a backend of blue and green app servers, the Runtime API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from controller.lab.processes import Proc, RunAs, find_binary, run, spawn

BACKEND = "app"
STICKY_BACKEND = "app_sticky"
"""The same servers behind a second frontend, clients kept on their server by a cookie."""
STICKY_COOKIE = "CUTOVER_SERVER"
MATCH_BACKEND = "app_green"
"""Green's servers alone: where the frontend sends requests whose MATCH_HEADER value is in
the match ACL file (empty until a match stage puts one there through the Runtime API)."""
MATCH_HEADER = "X-Staff"
MATCH_ACL = "cutover-match.acl"
SOCKET = "haproxy.sock"


def write_config(root: Path, ports: tuple[int, int, int], servers: Mapping[str, int],
                 weights: Mapping[str, int], green: Sequence[str], run_as: RunAs | None) -> Path:
    """ports: the frontend's, the admin socket's, the sticky frontend's; servers: name ->
    port; green: green's servers. No health checks: the lab wants weights to mean exactly
    what the controller set, and its SLO checks are what judge green."""
    lines = [f"    server {name} 127.0.0.1:{port} weight {weights.get(name, 0)}"
             for name, port in servers.items()]
    backends = {
        BACKEND: lines,
        MATCH_BACKEND: [f"    server {name} 127.0.0.1:{servers[name]} weight 100" for name in green],
        STICKY_BACKEND: [f"    cookie {STICKY_COOKIE} insert indirect nocache",
                         *(f"{line} cookie {name}" for line, name in zip(lines, servers, strict=True))]}
    acl = root / MATCH_ACL
    acl.write_text("")
    if run_as:
        run_as.chown(acl)
    cfg = root / "haproxy.cfg"
    cfg.write_text(render_config(root, ports, backends))
    if run_as:
        run_as.chown(cfg)
    # Never -q: it silences the very alert that says what is wrong.
    run([find_binary("haproxy"), "-c", "-f", str(cfg)], run_as, cwd=root)
    return cfg


def render_config(root: Path, ports: tuple[int, int, int], backends: Mapping[str, list[str]]) -> str:
    """The config file: a template (backends: each backend's lines)."""
    front_port, admin_port, sticky_port = ports
    return f"""# written by cutover lab
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
    use_backend {MATCH_BACKEND} if {{ req.hdr({MATCH_HEADER}) -f {root / MATCH_ACL} }}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
{chr(10).join(backends[BACKEND])}

frontend web_sticky
    bind 127.0.0.1:{sticky_port}
    default_backend {STICKY_BACKEND}

backend {MATCH_BACKEND}
    balance roundrobin
{chr(10).join(backends[MATCH_BACKEND])}

backend {STICKY_BACKEND}
    balance roundrobin
{chr(10).join(backends[STICKY_BACKEND])}
"""


def start(root: Path, log: Path, run_as: RunAs | None) -> Proc:
    # -db: stay in the foreground so the PID we record is the one serving.
    return spawn([find_binary("haproxy"), "-db", "-f", str(root / "haproxy.cfg")], log, run_as,
                 cwd=root)
