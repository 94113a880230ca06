"""Just enough HTTP/1.1 over asyncio streams for the lab's app and load generator.

The lab must push ~1 k requests/s through HAProxy on 2 cores beside PostgreSQL; the stdlib
threaded server and httpx each top out far below that, so both ends speak keep-alive HTTP/1.1
over plain asyncio streams. Only what the lab sends is supported (Content-Length bodies).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 * 1024


class HttpError(Exception):
    pass


@dataclass(frozen=True)
class Message:
    start_line: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """One request or response; None on a clean close between messages."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise HttpError("connection closed inside a message header") from None
    except asyncio.LimitOverrunError:
        raise HttpError("message header too large") from None
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError("bad Content-Length") from None
    body = await reader.readexactly(length) if length else b""
    return Message(lines[0], headers, body)


def encode(start_line: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [start_line, *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
