"""Sticky stages through the lab's real HAProxy (its second frontend, whose backend keeps
clients on their server by cookie): returning clients keep their colour through a stage and
the next, new clients are split by the stage's weight, and a rollback moves every client to
blue at once."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from config.traffic import HAProxySettings
from controller.lab import haproxy as lab_haproxy_config
from controller.lab.lab import Lab
from controller.traffic.balancer import BadTrafficInput
from controller.traffic.haproxy import HAProxyBalancer
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
        for attempt in (1, 2):  # a keep-alive connection the server closed: open another
            if client.conn is None:
                client.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.clients.append(client)
            try:
                client.conn.request("GET", "/api/health", headers=headers)
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
        return env

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


@pytest.fixture
def sticky(lab: Lab) -> Iterator[HAProxyBalancer]:
    lb = sticky_balancer(lab)
    try:
        yield lb
    finally:
        shift(lb, 0, observe=False)
        lb.close()


@pytest.fixture
def browsers(lab: Lab) -> Iterator[Browsers]:
    b = Browsers(lab.state.sticky_url)
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


def shift_as_clients_arrive(lb: HAProxyBalancer, browsers: Browsers, target: int) -> None:
    """Shift while new clients keep arriving, until the balancer's own count of its picks (new
    clients only: a cookie's requests are not picks) confirms the split. HAProxy's round robin
    takes a new weight in over its next rounds: until then, new clients follow the old one."""
    done = threading.Event()

    def newcomers_arrive() -> None:
        while not done.is_set():
            browsers.run([Client() for _ in range(40)], 1)
    arriving = threading.Thread(target=newcomers_arrive, daemon=True)
    arriving.start()
    try:
        result = shift(lb, target, confirm_timeout=20)
    finally:
        done.set()
        arriving.join(30)
    assert result.observed.seen is Seen.CONFIRMED, result.observed
    assert result.after is not None
    assert result.after.persistent == ()


def test_returning_clients_keep_their_colour_through_the_stages_and_new_ones_are_split(
        sticky: HAProxyBalancer, browsers: Browsers) -> None:
    shift_as_clients_arrive(sticky, browsers, 10)
    first = [Client() for _ in range(CLIENTS)]
    browsers.run(first, REQUESTS)
    assert 100 * colours(first)["green"] / CLIENTS == pytest.approx(10, abs=2)
    assert len(switched(first)) <= CLIENTS * 0.001, "clients changed colour within the stage"

    # 50 %: the returning clients stay where they were, the new ones are split 50/50.
    shift_as_clients_arrive(sticky, browsers, 50)
    browsers.run(first, REQUESTS)
    assert len(switched(first)) <= CLIENTS * 0.001, "returning clients changed colour at 50 %"
    second = [Client() for _ in range(CLIENTS)]
    browsers.run(second, 20)
    assert 100 * colours(second)["green"] / CLIENTS == pytest.approx(50, abs=2)
    assert len(switched(second)) <= CLIENTS * 0.001


def test_a_rollback_moves_every_stuck_client_to_blue_at_once(
        sticky: HAProxyBalancer, browsers: Browsers) -> None:
    shift_as_clients_arrive(sticky, browsers, 50)
    clients = [Client() for _ in range(CLIENTS)]
    browsers.run(clients, 5)
    assert colours(clients)["green"] > CLIENTS // 4
    before = [len(c.seen) for c in clients]
    started = time.monotonic()
    result = shift(sticky, 0, observe=False)
    took = time.monotonic() - started
    assert result.after is not None
    assert result.after.persistent == ()  # green's servers are in maintenance, not at weight 0
    browsers.run(clients, 20)
    after = [c.seen[n:] for c, n in zip(clients, before, strict=True)]
    assert sum("green" in seen for seen in after) == 0, "a client still saw green after the rollback"
    assert took < 1.0, f"the rollback took {took:.2f}s"
    # And the next cutover starts from clean: green's servers take new clients again.
    shift_as_clients_arrive(sticky, browsers, 10)


def test_a_weight_of_zero_without_maintenance_is_read_back_as_still_serving(
        lab: Lab, sticky: HAProxyBalancer) -> None:
    """Weight 0 alone leaves green serving the clients stuck to it: the read-back says so, so
    a shift that did not break their stickiness is never taken for done."""
    shift(sticky, 50, observe=False)
    for server in lab.state.servers_of("green"):
        sticky.api.execute(f"set weight {sticky.backend}/{server} 0")
        sticky.api.execute(f"set server {sticky.backend}/{server} state ready")
    split = sticky.read()
    assert set(split.persistent) == set(lab.state.servers_of("green"))
    assert split.persistent != sticky.expected(0).persistent


def test_sticky_stages_on_a_backend_without_cookies_are_refused_naming_the_fix(lab: Lab) -> None:
    lb = sticky_balancer(lab, backend=lab_haproxy_config.BACKEND)
    try:
        with pytest.raises(BadTrafficInput, match=r"traffic.sticky: .*cookie <name> insert"):
            shift(lb, 10, observe=False)
        assert lb.read().green_percent == 0  # nothing changed
    finally:
        lb.close()
