"""HAProxy through its Runtime API (the stats socket, unix or TCP, at level admin): `set weight`,
`show servers state`, `show stat`, over one persistent interactive session.

HAProxy forgets runtime weights when it restarts (they fall back to the config file's), so a
broken session is reopened and the caller re-reads rather than trusting what it set before.
"""

from __future__ import annotations

import csv
import io
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from config.traffic import HAProxySettings, Match
from controller.traffic.balancer import BadTrafficInput, EnvCounters, Split, TrafficError
from controller.traffic.weights import green_share, weights_for

PROMPT = b"\n> "
MAINT_FLAGS = 0x01 | 0x02 | 0x04 | 0x20
"""srv_admin_state bits of a server in maintenance: forced, inherited, by DNS, by configuration."""
CHUNK = 65536


class RuntimeApi:
    """One interactive Runtime API session (`prompt` mode), reopened when it breaks."""

    def __init__(self, socket_path: Path | None, address: str | None, timeout: float) -> None:
        self.socket_path, self.address, self.timeout = socket_path, address, timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"HAProxy Runtime API at {self.socket_path or self.address}"

    def execute(self, command: str) -> str:
        """Run one command and return its output; retried (reconnecting) for a few timeouts'
        worth of time when the session breaks, e.g. while HAProxy restarts."""
        if "\n" in command or ";" in command:
            raise BadTrafficInput(f"refusing a Runtime API command with a newline or ';': {command!r}")
        try:
            return self._execute_retrying(command)
        except OSError as exc:
            raise TrafficError(f"{self.describe()} is unreachable: {exc}; check that HAProxy runs "
                               "and its stats socket is at level admin") from None

    @retry(retry=retry_if_exception_type(OSError), wait=wait_exponential(multiplier=0.05, max=0.5),
           reraise=True, stop=stop_after_delay(5))
    def _execute_retrying(self, command: str) -> str:
        with self._lock:
            try:
                return self._roundtrip(command)
            except OSError:
                self._drop()
                raise

    def _roundtrip(self, command: str) -> str:
        sock = self._sock or self._open()
        sock.sendall(command.encode() + b"\n")
        reply = self._read_to_prompt(sock)
        return reply.decode(errors="replace").rstrip("\n")

    def _open(self) -> socket.socket:
        if self.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = str(self.socket_path)
        else:
            assert self.address is not None
            host, _, port = self.address.rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
            sock.sendall(b"prompt\n")
            self._read_to_prompt(sock)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock

    @staticmethod
    def _read_to_prompt(sock: socket.socket) -> bytes:
        buf = bytearray()
        while not buf.endswith(PROMPT) and buf != b"> ":
            data = sock.recv(CHUNK)
            if not data:
                raise ConnectionResetError("HAProxy closed the Runtime API session")
            buf += data
        return bytes(buf[: -len(PROMPT)] if buf.endswith(PROMPT) else b"")

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def server_stats(self, backend: str) -> dict[str, dict[str, str]]:
        """`show stat` rows of the backend's servers, by server name."""
        text = self.execute(f"show stat {backend} 4 -1")
        if text.strip() == "No such proxy.":
            return {}
        if not text.startswith("# "):
            raise TrafficError(f"{self.describe()}: unexpected `show stat` reply: {text[:200]!r}")
        rows = csv.DictReader(io.StringIO(text[2:]))
        return {r["svname"]: r for r in rows if r.get("pxname") == backend}


