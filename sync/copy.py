"""The parallel initial copy: every worker reads blue under one exported snapshot (the
replication slot's), so the copy is exactly the state the subscription then continues from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql

from config.settings import Settings
from sync.catalog import column_traits, column_types
from sync.chunks import Chunk
from sync.connections import Conn, connect, databases
from sync.errors import SyncError
from sync.pgtools import start_tool


@dataclass
class CopyProgress:
    rows: int = 0
    bytes: int = 0
    chunks_done: int = 0
    chunks_total: int = 0


ProgressFn = Callable[[CopyProgress], None]


class ProgressLines:
    """Copy progress as plain lines, for a log, a pipe or journald: the first chunk, then
    one line every `every` seconds, and always the last chunk (so a log ends on the total)."""

    def __init__(self, say: Callable[[str], None], every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.every, self.clock = say, every, clock
        self.next_at: float | None = None

    def __call__(self, p: CopyProgress) -> None:
        now = self.clock()
        last = p.chunks_total > 0 and p.chunks_done >= p.chunks_total
        if last or self.next_at is None or now >= self.next_at:
            self.say(f"copy: {p.rows:,} rows, {p.bytes / 1e6:,.1f} MB, "
                     f"{p.chunks_done}/{p.chunks_total} chunks")
            self.next_at = now + self.every

REPORT_EVERY_BYTES = 4 * 1024 * 1024
BLOCK_BYTES = 1024 * 1024
RERUN = "re-run `cutover sync` to start the copy again (green's partial rows are replaced)"


class ParallelCopy:
    """freeze: green's tables are ours (schema just copied from blue, no foreign keys yet),
    so a table copied whole may be truncated and loaded with COPY FREEZE in one transaction."""

    def __init__(self, settings: Settings, snapshot: str, progress: ProgressFn,
                 freeze: bool = False) -> None:
        self.blue_db, self.green_db = databases(settings)
        self.jobs = settings.sync.copy_jobs
        self.snapshot = snapshot
        self.progress_fn = progress
        self.progress = CopyProgress()
        self._lock = threading.Lock()
        self._failed = threading.Event()
        self._binary: dict[int, bool] = {}
        self._freeze = freeze
        self._freezable: set[int] = set()
        """Tables loaded with COPY FREEZE: see _decide_formats."""

    def run(self, chunks: list[Chunk]) -> CopyProgress:
        self.progress.chunks_total = len(chunks)
        self._decide_formats(chunks)
        pending = list(chunks)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="copy") as pool:
            futures = [pool.submit(self._worker, i, pending) for i in range(min(self.jobs, len(chunks)))]
            errors = [f.exception() for f in futures]
        failures = [e for e in errors if e is not None]
        if failures:
            first = failures[0]
            raise first if isinstance(first, SyncError) else SyncError(f"copy failed: {first}")
        return self.progress

    def _decide_formats(self, chunks: list[Chunk]) -> None:
        # Binary COPY is faster but needs identical column types on both sides.
        with connect(self.blue_db, "copy-plan") as blue, connect(self.green_db, "copy-plan") as green:
            for table in {c.table.oid: c.table for c in chunks}.values():
                theirs = column_types(green, table)
                ours = column_types(blue, table)
                portable = column_traits(blue, table).portable_binary
                self._binary[table.oid] = all(theirs.get(c) == ours[c] and c in portable
                                              for c in table.columns)
            if not self._freeze:
                return
            # A table loaded whole into a relfilenode of its own transaction (TRUNCATE) is
            # written frozen, hint bits set: its index builds and first scans do not rewrite
            # every page, and green never has to vacuum-freeze the copy. Page ranges share the
            # table with other workers, and a partitioned table cannot be frozen by COPY.
            for chunk in chunks:
                if chunk.first_page is None and chunk.table.kind == "r":
                    row = green.execute("SELECT has_table_privilege(%s::regclass, 'TRUNCATE')",
                                        [chunk.table.qualified]).fetchone()
                    if row and row[0]:
                        self._freezable.add(chunk.table.oid)

    def _next(self, pending: list[Chunk]) -> Chunk | None:
        with self._lock:
            if self._failed.is_set() or not pending:
                return None
            return pending.pop(0)

    def _worker(self, n: int, pending: list[Chunk]) -> None:
        try:
            with connect(self.green_db, f"copy-{n}", autocommit=True) as green:
                # Like the apply worker: no user triggers or FK checks on green while loading.
                green.execute("SET session_replication_role = replica")
                green.execute("SET synchronous_commit = off")
                green.execute("SET statement_timeout = 0")
                while (chunk := self._next(pending)) is not None:
                    self._copy(n, green, chunk)
        except psycopg.Error as exc:
            self._failed.set()
            raise SyncError(f"copy worker {n} failed on green: {str(exc).strip()}; " + RERUN) from None
        except BaseException:
            self._failed.set()
            raise

    def _statements(self, chunk: Chunk, freeze: bool) -> tuple[sql.Composed, sql.Composed]:
        """The chunk's COPY out of blue (its pages, by ctid) and into green."""
        table = chunk.table
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
        only = sql.SQL("ONLY ") if table.kind == "r" else sql.SQL("")
        where: sql.Composable = sql.SQL("")
        if chunk.first_page is not None:
            where = sql.SQL(" WHERE ctid >= {}::tid").format(sql.Literal(f"({chunk.first_page},0)"))
            if chunk.end_page is not None:
                where += sql.SQL(" AND ctid < {}::tid").format(sql.Literal(f"({chunk.end_page},0)"))
        fmt = sql.SQL("binary" if self._binary[table.oid] else "text")
        read = sql.SQL("COPY (SELECT {} FROM {}{}{}) TO STDOUT (FORMAT {})").format(
            cols, only, table.ident, where, fmt)
        options = sql.SQL("FORMAT {}{}").format(fmt, sql.SQL(", FREEZE" if freeze else ""))
        return read, sql.SQL("COPY {} ({}) FROM STDIN ({})").format(table.ident, cols, options)

    def _copy(self, n: int, green: Conn, chunk: Chunk) -> None:
        """One chunk: psql streams blue's rows under the snapshot at C speed (psycopg hands out
        COPY data row by row, which costs twice the time); we feed them to green in 1 MiB
        blocks inside a transaction that commits only if blue's side ended cleanly."""
        table = chunk.table
        freeze = table.oid in self._freezable
        read, write = self._statements(chunk, freeze)
        source = start_tool("psql", [
            "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            "-c", sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot))
            .as_string(green),
            "-c", read.as_string(green), "-c", "COMMIT"],
            # A chunk of a big table may take long: no statement_timeout for the copy itself.
            self.blue_db, application_name=f"cutover-copy-{n}", statement_timeout=0)
        assert source.stdout is not None
        unreported = 0
        try:
            with green.transaction(), green.cursor() as dst:
                if freeze:
                    dst.execute(sql.SQL("TRUNCATE ONLY {}").format(table.ident))
                with dst.copy(write) as inp:
                    while block := source.stdout.read(BLOCK_BYTES):
                        inp.write(block)
                        unreported += len(block)
                        if unreported >= REPORT_EVERY_BYTES:
                            self._report(0, unreported, 0)
                            unreported = 0
                    # Blue's side must have ended cleanly, or green's rows are rolled back.
                    if source.wait() != 0:
                        problem = source.stderr.read().decode(errors="replace").strip() \
                            if source.stderr else ""
                        raise SyncError(f"copy worker {n} lost blue while reading "
                                        f"{chunk.label}: {problem}; " + RERUN)
                rows = max(dst.rowcount, 0)
        finally:
            if source.poll() is None:
                source.kill()
            source.wait()
        self._report(rows, unreported, 1)

    def _report(self, rows: int, nbytes: int, chunks: int) -> None:
        with self._lock:
            self.progress.rows += rows
            self.progress.bytes += nbytes
            self.progress.chunks_done += chunks
            snapshot = CopyProgress(**vars(self.progress))
        self.progress_fn(snapshot)
