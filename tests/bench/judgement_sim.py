"""A simulated HAProxy for the judgement benchmark: two blue and two green servers whose
counters move as `show stat` reports them (hrsp_*, econ, lbtot, and rtime by HAProxy's own
sliding-average arithmetic), driven by a traffic model with realistic noise. The real
HAProxySource reads it through the one call it makes (`server_stats`), on a simulated clock,
so hours of baking are judged in seconds by the code that judges a real cutover."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from controller.slo.haproxy_source import WINDOW

SERVERS = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "green"}


@dataclass
class SimServer:
    env: str
    ok: int = 0
    errors: int = 0
    econ: int = 0
    lbtot: int = 0
    d_sum: float = 0.0
    seen: int = 0

    def respond(self, ms: float, error: bool) -> None:
        self.lbtot += 1
        if error:
            self.errors += 1
        else:
            self.ok += 1
        self.seen += 1
        # HAProxy's swrate: a plain sum for the first WINDOW samples, then sliding.
        self.d_sum = self.d_sum + ms if self.seen <= WINDOW else self.d_sum - self.d_sum / WINDOW + ms

    def refuse(self) -> None:
        self.lbtot += 1
        self.econ += 1

    def row(self) -> dict[str, str]:
        rtime = math.ceil(self.d_sum / min(self.seen, WINDOW)) if self.seen else 0
        return {"hrsp_2xx": str(self.ok), "hrsp_5xx": str(self.errors), "econ": str(self.econ),
                "lbtot": str(self.lbtot), "rtime": str(rtime)}


@dataclass
class Noise:
    """What a clean bake looks like: jittery latency, background errors on both colours,
    GC-like pauses of single servers, load swinging ±30 %, and host-wide slowdowns."""

    base_ms: float = 20.0
    jitter: float = 0.5
    """Lognormal sigma of each response's latency."""
    error_ratio: float = 0.001
    pauses: tuple[tuple[float, float, float], ...] = ((5.0, 30.0, 0.1), (600.0, 300.0, 0.5))
    """GC-like pauses of one server at a time, (every, ms, seconds): by default a young
    collection of 30 ms every 5 s and a full one of 300 ms every 10 minutes (on average)."""
    host_slowdowns: list[tuple[float, float, float]] = field(default_factory=list)
    """(start, seconds, factor): every server slower at once (a busy host)."""


@dataclass
class Fault:
    kind: str
    servers: tuple[str, ...]
    error_ratio: float = 0.0
    extra_ms: float = 0.0
    refused: bool = False


class SimHAProxy:
    def __init__(self, seed: int, noise: Noise) -> None:
        self.rng = random.Random(seed)
        self.noise = noise
        self.servers = {name: SimServer(env) for name, env in SERVERS.items()}
        self.now = 0.0
        self.green_percent = 10
        self.fault: Fault | None = None
        self._gc: dict[str, tuple[float, float]] = {}
        """server -> (until, extra ms) of the pause it is in."""

    def clock(self) -> float:
        return self.now

    def server_stats(self, backend: str) -> dict[str, dict[str, str]]:
        return {name: s.row() for name, s in self.servers.items()}

    def close(self) -> None:
        pass

    def advance(self, seconds: float, rate: float, step: float = 0.05) -> None:
        """Serve `rate` requests a second (before the load swing) for `seconds`."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            swing = 1 + 0.3 * math.sin(2 * math.pi * self.now / 300)
            n = self._poisson(rate * swing * step)
            for _ in range(n):
                self._request()
            self.now += step
            for name in self.servers:
                for every, ms, length in self.noise.pauses:
                    if self.rng.random() < step / every:
                        self._gc[name] = (self.now + length, ms)

    def _request(self) -> None:
        green = self.rng.random() * 100 < self.green_percent
        name = self.rng.choice([n for n, e in SERVERS.items() if e == ("green" if green else "blue")])
        server = self.servers[name]
        fault = self.fault if self.fault is not None and name in self.fault.servers else None
        if fault is not None and fault.refused:
            server.refuse()
            return
        ms = self.noise.base_ms * self.rng.lognormvariate(0, self.noise.jitter)
        for start, length, factor in self.noise.host_slowdowns:
            if start <= self.now < start + length:
                ms *= factor
        until, pause = self._gc.get(name, (-1.0, 0.0))
        if until > self.now:
            ms += pause
        error_ratio = self.noise.error_ratio
        if fault is not None:
            ms += fault.extra_ms
            error_ratio = max(error_ratio, fault.error_ratio)
        server.respond(ms, self.rng.random() < error_ratio)

    def _poisson(self, mean: float) -> int:
        if mean > 30:
            return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1
