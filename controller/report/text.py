"""How the report writes values: escaped for HTML and SVG, numbers, times."""

from __future__ import annotations

import html
import math
import re
from datetime import UTC, datetime
from typing import Any

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(value: object) -> str:
    """Text for HTML and the inline SVG (which must stay well-formed XML)."""
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def nonempty(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def fmt(value: float) -> str:
    return f"{value:.4g}"


def clock(seconds: float) -> str:
    """mm:ss (minutes keep counting past the hour)."""
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
