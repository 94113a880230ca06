"""Cutting the initial copy into chunks: big tables by heap page (ctid) ranges, so any table
splits evenly whatever its key, and PostgreSQL reads each range with a TID range scan."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sync.catalog import Table

MAX_CHUNKS_PER_TABLE = 64


@dataclass(frozen=True)
class Chunk:
    table: Table
    first_page: int | None = None
    """None: the whole table."""
    end_page: int | None = None
    """Exclusive; None: to the end (so pages added since planning are copied too)."""

    @property
    def label(self) -> str:
        if self.first_page is None:
            return self.table.qualified
        end = "end" if self.end_page is None else str(self.end_page)
        return f"{self.table.qualified} pages {self.first_page}-{end}"


def plan_chunks(tables: list[Table], jobs: int, split_rows: int) -> list[Chunk]:
    """Chunks ordered biggest first, so the longest work starts first (LPT scheduling).

    A table with more than split_rows rows is cut into at least ceil(rows / split_rows) page
    ranges, rounded up to a multiple of `jobs`, so one big table keeps every worker busy to
    the end instead of leaving one to finish the last piece alone.
    """
    chunks: list[tuple[float, Chunk]] = []
    for t in tables:
        splittable = t.kind == "r" and t.pages > 1
        if not splittable or t.est_rows <= split_rows:
            chunks.append((t.bytes, Chunk(t)))
            continue
        wanted = jobs * math.ceil(math.ceil(t.est_rows / split_rows) / jobs)
        count = min(MAX_CHUNKS_PER_TABLE, t.pages, wanted)
        step = math.ceil(t.pages / count)
        starts = list(range(0, t.pages, step))
        for i, first in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            chunks.append((t.bytes / len(starts), Chunk(t, first, end)))
    chunks.sort(key=lambda c: -c[0])
    return [c for _, c in chunks]
