"""A `[databases]` line of PgBouncer's configuration, read and rewritten with only the target
changed: `bank = host=a port=5432 dbname=bank pool_size=24 user=app` keeps its pool_size and
user when the switch moves it to another host. Pure text, no I/O.

PgBouncer's syntax: `name = key=value ...`, a value optionally in single quotes (a quote inside
doubled), comments on lines of their own starting with ';' or '#'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|[^\s']*)")
TARGET_KEYS = ("host", "port", "dbname")


@dataclass(frozen=True)
class DbLine:
    name: str
    options: list[tuple[str, str]]
    """(key, value as written, quotes included), in the line's order."""

    def value(self, key: str) -> str | None:
        for k, raw in self.options:
            if k == key:
                return raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
        return None


def parse(line: str) -> DbLine | None:
    """The entry a line defines, or None for a comment, a blank or a section header. Anything
    that is not key=value pairs is kept by the caller as it is."""
    text = line.strip()
    if not text or text[0] in ";#[" or "=" not in text:
        return None
    name, _, rest = text.partition("=")
    options: list[tuple[str, str]] = []
    pos = 0
    while pos < len(rest):
        m = _PAIR.match(rest, pos)
        if not m:
            if rest[pos:].strip():
                return None  # not a line we understand: never rewrite it
            break
        options.append((m.group(1), m.group(2)))
        pos = m.end()
    return DbLine(name.strip(), options)


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[^\s';#]+", value) else "'" + value.replace("'", "''") + "'"


def retarget(entry: DbLine | None, name: str, host: str, port: int, dbname: str) -> str:
    """The entry's line pointing at host:port/dbname, every other option kept in its place;
    a new line when there was none."""
    target = {"host": _quote(host), "port": str(port), "dbname": _quote(dbname)}
    options = [(k, target.get(k, v)) for k, v in (entry.options if entry else [])]
    present = {k for k, _ in options}
    options = [(k, target[k]) for k in TARGET_KEYS if k not in present] + options
    return f"{name} = " + " ".join(f"{k}={v}" for k, v in options) + "\n"
