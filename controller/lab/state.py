"""What a lab is made of: its directory, servers and ports, and the addresses derived from them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from config.traffic import NginxSettings
from controller.lab import haproxy, nginx, pgbouncer, postgres
from controller.lab.processes import Proc, free_port, port_is_free

ENVS = ("blue", "green")
# Offsets from the base port; app servers follow from APP_OFFSET.
PORT_OFFSETS = {"blue_pg": 0, "green_pg": 1, "pgbouncer": 2, "haproxy": 3, "haproxy_admin": 4,
                "prometheus": 5, "metrics": 6, "nginx": 7, "haproxy_sticky": 8,
                "nginx_sticky": 9}
APP_OFFSET = 10


def server_names(per_env: int) -> dict[str, str]:
    return {f"{env}{i}": env for env in ENVS for i in range(1, per_env + 1)}


def plan_ports(servers: dict[str, str], base: int | None, probe: bool = True) -> dict[str, int]:
    """Ports from base + offset where free (stable addresses for humans), else any free port."""
    wanted = {**PORT_OFFSETS, **{f"app:{s}": APP_OFFSET + i for i, s in enumerate(servers)}}
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for key, offset in wanted.items():
        port = base + offset if base else 0
        if probe and (not port or not port_is_free(port) or port in taken):
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        ports[key] = port
    return ports


class LabState(BaseModel):
    root: Path
    user: str | None
    servers: dict[str, str]
    """App server name -> its environment (blue1 -> blue)."""
    ports: dict[str, int]
    with_prometheus: bool = False
    procs: dict[str, Proc] = Field(default_factory=dict)
    blue_version: int | None = None
    green_version: int | None = None
    """PostgreSQL major of each cluster as asked for; None: the default installation."""
    pg_versions: dict[str, str] = Field(default_factory=dict)
    """env -> the PostgreSQL version its cluster was last started with, e.g. "18.6"."""

    def port(self, key: str) -> int:
        return self.ports[key]

    def version(self, env: str) -> int | None:
        return self.blue_version if env == "blue" else self.green_version

    def db_dsn(self, env: str, dbname: str = postgres.APP_DB, user: str = postgres.SUPERUSER) -> str:
        return postgres.dsn(self.port(f"{env}_pg"), dbname, user)

    @property
    def pgbouncer_dsn(self) -> str:
        return postgres.dsn(self.port("pgbouncer"), postgres.APP_DB, postgres.APP_USER)

    @property
    def pgbouncer_admin_dsn(self) -> str:
        return pgbouncer.admin_dsn(self.port("pgbouncer"))

    @property
    def haproxy_socket(self) -> Path:
        return self.root / haproxy.SOCKET

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.port('haproxy')}"

    @property
    def sticky_url(self) -> str:
        """HAProxy's second frontend: the same servers, clients kept on theirs by a cookie."""
        return f"http://127.0.0.1:{self.port('haproxy_sticky')}"

    @property
    def nginx_sticky_url(self) -> str:
        """nginx's second server block: clients kept on their colour by a cookie."""
        return f"http://127.0.0.1:{self.port('nginx_sticky')}"

    def app_url(self, server: str) -> str:
        return f"http://127.0.0.1:{self.port(f'app:{server}')}"

    def servers_of(self, env: str) -> list[str]:
        return [s for s, e in self.servers.items() if e == env]

    @property
    def nginx_url(self) -> str:
        return f"http://127.0.0.1:{self.port('nginx')}"

    def nginx_settings(self, sticky: bool = False) -> NginxSettings:
        """The nginx traffic driver's settings for this lab's nginx (its plain upstream, or
        the sticky one behind its second server block)."""
        return nginx.settings(self.root, {s: self.port(f"app:{s}") for s in self.servers}, sticky)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.port('prometheus')}"

    @property
    def config_file(self) -> Path:
        return self.root / "cutover.toml"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name.replace(':', '-')}.log"

    def env(self) -> dict[str, str]:
        """Shell variables that point tools at the lab."""
        return {
            "CUTOVER_CONFIG": str(self.config_file),
            "CUTOVER_LAB_DIR": str(self.root),
            "LAB_BLUE_DSN": self.db_dsn("blue"),
            "LAB_GREEN_DSN": self.db_dsn("green"),
            "LAB_PGBOUNCER_DSN": self.pgbouncer_dsn,
            "LAB_PGBOUNCER_ADMIN_DSN": self.pgbouncer_admin_dsn,
            "LAB_HAPROXY_SOCKET": str(self.haproxy_socket),
            "LAB_HAPROXY_ADMIN": f"127.0.0.1:{self.port('haproxy_admin')}",
            "LAB_URL": self.frontend_url,
            "LAB_NGINX_URL": self.nginx_url,
            **({"LAB_PROMETHEUS_URL": self.prometheus_url} if self.with_prometheus else {}),
        }
