"""The lab's sample app server: a small HTTP service over PostgreSQL (through PgBouncer).

GET /api/health, GET|POST /api/items, GET /api/whoami (which colour and server answered,
without the database: for tests of the balancer), GET /metrics (labelled by env), and a fault switch
at GET|POST /admin/fault to make it misbehave: {"error_ratio": 0.5, "latency_ms": 200};
{"hang": true} (requests are read and never answered); {"down_for": 10} (the server stops
listening and drops its connections for 10 s: connection refused, as a dead server).
Run as: python -m controller.lab.app --name blue1 --env blue --port 8081 --dsn "...".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from http import HTTPStatus
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from controller.lab.http11 import HttpError, encode, read_message

POOL_SIZE = 4


class App:
    def __init__(self, name: str, env: str, dsn: str) -> None:
        self.name, self.env, self.dsn = name, env, dsn
        self.error_ratio = 0.0
        self.latency_ms = 0.0
        self.hang = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.down: asyncio.Future[None] | None = None
        self.pool: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        for _ in range(POOL_SIZE):
            self.pool.put_nowait(None)  # connect lazily, so the app starts without its DB
        self.registry = CollectorRegistry()
        self.requests = Counter("lab_app_requests", "HTTP requests served",
                                ["env", "server", "route", "code"], registry=self.registry)
        self.latency = Histogram("lab_app_request_duration_seconds", "HTTP request duration",
                                 ["env", "server", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = await self.pool.get()
        try:
            if conn is None or conn.closed:
                # PgBouncer in transaction mode: no server-side prepared statements.
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, prepare_threshold=None, connect_timeout=3,
                    application_name=f"lab-app-{self.name}")
            cur = await conn.execute(sql, params)
            return await cur.fetchall()
        except psycopg.Error:
            if conn is not None:
                await conn.close()
            conn = None
            raise
        finally:
            self.pool.put_nowait(conn)

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
        if path == "/admin/fault":
            return self.fault(method, body)
        started = time.monotonic()
        route = path if path in ("/api/health", "/api/items", "/api/whoami") else "other"
        status, payload = await self.api(method, path)
        self.latency.labels(self.env, self.name, route).observe(time.monotonic() - started)
        self.requests.labels(self.env, self.name, route, str(status)).inc()
        return status, json.dumps(payload).encode(), "application/json"

    async def api(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        while self.hang.is_set():
            await asyncio.sleep(0.1)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.error_ratio > 0 and random.random() < self.error_ratio:
            return 500, {"error": "injected fault", "env": self.env}
        if path == "/api/whoami":
            return 200, {"env": self.env, "server": self.name}
        try:
            if path == "/api/health":
                await self.query("SELECT 1")
                return 200, {"status": "ok", "env": self.env, "server": self.name}
            if path == "/api/items" and method == "POST":
                rows = await self.query("INSERT INTO lab_items (env, payload) VALUES (%s, %s) "
                                        "RETURNING id", (self.env, f"from {self.name}"))
                return 201, {"id": rows[0][0], "env": self.env}
            if path == "/api/items":
                rows = await self.query("SELECT id FROM lab_items ORDER BY id DESC LIMIT 5")
                return 200, {"ids": [r[0] for r in rows], "env": self.env}
        except psycopg.Error as exc:
            return 503, {"error": f"database: {exc}".strip(), "env": self.env}
        return 404, {"error": "no such route", "env": self.env}

    def fault(self, method: str, body: bytes) -> tuple[int, bytes, str]:
        if method == "POST":
            try:
                wanted = json.loads(body or b"{}")
                ratio = float(wanted.get("error_ratio", 0.0))
                latency = float(wanted.get("latency_ms", 0.0))
                down_for = float(wanted.get("down_for", 0.0))
                if not (0 <= ratio <= 1 and latency >= 0 and down_for >= 0):
                    raise ValueError("error_ratio must be in [0, 1], latency_ms and down_for >= 0")
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, json.dumps({"error": str(exc)}).encode(), "application/json"
            self.error_ratio, self.latency_ms = ratio, latency
            (self.hang.set if wanted.get("hang") else self.hang.clear)()
            if down_for:  # after this answer has left
                asyncio.get_running_loop().call_later(0.05, self.went_down, down_for)
        state = {"error_ratio": self.error_ratio, "latency_ms": self.latency_ms,
                 "hang": self.hang.is_set()}
        return 200, json.dumps(state).encode(), "application/json"

    async def listen(self) -> None:
        self.server = await asyncio.start_server(self.serve_connection, "127.0.0.1", self.port,
                                                 backlog=512)

    def went_down(self, seconds: float) -> None:
        self.down = asyncio.ensure_future(self.go_down(seconds))  # kept: a task must be held

    async def go_down(self, seconds: float) -> None:
        """A dead server: nothing listens on its port and its connections are gone."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await asyncio.sleep(seconds)
        await self.listen()

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                request = await read_message(reader)
                if request is None:
                    break
                method, target, *_ = [*request.start_line.split(" "), "", ""]
                status, body, ctype = await self.handle(method, target.split("?", 1)[0], request.body)
                reason = HTTPStatus(status).phrase
                writer.write(encode(f"HTTP/1.1 {status} {reason}", {
                    "Content-Type": ctype, "X-Env": self.env, "X-Server": self.name}, body))
                await writer.drain()
        except (HttpError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def serve(name: str, env: str, port: int, dsn: str) -> None:
    app = App(name, env, dsn)
    app.port = port
    await app.listen()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    if app.server is not None:
        app.server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--env", required=True, choices=["blue", "green"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.env, args.port, args.dsn))


if __name__ == "__main__":
    main()
