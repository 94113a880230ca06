"""A feature-flag row: the percentage column of one flag (the Guardian guide's
`UPDATE feature_flags SET rollout_percentage = N WHERE feature_name = ...`). The application
routes that share of its work to green; the row is what we set and read back."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from config.base import is_system_schema
from config.traffic import SqlDriverSettings
from controller.traffic.balancer import (
    BadTrafficInput,
    ShareBalancer,
    Split,
    TrafficError,
    share_split,
)


class SqlFlagBalancer(ShareBalancer):
    def __init__(self, settings: SqlDriverSettings) -> None:
        self.settings = settings
        self._table: sql.Composed | None = None

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.settings.dsn)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        return f"feature flag {self.settings.feature!r} in {self.settings.table} at {where}"

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"application_name": "cutover-traffic", "connect_timeout": 5}
        if self.settings.password is not None:
            extra["password"] = self.settings.password.get_secret_value()
        try:
            return psycopg.connect(make_conninfo(self.settings.dsn, **extra), autocommit=True)
        except psycopg.OperationalError as exc:
            raise TrafficError(f"cannot connect for {self.describe()}: {str(exc).strip()}") from None

    def _resolve(self, conn: psycopg.Connection[Any]) -> sql.Composed:
        """The table and columns, resolved by the server (quoting as PostgreSQL parses it)."""
        if self._table is not None:
            return self._table
        s = self.settings
        try:
            row = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                               "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                               [s.table]).fetchone()
        except psycopg.errors.InvalidName:
            row = None
        if row is None:
            raise BadTrafficInput(f"traffic.sql.table: no table {s.table!r} in that database")
        if is_system_schema(str(row[0])):  # `pg_authid` alone finds pg_catalog's
            raise BadTrafficInput(f"traffic.sql.table: {s.table!r} is {row[0]}.{row[1]}, one of "
                                  "PostgreSQL's own tables; name the application's flags table")
        table = sql.Identifier(str(row[0]), str(row[1]))
        for field, column in (("name_column", s.name_column), ("percentage_column", s.percentage_column)):
            found = conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                 "AND attname = %s AND NOT attisdropped", [s.table, column]).fetchone()
            if found is None:
                raise BadTrafficInput(f"traffic.sql.{field}: {s.table} has no column {column!r}")
        self._table = sql.SQL("{}").format(table)
        return self._table

    def check(self) -> None:
        with self._connect() as conn:
            self._read(conn)

    def _read(self, conn: psycopg.Connection[Any]) -> float:
        s = self.settings
        rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            sql.Identifier(s.percentage_column), self._resolve(conn), sql.Identifier(s.name_column)),
            [s.feature]).fetchall()
        if not rows:
            raise BadTrafficInput(f"traffic.sql.feature: no row with {s.name_column} = {s.feature!r} "
                                  f"in {s.table}; insert it first (percentage 0)")
        if len(rows) > 1:
            raise BadTrafficInput(f"traffic.sql.feature: {len(rows)} rows have {s.name_column} = "
                                  f"{s.feature!r} in {s.table}; it must name exactly one")
        value = rows[0][0]
        return 0.0 if value is None else float(value)

    def apply(self, green_percent: int) -> None:
        s = self.settings
        with self._connect() as conn:
            self._read(conn)
            conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                self._resolve(conn), sql.Identifier(s.percentage_column), sql.Identifier(s.name_column)),
                [green_percent, s.feature])

    def read(self) -> Split:
        with self._connect() as conn:
            green = self._read(conn)
        return share_split(green)

