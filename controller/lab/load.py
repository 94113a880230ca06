"""Load for the lab: HTTP requests at a set rate through HAProxy, and pgbench through PgBouncer."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.lab.http11 import HttpError, encode, read_message
from controller.lab.processes import LabError, find_binary


@dataclass(frozen=True)
class Sample:
    at: float
    """Monotonic time the request was sent."""
    status: int
    """HTTP status; 0 when no response came (connection refused, timeout)."""
    env: str | None
    latency: float


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    dropped: int = 0
    """Requests not sent: more than rate x timeout were already waiting to be sent, or the load
    stopped before their turn."""

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.samples if s.status == 0 or s.status >= 500)

    def by_env(self) -> Counter[str]:
        return Counter(s.env or "none" for s in self.samples)

    def latency_ms(self, percentile: float) -> float:
        ordered = sorted(s.latency for s in self.samples)
        if not ordered:
            return 0.0
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * percentile / 100))]


def _address(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise LabError(f"the load generator speaks plain http://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 80


class HttpLoad:
    """Open-loop load: `rate` requests a second whatever the latency, like real users.

    Latency is measured from when a request was due, not when a connection was free, so a
    stall shows up as latency instead of silently lowering the rate (coordinated omission).
    """

    def __init__(self, url: str, rate: float, write_ratio: float = 0.1, connections: int = 32,
                 timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        """headers: sent with every request (e.g. a match stage's X-Staff: 1)."""
        self.host, self.port = _address(url)
        self.rate, self.write_ratio = rate, write_ratio
        self.connections, self.timeout = connections, timeout
        self.headers = dict(headers or {})
        self._report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HttpLoad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name="lab-http-load")
        self._thread.start()

    def stop(self) -> LoadReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._longest_request + 5)  # in-flight requests end
        return self.report()

    def report(self) -> LoadReport:
        with self._lock:
            return LoadReport(list(self._report.samples), self._report.dropped)

    async def _main(self) -> None:
        due: asyncio.Queue[tuple[float, bool] | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._worker(due)) for _ in range(self.connections)]
        start = time.monotonic()
        backlog_limit = max(self.connections, int(self.rate * self.timeout))
        n = 0
        while not self._stop.is_set():
            n += 1
            at = start + n / self.rate
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if due.qsize() >= backlog_limit:
                with self._lock:
                    self._report.dropped += 1
                continue
            due.put_nowait((at, random.random() < self.write_ratio))
        while not due.empty():  # stopped means nothing more is sent, even if it was due
            due.get_nowait()
            with self._lock:
                self._report.dropped += 1
        for _ in workers:
            due.put_nowait(None)
        await asyncio.wait(workers, timeout=self._longest_request + 1)

    @property
    def _longest_request(self) -> float:
        """Connect and exchange, each within `timeout`, tried twice."""
        return 4 * self.timeout

    async def _worker(self, due: asyncio.Queue[tuple[float, bool] | None]) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (job := await due.get()) is not None:
            at, write = job
            status, env = 0, None
            # Like browsers and HTTP libraries: a kept-alive connection the server closed
            # before answering (idle close, nginx reload) is retried once on a new one.
            for attempt in (1, 2):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection(self.host, self.port), self.timeout)
                    status, env, keep = await self._exchange(conn, write)
                    if not keep:
                        conn[1].close()
                        conn = None
                    break
                except (OSError, HttpError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    if not (reused and attempt == 1 and isinstance(exc, _UNANSWERED)):
                        break
            sample = Sample(at, status, env, time.monotonic() - at)
            with self._lock:
                self._report.samples.append(sample)
        if conn is not None:
            conn[1].close()

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        write: bool) -> tuple[int, str | None, bool]:
        reader, writer = conn
        writer.write(encode(f"{'POST' if write else 'GET'} /api/items HTTP/1.1",
                            {"Host": f"{self.host}:{self.port}", **self.headers}))
        response = await asyncio.wait_for(read_message(reader), self.timeout)
        if response is None:
            raise _Unanswered("closed before a response")
        status = int(response.start_line.split(" ", 2)[1])
        keep = response.headers.get("connection", "").lower() != "close"
        return status, response.headers.get("x-env"), keep


