"""normalized_schema (tests/realistic/dump.py): pg_dump texts of equal schemas from different
servers compare equal; a real difference (a missing index, another type) still shows."""

from __future__ import annotations

from tests.realistic import PG_DUMP_FLAGS, normalized_schema

# Shaped like `pg_dump --schema-only --no-owner` of PostgreSQL 15 (dumped by pg_dump 18).
DUMP_15 = """--
-- PostgreSQL database dump
--

\\restrict AbCdEf0123456789

-- Dumped from database version 15.18
-- Dumped by pg_dump version 18.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET row_security = off;

--
-- Name: records; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA records;


CREATE TYPE records.visibility AS ENUM (
    'private',
    'public'
);


SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE records.events_2023 (
    id bigint DEFAULT nextval('records.event_id_seq'::regclass) NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    kind text NOT NULL
);

CREATE TABLE records.notes (
    id bigint CONSTRAINT notes_id_required NOT NULL,
    body text
);

CREATE VIEW records.public_records WITH (security_invoker='true') AS
 SELECT r.id,
    records.label_count(r.labels) AS label_count,
    r.title
   FROM records.records r
  WHERE ((r.visibility = 'public'::records.visibility) AND (r.status = 'active'::records.record_status));

CREATE MATERIALIZED VIEW records.record_stats AS
 SELECT records.owner_id,
    count(*) AS records,
    sum(records.amount) AS amount
   FROM records.records
  GROUP BY records.owner_id
  WITH NO DATA;

CREATE OR REPLACE VIEW records.account_overview AS
 SELECT a.id,
    count(r.id) AS record_count
   FROM (records.accounts a
     LEFT JOIN records.records r ON ((r.owner_id = a.id)))
  GROUP BY a.id;

CREATE INDEX records_labels_idx ON records.records USING gin (labels);

CREATE UNIQUE INDEX record_stats_key ON records.record_stats USING btree (owner_id);

GRANT SELECT ON TABLE records.records TO records_reader;


--
-- PostgreSQL database dump complete
--

\\unrestrict AbCdEf0123456789

"""

# The same schema from PostgreSQL 18: other header, other \\restrict key, unqualified columns in
# one-relation views, and the parent's not-null constraint names on a partition.
DUMP_18 = (DUMP_15
           .replace("AbCdEf0123456789", "ZyXw9876")
           .replace("database version 15.18", "database version 18.6")
           .replace("SET lock_timeout = 0;\n", "SET lock_timeout = 0;\nSET transaction_timeout = 0;\n")
           .replace("nextval('records.event_id_seq'::regclass) NOT NULL",
                    "nextval('records.event_id_seq'::regclass) CONSTRAINT events_id_not_null NOT NULL")
           .replace("with time zone NOT NULL",
                    "with time zone CONSTRAINT events_occurred_at_not_null NOT NULL")
           .replace("kind text NOT NULL", "kind text CONSTRAINT events_kind_not_null NOT NULL")
           .replace(" SELECT r.id,\n    records.label_count(r.labels) AS label_count,\n    r.title",
                    " SELECT id,\n    records.label_count(labels) AS label_count,\n    title")
           .replace("WHERE ((r.visibility = 'public'::records.visibility) AND (r.status",
                    "WHERE ((visibility = 'public'::records.visibility) AND (status")
           .replace(" SELECT records.owner_id,", " SELECT owner_id,")
           .replace("sum(records.amount)", "sum(amount)")
           .replace("GROUP BY records.owner_id", "GROUP BY owner_id"))


def test_fixture_dumps_differ_before_normalizing() -> None:
    assert DUMP_15 != DUMP_18
    assert DUMP_18.count("_not_null NOT NULL") == 3
    assert "r.id" not in DUMP_18.split("CREATE OR REPLACE VIEW")[0]


def test_equal_schemas_from_two_servers_compare_equal() -> None:
    assert normalized_schema(DUMP_15) == normalized_schema(DUMP_18)


def test_noise_is_gone_and_statements_stay() -> None:
    text = normalized_schema(DUMP_18)
    assert "\\restrict" not in text
    assert "\\unrestrict" not in text
    assert "--" not in text
    assert "SET " not in text
    assert "set_config" not in text
    assert "\n\n\n" not in text
    assert text.startswith("CREATE SCHEMA records;\n")
    assert text.endswith("GRANT SELECT ON TABLE records.records TO records_reader;\n")
    assert "CREATE INDEX records_labels_idx ON records.records USING gin (labels);" in text
    # A function qualified with the schema of the same name stays qualified, and so do casts.
    assert "records.label_count(labels) AS label_count" in text
    assert "'public'::records.visibility" in text
    assert "   FROM records.records\n" in text


def test_normalizing_is_idempotent() -> None:
    once = normalized_schema(DUMP_15)
    assert normalized_schema(once) == once


def test_a_missing_index_line_is_a_difference() -> None:
    without = DUMP_18.replace("CREATE INDEX records_labels_idx ON records.records USING gin (labels);\n", "")
    assert without != DUMP_18
    assert normalized_schema(DUMP_15) != normalized_schema(without)


def test_a_missing_unique_index_on_a_matview_is_a_difference() -> None:
    without = DUMP_18.replace(
        "CREATE UNIQUE INDEX record_stats_key ON records.record_stats USING btree (owner_id);\n", "")
    assert normalized_schema(DUMP_15) != normalized_schema(without)


def test_a_different_type_is_a_difference() -> None:
    other = DUMP_18.replace("kind text CONSTRAINT", "kind character varying CONSTRAINT")
    assert normalized_schema(DUMP_15) != normalized_schema(other)
    other_enum = DUMP_18.replace("    'private',\n    'public'\n",
                                 "    'private',\n    'internal',\n    'public'\n")
    assert normalized_schema(DUMP_15) != normalized_schema(other_enum)


def test_a_missing_not_null_or_grant_is_a_difference() -> None:
    nullable = DUMP_18.replace("kind text CONSTRAINT events_kind_not_null NOT NULL", "kind text")
    assert normalized_schema(DUMP_15) != normalized_schema(nullable)
    no_grant = DUMP_18.replace("GRANT SELECT ON TABLE records.records TO records_reader;\n", "")
    assert normalized_schema(DUMP_15) != normalized_schema(no_grant)


def test_a_custom_not_null_constraint_name_is_kept() -> None:
    text = normalized_schema(DUMP_15)
    assert "id bigint CONSTRAINT notes_id_required NOT NULL," in text
    renamed = DUMP_18.replace("notes_id_required", "notes_id_mandatory")
    assert normalized_schema(DUMP_15) != normalized_schema(renamed)


def test_a_different_view_body_is_a_difference() -> None:
    other_filter = DUMP_18.replace("(visibility = 'public'::records.visibility)",
                                   "(visibility <> 'private'::records.visibility)")
    assert normalized_schema(DUMP_15) != normalized_schema(other_filter)
    other_column = DUMP_18.replace("    sum(amount) AS amount", "    max(amount) AS amount")
    assert normalized_schema(DUMP_15) != normalized_schema(other_column)


def test_views_with_joins_keep_their_qualifiers() -> None:
    text = normalized_schema(DUMP_15)
    assert " SELECT a.id,\n    count(r.id) AS record_count" in text
    assert "GROUP BY a.id;" in text


def test_expected_pg_dump_flags() -> None:
    assert "--schema-only" in PG_DUMP_FLAGS
    assert "--no-owner" in PG_DUMP_FLAGS
    assert "--no-privileges" not in PG_DUMP_FLAGS
