"""Whether green's version of a table can take blue's rows, and blue green's after the switch:
pure rules over the two sides' columns (expand and contract).

Green may add columns (nullable, or with a default) and widen types; the forward apply writes
blue's columns only, and the reverse publication carries only the columns blue has. What
stops an apply worker is refused before anything starts: a column blue writes that green
lacks, a green-only NOT NULL column without a default, a type narrowed on green.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sync.catalog import Column, quote_name


class Change(StrEnum):
    SAME = "same"
    WIDER = "wider"
    NARROWER = "narrower"
    OTHER = "other"


_INTS = ["smallint", "integer", "bigint"]
_FLOATS = ["real", "double precision"]
_TYPMOD = re.compile(r"^(character varying|character|numeric|bit varying|bit)(?:\((\d+)(?:,(\d+))?\))?$")
_UNBOUNDED_TEXT = {"text", "character varying"}


def _parse(t: str) -> tuple[str, int | None, int | None]:
    m = _TYPMOD.match(t)
    if not m:
        return t, None, None
    return m.group(1), None if m.group(2) is None else int(m.group(2)), \
        None if m.group(3) is None else int(m.group(3))


def type_change(blue: str, green: str) -> Change:
    """How green's type of a column relates to blue's, for the values blue's type holds."""
    if blue == green:
        return Change.SAME
    for ladder in (_INTS, _FLOATS):
        if blue in ladder and green in ladder:
            return Change.WIDER if ladder.index(green) > ladder.index(blue) else Change.NARROWER
    if blue in _INTS and green == "numeric":
        return Change.WIDER
    b, bn, bs = _parse(blue)
    g, gn, gs = _parse(green)
    if b in ("character varying", "character") and (green in _UNBOUNDED_TEXT or g == "character varying"):
        if green in _UNBOUNDED_TEXT:
            return Change.WIDER
        return Change.WIDER if bn is not None and gn is not None and gn >= bn else Change.NARROWER
    if blue == "text" and g in ("character varying", "character") and gn is not None:
        return Change.NARROWER
    if b == g == "numeric":
        if gn is None:
            return Change.WIDER
        if bn is None:
            return Change.NARROWER
        fits = gn - (gs or 0) >= bn - (bs or 0) and (gs or 0) >= (bs or 0)
        return Change.WIDER if fits else Change.NARROWER
    return Change.OTHER


@dataclass(frozen=True)
class Problem:
    table: str
    detail: str
    fix: str
    blocks: bool
    """True: an apply would stop (refused); False: worth knowing (a warning)."""


def column_problems(table: str, blue: dict[str, Column], green: dict[str, Column]) -> list[Problem]:
    """What in green's columns of `table` stops (or may stop) replication either way."""
    out: list[Problem] = []
    for name, col in blue.items():
        if col.generated:  # computed on each side, never sent
            continue
        theirs = green.get(name)
        if theirs is None:
            out.append(Problem(table, f"{table} lacks column {name} on green",
                               f"ALTER TABLE {table} ADD COLUMN {quote_name(name)} {col.type} on green (blue "
                               "writes it; drop it on blue first to contract)", True))
            continue
        change = type_change(col.type, theirs.type)
        if change is Change.NARROWER:
            out.append(Problem(table, f"{table}.{name} is {theirs.type} on green but {col.type} on "
                               "blue: blue's values may not fit",
                               f"ALTER TABLE {table} ALTER COLUMN {quote_name(name)} TYPE "
                               f"{col.type} on green", True))
        elif change is Change.WIDER:
            out.append(Problem(table, f"{table}.{name} is wider on green ({theirs.type}) than on "
                               f"blue ({col.type}): after the switch a value blue cannot take "
                               "would stop the reverse replication", "", False))
        elif change is Change.OTHER:
            out.append(Problem(table, f"{table}.{name} is {theirs.type} on green but {col.type} on "
                               "blue: values pass as text each way", "", False))
    for name, col in green.items():
        if name not in blue and col.not_null and not col.has_default:
            out.append(Problem(table, f"green's {table}.{name} is NOT NULL without a default: "
                               "blue's rows arrive without it",
                               f"ALTER TABLE {table} ALTER COLUMN {quote_name(name)} SET DEFAULT <value> on "
                               "green (or DROP NOT NULL)", True))
    return out