class _Unanswered(HttpError):
    """The server closed the connection without sending a byte of response."""


_UNANSWERED = (_Unanswered, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class PgbenchResult:
    transactions: int
    failed: int
    tps: float
    output: str


class LoadProcess:
    """HttpLoad in a process of its own: the demo's daemon and its load no longer share one
    interpreter lock, so a busy host slows neither by the other (in one process the load fell
    seconds behind its schedule and the daemon's ticks overran)."""

    def __init__(self, url: str, rate: float, write_ratio: float = 0.1) -> None:
        self.args = (url, rate, write_ratio)
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._final: LoadReport | None = None

    def __enter__(self) -> LoadProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        _address(self.args[0])  # a bad URL fails here, not in the child
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_load, args=(child, *self.args), daemon=True,
                                        name="lab-http-load")
        self._process.start()
        child.close()
        self._wait("started")  # its load is running when start() returns, as HttpLoad's is

    def stop(self) -> LoadReport:
        if self._final is None:
            self._final = self._ask("stop")
            assert self._process is not None
            self._process.join(30)
        return self._final

    def report(self) -> LoadReport:
        return self._final if self._final is not None else self._ask("report")

    def _ask(self, what: str) -> LoadReport:
        assert self._conn is not None, "the load was never started"
        self._conn.send(what)
        report: LoadReport = self._wait("reported")
        return report

    def _wait(self, what: str) -> Any:
        assert self._conn is not None
        assert self._process is not None
        if not self._conn.poll(60):
            raise LabError(f"the load generator's process had not {what} after 60 s")
        try:
            return self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise LabError(f"the load generator's process ended (exit code {self._process.exitcode}) "
                           f"before it {what}") from None


def _serve_load(conn: Connection, url: str, rate: float, write_ratio: float) -> None:
    with HttpLoad(url, rate, write_ratio) as load:
        conn.send("started")
        while (what := conn.recv()) == "report":
            conn.send(load.report())
        assert what == "stop"
        conn.send(load.stop())


def pgbench_init(dsn: str, scale: int) -> None:
    done = subprocess.run([find_binary("pgbench"), "-i", "-q", "-s", str(scale), "--foreign-keys", dsn],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"pgbench -i failed ({done.returncode}):\n{done.stdout}{done.stderr}")


class Pgbench:
    """pgbench through PgBouncer (simple protocol: transaction pooling has no prepared statements)."""

    def __init__(self, dsn: str, clients: int = 4, seconds: int = 10,
                 rate: int | None = None, log_prefix: Path | None = None) -> None:
        argv = [find_binary("pgbench"), "-n", "-M", "simple", "-c", str(clients), "-j", "2",
                "-T", str(seconds), "-P", "1"]
        if rate:
            argv += ["-R", str(rate)]
        if log_prefix is not None:  # one line per transaction: its latency is the 3rd field (us)
            argv += ["-l", f"--log-prefix={log_prefix}"]
        self.argv = [*argv, dsn]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float | None = None) -> PgbenchResult:
        assert self.proc is not None, "start() first"
        out, _ = self.proc.communicate(timeout=timeout)
        done = re.search(r"number of transactions actually processed: (\d+)", out)
        failed = re.search(r"number of failed transactions: (\d+)", out)
        tps = re.search(r"tps = ([\d.]+)", out)
        if not done:
            raise LabError(f"pgbench failed:\n{out[-2000:]}")
        return PgbenchResult(int(done.group(1)), int(failed.group(1)) if failed else 0,
                             float(tps.group(1)) if tps else 0.0, out)
