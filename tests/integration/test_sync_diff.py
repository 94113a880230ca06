"""The diff sync against the lab's real PostgreSQL: random inserts, updates and deletes on blue
(composite, text, UUID and integer keys; NULLs, floats, timestamps with time zones) then one
cycle, and blue and green are equal by an independent checksum; a cycle killed mid-apply is
finished by the next; a transform splitting a legacy table per aspect; green-only columns
left alone; dry runs; bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from controller.cli import app
from controller.lab.lab import Lab
from sync import diff
from sync.errors import BadInputError
from tests.syncfixtures import DbPair, assert_same_data

SCHEMA = """
CREATE TABLE comp (a int, b text, f float8, ts timestamptz, note text, PRIMARY KEY (a, b));
CREATE TABLE "Text Keyed" (k text PRIMARY KEY, v jsonb, arr int[]);
CREATE TABLE ints (id bigint PRIMARY KEY, x numeric, y real, n int GENERATED ALWAYS AS IDENTITY);
CREATE TABLE uuids (id uuid PRIMARY KEY, v text COLLATE "C");
"""

runner = CliRunner()


def both(pair: DbPair, ddl: str) -> None:
    for env in ("blue", "green"):
        with pair.connect(env) as conn:
            conn.execute(ddl)


floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, -0.0, 1e-300, 0.1 + 0.2]))
stamps = st.one_of(st.none(), st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                                           timezones=st.just(UTC)))
texts = st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                                            blacklist_characters="\x00"), max_size=12))
op = st.tuples(st.sampled_from(["insert", "update", "delete"]),
               st.sampled_from(["comp", "text", "ints", "uuids"]),
               st.integers(0, 60), floats, stamps, texts)


def apply_ops(conn: psycopg.Connection[Any], ops: list[tuple[Any, ...]]) -> None:
    for kind, table, n, f, ts, text in ops:
        if table == "comp":
            key = (n % 7, f"k{n % 9}")
            if kind == "delete":
                conn.execute("DELETE FROM comp WHERE a = %s AND b = %s", key)
            else:
                conn.execute("INSERT INTO comp VALUES (%s, %s, %s, %s, %s) ON CONFLICT (a, b) DO UPDATE "
                             "SET f = EXCLUDED.f, ts = EXCLUDED.ts, note = EXCLUDED.note",
                             [*key, f, ts, text])
        elif table == "text":
            name = f"k-{n}é" if n % 3 else f"K {n}\"'"
            if kind == "delete":
                conn.execute('DELETE FROM "Text Keyed" WHERE k = %s', [name])
            else:
                v = None if f is None or not math.isfinite(f) else {"f": f, "t": text}
                conn.execute('INSERT INTO "Text Keyed" VALUES (%s, %s, %s) ON CONFLICT (k) DO UPDATE '
                             "SET v = EXCLUDED.v, arr = EXCLUDED.arr",
                             [name, psycopg.types.json.Jsonb(v) if v is not None else None,
                              None if text is None else [n, None, len(text)]])
        elif table == "ints":
            ident = n * 1_000_003 - 30_000_000  # negative and positive, spread out
            if kind == "delete":
                conn.execute("DELETE FROM ints WHERE id = %s", [ident])
            else:
                x = None if f is None or not math.isfinite(f) else round(f, 6)
                y = f if f is None or not math.isfinite(f) or f == 0 or 1e-37 < abs(f) < 1e38 \
                    else None  # within real's range
                conn.execute("INSERT INTO ints (id, x, y) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                             "SET x = EXCLUDED.x, y = EXCLUDED.y", [ident, x, y])
        else:
            if kind == "delete":
                conn.execute("DELETE FROM uuids WHERE id = %s", [uuid.UUID(int=n * 7919)])
            else:
                conn.execute("INSERT INTO uuids VALUES (%s, %s) ON CONFLICT (id) "
                             "DO UPDATE SET v = EXCLUDED.v", [uuid.UUID(int=n * 7919), text])


@pytest.fixture
def diff_pair(pair: DbPair) -> DbPair:
    both(pair, SCHEMA)
    with pair.blue() as b:  # something to start from, so the first cycle copies rows too
        b.execute("INSERT INTO ints (id, x, y) SELECT g, g / 3.0, g / 7.0 FROM generate_series(1, 5000) g")
        b.execute("INSERT INTO comp SELECT g % 5, 'k' || g, g * 0.5, now() - g * interval '1 min', "
                  "NULL FROM generate_series(1, 300) g")
    return pair


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=40))
def test_random_changes_then_one_cycle_make_green_equal(diff_pair: DbPair,
                                                       ops: list[tuple[Any, ...]]) -> None:
    with diff_pair.blue() as b:
        apply_ops(b, ops)
    report = diff.cycle(diff_pair.settings(mode="diff"))
    assert_same_data(diff_pair)
    again = diff.cycle(diff_pair.settings(mode="diff"))
    assert again.total("buckets_differing") == 0, "a second cycle found differences: a false positive"
    with diff_pair.blue() as b:
        row = b.execute('SELECT (SELECT count(*) FROM "Text Keyed") + (SELECT count(*) FROM comp) '
                        "+ (SELECT count(*) FROM ints) + (SELECT count(*) FROM uuids)").fetchone()
    counted = int(row[0]) if row else -1
    assert report.total("blue_rows") == counted, "the cycle did not compare every row of blue"


@pytest.mark.check
def test_the_changes_counted_are_the_changes_made(diff_pair: DbPair) -> None:
    diff.cycle(diff_pair.settings(mode="diff"))
    with diff_pair.blue() as b:
        b.execute("UPDATE ints SET x = x + 1 WHERE id % 100 = 0")        # 50
        b.execute("DELETE FROM ints WHERE id % 250 = 1")                  # 20
        b.execute("INSERT INTO ints (id, x) SELECT g, 0 FROM generate_series(6001, 6010) g")  # 10
    dry = diff.cycle(diff_pair.settings(mode="diff"), dry_run=True)
    ints = next(t for t in dry.tables if t.table == "public.ints")
    assert (ints.inserted, ints.updated, ints.deleted) == (10, 50, 20)
    with diff_pair.green() as g:
        assert g.execute("SELECT count(*) FROM ints WHERE id > 6000").fetchone() == (0,), \
            "a dry run wrote to green"
    done = diff.cycle(diff_pair.settings(mode="diff"))
    assert (done.total("inserted"), done.total("updated"), done.total("deleted")) == (10, 50, 20)
    assert_same_data(diff_pair)


def test_a_cycle_killed_mid_apply_is_finished_by_the_next(pair: DbPair, tmp_path: Path) -> None:
    both(pair, "CREATE TABLE big (id int PRIMARY KEY, v text)")
    with pair.blue() as b:
        b.execute("INSERT INTO big SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 200000) g")
    config = pair.config_file(tmp_path, 'mode = "diff"\n')
    proc = subprocess.Popen([sys.executable, "-m", "controller", "sync", "--mode", "diff", "--once",
                             "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    with pair.green() as g:
        while True:  # kill it once some batches are in, not all
            row = g.execute("SELECT count(*) FROM big").fetchone()
            if row and row[0] > 0:
                break
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        partial = g.execute("SELECT count(*) FROM big").fetchone()
    assert partial is not None
    assert 0 < partial[0] < 200000, f"not killed mid-apply ({partial[0]} rows in)"
    report = diff.cycle(pair.settings(mode="diff"))
    assert report.total("inserted") == 200000 - partial[0]
    assert_same_data(pair)


LEGACY = """
CREATE TABLE validation_results_legacy (id int PRIMARY KEY, resource text NOT NULL,
    syntax_ok boolean, schema_ok boolean, terminology_ok boolean, checked_at timestamptz);
