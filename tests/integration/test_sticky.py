"""Sticky stages through the lab's real HAProxy (its second frontend, whose backend keeps
clients on their server by cookie): returning clients keep their colour through a stage and
the next, new clients are split by the stage's weight, and a rollback moves every client to
blue at once."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from config.traffic import HAProxySettings
from controller.lab import haproxy as lab_haproxy_config
from controller.lab import nginx as lab_nginx_config
from controller.lab.lab import Lab
from controller.traffic.balancer import BadTrafficInput
from controller.traffic.buckets import goes_green
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.nginx import NginxBalancer
from controller.traffic.shift import Seen, shift

CLIENTS = 400
REQUESTS = 100
WORKERS = 8


@dataclass
class Client:
    """One browser: its own keep-alive connection, the cookie the balancer gave it, and the
    colour of every answer."""

    cookie: str | None = None
    seen: list[str] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    """When each request was sent (monotonic)."""
    conn: http.client.HTTPConnection | None = None


class Browsers:
    """Many clients, each with its own connection and cookie, sent through one frontend on a
    few threads."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.clients: list[Client] = []

    def visit(self, client: Client) -> str:
        headers = {"Cookie": client.cookie} if client.cookie else {}
        sent = time.monotonic()
        for attempt in (1, 2):  # a keep-alive connection the server closed: open another
            if client.conn is None:
                client.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.clients.append(client)
            try:
                client.conn.request("GET", "/api/whoami", headers=headers)
                response = client.conn.getresponse()
                body = response.read()
                break
            except (http.client.HTTPException, OSError):
                client.conn.close()
                client.conn = None
                if attempt == 2:
                    raise
        assert response.status == 200, body
        if (set_cookie := response.getheader("Set-Cookie")) is not None:
            client.cookie = set_cookie.split(";", 1)[0]
        env = str(json.loads(body)["env"])
        client.seen.append(env)
        client.sent.append(sent)
        return env

    @contextmanager
    def coming_back(self, clients: Callable[[], list[Client]]) -> Iterator[None]:
        """While the block runs, `clients()` (the same ones, or new ones each round) keep
        making a request each, on a thread of their own."""
        done = threading.Event()

        def loop() -> None:
            while not done.is_set():
                self.run(clients(), 1)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(30)

    def close(self) -> None:
        for client in self.clients:
            if client.conn is not None:
                client.conn.close()
                client.conn = None
        self.clients = []

    def run(self, clients: list[Client], requests: int) -> None:
        """Each client makes `requests` requests; clients interleave, as real ones do."""
        def one(client: Client) -> None:
            for _ in range(requests):
                self.visit(client)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, clients))


def sticky_balancer(lab: Lab, backend: str = lab_haproxy_config.STICKY_BACKEND) -> HAProxyBalancer:
    return HAProxyBalancer(HAProxySettings(socket=lab.state.haproxy_socket, backend=backend),
                           lab.state.servers_of("blue"), lab.state.servers_of("green"), sticky=True)


def sticky_nginx(lab: Lab) -> NginxBalancer:
    return NginxBalancer(lab.state.nginx_settings(sticky=True), lab.state.servers_of("blue"),
                         lab.state.servers_of("green"), sticky_cookie=lab_nginx_config.STICKY_COOKIE)


@pytest.fixture(params=["haproxy", "nginx"])
def sticky(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Sticky]:
    """A sticky balancer of the lab and the frontend that keeps clients on their colour."""
    if request.param == "haproxy":
        lb: HAProxyBalancer | NginxBalancer = sticky_balancer(lab)
        url = lab.state.sticky_url
    else:
        lb, url = sticky_nginx(lab), lab.state.nginx_sticky_url
    try:
        yield Sticky(lb, url)
    finally:
        shift(lb, 0, observe=False)
        lb.close()


@dataclass
class Sticky:
    lb: HAProxyBalancer | NginxBalancer
    url: str


@pytest.fixture
def browsers(sticky: Sticky) -> Iterator[Browsers]:
    b = Browsers(sticky.url)
    try:
        yield b
    finally:
        b.close()


