"""Key-range planning and predicates for verify: pure, no servers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from sync.checksums import IntBuckets, KeyRange, range_predicate, ranges_between


@given(low=st.integers(-10**12, 10**12), span=st.integers(0, 10**9), rows=st.integers(0, 10**8),
       chunk=st.integers(100, 10**6))
def test_int_buckets_cover_every_key_once(low: int, span: int, rows: int, chunk: int) -> None:
    high = low + span
    b = IntBuckets.plan(low, high, rows, chunk)
    assert b.count >= 1
    assert b.range_of(0).low is None, "the first bucket is open below"
    assert b.range_of(b.count - 1).high is None, "the last bucket is open above"
    for i in range(min(b.count - 1, 50)):
        assert b.range_of(i).high == b.range_of(i + 1).low
    last_start = b.range_of(b.count - 1).low
    assert last_start is None or last_start[0] <= high


def test_int_buckets_size_follows_chunk_rows() -> None:
    b = IntBuckets.plan(1, 5_000_000, 5_000_000, 100_000)
    assert b.count == 50
    assert b.width == 100_000
    assert b.range_of(1) == KeyRange((100_001,), (200_001,))


def test_ranges_between_boundaries_are_half_open_and_complete() -> None:
    ranges = ranges_between([(10,), (20,)])
    assert ranges == [KeyRange(None, (10,)), KeyRange((10,), (20,)), KeyRange((20,), None)]
    assert ranges_between([]) == [KeyRange(None, None)]


def test_range_predicate_compares_composite_keys_as_rows() -> None:
    where, params = range_predicate(("region", "id"), KeyRange(("eu", 5), ("us", 1)))
    text = where.as_string(None)
    assert text == 'ROW("region", "id") >= ROW(%s, %s) AND ROW("region", "id") < ROW(%s, %s)'
    assert params == ["eu", 5, "us", 1]


def test_range_predicate_quotes_hostile_key_names() -> None:
    where, _ = range_predicate(('id"; DROP TABLE x; --',), KeyRange((1,), None))
    assert where.as_string(None) == 'ROW("id""; DROP TABLE x; --") >= ROW(%s)'


def test_unbounded_range_is_everything() -> None:
    where, params = range_predicate(("id",), KeyRange(None, None))
    assert isinstance(where, sql.Composable)
    assert where.as_string(None) == "true"
    assert params == []


def test_range_labels_name_the_key() -> None:
    assert KeyRange((4001,), None).label(("id",)) == "id in [4001, …)"
    assert KeyRange(("eu", 5), ("us", 1)).label(("region", "id")) == \
        "region, id in [('eu', 5), ('us', 1))"
