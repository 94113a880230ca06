"""HTTP probes: every health URL of each environment (`/api/health` of each app server), all
at once; the slowest answer is the environment's latency in ms, and any error status or
missing answer is a failing reading that names the URL, not a missing one."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from config.slo import SloCheck
from controller.slo.readings import Measurement, Reading

TIMEOUT = 2.0


class HttpProbeSource:
    def __init__(self, urls: dict[str, list[str]], transport: httpx.BaseTransport | None = None) -> None:
        """transport: httpx's default (the network) unless given (tests: httpx.MockTransport)."""
        self.urls = urls
        self.client = httpx.Client(headers={"User-Agent": "cutover-probe"}, transport=transport)
        self.pool = ThreadPoolExecutor(max(1, sum(len(u) for u in urls.values())),
                                       thread_name_prefix="probe")

    def measure(self, check: SloCheck) -> Measurement:
        # Within the check's interval, so a hung server fails the probe rather than the deadline.
        timeout = min(TIMEOUT, 0.8 * check.interval)
        asked = {env: [self.pool.submit(self._probe, env, url, timeout) for url in urls]
                 for env, urls in self.urls.items()}
        green, blue = (_worst([f.result() for f in asked[env]]) for env in ("green", "blue"))
        return Measurement(green, blue)

    def _probe(self, env: str, url: str, timeout: float) -> Reading:
        started = time.monotonic()
        try:
            response = self.client.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return Reading(None, failed=f"{env} health probe {url}: no answer "
                           f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})")
        ms = (time.monotonic() - started) * 1000
        if response.status_code >= 400:
            return Reading(ms, failed=f"{env} health probe {url}: HTTP {response.status_code}")
        return Reading(ms)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _worst(readings: list[Reading]) -> Reading:
    failed = [r.failed for r in readings if r.failed]
    values = [r.value for r in readings if r.value is not None]
    return Reading(max(values) if values else None, failed="; ".join(failed) if failed else None)
