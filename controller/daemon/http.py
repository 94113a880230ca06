"""What the daemon publishes over HTTP: /metrics, /healthz and /status, from the snapshot the
loop replaces whole each tick."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config import Settings
from controller.daemon.phases import State


@dataclass
class Snapshot:
    """What /status, /healthz and the sd_notify STATUS line show; replaced whole each tick."""
    state: State
    reason: str
    job: str | None
    weights: dict[str, Any] | None
    sync: dict[str, Any] | None
    checks: dict[str, dict[str, Any]]
    tick_at: float

    def as_dict(self, service: str) -> dict[str, Any]:
        return {"service": service, **self.state.as_dict(), "decision": self.reason, "job": self.job,
                "weights": self.weights, "sync": self.sync, "checks": self.checks,
                "loop_age_seconds": round(time.monotonic() - self.tick_at, 3)}



# -- HTTP: /metrics, /healthz, /status ---------------------------------------------------------

def serve_http(snapshot: Callable[[], Snapshot], registry: CollectorRegistry, settings: Settings,
               stall: float) -> ThreadingHTTPServer:
    """Serve on metrics.listen, in a thread of its own; /healthz says 503 once the loop has not
    ticked for `stall` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                age = time.monotonic() - snapshot().tick_at
                ok = age < stall
                self._send(200 if ok else 503, "text/plain; charset=utf-8",
                           f"{'ok' if ok else 'stalled'}: last tick {age:.1f}s ago\n".encode())
            elif path == "/status":
                body = json.dumps(snapshot().as_dict(settings.service), default=str)
                self._send(200, "application/json", body.encode())
            else:
                self._send(404, "text/plain", b"not found: try /metrics, /healthz or /status\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(settings.metrics.address(), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