def colours(clients: list[Client], first: int = 0) -> dict[str, int]:
    """How many clients got each colour on their request number `first`."""
    out = {"blue": 0, "green": 0}
    for c in clients:
        out[c.seen[first]] += 1
    return out


def switched(clients: list[Client], since: int = 0) -> list[Client]:
    return [c for c in clients if len(set(c.seen[since:])) > 1]


def shift_as_clients_arrive(lb: HAProxyBalancer | NginxBalancer, browsers: Browsers, target: int) -> None:
    """Shift while new clients keep arriving, until the balancer's own count of its picks (new
    clients only: a cookie's requests are not picks) confirms the split (nginx counts nothing).
    HAProxy's round robin takes a new weight in over its next rounds: until then, new clients
    follow the old one."""
    with browsers.coming_back(lambda: [Client() for _ in range(40)]):
        result = shift(lb, target, confirm_timeout=20)
    countable = isinstance(lb, HAProxyBalancer)
    assert result.observed.seen is (Seen.CONFIRMED if countable else Seen.NOT_OBSERVABLE), result.observed
    assert result.after is not None
    assert result.after.persistent == ()


def test_returning_clients_keep_their_colour_through_the_stages_and_new_ones_are_split(
        sticky: Sticky, browsers: Browsers) -> None:
    shift_as_clients_arrive(sticky.lb, browsers, 10)
    first = [Client() for _ in range(CLIENTS)]
    browsers.run(first, REQUESTS)
    assert 100 * colours(first)["green"] / CLIENTS == pytest.approx(10, abs=2)
    assert len(switched(first)) <= CLIENTS * 0.001, "clients changed colour within the stage"

    # 50 %: the returning clients stay where they were, the new ones are split 50/50.
    shift_as_clients_arrive(sticky.lb, browsers, 50)
    browsers.run(first, REQUESTS)
    assert len(switched(first)) <= CLIENTS * 0.001, "returning clients changed colour at 50 %"
    second = [Client() for _ in range(CLIENTS)]
    browsers.run(second, 20)
    assert 100 * colours(second)["green"] / CLIENTS == pytest.approx(50, abs=2)
    assert len(switched(second)) <= CLIENTS * 0.001


def test_a_rollback_moves_every_stuck_client_to_blue_within_a_second(
        sticky: Sticky, browsers: Browsers) -> None:
    """The clients keep coming back while the rollback runs: no request sent a second after it
    started is answered by green (HAProxy: at once; nginx: once its reload has taken)."""
    shift_as_clients_arrive(sticky.lb, browsers, 50)
    clients = [Client() for _ in range(CLIENTS)]
    browsers.run(clients, 5)
    assert colours(clients)["green"] > CLIENTS // 4
    with browsers.coming_back(lambda: clients):
        time.sleep(0.5)
        started = time.monotonic()
        result = shift(sticky.lb, 0, observe=False)
        time.sleep(2.0)
    assert result.after is not None
    assert result.after.persistent == ()  # no server at 0 % keeps its clients
    answers = [(at - started, env) for c in clients for at, env in zip(c.sent, c.seen, strict=True)]
    assert sum(1 for at, _ in answers if at > 1.0) > CLIENTS, "too few requests after the rollback"
    late_green = [round(at, 3) for at, env in answers if env == "green" and at > 0]
    assert all(at <= 1.0 for at in late_green), f"green answered requests sent {max(late_green)}s in"
    print(f"\n[sticky rollback] last green answer to a request sent {max(late_green, default=0):.3f}s "
          f"after the rollback started; the shift took {result.apply_seconds * 1000:.1f} ms")
    # And the next cutover starts from clean: green's servers take new clients again.
    shift_as_clients_arrive(sticky.lb, browsers, 10)


def test_a_weight_of_zero_that_keeps_its_clients_is_read_back_as_still_serving(
        lab: Lab, sticky: Sticky) -> None:
    """Weight 0 alone leaves green serving the clients stuck to it (HAProxy: not in
    maintenance; nginx: green's cookie still leads to green): the read-back says so, so a
    shift that did not let them go is never taken for done."""
    shift(sticky.lb, 0, observe=False)
    if isinstance(sticky.lb, HAProxyBalancer):
        for server in lab.state.servers_of("green"):
            sticky.lb.api.execute(f"set server {sticky.lb.backend}/{server} state ready")
    else:
        path = sticky.lb.settings.upstream_file
        path.write_text(path.read_text().replace("green app_sticky_blue;", "green app_sticky_green;"))
    split = sticky.lb.read()
    assert set(split.persistent) == set(lab.state.servers_of("green"))
    assert split.persistent != sticky.lb.expected(0).persistent


