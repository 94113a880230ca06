"""Chunk planning for the initial copy: pure, no servers."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from sync.catalog import Table
from sync.chunks import plan_chunks
from sync.copy import CopyProgress, ProgressLines


def table(name: str, rows: int, pages: int, kind: str = "r") -> Table:
    return Table(schema="public", name=name, oid=hash(name) & 0xFFFF, kind=kind, persistence="p",
                 replica_identity="d", key=("id",), columns=("id",), est_rows=rows, pages=pages,
                 bytes=pages * 8192)


def test_small_tables_are_copied_whole() -> None:
    chunks = plan_chunks([table("a", 10, 1), table("b", 500, 3)], jobs=4, split_rows=1000)
    assert [(c.table.name, c.first_page, c.end_page) for c in chunks] == [("b", None, None),
                                                                         ("a", None, None)]


def test_a_big_table_uses_every_worker_and_ends_open() -> None:
    chunks = plan_chunks([table("big", 5_000_000, 80_000)], jobs=4, split_rows=2_000_000)
    assert len(chunks) == 4
    assert chunks[0].first_page == 0
    assert chunks[-1].end_page is None, "pages added after planning are copied too"
    for a, b in pairwise(chunks):
        assert a.end_page == b.first_page


def test_a_big_table_gets_one_range_per_worker() -> None:
    assert len(plan_chunks([table("t", 1_000_000, 10_000)], jobs=2, split_rows=100_000)) == 2
    assert len(plan_chunks([table("t", 5_000_000, 80_000)], jobs=4, split_rows=1_000_000)) == 4
    assert len(plan_chunks([table("t", 5_000_000, 3)], jobs=8, split_rows=1_000_000)) == 3, \
        "never more ranges than pages"
    assert len(plan_chunks([table("t", 5_000_000, 80_000)], jobs=1, split_rows=1_000)) == 1, \
        "one worker reads the table whole"


def test_two_big_tables_balance_over_the_workers() -> None:
    chunks = plan_chunks([table("a", 5_000_000, 80_000), table("b", 1_200_000, 20_000)],
                         jobs=2, split_rows=1_000_000)
    assert [c.table.name for c in chunks] == ["a", "a", "b", "b"]


def test_partitioned_roots_are_never_split_by_ctid() -> None:
    chunks = plan_chunks([table("p", 10**7, 0, kind="p")], jobs=4, split_rows=1000)
    assert [(c.first_page, c.end_page) for c in chunks] == [(None, None)]


def test_biggest_work_first() -> None:
    chunks = plan_chunks([table("small", 10, 1), table("mid", 100, 50), table("big", 200, 900)],
                         jobs=1, split_rows=10**6)
    assert [c.table.name for c in chunks] == ["big", "mid", "small"]


@given(rows=st.integers(0, 10**8), pages=st.integers(0, 10**6), jobs=st.integers(1, 16),
       split=st.integers(1000, 10**7))
def test_page_ranges_cover_the_table_exactly_once(rows: int, pages: int, jobs: int,
                                                  split: int) -> None:
    chunks = plan_chunks([table("t", rows, pages)], jobs, split)
    if chunks[0].first_page is None:
        assert len(chunks) == 1
        return
    ordered = sorted(chunks, key=lambda c: c.first_page or 0)
    assert ordered[0].first_page == 0
    assert ordered[-1].end_page is None
    for a, b in pairwise(ordered):
        assert a.end_page == b.first_page
        assert a.first_page is not None
        assert a.end_page is not None
        assert a.end_page > a.first_page


def test_copy_progress_lines_are_throttled_but_always_end_on_the_total() -> None:
    """Off a terminal the copy shows plain lines: the first chunk, one every 5 s, and the
    last (a small copy used to print its first chunk and nothing after)."""
    now = [0.0]
    said: list[str] = []
    lines = ProgressLines(said.append, every=5.0, clock=lambda: now[0])
    for done in range(1, 5):
        now[0] += 1.0
        lines(CopyProgress(rows=done * 10, bytes=done * 1_000_000, chunks_done=done, chunks_total=4))
    assert said == ["copy: 10 rows, 1.0 MB, 1/4 chunks", "copy: 40 rows, 4.0 MB, 4/4 chunks"]
    now[0] += 5.0
    lines(CopyProgress(rows=40, bytes=4_000_000, chunks_done=4, chunks_total=8))
    assert len(said) == 3
