"""Notifications: a Slack-compatible webhook ({"text": ...} plus the event's data). A failed
notification is logged, never fatal, and never shows the webhook URL (it carries a token)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from config.operations import NotifyEvent, NotifySettings

log = logging.getLogger("cutover.notify")


class Notifier:
    def __init__(self, settings: NotifySettings, service: str,
                 transport: httpx.BaseTransport | None = None) -> None:
        """transport: httpx's default (the network) unless given (tests: httpx.MockTransport)."""
        self.settings, self.service, self.transport = settings, service, transport

    def send(self, event: NotifyEvent, text: str, data: dict[str, Any]) -> bool:
        if self.settings.webhook is None or event not in self.settings.events:
            return False
        body = {"text": f"[cutover {self.service}] {text}", "event": event.value, "data": data}
        try:
            with httpx.Client(transport=self.transport, timeout=self.settings.timeout) as client:
                response = client.post(self.settings.webhook.get_secret_value(), json=body)
        except httpx.HTTPError as exc:
            log.warning("notification %s not sent: %s", event.value, type(exc).__name__)
            return False
        if response.status_code >= 400:
            log.warning("notification %s refused: HTTP %s", event.value, response.status_code)
            return False
        return True
