"""The lab: real PostgreSQL x2, PgBouncer, HAProxy, app servers and Prometheus on loopback.

One set of real parts for the demo, the tests and the benchmarks. State (ports, PIDs) lives in
`<root>/lab.json`, so `up` is idempotent and `down` ends exactly the processes `up` started.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.lab import haproxy, nginx, pgbouncer, pginstall, postgres, prometheus
from controller.lab.labconfig import render_config
from controller.lab.processes import (
    LabError,
    Proc,
    RunAs,
    free_port,
    is_running,
    run,
    spawn,
    stop,
    wait_for_port,
)
from controller.lab.state import ENVS, PORT_OFFSETS, LabState, plan_ports, server_names

DEFAULT_ROOT = Path("/tmp/cutover-lab")  # noqa: S108 - reachable by the lab user, unlike ~root
DEFAULT_BASE_PORT = 25400
@dataclass(frozen=True)
class Component:
    name: str
    port: int
    pid: int | None
    running: bool
    version: str | None = None
    """PostgreSQL's version, for the clusters."""


def example_config() -> str:
    """config/examples/lab.toml: the config a default lab writes (`make docs` regenerates it)."""
    servers = server_names(1)
    return render_config(LabState(root=DEFAULT_ROOT, user=None, servers=servers, with_prometheus=True,
                                  ports=plan_ports(servers, DEFAULT_BASE_PORT, probe=False)))


