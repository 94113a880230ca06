"""Sequences: logical replication does not carry them, so their positions are copied
blue -> green (at the switch, under the fence; or on demand with `cutover sync --sequences`)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from sync.catalog import list_sequences
from sync.connections import Conn
from sync.errors import SyncError


@dataclass(frozen=True)
class SequenceCopy:
    copied: int
    missing_on_green: list[str]


def copy_sequences(blue: Conn, green: Conn, schemas: list[str]) -> SequenceCopy:
    """Set every green sequence to blue's position: owned (serial), identity, free-standing.
    One transaction on green, so either all move or none."""
    seqs = list_sequences(blue, schemas)
    present = {(s.schema, s.name) for s in list_sequences(green, schemas)}
    missing = [f"{s.schema}.{s.name}" for s in seqs if (s.schema, s.name) not in present]
    copied = 0
    with green.transaction():
        for s in seqs:
            if (s.schema, s.name) not in present:
                continue
            if s.last_value is None:
                # Never used on blue: restart green's too, so the first value matches.
                green.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(s.ident))
            else:
                green.execute("SELECT setval(%s::regclass, %s, true)",
                              [_regclass_text(s.schema, s.name), s.last_value])
            copied += 1
    if missing and len(missing) == len(seqs) and seqs:
        raise SyncError(f"none of blue's sequences exist on green (e.g. {missing[0]}); "
                        "has green's schema been created?")
    return SequenceCopy(copied, missing)


def _regclass_text(schema: str, name: str) -> str:
    def quote(part: str) -> str:
        return '"' + part.replace('"', '""') + '"'
    return f"{quote(schema)}.{quote(name)}"
