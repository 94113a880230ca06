"""Normalizing `pg_dump --schema-only` output so the dumps of two servers compare equal when
their schemas are equal, and differ when they are not.

Dump both servers with the same pg_dump (the newest one: it reads every older server) and
PG_DUMP_FLAGS. What is normalized, and why each is not a real difference:

- comment lines (headers, "Dumped from database version", the TOC entries), SET lines and the
  search_path reset, psql's `\\restrict <random key>` / `\\unrestrict` (pg_dump 17.6+ and
  18), trailing blanks and runs of blank lines;
- view and materialized view bodies that read one relation only: PostgreSQL 15 prints their
  columns qualified (`r.id`, `records.status`), 16+ does not (`id`, `status`). The qualifier
  is removed from such bodies; bodies with joins or subqueries are left alone;
- NOT NULL constraint names in a column definition when they are the default-style name for
  that column (`<table>_<column>_not_null`): PostgreSQL 18 stores not-null constraints with a
  name, and a partition shows its parent's (`events_id_not_null` on events_2023), while
  older servers have no name at all. A custom name is kept.

Everything else is kept, in pg_dump's order: a missing index, constraint, trigger, grant or
comment, or a different type, default or definition, still makes the texts differ.
"""

from __future__ import annotations

import re

# Schema only; no owners (the bootstrap superuser's name differs between installations);
# privileges kept: the GRANTs to records_reader/records_writer compare equal and must.
# Add "--schema=records" to leave out anything else in the databases (then the btree_gist
# extension, which lives in public, is left out too). A --schema-only dump of pg_dump 18 has
# no large objects, so the one large object of populate() never shows here.
PG_DUMP_FLAGS: tuple[str, ...] = ("--schema-only", "--no-owner")

_DROP = (
    re.compile(r"^--"),
    re.compile(r"^SET \w+ = .*;$"),
    re.compile(r"^SELECT pg_catalog\.set_config\('search_path', '', false\);$"),
    re.compile(r"^\\(un)?restrict( \S+)?$"),
)
_VIEW_START = re.compile(r"^CREATE (?:OR REPLACE )?(?:MATERIALIZED )?VIEW ")
_IDENT = r'(?:[\w$]+|"[^"]+")'
_FROM_ONE = re.compile(rf"^\s+FROM (?P<rel>{_IDENT}(?:\.{_IDENT})?)(?: (?P<alias>{_IDENT}))?;?$")
_SUBQUERY = re.compile(r"\b(?:FROM|JOIN|SELECT)\b")
_NOT_NULL = re.compile(rf"^(?P<lead>\s+(?P<col>{_IDENT}) .*?) CONSTRAINT (?P<name>{_IDENT}) NOT NULL\b")


def _unqualify_view(statement: list[str]) -> list[str]:
    """Drop the qualifier from the column references of a one-relation view body."""
    body = statement[1:]
    from_lines = [i for i, line in enumerate(body) if _FROM_ONE.match(line)]
    keywords = sum(len(_SUBQUERY.findall(line)) for line in body)
    # One SELECT and one FROM naming a single relation (with an optional alias), no JOIN.
    if len(from_lines) != 1 or keywords != 2:
        return statement
    match = _FROM_ONE.match(body[from_lines[0]])
    assert match is not None
    qualifier = match.group("alias") or match.group("rel").rsplit(".", 1)[-1]
    # Not after an identifier, a dot, a cast (::) or a quote; a whole column name follows,
    # not a function name (followed by "(") and not a further qualified name.
    pattern = re.compile(r"(?<![\w$.:\"'])" + re.escape(qualifier) + rf"\.({_IDENT})(?![\w$(.])")
    out = [statement[0]]
    for i, line in enumerate(body):
        out.append(line if i == from_lines[0] else pattern.sub(r"\1", line))
    return out


def _default_not_null_name(line: str) -> str:
    match = _NOT_NULL.match(line)
    if match is None:
        return line
    column = match.group("col").strip('"')
    if not match.group("name").strip('"').endswith(f"_{column}_not_null"):
        return line
    return line[:match.end("lead")] + " NOT NULL" + line[match.end():]


def normalized_schema(dump_text: str) -> str:
    """The dump without what differs between servers (and runs) for equal schemas; see the
    module docstring. Expects `pg_dump` with PG_DUMP_FLAGS (plain format)."""
    lines: list[str] = []
    for raw in dump_text.splitlines():
        line = raw.rstrip()
        if any(p.match(line) for p in _DROP):
            continue
        if not line and (not lines or not lines[-1]):
            continue
        lines.append(_default_not_null_name(line))
    while lines and not lines[-1]:
        lines.pop()

    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _VIEW_START.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        end = i
        while end < len(lines) - 1 and not lines[end].endswith(";"):
            end += 1
        out += _unqualify_view(lines[i:end + 1])
        i = end + 1
    return "\n".join(out) + "\n"
