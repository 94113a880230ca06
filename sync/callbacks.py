"""The small callables that long work takes from its caller, in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Say = Callable[[str], None]
"""A line of progress for the user (a terminal, the daemon's log)."""

Record = Callable[[str, dict[str, Any]], None]
"""A step for the journal: its name and its data."""

Clock = Callable[[], float]
"""Seconds from a monotonic clock (time.monotonic); tests pass their own."""