class Lab:
    def __init__(self, root: Path = DEFAULT_ROOT, *, servers_per_env: int = 1,
                 with_prometheus: bool = False, base_port: int | None = None,
                 user: str | None = None, blue_version: int | None = None,
                 green_version: int | None = None) -> None:
        """blue_version, green_version: each cluster's PostgreSQL major (None: as the lab
        was started, else the default installation, the newest /usr/lib/postgresql)."""
        self.root = root.resolve()
        self.run_as = RunAs.for_lab(user)
        self.state_file = self.root / "lab.json"
        self._save_lock = threading.Lock()
        self.state = self._load() or self._plan(servers_per_env, with_prometheus, base_port)
        for key in PORT_OFFSETS.keys() - self.state.ports.keys():  # a lab from an older version
            self.state.ports[key] = free_port()
        if with_prometheus and not self.state.with_prometheus:
            self.state.with_prometheus = True
        # An existing cluster of another major is refused when it starts, with the fix.
        if blue_version is not None:
            self.state.blue_version = blue_version
        if green_version is not None:
            self.state.green_version = green_version

    # -- planning and persistence ------------------------------------------------------

    def _load(self) -> LabState | None:
        try:
            return LabState.model_validate_json(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        # up() starts both clusters in parallel threads: one writer at a time.
        with self._save_lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(self.state.model_dump_json(indent=2))
            tmp.replace(self.state_file)

    def _plan(self, per_env: int, with_prometheus: bool, base: int | None) -> LabState:
        if per_env < 1:
            raise LabError("servers_per_env must be at least 1")
        servers = server_names(per_env)
        return LabState(root=self.root, user=self.run_as.name if self.run_as else None,
                        servers=servers, ports=plan_ports(servers, base),
                        with_prometheus=with_prometheus)

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Start whatever is not running; a running lab is left as it is."""
        self._prepare_root()
        with self._saving():
            with ThreadPoolExecutor(max_workers=2) as pool:
                for _ in pool.map(lambda env: self._up_postgres(env, progress), ENVS):
                    pass
            postgres.create_app_database(self.state.port("blue_pg"))
            postgres.create_app_database(self.state.port("green_pg"))
            postgres.create_app_schema(self.state.port("blue_pg"))
            self._up_pgbouncer(progress)
            for server in self.state.servers:
                self._up_app(server, progress)
            self._up_haproxy(progress)
            self._up_nginx(progress)
            if self.state.with_prometheus:
                self._up_prometheus(progress)
            self.state.config_file.write_text(render_config(self.state))

    def down(self, purge: bool = False, progress: Callable[[str], None] = lambda _: None) -> None:
        """Stop every process this lab started, newest first; purge removes its files."""
        order = ["prometheus", "nginx", "haproxy", *[f"app:{s}" for s in self.state.servers],
                 "pgbouncer", "green_pg", "blue_pg"]
        for name in order:
            proc = self.state.procs.get(name)
            if proc is not None:
                progress(f"stopping {name} (pid {proc.pid})")
                if name.endswith("_pg"):
                    postgres.stop_cluster(proc)
                else:
                    stop(proc)
                del self.state.procs[name]
                if self.root.exists():
                    self._save()
        if purge and self.root.exists():
            shutil.rmtree(self.root)

    def components(self) -> list[Component]:
        names = ["blue_pg", "green_pg", "pgbouncer", *[f"app:{s}" for s in self.state.servers],
                 "haproxy", "nginx", *(["prometheus"] if self.state.with_prometheus else [])]
        out = []
        for name in names:
            proc = self.state.procs.get(name)
            out.append(Component(name, self.state.port(name), proc.pid if proc else None,
                                 is_running(proc), self._pg_version(name)))
        return out

    def _pg_version(self, name: str) -> str | None:
        if not name.endswith("_pg"):
            return None
        env = name.removesuffix("_pg")
        major = postgres.cluster_major(self.root / env)
        return self.state.pg_versions.get(env) or (str(major) if major else None)

    # -- the parts -----------------------------------------------------------------------

    def _prepare_root(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        if self.run_as:
            os.chmod(self.root, 0o755)  # noqa: S103 - the lab user must traverse it
            self.run_as.chown(self.root)
            try:
                run(["test", "-w", str(self.root)], self.run_as)
            except LabError:
                raise LabError(
                    f"the lab's servers run as {self.run_as.name!r}, who cannot write "
                    f"{self.root}; put the lab under a directory that user can reach, e.g. "
                    "--dir /tmp/cutover-lab") from None

    @contextmanager
    def _saving(self) -> Iterator[None]:
        # Save after every step, so a failure half way still lets `down` stop what started.
        try:
            yield
        finally:
            self._save()

    def _running(self, name: str) -> bool:
        return is_running(self.state.procs.get(name))

    def _started(self, name: str, proc: Proc) -> None:
        self.state.procs[name] = proc
        self._save()

    def _up_postgres(self, env: str, progress: Callable[[str], None]) -> None:
        key = f"{env}_pg"
        if self._running(key):
            return
        datadir = self.root / env
        # Unless asked for, an existing cluster runs on its own major.
        install = pginstall.lab_install(self.state.version(env) or postgres.cluster_major(datadir),
                                        self.run_as)
        progress(f"starting PostgreSQL {install.version} {env} on port {self.state.port(key)}")
        postgres.init_cluster(datadir, self.state.port(key), self.run_as, install)
        proc = postgres.start(datadir, self.state.log(key), self.run_as, install)
        self.state.pg_versions[env] = install.version
        self._started(key, proc)
        postgres.wait_ready(self.state.port(key), proc, self.state.log(key))

    def _up_pgbouncer(self, progress: Callable[[str], None]) -> None:
        if self._running("pgbouncer"):
            return
        progress(f"starting PgBouncer on port {self.state.port('pgbouncer')} (-> blue)")
        pgbouncer.write_config(self.root, self.state.port("pgbouncer"), self.state.port("blue_pg"),
                               self.run_as)
        proc = pgbouncer.start(self.root, self.state.log("pgbouncer"), self.run_as)
        self._started("pgbouncer", proc)
        wait_for_port(self.state.port("pgbouncer"), proc, self.state.log("pgbouncer"), "PgBouncer")

    def _up_app(self, server: str, progress: Callable[[str], None]) -> None:
        key = f"app:{server}"
        if self._running(key):
            return
        env = self.state.servers[server]
        progress(f"starting app server {server} ({env}) on port {self.state.port(key)}")
        # Our own Python code: it runs as the invoking user, from this interpreter.
        proc = spawn([sys.executable, "-m", "controller.lab.app", "--name", server, "--env", env,
                      "--port", str(self.state.port(key)), "--dsn", self.state.pgbouncer_dsn],
                     self.state.log(key), None)
        self._started(key, proc)
        wait_for_port(self.state.port(key), proc, self.state.log(key), f"app server {server}")

    def _up_haproxy(self, progress: Callable[[str], None]) -> None:
        if self._running("haproxy"):
            return
        progress(f"starting HAProxy on port {self.state.port('haproxy')} (100 % blue)")
        servers = {s: self.state.port(f"app:{s}") for s in self.state.servers}
        weights = {s: (100 if env == "blue" else 0) for s, env in self.state.servers.items()}
        ports = (self.state.port("haproxy"), self.state.port("haproxy_admin"),
                 self.state.port("haproxy_sticky"))
        haproxy.write_config(self.root, ports, servers, weights, self.state.servers_of("green"),
                             self.run_as)
        proc = haproxy.start(self.root, self.state.log("haproxy"), self.run_as)
        self._started("haproxy", proc)
        wait_for_port(self.state.port("haproxy"), proc, self.state.log("haproxy"), "HAProxy")

    def _up_nginx(self, progress: Callable[[str], None]) -> None:
        if self._running("nginx"):
            return
        progress(f"starting nginx on port {self.state.port('nginx')} (100 % blue)")
        nginx.write_config(self.root, (self.state.port("nginx"), self.state.port("nginx_sticky")),
                           (self.state.nginx_settings(), self.state.nginx_settings(sticky=True)),
                           self.state.servers_of("blue"), self.state.servers_of("green"))
        proc = nginx.start(self.root, self.state.log("nginx"))
        self._started("nginx", proc)
        wait_for_port(self.state.port("nginx"), proc, self.state.log("nginx"), "nginx")

    def restart(self, name: str) -> None:
        """Stop one part and start it again (a failure test's restart); runtime state such
        as HAProxy's weights goes back to what its config file says."""
        proc = self.state.procs.pop(name, None)
        if proc is not None:
            if name.endswith("_pg"):
                postgres.stop_cluster(proc)  # fast shutdown: SIGTERM would wait for every client
            else:
                stop(proc)
            self._save()
        self.up()

    def _up_prometheus(self, progress: Callable[[str], None]) -> None:
        if self._running("prometheus"):
            return
        progress(f"starting Prometheus on port {self.state.port('prometheus')}")
        prometheus.write_config(self.root, [self.state.port(f"app:{s}") for s in self.state.servers],
                                self.run_as)
        proc = prometheus.start(self.root, self.state.port("prometheus"), self.state.log("prometheus"),
                                self.run_as)
        self._started("prometheus", proc)
        wait_for_port(self.state.port("prometheus"), proc, self.state.log("prometheus"), "Prometheus", 60)