class HAProxyBalancer:
    def __init__(self, settings: HAProxySettings, blue: Sequence[str], green: Sequence[str], *,
                 sticky: bool = False) -> None:
        """sticky: the backend keeps clients on their server by cookie; a server at weight 0
        goes to maintenance, the one state that breaks that persistence (weight 0 and drain
        keep serving the clients stuck to it)."""
        self.api = RuntimeApi(settings.socket, settings.address, settings.timeout)
        self.sticky = sticky
        self.match_acl, self.match_backend = settings.match_acl, settings.match_backend
        if self.match_acl is not None and any(c.isspace() for c in str(self.match_acl)):
            raise BadTrafficInput(f"traffic.haproxy.match_acl: {str(self.match_acl)!r} has a space; "
                                  "the Runtime API cannot name it")
        if self.match_backend is not None:
            _check_name(self.match_backend, "traffic.haproxy.match_backend")
        self.backend = settings.backend
        self.blue, self.green = list(blue), list(green)
        _check_name(self.backend, "traffic.haproxy.backend")
        for name in (*self.blue, *self.green):
            _check_name(name, "traffic servers")

    def describe(self) -> str:
        return f"{self.api.describe()}, backend {self.backend!r}"

    def check(self) -> None:
        stats = self.api.server_stats(self.backend)
        if not stats:
            backends = self.api.execute("show backend").splitlines()[1:]
            raise BadTrafficInput(f"traffic.haproxy.backend: HAProxy has no backend {self.backend!r} "
                                  f"with servers (it has: {', '.join(backends) or 'none'})")
        unknown = [s for s in (*self.blue, *self.green) if s not in stats]
        if unknown:
            raise BadTrafficInput(
                f"traffic.blue_servers/green_servers: backend {self.backend!r} has no server "
                f"{', '.join(repr(s) for s in unknown)} (it has: {', '.join(stats)})")
        self._check_match()
        uncookied = [s for s in (*self.blue, *self.green) if not stats[s].get("cookie")]
        if self.sticky and uncookied:
            raise BadTrafficInput(
                f"traffic.sticky: backend {self.backend!r} keeps no client on server "
                f"{', '.join(repr(s) for s in uncookied)}: add `cookie <name> insert indirect "
                "nocache` to the backend and `cookie <value>` to each server, or remove "
                "[traffic.sticky]")

    def apply(self, green_percent: int) -> None:
        target = weights_for(green_percent, self.blue, self.green)
        state: Mapping[str, tuple[int | None, bool]] = self._state()
        for server, weight in sorted(target.items(),
                                     key=lambda sw: _order(state.get(sw[0], (None, False))[0], sw[1])):
            now, maint = state.get(server, (None, False))
            # A server at weight 0 in maintenance is how a sticky stage leaves a colour at 0 %
            # (with stickiness since switched off, too); one with a weight in maintenance was
            # taken out by somebody else, and stays out.
            if maint and weight and not now:
                self._command(f"set server {self.backend}/{server} state ready")
            if now != weight:
                self._command(f"set weight {self.backend}/{server} {weight}")
            if self.sticky and not weight and not maint:  # its stuck clients move on now
                self._command(f"set server {self.backend}/{server} state maint")

    def _check_match(self) -> None:
        """Match stages: the ACL file is loaded, the match backend holds every green server."""
        if self.match_acl is None or self.match_backend is None:
            return
        if f"({self.match_acl})" not in self.api.execute("show acl"):
            raise BadTrafficInput(f"traffic.haproxy.match_acl: HAProxy loaded no ACL from "
                                  f"{self.match_acl}; add `use_backend {self.match_backend} if "
                                  f"{{ req.hdr(<header>) -f {self.match_acl} }}` to the frontend")
        servers = self.api.server_stats(self.match_backend)
        missing = [s for s in self.green if s not in servers]
        if missing:
            raise BadTrafficInput(f"traffic.haproxy.match_backend: backend {self.match_backend!r} "
                                  f"has no server {', '.join(missing)}; it holds green's servers")

    def route_matching(self, match: Match | None) -> None:
        if self.match_acl is None:
            if match is not None:
                raise BadTrafficInput("traffic.haproxy.match_acl: not set; a match stage needs it")
            return
        self._command(f"clear acl {self.match_acl}")
        if match is not None:
            self._command(f"add acl {self.match_acl} {match.value}")

    def matching(self) -> str | None:
        if self.match_acl is None:
            return None
        # "<ref> <pattern>" per entry
        values = [line.split(maxsplit=1)[1] for line in
                  self.api.execute(f"show acl {self.match_acl}").splitlines() if " " in line.strip()]
        return ",".join(values) or None

    def _command(self, command: str) -> None:
        reply = self.api.execute(command)
        if reply.strip():
            raise TrafficError(f"HAProxy refused `{command}`: {reply.strip()}")

    def read(self) -> Split:
        state = self._state()  # weights and maintenance in one command
        missing = [s for s in (*self.blue, *self.green) if s not in state]
        if missing:
            raise TrafficError(f"HAProxy's backend {self.backend!r} has no server "
                               f"{', '.join(missing)}")
        weights = {s: state[s][0] for s in (*self.blue, *self.green)}
        persistent = () if not self.sticky else tuple(
            s for s, (w, maint) in state.items() if s in weights and not w and not maint)
        return Split(green_share(weights, self.green), weights, persistent)

    def _state(self) -> dict[str, tuple[int, bool]]:
        """Each server's weight and whether it is in maintenance (a server at weight 0 that is
        not still serves the clients stuck to it)."""
        state = {}
        for line in self.api.execute(f"show servers state {self.backend}").splitlines()[2:]:
            # be_id be_name srv_id srv_name srv_addr op_state admin_state uweight ...
            fields = line.split()
            if len(fields) > 7 and fields[6].isdigit() and fields[7].isdigit():
                state[fields[3]] = (int(fields[7]), bool(int(fields[6]) & MAINT_FLAGS))
        return state

    def expected(self, green_percent: int) -> Split:
        weights = weights_for(green_percent, self.blue, self.green)
        return Split(green_share(weights, self.green), weights)

    def counters(self) -> dict[str, EnvCounters]:
        stats = self.api.server_stats(self.backend)
        out = {}
        for env, servers in (("blue", self.blue), ("green", self.green)):
            rows = [stats[s] for s in servers if s in stats]
            out[env] = EnvCounters(requests=sum(_int(r.get("lbtot")) for r in rows),
                                   errors=sum(_int(r.get("hrsp_5xx")) for r in rows))
        return out

    def close(self) -> None:
        self.api.close()


def _order(now: int | None, new: int) -> int:
    """Servers coming back from 0 first (so some server always takes requests: all weights 0
    is a 503), then servers going to 0 (a rollback never gives green a bigger share on its
    way), then the rest."""
    if not now and new:
        return 0
    return 1 if new == 0 else 2


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def _check_name(name: str, field: str) -> None:
    # Names go into Runtime API command lines: no spaces or separators.
    if not name or any(c.isspace() or c in ";/#" for c in name):
        raise BadTrafficInput(f"{field}: {name!r} is not a usable HAProxy name")
