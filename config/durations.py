"""Human durations ("250ms", "90s", "5m", "1h30m") and byte sizes ("16MB") for settings."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# re.ASCII: `\d` would take any Unicode digit (an Arabic-Indic one before "s" read as one second).
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
MAX_SECONDS = 1e9
"""About 31 years: longer than any wait means, and within what a timer or a lock wait accepts
(a timeout of 1e300 passed the check and crashed `cutover traffic` with OverflowError)."""
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?", re.ASCII)
_SIZE_UNITS = {
    None: 1, "B": 1,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from a number (taken as seconds) or a string such as "1h30m" or "250ms"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"90s\", \"5m\" or \"250ms\"")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds, matched = 0, 0.0, False
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos, matched = m.end(), True
        if not matched or pos != len(text):
            raise ValueError(
                f"expected a duration such as \"90s\", \"5m\", \"1h30m\" or \"250ms\", got {value!r}"
            )
    else:
        raise ValueError("expected a duration such as \"90s\", \"5m\" or \"250ms\"")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds >= 0")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most {MAX_SECONDS:g} seconds (about 31 years), "
                         f"got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact text for a duration, so `config show` round-trips."""
    if seconds == 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        ms = seconds * 1000
        return f"{ms:g}ms"
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "16MB" or "1GiB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as \"16MB\" or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if not m:
            raise ValueError(f"expected a size such as \"16MB\" or \"1GiB\", got {value!r}")
        scaled = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if not math.isfinite(scaled):
            raise ValueError(f"size too large: {value!r}")
        size = int(scaled)
    else:
        raise ValueError("expected a size such as \"16MB\" or a number of bytes")
    if size < 0:
        raise ValueError("a size must be >= 0")
    return size


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": ["string", "number"], "examples": ["90s", "5m", "250ms"],
                    "description": "a duration: seconds, or text such as 90s, 5m, 1h30m, 250ms"}),
]
"""A duration in seconds; accepts "90s", "5m", "1h30m", "250ms" or a number of seconds."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"type": ["string", "integer"], "examples": ["16MB", "1GiB"],
                    "description": "a size: bytes, or text such as 16MB, 1GiB"}),
]
"""A size in bytes; accepts "16MB", "1GiB" or a number of bytes."""
