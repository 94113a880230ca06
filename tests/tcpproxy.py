"""A TCP forwarder on loopback that a test can cut: every connection through it dropped and
new ones refused for a while, as when a server or the network path to it goes away. Faults
are real: the clients see their sockets closed and their connects refused."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Self

from controller.lab.processes import free_port


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None

    def __enter__(self) -> Self:
        self._open_listener()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._drop_all(close_listener=True)

    def _open_listener(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener

    def cut(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for `seconds` (connects are refused:
        the listening socket is closed meanwhile)."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
        self._drop_all(close_listener=True)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def wait_up(self) -> None:
        while self.down or self._listener is None:
            time.sleep(0.02)

    def _drop_all(self, close_listener: bool) -> None:
        with self._lock:
            socks, self._socks = self._socks, set()
            listener = self._listener if close_listener else None
            if close_listener:
                self._listener = None
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        if listener is not None:
            listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            if self._listener is None:
                if self.down:
                    time.sleep(0.01)
                    continue
                self._open_listener()
            listener = self._listener
            assert listener is not None
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the connect's timeout must not end an idle session
            client.settimeout(None)
            with self._lock:
                self._socks.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
