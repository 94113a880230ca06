"""Deterministic data for the realistic schema, and an application-like write mix.

Everything goes through ordinary INSERT/UPDATE/DELETE statements, so the triggers run (the
revision counter, updated_at, the audit log). Given the same seed on a freshly created schema,
`populate` writes the same rows, except the values the server stamps with now(): audit_log's
changed_at and updated_at of the rows populate updates after inserting them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from tests.realistic.schema import ENUM_VALUES

STATUSES = ENUM_VALUES["record_status"]
VISIBILITIES = ENUM_VALUES["visibility"]
LABELS = ENUM_VALUES["label"]
EVENT_KINDS = ("view", "edit", "share", "export")
METRIC_SOURCES = ("import", "api", "batch")
LARGE_OBJECT_OID = 4_200_000  # + seed: the same OID on every server, so dumps compare equal
BASE_TIME = datetime(2023, 1, 1, tzinfo=UTC)
# Events from mid 2022 to mid 2026: every yearly partition and the DEFAULT one get rows.
EVENT_SPAN_START = datetime(2022, 7, 1, tzinfo=UTC)
EVENT_SPAN = datetime(2026, 7, 1, tzinfo=UTC) - EVENT_SPAN_START
CITIES = ("Springfield", "Zürich", "São Paulo", "Kraków", "Reykjavík", "Osaka")
TITLES = ("Quarterly report", "Prüfbericht", "報告書", "Contract draft", "Invoice \"final\"",
          "Notes; with, punctuation", "Backslash \\ test", "Ünïcödé ✓")

Op = Literal["insert", "update", "delete"]


class Write(NamedTuple):
    """One acknowledged write: the table (schema-qualified), its primary key and what was done.
    Deleting a record also deletes its versions, events, bookings and metrics (ON DELETE
    CASCADE); those are not listed."""

    table: str
    key: tuple[Any, ...]
    op: Op


@contextmanager
def _committed(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One transaction that is committed when the block ends, whatever the connection's mode."""
    with conn.transaction():
        yield
    if not conn.autocommit:
        conn.commit()


def _composite(fields: Sequence[str | None]) -> str:
    """The text form of a composite value: fields quoted, NULL as nothing."""
    def field(value: str | None) -> str:
        if value is None:
            return ""
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "(" + ",".join(field(v) for v in fields) + ")"


def _array(values: Sequence[str]) -> str:
    return "{" + ",".join(values) + "}"


def _address(rng: random.Random, i: int) -> str | None:
    if i % 3 == 0:
        return None
    city = CITIES[i % len(CITIES)]
    street = None if i % 7 == 0 else f'{rng.randint(1, 999)} "Main" Street, apt {i % 40}'
    postal = None if i % 11 == 0 else f"{rng.randint(1000, 99999)}"
    return _composite([street, city, postal, ("US", "CH", "BR", "PL", "IS", "JP")[i % 6]])


def _floatrange(rng: random.Random, i: int) -> str | None:
    kind = i % 6
    if kind == 0:
        return None
    if kind == 1:
        return "empty"
    low = round(rng.uniform(-100, 100), 3)
    if kind == 2:
        return f"(,{low}]"
    if kind == 3:
        return f"[{low},)"
    return f"[{low},{low + round(rng.uniform(0.5, 50), 3)})"


def _ip(rng: random.Random, i: int) -> str | None:
    if i % 4 == 0:
        return None
    if i % 4 == 1:
        return f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _labels(rng: random.Random, i: int) -> str:
    if i % 5 == 0:
        return "{}"
    picked = {LABELS[i % len(LABELS)], *rng.sample(LABELS, rng.randint(0, 2))}
    return _array(sorted(picked, key=LABELS.index))