"""
PER_ASPECT = """
CREATE TABLE validation_results_per_aspect (result_id int, aspect text, ok boolean,
    checked_at timestamptz, reviewed_by text DEFAULT 'nobody', PRIMARY KEY (result_id, aspect));
"""
SPLIT = """
SELECT id AS result_id, 'syntax' AS aspect, syntax_ok AS ok, checked_at FROM validation_results_legacy
UNION ALL SELECT id, 'schema', schema_ok, checked_at FROM validation_results_legacy
UNION ALL SELECT id, 'terminology', terminology_ok, checked_at FROM validation_results_legacy
"""


def per_aspect(conn: psycopg.Connection[Any], query: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in conn.execute(query).fetchall()}


def test_a_transform_splits_the_legacy_table_per_aspect_and_is_idempotent(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute(LEGACY)
        b.execute("INSERT INTO validation_results_legacy SELECT g, 'Patient/' || g, g % 2 = 0, "
                  "g % 3 = 0, CASE WHEN g % 5 = 0 THEN NULL ELSE true END, "
                  "'2026-01-01'::timestamptz + g * interval '1 s' FROM generate_series(1, 400) g")
    with pair.green() as g:
        g.execute(PER_ASPECT)
    settings = pair.settings(mode="diff", exclude_tables=["public.validation_results_legacy"],
                             transforms=[{"target": "public.validation_results_per_aspect",
                                          "query": SPLIT, "key": ["result_id", "aspect"]}])
    first = diff.cycle(settings)
    assert first.total("inserted") == 1200

    def same() -> None:
        with pair.blue() as b, pair.green() as g:
            assert per_aspect(b, SPLIT) == per_aspect(
                g, "SELECT result_id, aspect, ok, checked_at FROM validation_results_per_aspect")
    same()
    assert diff.cycle(settings).total("buckets_differing") == 0, "not idempotent"
    with pair.green() as g:  # a green-only column, set on green, must survive the syncs
        g.execute("UPDATE validation_results_per_aspect SET reviewed_by = 'ana' WHERE result_id <= 10")
    with pair.blue() as b:
        b.execute("UPDATE validation_results_legacy SET schema_ok = NOT schema_ok WHERE id <= 20")
        b.execute("DELETE FROM validation_results_legacy WHERE id > 390")
    changed = diff.cycle(settings)
    assert (changed.total("updated"), changed.total("deleted")) == (20, 30)
    same()
    with pair.green() as g:
        assert g.execute("SELECT count(*) FROM validation_results_per_aspect "
                         "WHERE reviewed_by = 'ana'").fetchone() == (30,)


def test_green_only_columns_keep_their_values(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        b.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g")
    with pair.green() as g:
        g.execute("CREATE TABLE items (id int PRIMARY KEY, name text, migrated_at timestamptz "
                  "DEFAULT '2026-12-01', tag text)")
    diff.cycle(pair.settings(mode="diff"))
    with pair.green() as g:
        g.execute("UPDATE items SET tag = 'v2' WHERE id <= 50")
    with pair.blue() as b:
        b.execute("UPDATE items SET name = name || ' (renamed)'")
    assert diff.cycle(pair.settings(mode="diff")).total("updated") == 100
    with pair.blue() as b, pair.green() as g:
        assert b.execute("SELECT id, name FROM items ORDER BY id").fetchall() == \
            g.execute("SELECT id, name FROM items ORDER BY id").fetchall()
        assert g.execute("SELECT count(*) FROM items WHERE tag = 'v2'").fetchone() == (50,)
        assert g.execute("SELECT count(*) FROM items WHERE migrated_at = '2026-12-01'").fetchone() == (100,)


def test_bad_input_is_exit_2_and_changes_nothing(pair: DbPair, tmp_path: Path) -> None:
    both(pair, "CREATE TABLE nokey (v int)")
    with pair.blue() as b:
        b.execute("INSERT INTO nokey VALUES (1)")
    config = pair.config_file(tmp_path, 'mode = "diff"\n')
    done = runner.invoke(app, ["sync", "--once", "--config", str(config)])
    assert done.exit_code == 2
    assert "nokey has no primary key" in done.output
    with pytest.raises(BadInputError, match="the query fails on blue"):
        diff.cycle(pair.settings(mode="diff", tables=[], exclude_tables=["public.nokey"],
                                 transforms=[{"target": "public.nokey", "query": "SELECT nope",
                                              "key": ["v"]}]))
    with pair.green() as g:
        assert g.execute("SELECT count(*) FROM nokey").fetchone() == (0,)


def test_cli_dry_run_json_then_follow_until_sigterm(diff_pair: DbPair, tmp_path: Path) -> None:
    config = diff_pair.config_file(tmp_path, 'mode = "diff"\n')
    dry = runner.invoke(app, ["sync", "--dry-run", "--json", "--config", str(config)])
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.stdout)
    assert data["dry_run"] is True
    assert data["inserted"] == 5300
    with diff_pair.green() as g:
        assert g.execute("SELECT count(*) FROM ints").fetchone() == (0,)
    # As on a terminal (FORCE_COLOR), so the progress bars draw too.
    proc = subprocess.Popen([sys.executable, "-m", "controller", "sync", "--follow", "--interval",
                             "300ms", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "FORCE_COLOR": "1"})
    try:
        time.sleep(3)
        with diff_pair.blue() as b:
            b.execute("INSERT INTO ints (id) VALUES (99999)")
        deadline = time.monotonic() + 20
        with diff_pair.green() as g:
            while g.execute("SELECT count(*) FROM ints WHERE id = 99999").fetchone() != (1,):
                assert time.monotonic() < deadline, "the follow loop did not pick up the insert"
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "diff cycle in" in output
    assert_same_data(diff_pair)


def test_follow_outlives_a_restart_of_green_and_catches_up(diff_pair: DbPair, lab: Lab,
                                                           tmp_path: Path) -> None:
    """A diff cycle that fails because green restarts is reported and retried at the next
    interval; the service keeps running and green ends equal to blue."""
    config = diff_pair.config_file(tmp_path, 'mode = "diff"\n')
    proc = subprocess.Popen([sys.executable, "-m", "controller", "sync", "--follow", "--interval",
                             "300ms", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        _wait_green(diff_pair, "SELECT count(*) FROM ints", 5000)
        lab.restart("green_pg")
        with diff_pair.blue() as b:
            b.execute("INSERT INTO ints (id) VALUES (99999)")
        _wait_green(diff_pair, "SELECT count(*) FROM ints WHERE id = 99999", 1)
        assert proc.poll() is None, "the service died when green restarted"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "diff cycle failed: " in output, output
    assert_same_data(diff_pair)


def _wait_green(pair: DbPair, query: str, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with pair.green() as g:
                row = g.execute(query).fetchone()
            if row == (expected,):
                return
        except psycopg.OperationalError:
            pass  # green restarting
        assert time.monotonic() < deadline, f"green never showed {expected} for {query}"
        time.sleep(0.1)


def test_a_watermark_narrows_cycles_and_a_full_pass_catches_deletes(pair: DbPair) -> None:
    both(pair, "CREATE TABLE docs (id int PRIMARY KEY, body text, updated_at timestamptz NOT NULL)")
    with pair.blue() as b:
        b.execute("INSERT INTO docs SELECT g, 'v1', '2026-01-01'::timestamptz + g * interval '1 s' "
                  "FROM generate_series(1, 1000) g")
    settings = pair.settings(mode="diff", watermark_column="updated_at", full_pass_every=3)
    first = diff.cycle(settings)
    assert not first.tables[0].incremental
    assert first.total("inserted") == 1000
    with pair.blue() as b:
        b.execute("UPDATE docs SET body = 'v2', updated_at = '2026-06-01' WHERE id <= 5")
        b.execute("DELETE FROM docs WHERE id = 999")
        b.execute("INSERT INTO docs VALUES (2000, 'new', '2026-06-02')")
    second = diff.cycle(settings)
    assert second.tables[0].incremental
    # Only rows at or past the watermark are read: the 6 changed, and id 1000, which holds the
    # watermark itself (inclusive: rows written later with the same value are not missed).
    assert second.total("blue_rows") == 7
    assert (second.total("updated"), second.total("inserted"), second.total("deleted")) == (5, 1, 0)
    third = diff.cycle(settings)
    assert third.tables[0].incremental
    assert third.total("updated") + third.total("inserted") == 0
    fourth = diff.cycle(settings)  # full_pass_every = 3: a full pass, which sees the delete
    assert not fourth.tables[0].incremental
    assert fourth.total("deleted") == 1
    assert_same_data(pair)
