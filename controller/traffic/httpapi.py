"""A control-plane URL: green's share sent as JSON {"blue": 100-N, "green": N} with a bearer
token (from the secrets directory or environment, never the file); read back by GET of a URL
answering the same JSON shape."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from config.traffic import HttpDriverSettings
from controller.traffic.balancer import (
    BadTrafficInput,
    ShareBalancer,
    Split,
    TrafficError,
)

RETRYABLE = (httpx.TransportError,)


class HttpBalancer(ShareBalancer):
    def __init__(self, settings: HttpDriverSettings, transport: httpx.BaseTransport | None = None) -> None:
        """transport: httpx's default (the network) unless given (tests: httpx.MockTransport)."""
        self.settings = settings
        self.client = httpx.Client(timeout=settings.timeout, transport=transport,
                                   headers={"Accept": "application/json", "User-Agent": "cutover"})
        self._origin = _origin(str(settings.url))

    def describe(self) -> str:
        url = httpx.URL(str(self.settings.url))
        return f"control plane {url.scheme}://{url.host}:{url.port or ''}{url.path}"

    def check(self) -> None:
        if self.settings.readback_url is not None:
            self.read()

    def apply(self, green_percent: int) -> None:
        body = {"blue": 100 - green_percent, "green": green_percent}
        self._send(self.settings.method, str(self.settings.url), body)

    def read(self) -> Split | None:
        if self.settings.readback_url is None:
            return None
        data = self._send("GET", str(self.settings.readback_url), None)
        try:
            green = float(data["green"])
            blue = float(data.get("blue", 100 - green))
        except (TypeError, KeyError, ValueError):
            raise TrafficError(f"{self.settings.readback_url} answered {str(data)[:200]!r}; it must "
                               'answer JSON like {"blue": 90, "green": 10}') from None
        total = blue + green
        share = 100.0 * green / total if total else 0.0
        return Split(share, {"blue": round(blue), "green": round(green)})


    def close(self) -> None:
        self.client.close()

    def _send(self, method: str, url: str, body: dict[str, int] | None) -> Any:
        try:
            response = self._request(method, url, body)
        except httpx.TransportError as exc:
            raise TrafficError(f"{self.describe()} is unreachable: {exc}") from None
        if response.status_code in (401, 403):
            raise BadTrafficInput(f"{self.describe()} refused the token (HTTP {response.status_code});"
                                  " set CUTOVER_TRAFFIC__HTTP__TOKEN or the credential file "
                                  "traffic__http__token")
        if response.status_code >= 400:
            raise TrafficError(f"{method} {httpx.URL(url).path} answered HTTP {response.status_code}: "
                               f"{response.text[:200]}")
        if method != "GET" or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise TrafficError(f"{httpx.URL(url).path} answered non-JSON: {response.text[:200]!r}") from None

    @retry(retry=retry_if_exception_type(RETRYABLE), wait=wait_exponential(multiplier=0.1, max=1),
           stop=stop_after_delay(10), reraise=True)
    def _request(self, method: str, url: str, body: dict[str, int] | None) -> httpx.Response:
        # A 5xx is retried too: control planes answer 503 while they restart.
        # The token goes to the control plane's own origin only (a readback_url elsewhere
        # gets none); httpx follows no redirect.
        headers = {}
        if self.settings.token is not None and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        response = self.client.request(method, url, json=body, headers=headers)
        if response.status_code >= 500:
            raise httpx.TransportError(f"HTTP {response.status_code}")
        return response


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port
