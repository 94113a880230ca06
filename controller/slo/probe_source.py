"""HTTP probes: each environment's health URL (`/api/health`), its latency in ms; an error
status or no answer is a failing reading, not a missing one."""

from __future__ import annotations

import time

import httpx

from config.slo import SloCheck
from controller.slo.readings import Measurement, Reading


class HttpProbeSource:
    def __init__(self, urls: dict[str, str], timeout: float = 2.0) -> None:
        self.urls = urls
        self.client = httpx.Client(timeout=timeout, headers={"User-Agent": "cutover-probe"})

    def measure(self, check: SloCheck) -> Measurement:
        return Measurement(self._probe("green"), self._probe("blue"))

    def _probe(self, env: str) -> Reading:
        url = self.urls[env]
        started = time.monotonic()
        try:
            response = self.client.get(url)
        except httpx.HTTPError as exc:
            return Reading(None, failed=f"{env} health probe {url}: no answer ({exc})")
        ms = (time.monotonic() - started) * 1000
        if response.status_code >= 400:
            return Reading(ms, failed=f"{env} health probe {url}: HTTP {response.status_code}")
        return Reading(ms)

    def close(self) -> None:
        self.client.close()
