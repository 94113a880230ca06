"""nginx: Cutover owns one file holding the `upstream` block, included from nginx.conf. A change
writes it atomically, runs the test command (`nginx -t`), and reloads; a failing test puts the
previous file back, so nginx never reloads a config it would reject. Read-back is the file:
nginx exposes no live weights (and no per-upstream counters without the commercial API).

Routes (sticky stages, match stages): the file also holds an upstream per colour and maps
that pick one per request, and the server block proxies to `$cutover_<upstream>`. A request
that matches a match stage's header goes to green's upstream; else a client whose cookie
names a colour goes to that colour's (sticky stages; a colour at 0 % maps its cookie to the
other colour's upstream, so its clients move at once); any other to the weighted one.
`$cutover_<upstream>_cookie`, sent as Set-Cookie, names the colour of the server that answered."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from config.traffic import Match, NginxSettings, ip_port
from controller.traffic.balancer import BadTrafficInput, EnvCounters, Split, TrafficError
from controller.traffic.weights import green_share, weights_for
from sync.children import run_command

SERVER_LINE = re.compile(r"^\s*server\s+(\S+)(.*?);\s*#\s*cutover:(\S+)\s*$")
ANY_SERVER = re.compile(r"^\s*(server|state)\s")
UPSTREAM_LINE = re.compile(r"^\s*upstream\s+(\S+)\s*\{")
ROUTE_LINE = re.compile(r"^\s*(blue|green)\s+(\S+);\s*#\s*cutover:sticky\s*$")
MATCH_LINE = re.compile(r"^\s*\"\S+\"\s+\S+;\s*#\s*cutover:match\s+(\S+)\s*$")
COLOURS = ("blue", "green")


class NginxBalancer:
    def __init__(self, settings: NginxSettings, blue: Sequence[str], green: Sequence[str], *,
                 sticky_cookie: str | None = None, sticky_header: str | None = None,
                 match_header: str | None = None) -> None:
        """sticky_cookie: the cookie naming a client's colour (sticky stages by cookie);
        sticky_header: the header whose value's hash splits users (by header); match_header:
        the header of the match stages. None: there is none."""
        self.settings, self.sticky_cookie, self.match_header = settings, sticky_cookie, match_header
        self.sticky_header = sticky_header
        self.routed = any(x is not None for x in (sticky_cookie, sticky_header, match_header))
        self.blue, self.green = list(blue), list(green)
        self.match: str | None = None
        """The value this balancer routes to green (route_matching), rendered into the file."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", settings.upstream):
            raise BadTrafficInput(f"traffic.nginx.upstream: {settings.upstream!r} is not an nginx name")

    def describe(self) -> str:
        return f"nginx upstream {self.settings.upstream!r} in {self.settings.upstream_file}"

    def check(self) -> None:
        path = self.settings.upstream_file
        if not path.parent.is_dir():
            raise BadTrafficInput(f"traffic.nginx.upstream_file: directory {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise BadTrafficInput(f"traffic.nginx.upstream_file: {path.parent} is not writable by "
                                  "this user")
        if path.exists():
            self.read()  # a file we cannot parse is reported before anything changes

    def render(self, green_percent: int) -> str:
        return self._render(weights_for(green_percent, self.blue, self.green, max_weight=1000))

    def _render(self, weights: dict[str, int]) -> str:
        share = green_share(weights, self.green)
        lines = [f"# written by cutover: green {share:g} %; changes here are overwritten",
                 *self._upstream(self.settings.upstream, weights)]
        if self.routed:
            lines += self._routes(weights)
        return "\n".join(lines) + "\n"

    def _upstream(self, name: str, weights: dict[str, int]) -> list[str]:
        lines = [f"upstream {name} {{"]
        for server, weight in weights.items():
            # nginx has no weight 0: a server that gets nothing is marked down.
            how = f"weight={weight}" if weight else "down"
            lines.append(f"    server {self.settings.servers[server]} {how};  # cutover:{server}")
        lines += [f"    {d};" for d in self.settings.directives]
        return [*lines, "}"]

    def _routes(self, weights: dict[str, int]) -> list[str]:
        """An upstream per colour; the match's requests to green's; the sticky cookie's colour
        to its upstream (a colour at 0 % to the other's); any other request to the weighted
        one; and the answering server's address to the cookie naming its colour."""
        name, servers = self.settings.upstream, self.settings.servers
        lines: list[str] = []
        for colour, members in (("blue", self.blue), ("green", self.green)):
            lines += self._upstream(f"{name}_{colour}", dict.fromkeys(members, 1))
        if self.match is not None and self.match_header is not None:
            lines += [f"map $http_{self.match_header.lower().replace('-', '_')} $cutover_{name}_match {{",
                      # A regular expression: map's plain keys ignore case, HAProxy's do not.
                      f'    "~^{_literal(self.match)}$" {name}_green;  # cutover:match {self.match}']
        else:
            lines.append(f"map $host $cutover_{name}_match {{")
        lines += ['    default "";', "}"]
        fallback = name
        if self.sticky_header is not None:
            fallback = f"$cutover_{name}_sticky"
            lines += self._split(weights)
        elif self.sticky_cookie is not None:
            fallback = f"$cutover_{name}_sticky"
            gone = {c for c in COLOURS if not any(weights[s] for s in self._members(c))}
            lines.append(f"map $cookie_{self.sticky_cookie} $cutover_{name}_sticky {{")
            for colour in COLOURS:
                to = ("green" if colour == "blue" else "blue") if colour in gone else colour
                lines.append(f"    {colour} {name}_{to};  # cutover:sticky")
            lines += [f"    default {name};", "}"]
        lines += [f"map $cutover_{name}_match $cutover_{name} {{", f'    "" {fallback};',
                  f"    default $cutover_{name}_match;", "}",
                  f"map $upstream_addr $cutover_{name}_cookie {{"]
        for colour in COLOURS if self.sticky_cookie is not None else ():
            lines += [f'    "{ip_port(servers[s])}" "{self.sticky_cookie}={colour}; Path=/; HttpOnly";'
                      for s in self._members(colour)]
        return [*lines, '    default "";', "}"]

    def _split(self, weights: dict[str, int]) -> list[str]:
        """By header: users by the hash of its value, green's share first, so a user green at
        10 % is green at 50 % (controller.traffic.buckets computes the same); a request without
        it by weight."""
        name, share = self.settings.upstream, round(green_share(weights, self.green), 2)
        header = f"$http_{(self.sticky_header or '').lower().replace('-', '_')}"
        lines = [f'split_clients "{header}" $cutover_{name}_split {{']
        if 0 < share < 100:
            lines.append(f"    {share:.2f}% {name}_green;")
        rest = "green" if share >= 100 else "blue"
        return [*lines, f"    * {name}_{rest};", "}", f"map {header} $cutover_{name}_sticky {{",
                f'    "" {name};', f"    default $cutover_{name}_split;", "}"]

    def _members(self, colour: str) -> list[str]:
        return self.blue if colour == "blue" else self.green

    def apply(self, green_percent: int) -> None:
        self._install(self.render(green_percent), f"green {green_percent} %")

    def route_matching(self, match: Match | None) -> None:
        if match is not None and (self.match_header is None
                                  or match.header.lower() != self.match_header.lower()):
            raise BadTrafficInput(f"traffic.nginx: the file routes no header {match.header!r} (the "
                                  "match stages' header was not given)")
        value = None if match is None else match.value
        self.match = value
        if not self.routed or self.matching() == value:
            return
        weights = (self.read().detail if self.settings.upstream_file.exists()
                   else weights_for(0, self.blue, self.green, max_weight=1000))  # the first write
        self._install(self._render(weights), f"requests matching {value!r} to green")

    def matching(self) -> str | None:
        path = self.settings.upstream_file
        if not self.routed or not path.exists():
            return None
        found = [m.group(1) for line in path.read_text().splitlines() if (m := MATCH_LINE.match(line))]
        return found[0] if found else None

    def _install(self, text: str, what: str) -> None:
        """Write the file atomically, test it (a rejection puts the previous one back), reload."""
        path = self.settings.upstream_file
        previous = path.read_bytes() if path.exists() else None
        _write_atomically(path, text.encode())
        tested = self._run(self.settings.test_command, "test")
        if tested.returncode != 0:
            if previous is None:
                path.unlink()
            else:
                _write_atomically(path, previous)
            raise TrafficError(f"`{' '.join(self.settings.test_command)}` rejected the new upstream "
                               f"file (the previous one is back): {_tail(tested)}")
        reloaded = self._run(self.settings.reload_command, "reload")
        if reloaded.returncode != 0:
            raise TrafficError(f"`{' '.join(self.settings.reload_command)}` failed after writing "
                               f"{what} to {path}: {_tail(reloaded)}; the file is written but "
                               "nginx may still run the old one")

    def _run(self, argv: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
        try:
            return run_command(argv, self.settings.timeout)
        except FileNotFoundError:
            raise BadTrafficInput(f"traffic.nginx.{what}_command: {argv[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise TrafficError(f"`{' '.join(argv)}` did not finish within "
                               f"{self.settings.timeout:.0f}s") from None

    def read(self) -> Split:
        path = self.settings.upstream_file
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise TrafficError(f"{path} does not exist yet: Cutover has not written it") from None
        weights: dict[str, int] = {}
        routes: dict[str, str] = {}
        block = None
        for line in text.splitlines():
            if (u := UPSTREAM_LINE.match(line)) is not None:
                block = u.group(1)
            m = SERVER_LINE.match(line)
            if m is None and ANY_SERVER.match(line):
                raise TrafficError(f"{path} has a server Cutover did not write ({line.strip()!r}); "
                                   "its share of traffic would be unknown. The file is Cutover's: "
                                   "list every server in blue_servers or green_servers")
            if m and block == self.settings.upstream:
                flags = m.group(2)
                w = re.search(r"weight=(\d+)", flags)
                weights[m.group(3)] = 0 if "down" in flags.split() else int(w.group(1)) if w else 1
            if (r := ROUTE_LINE.match(line)) is not None:
                routes[r.group(1)] = r.group(2)
        missing = [s for s in (*self.blue, *self.green) if s not in weights]
        if missing:
            raise TrafficError(f"{path} has no server line for {', '.join(missing)}; it was not "
                               "written by Cutover for these servers")
        return Split(green_share(weights, self.green), weights, self._persistent(weights, routes))

    def _persistent(self, weights: dict[str, int], routes: dict[str, str]) -> tuple[str, ...]:
        """Sticky: the servers at weight 0 whose colour's cookie still leads to them."""
        if self.sticky_cookie is None:
            return ()
        name = self.settings.upstream
        if set(routes) != set(COLOURS):  # written before [traffic.sticky]: nobody is kept yet
            return ()
        members = {"blue": self.blue, "green": self.green}
        return tuple(s for colour in COLOURS if routes[colour] == f"{name}_{colour}"
                     for s in members[colour] if not weights[s])

    def expected(self, green_percent: int) -> Split:
        weights = weights_for(green_percent, self.blue, self.green, max_weight=1000)
        return Split(green_share(weights, self.green), weights)

    def counters(self) -> dict[str, EnvCounters] | None:
        return None

    def close(self) -> None:
        pass


def _literal(value: str) -> str:
    """value matched literally in a PCRE (the settings allow no quote, space or ';')."""
    return "".join(c if c.isalnum() else f"\\{c}" for c in value)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stderr or done.stdout or "").strip().splitlines()
    return " | ".join(text[-3:]) or f"exit code {done.returncode}"
