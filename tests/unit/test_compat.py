"""Expand and contract: which differences between blue's and green's columns stop an apply
worker (refused by preflight), and which only deserve a word. Pure, no servers."""

from __future__ import annotations

import pytest

from sync.catalog import Column
from sync.compat import Change, column_problems, type_change


@pytest.mark.parametrize(("blue", "green", "change"), [
    ("integer", "integer", Change.SAME),
    ("integer", "bigint", Change.WIDER),
    ("bigint", "integer", Change.NARROWER),
    ("smallint", "numeric", Change.WIDER),
    ("real", "double precision", Change.WIDER),
    ("double precision", "real", Change.NARROWER),
    ("character varying(20)", "character varying(50)", Change.WIDER),
    ("character varying(50)", "character varying(20)", Change.NARROWER),
    ("character varying(50)", "text", Change.WIDER),
    ("text", "character varying(50)", Change.NARROWER),
    ("numeric(12,2)", "numeric(14,2)", Change.WIDER),
    ("numeric(12,2)", "numeric(12,4)", Change.NARROWER),
    ("numeric(12,2)", "numeric", Change.WIDER),
    ("numeric", "numeric(12,2)", Change.NARROWER),
    ("text", "jsonb", Change.OTHER),
])
def test_type_changes_are_classified(blue: str, green: str, change: Change) -> None:
    assert type_change(blue, green) is change


def col(name: str, typ: str = "integer", not_null: bool = False, default: bool = False,
        generated: bool = False) -> Column:
    return Column(name, typ, not_null, default or generated, generated)


def test_green_may_add_nullable_or_defaulted_columns() -> None:
    blue = {"id": col("id", not_null=True)}
    green = {**blue, "note": col("note", "text"), "flag": col("flag", "boolean", True, True)}
    assert column_problems("public.t", blue, green) == []


def test_a_green_only_not_null_column_without_default_is_refused_with_the_fix() -> None:
    problems = column_problems("public.t", {"id": col("id")},
                               {"id": col("id"), "must": col("must", "text", True)})
    assert [p.blocks for p in problems] == [True]
    assert "public.t.must is NOT NULL without a default" in problems[0].detail
    assert "ALTER TABLE public.t ALTER COLUMN must SET DEFAULT" in problems[0].fix


def test_a_column_green_dropped_and_a_narrowed_type_are_refused() -> None:
    blue = {"id": col("id"), "gone": col("gone", "text"), "code": col("code", "character varying(50)")}
    green = {"id": col("id"), "code": col("code", "character varying(10)")}
    problems = column_problems("public.t", blue, green)
    assert all(p.blocks for p in problems)
    assert any("lacks column gone" in p.detail for p in problems)
    assert any("TYPE character varying(50)" in p.fix for p in problems)


def test_a_widened_type_warns_about_the_way_back() -> None:
    problems = column_problems("public.t", {"n": col("n", "integer")}, {"n": col("n", "bigint")})
    assert [p.blocks for p in problems] == [False]
    assert "reverse replication" in problems[0].detail


def test_a_generated_column_only_blue_has_is_no_problem() -> None:
    blue = {"id": col("id"), "total": col("total", "numeric", generated=True)}
    assert column_problems("public.t", blue, {"id": col("id")}) == []


def test_hostile_names_are_quoted_in_the_fix() -> None:
    problems = column_problems('public."T"', {"id": col("id")},
                               {"id": col("id"), 'x"; DROP': col('x"; DROP', "text", True)})
    assert 'ALTER COLUMN "x""; DROP" SET DEFAULT' in problems[0].fix
