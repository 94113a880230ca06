"""Reading pg_restore's table of contents, and naming key ranges with the data's bounds: pure."""

from __future__ import annotations

from sync.checksums import KeyRange, widest
from sync.readiness import Readiness
from sync.schema import parse_toc

LISTING = """;
; Archive created at 2026-12-02 04:34:45 UTC
;     dbname: s1
5; 2615 2200 SCHEMA - public pg_database_owner
3689; 0 0 COMMENT - SCHEMA public pg_database_owner
1058; 1247 17045 TYPE public my type postgres
3506; 0 0 TABLE ATTACH public part_2024 postgres
"""


def test_the_toc_keeps_entries_with_their_oids_and_skips_comments() -> None:
    entries = parse_toc(LISTING)
    assert [(e.classid, e.objid) for e in entries] == [(2615, 2200), (0, 0), (1247, 17045), (0, 0)]
    assert entries[2].kind == "TYPE public my type postgres"
    assert entries[3].line == "3506; 0 0 TABLE ATTACH public part_2024 postgres"


def test_an_open_range_is_named_by_the_datas_bounds() -> None:
    span = widest([((1,), (900,)), None, ((5,), (1200,))])
    assert span == ((1,), (1200,))
    assert KeyRange(None, None).label(("id",), span) == "id in [1, 1200]"
    assert KeyRange((400,), None).label(("id",), span) == "id in [400, 1200]"
    assert KeyRange(None, (400,)).label(("id",), span) == "id in [1, 400)"
    assert KeyRange(None, None).label(("id",)) == "id in […, …)"
    assert widest([None, None]) is None


def test_readiness_names_what_is_not_ready() -> None:
    state = Readiness(["records.accounts"], ["records.stats"])
    assert not state.ready
    assert state.items() == ["records.accounts: never analyzed",
                             "records.stats: materialized view not populated"]
    assert "1 table(s) never analyzed (records.accounts)" in state.describe()
    assert Readiness().ready