def test_a_plain_run_after_a_sticky_one_takes_green_out_of_maintenance(lab: Lab) -> None:
    """[traffic.sticky] switched off after a sticky rollback left green in maintenance: the
    next shift gives green its weight and takes it out, so green serves its share."""
    sticky, plain = sticky_balancer(lab), HAProxyBalancer(
        HAProxySettings(socket=lab.state.haproxy_socket, backend=lab_haproxy_config.STICKY_BACKEND),
        lab.state.servers_of("blue"), lab.state.servers_of("green"))
    browsers = Browsers(lab.state.sticky_url)
    try:
        shift(sticky, 50, observe=False)
        shift(sticky, 0, observe=False)
        assert {s for s, (_, maint) in plain._state().items() if maint} == set(lab.state.servers_of("green"))
        shift_as_clients_arrive(plain, browsers, 50)
        assert not any(maint for _, maint in plain._state().values())
        clients = [Client() for _ in range(200)]
        browsers.run(clients, 1)
        assert colours(clients)["green"] > 50
    finally:
        shift(sticky, 0, observe=False)
        browsers.close()
        sticky.close()
        plain.close()


def test_sticky_stages_on_a_backend_without_cookies_are_refused_naming_the_fix(lab: Lab) -> None:
    lb = sticky_balancer(lab, backend=lab_haproxy_config.BACKEND)
    try:
        with pytest.raises(BadTrafficInput, match=r"traffic.sticky: .*cookie <name> insert"):
            shift(lb, 10, observe=False)
        assert lb.read().green_percent == 0  # nothing changed
    finally:
        lb.close()


def test_users_by_header_keep_their_colour_and_land_where_the_flag_hash_says(lab: Lab) -> None:
    """nginx split by a hash of X-User-Id: every user lands on the colour
    controller.traffic.buckets gives it (what an application behind a feature flag computes),
    the same at every request, green at 10 % still green at 50 %, all blue after a rollback."""
    lb = NginxBalancer(lab.state.nginx_settings(sticky=True), lab.state.servers_of("blue"),
                       lab.state.servers_of("green"), sticky_header="X-User-Id")
    users = [f"user-{i}" for i in range(600)]
    colours_at: dict[int, dict[str, str]] = {}
    try:
        with httpx.Client(base_url=lab.state.nginx_sticky_url, timeout=10) as client:
            def colour(user: str) -> str:
                # Like a browser: a kept-alive connection an nginx reload closed under the
                # request is tried once more on a new one.
                try:
                    response = client.get("/api/whoami", headers={"X-User-Id": user})
                except httpx.RemoteProtocolError:
                    response = client.get("/api/whoami", headers={"X-User-Id": user})
                response.raise_for_status()
                return str(response.json()["env"])

            for pct in (10, 50, 0):
                shift(lb, pct, observe=False)
                expected = {u: "green" if goes_green(u, pct) else "blue" for u in users}
                deadline = time.monotonic() + 15  # nginx reloads in the background (slowly on a busy host)
                while (seen := {u: colour(u) for u in users}) != expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert seen == expected, "nginx and buckets.goes_green disagree"
                for _ in range(2):  # and every request of every user again, the same
                    assert {u: colour(u) for u in users} == expected, "a user changed colour"
                colours_at[pct] = seen
    finally:
        shift(sticky_nginx(lab), 0, observe=False)  # the lab's cookie-sticky file again
        lb.close()
    green_at = {pct: sum(c == "green" for c in seen.values()) for pct, seen in colours_at.items()}
    assert green_at[10] == pytest.approx(60, abs=15)
    assert green_at[50] == pytest.approx(300, abs=30)
    assert green_at[0] == 0
    assert all(colours_at[50][u] == "green" for u, c in colours_at[10].items() if c == "green")