def _body(rng: random.Random, i: int, large: bool) -> Jsonb:
    body: dict[str, Any] = {"n": i, "tags": [f"t{rng.randint(0, 50)}" for _ in range(rng.randint(0, 4))],
                            "nested": {"ok": i % 2 == 0, "ratio": round(rng.random(), 6), "none": None},
                            "text": f"line one\nline \"two\" \\ {i}"}
    if large:
        # Random hex barely compresses, so this is stored out of line in the TOAST table.
        body["history"] = [rng.randbytes(700).hex() for _ in range(3)]
    return Jsonb(body)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _status_visibility(i: int) -> tuple[str, str]:
    status = STATUSES[i % len(STATUSES)]
    visibility = "private" if status == "deleted" else VISIBILITIES[(i // 4) % len(VISIBILITIES)]
    return status, visibility


INSERT_RECORD = """
INSERT INTO records.records (public_id, parent_id, owner_id, current_version_id, title, status,
                             visibility, labels, amount, tax_rate, score_range, location, body,
                             attachment, source_ip, created_at)
VALUES (%s, %s, %s, %s, %s, %s::records.record_status, %s::records.visibility, %s::records.label[],
        %s, %s, %s::records.floatrange, %s::records.address, %s, %s, %s::inet, coalesce(%s, now()))
RETURNING id"""

INSERT_VERSION = """
INSERT INTO records.record_versions (id, record_id, version, snapshot, created_at)
VALUES (%s, %s, %s, %s, %s)"""


def _record_params(rng: random.Random, i: int, parent: int | None, owner: int,
                   version_id: uuid.UUID | None, created_at: datetime | None) -> tuple[Any, ...]:
    status, visibility = _status_visibility(i)
    amount = None if i % 7 == 0 else Decimal(rng.randint(0, 10_000_000)) / 100
    tax = Decimal(("0", "0.0770", "0.2000", "0.0825")[i % 4])
    attachment = None if i % 2 == 0 else rng.randbytes(6000 if i % 50 == 1 else rng.randint(0, 64))
    return (_uuid(rng), parent, owner, version_id, f"{TITLES[i % len(TITLES)]} #{i}", status, visibility,
            _labels(rng, i), amount, tax, _floatrange(rng, i), _address(rng, i + 1),
            _body(rng, i, large=i % 10 == 3), attachment, _ip(rng, i), created_at)


def populate(conn: psycopg.Connection[Any], rows: int = 2000, seed: int = 0) -> None:
    """Fill every table of a freshly created schema: `rows` records (a tenth of them roots,
    the rest children; about 1 % of the leaves deleted again), their versions, accounts,
    bookings, events in every partition, metrics, one large object (OID LARGE_OBJECT_OID +
    seed, the same on every server) and the audit rows the triggers write. Matviews refreshed.
    Each batch is one committed transaction."""
    rng = random.Random(seed)
    n_accounts = max(8, rows // 25)
    with _committed(conn), conn.cursor() as cur:
        for i in range(n_accounts):
            email = f"user{i}@example.org" if i % 3 else f"User.{i}+tag@Example.COM"
            cur.execute(
                "INSERT INTO records.accounts (email, display_name, status, home_address, last_login_ip,"
                " created_at) VALUES (%s, %s, %s::records.record_status, %s::records.address, %s::inet, %s)",
                (email, f"{TITLES[i % len(TITLES)].split()[0]} user {i}", STATUSES[i % len(STATUSES)],
                 _address(rng, i), _ip(rng, i), BASE_TIME + timedelta(hours=i)))
        account_ids = [r[0] for r in cur.execute("SELECT id FROM records.accounts ORDER BY id")]

    record_ids: list[int] = []
    batch = 250
    for start in range(0, rows, batch):
        params: list[tuple[Any, ...]] = []
        versions: list[tuple[int, list[uuid.UUID]]] = []  # (index in batch, version ids)
        for i in range(start, min(rows, start + batch)):
            parent = None if (i < max(1, rows // 10) or not record_ids or i % 9 == 0) \
                else record_ids[rng.randrange(len(record_ids))]
            # Every 13th record has no version yet (a NULL current_version_id).
            version_ids = [] if i % 13 == 12 else [_uuid(rng) for _ in range(1 + i % 3)]
            created = BASE_TIME + timedelta(minutes=i)
            params.append(_record_params(rng, i, parent, account_ids[i % len(account_ids)],
                                         version_ids[-1] if version_ids else None, created))
            versions.append((i, version_ids))
        with _committed(conn), conn.cursor() as cur:
            cur.executemany(INSERT_RECORD, params, returning=True)
            ids: list[int] = []
            while True:
                row = cur.fetchone()
                assert row is not None
                ids.append(row[0])
                if not cur.nextset():
                    break
            cur.executemany(INSERT_VERSION, [
                (vid, rid, n + 1, Jsonb({"title": p[4], "version": n + 1}),
                 BASE_TIME + timedelta(minutes=i, seconds=n))
                for rid, p, (i, vids) in zip(ids, params, versions, strict=True)
                for n, vid in enumerate(vids)])
        record_ids += ids

    with _committed(conn), conn.cursor() as cur:
        # Some updates, so revisions differ from 1 and the audit log has 'U' rows.
        cur.execute("UPDATE records.records SET labels = labels || 'ops'::records.label, tax_rate = 0.05"
                    " WHERE id % 5 = 0 AND NOT 'ops' = ANY (labels)")
        cur.execute("UPDATE records.records SET title = title || ' (rev)' WHERE id % 15 = 0")
        cur.execute("UPDATE records.accounts SET last_login_ip = '192.0.2.1' WHERE id % 4 = 2")

        resources = [f"room-{k}" for k in range(max(3, rows // 40))]
        bookings: list[tuple[Any, ...]] = []
        for k, resource in enumerate(resources):
            t = BASE_TIME + timedelta(days=k)
            slots = 3 + k % 5
            for s in range(slots):
                end = t + timedelta(minutes=rng.choice((30, 60, 90)))
                during = f"[{t.isoformat()},{'' if s == slots - 1 else end.isoformat()})"
                bookings.append((record_ids[(k * 7 + s) % len(record_ids)], resource, during,
                                 None if s % 2 else f"booking {k}/{s}"))
                t = end + timedelta(minutes=rng.choice((0, 15, 45)))
        cur.executemany("INSERT INTO records.bookings (record_id, resource, during, note)"
                        " VALUES (%s, %s, %s::tstzrange, %s)", bookings)

        events = []
        for e in range(rows * 2):
            at = EVENT_SPAN_START + EVENT_SPAN * (e / (rows * 2)) + timedelta(seconds=rng.randint(0, 3600))
            events.append((at, record_ids[rng.randrange(len(record_ids))],
                           None if e % 6 == 0 else account_ids[e % len(account_ids)],
                           EVENT_KINDS[e % len(EVENT_KINDS)], _ip(rng, e),
                           None if e % 3 == 0 else Jsonb({"e": e, "agent": "records-web/7.0"})))
        cur.executemany("INSERT INTO records.events (occurred_at, record_id, actor_id, kind, client_ip,"
                        " payload) VALUES (%s, %s, %s, %s, %s::inet, %s)", events)

        metrics = []
        for m in range(max(20, rows // 4)):
            lo = None if m % 8 == 0 else rng.randint(-1000, 1000)
            record = None if m % 10 == 0 else record_ids[m % len(record_ids)]
            metrics.append((METRIC_SOURCES[m % 3], m, record,
                            lo, None if lo is None or m % 5 == 0 else lo + rng.randint(0, 500),
                            m % 2 == 0, None if m % 4 == 0 else rng.randbytes(8).hex(),
                            None if m % 6 == 0 else date(2024, 1, 1) + timedelta(days=m % 366),
                            None if m % 7 == 0 else m % 32000, None if m % 9 == 0 else f"t{m}",
                            None if m % 5 == 0 else f"({m // 100},{m % 100})",
                            None if m % 3 == 0 else rng.randint(0, 2**40)))
        cur.executemany("INSERT INTO records.record_metrics (src, rn, record_id, cutover_lo, cutover_hi,"
                        " b, h, d, s, t, ctid_, xmin_)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", metrics)

        content = bytes(range(256)) * 40 + rng.randbytes(1000)
        cur.execute("INSERT INTO records.blobs (owner_id, name, content, size_bytes)"
                    " VALUES (%s, %s, lo_from_bytea(%s::oid, %s), %s)",
                    (account_ids[0], "terms-v7.bin", LARGE_OBJECT_OID + seed, content, len(content)))
        # Some leaves go, with their versions, events, bookings and metrics (ON DELETE CASCADE):
        # gaps in the ids and 'D' rows in the audit log.
        cur.execute("DELETE FROM records.records r WHERE id % 97 = 0 AND parent_id IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM records.records c WHERE c.parent_id = r.id)")
    refresh(conn)


def refresh(conn: psycopg.Connection[Any]) -> None:
    """REFRESH MATERIALIZED VIEW for every matview of the schema, committed."""
    with _committed(conn):
        conn.execute("REFRESH MATERIALIZED VIEW records.record_stats")
        conn.execute("REFRESH MATERIALIZED VIEW records.monthly_events")


# ---------------------------------------------------------------------------------------------
# The write mix. Safe to run from several connections at once (each with its own seed):
# children are only added under roots and only non-root leaves are deleted, and events,
# bookings and metrics only point at roots, so no write depends on a row another deletes.

_OPS: tuple[tuple[str, int], ...] = (
    ("update_record", 30), ("insert_record", 12), ("insert_child", 10), ("delete_leaf", 10),
    ("update_account", 8), ("insert_event", 15), ("insert_booking", 5), ("upsert_metric", 10),
)


class _Writer:
    def __init__(self, conn: psycopg.Connection[Any], seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.seed = seed
        self.done: list[Write] = []
        row = conn.execute("SELECT min(id), max(id) FROM records.records").fetchone()
        assert row is not None
        assert row[0] is not None, "populate() first"
        self.lo, self.hi = int(row[0]), int(row[1])
        accounts = conn.execute("SELECT min(id), max(id) FROM records.accounts").fetchone()
        assert accounts is not None
        self.account_lo, self.account_hi = int(accounts[0]), int(accounts[1])

    def _pick(self, condition: str) -> int | None:
        """A record id at or after a random point that meets `condition` (wrapping around)."""
        start = self.rng.randint(self.lo, self.hi)
        for query in (f"SELECT id FROM records.records r WHERE id >= %s AND {condition} ORDER BY id LIMIT 1",
                      f"SELECT id FROM records.records r WHERE id < %s AND {condition} ORDER BY id LIMIT 1"):
            row = self.conn.execute(query, (start,)).fetchone()
            if row is not None:
                return int(row[0])
        return None

    def _root(self) -> int | None:
        return self._pick("parent_id IS NULL")

    def _account(self) -> int:
        return self.rng.randint(self.account_lo, self.account_hi)

    def _insert_record(self, parent: int | None) -> None:
        i = self.rng.randint(0, 10_000)
        version = _uuid(self.rng)
        params = _record_params(self.rng, i, parent, self._account(), version, None)
        with _committed(self.conn):
            row = self.conn.execute(INSERT_RECORD, params).fetchone()
            assert row is not None
            rid = int(row[0])
            self.conn.execute(INSERT_VERSION, (version, rid, 1, Jsonb({"title": params[4], "version": 1}),
                                               datetime.now(UTC)))
        self.hi = max(self.hi, rid)
        self.done += [Write("records.records", (rid,), "insert"),
                      Write("records.record_versions", (version,), "insert")]

    def update_record(self) -> None:
        rid = self._pick("true")
        if rid is None:
            return
        rng = self.rng
        i = rng.randint(0, 10_000)
        sets: list[str] = []
        params: list[Any] = []
        status = rng.choice(STATUSES)
        sets.append("status = %s::records.record_status")
        params.append(status)
        sets.append("visibility = %s::records.visibility")
        params.append("private" if status == "deleted" else rng.choice(VISIBILITIES))
        if rng.random() < 0.5:
            sets.append("labels = %s::records.label[]")
            params.append(_labels(rng, i))
        if rng.random() < 0.3:  # otherwise a TOASTed body stays unchanged on the update
            sets.append("body = %s")
            params.append(_body(rng, i, large=rng.random() < 0.4))
        elif rng.random() < 0.3:
            sets.append("body = jsonb_set(body, '{nested,ratio}', to_jsonb(%s::float8))")
            params.append(round(rng.random(), 6))
        if rng.random() < 0.4:
            sets.append("location = %s::records.address")
            params.append(_address(rng, i))
        if rng.random() < 0.3:
            sets.append("amount = %s, score_range = %s::records.floatrange")
            params += [None if i % 9 == 0 else Decimal(rng.randint(0, 999_999)) / 100, _floatrange(rng, i)]
        version = _uuid(rng) if rng.random() < 0.3 else None
        if version is not None:
            sets.append("current_version_id = %s")
            params.append(version)
        with _committed(self.conn):
            row = self.conn.execute(f"UPDATE records.records SET {', '.join(sets)} WHERE id = %s"
                                    " RETURNING title, (SELECT coalesce(max(version), 0) FROM"
                                    " records.record_versions v WHERE v.record_id = records.id)",
                                    [*params, rid]).fetchone()
            if row is None:  # deleted meanwhile by another writer
                return
            if version is not None:
                self.conn.execute(INSERT_VERSION, (version, rid, row[1] + 1,
                                                   Jsonb({"title": row[0], "version": row[1] + 1}),
                                                   datetime.now(UTC)))
        self.done.append(Write("records.records", (rid,), "update"))
        if version is not None:
            self.done.append(Write("records.record_versions", (version,), "insert"))

    def insert_record(self) -> None:
        self._insert_record(None)

    def insert_child(self) -> None:
        self._insert_record(self._root())

    def delete_leaf(self) -> None:
        rid = self._pick("parent_id IS NOT NULL AND NOT EXISTS"
                         " (SELECT 1 FROM records.records c WHERE c.parent_id = r.id)")
        if rid is None:
            return
        with _committed(self.conn):
            row = self.conn.execute("DELETE FROM records.records WHERE id = %s AND parent_id IS NOT NULL"
                                    " RETURNING id", (rid,)).fetchone()
        if row is not None:
            self.done.append(Write("records.records", (rid,), "delete"))

    def update_account(self) -> None:
        aid = self._account()
        i = self.rng.randint(1, 10_000)
        with _committed(self.conn):
            row = self.conn.execute(
                "UPDATE records.accounts SET home_address = %s::records.address, last_login_ip = %s::inet,"
                " status = %s::records.record_status WHERE id = %s RETURNING id",
                (_address(self.rng, i), _ip(self.rng, i), self.rng.choice(STATUSES[:3]), aid)).fetchone()
        if row is not None:
            self.done.append(Write("records.accounts", (aid,), "update"))

    def insert_event(self) -> None:
        rid = self._root()
        if rid is None:
            return
        at = EVENT_SPAN_START + EVENT_SPAN * self.rng.random()
        with _committed(self.conn):
            row = self.conn.execute(
                "INSERT INTO records.events (occurred_at, record_id, actor_id, kind, client_ip, payload)"
                " VALUES (%s, %s, %s, %s, %s::inet, %s) RETURNING id, occurred_at",
                (at, rid, self._account(), self.rng.choice(EVENT_KINDS), _ip(self.rng, rid),
                 Jsonb({"w": self.seed}))).fetchone()
        assert row is not None
        self.done.append(Write("records.events", (row[0], row[1]), "insert"))

    def insert_booking(self) -> None:
        rid = self._root()
        if rid is None:
            return
        start = BASE_TIME + timedelta(days=400 + self.rng.randint(0, 400),
                                      minutes=15 * self.rng.randint(0, 90))
        during = f"[{start.isoformat()},{(start + timedelta(minutes=30)).isoformat()})"
        with _committed(self.conn):
            row = self.conn.execute(
                "INSERT INTO records.bookings (record_id, resource, during, note)"
                " VALUES (%s, %s, %s::tstzrange, %s) ON CONFLICT DO NOTHING RETURNING id",
                (rid, f"desk-{self.rng.randint(0, 20)}", during, f"writer {self.seed}")).fetchone()
        if row is not None:
            self.done.append(Write("records.bookings", (row[0],), "insert"))

    def upsert_metric(self) -> None:
        rid = self._root()
        rn = self.rng.randint(0, 500)
        lo = self.rng.randint(0, 100)
        with _committed(self.conn):
            row = self.conn.execute(
                "INSERT INTO records.record_metrics AS m (src, rn, record_id, cutover_lo, cutover_hi, b, h,"
                " d, s, t, ctid_, xmin_)"
                " VALUES ('live', %s, %s, %s, %s, true, %s, current_date, %s, %s, %s, %s)"
                " ON CONFLICT (src, rn) DO UPDATE SET cutover_hi = m.cutover_hi + 1, b = NOT m.b,"
                " t = excluded.t, xmin_ = excluded.xmin_ RETURNING (xmax = 0)",
                (rn, rid, lo, lo + 10, self.rng.randbytes(4).hex(), rn % 100, f"w{self.seed}",
                 f"(0,{rn})", self.rng.randint(0, 2**31))).fetchone()
        assert row is not None
        self.done.append(Write("records.record_metrics", ("live", rn), "insert" if row[0] else "update"))


def write_some(conn: psycopg.Connection[Any], n: int, seed: int) -> list[Write]:
    """`n` application writes (about: 30 % record updates changing enums, arrays, jsonb,
    composites and ranges; inserts of records, children, events, bookings, metrics; deletes of
    leaf records; account updates), each in its own committed transaction. Returns every write
    the server acknowledged, in order (the last entry for a key is its final state as far as
    this call knows). A write that found nothing to do (its row deleted meanwhile) is not listed.

    Several connections may run it at once (different seeds): no write fails because of
    another. But one writer may delete a leaf record another has just inserted or updated,
    so with concurrent writers check that green equals blue for every key returned, rather
    than that each row still exists."""
    writer = _Writer(conn, seed)
    names = [name for name, _ in _OPS]
    weights = [weight for _, weight in _OPS]
    for _ in range(n):
        getattr(writer, writer.rng.choices(names, weights)[0])()
    return writer.done
