"""How green is kept equal to blue, and how writes move between them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from config.base import Argv, ConfigPath, Name, Section, SqlText, TableName, argv_template
from config.dsn import dsn_without_secrets
from config.durations import ByteSize, Duration
from config.errors import FieldError


class SyncMode(StrEnum):
    LOGICAL = "logical"
    DIFF = "diff"


class TransformSettings(Section):
    target: TableName
    """Green table the query's rows are synced into, e.g. public.validation_results_per_aspect."""
    query: str
    """A SELECT over blue producing the target's rows."""
    key: list[SqlText] = Field(min_length=1)
    """Columns of the query that identify a row (the target's primary key)."""


class SyncSettings(Section):
    mode: SyncMode = SyncMode.LOGICAL
    """logical (native logical replication) or diff (chunked checksum diff; SELECT on blue only)."""
    schemas: list[SqlText] = Field(default_factory=lambda: ["public"], min_length=1)
    """Schemas whose tables are synced when `tables` is empty. An empty green gets every object of
    these schemas (and of the synced tables' schemas), types, functions and views included."""
    tables: list[TableName] = Field(default_factory=list)
    """Tables to sync (schema.table); empty means every table of `schemas`. The other tables of
    their schemas still reach an empty green, without rows."""
    exclude_tables: list[TableName] = Field(default_factory=list)
    """Tables never synced (an empty green still gets their definition, without rows)."""
    copy_jobs: int = Field(default=4, ge=1, le=64)
    """Parallel COPY workers for the initial copy: about the database servers' cores (on 2
    cores, 2 workers copied pgbench -s 50 faster than 4)."""
    split_rows: int = Field(default=1_000_000, ge=1_000)
    """Tables with more rows than this are copied in copy_jobs page ranges, in parallel."""
    chunk_rows: int = Field(default=100_000, ge=100)
    """Rows per checksum chunk for verify and the diff sync."""
    max_lag_bytes: ByteSize = 16 * 1024 * 1024
    """Replication lag (bytes) above which the switch waits and the lag check fails."""
    max_lag: Duration = 5.0
    """Replication lag (time, by heartbeat) above which the lag check fails."""
    interval: Duration = 30.0
    """Cadence of the diff sync loop and of sync status refreshes."""
    heartbeat_interval: Duration = 1.0
    """How often a heartbeat row is written on blue to measure lag in time."""
    join_new_tables: bool = True
    """`cutover sync --follow`: take in the tables created on blue while it runs (their
    schema too when green's came from blue; PostgreSQL copies them, the drift shows them as
    being copied until done). Off: they are only reported as drift, and `cutover sync` run
    by hand takes them in."""
    name: Name = "cutover"
    """Prefix of the publication, slot and subscription names Cutover creates."""
    watermark_column: SqlText | None = None
    """diff mode: an updated_at-style column that narrows each cycle to changed rows."""
    full_pass_every: int = Field(default=10, ge=1)
    """diff mode with a watermark: every Nth cycle compares everything (catches deletes)."""
    transforms: list[TransformSettings] = Field(default_factory=list)
    """Green tables computed from a query over blue (diff mode)."""


class PgBouncerSettings(Section):
    admin_dsn: Annotated[str, dsn_without_secrets(
        "CUTOVER_SWITCHOVER__PGBOUNCER__ADMIN_PASSWORD or the credentials directory")] = \
        "postgresql://pgbouncer@127.0.0.1:6432/pgbouncer"
    """Connection string of PgBouncer's admin console (the user must be in admin_users)."""
    admin_password: SecretStr | None = None
    """Never in the file: CUTOVER_SWITCHOVER__PGBOUNCER__ADMIN_PASSWORD or the credentials dir."""
    databases: list[str] = Field(default_factory=lambda: ["app"], min_length=1)
    """PgBouncer database entries the writers use; all are paused and repointed together."""
    databases_file: ConfigPath
    """The file PgBouncer includes in [databases]; Cutover rewrites it to repoint."""


class CommandEndpointSettings(Section):
    pause: Argv
    """Stops new writes (e.g. scale writers to zero, block a proxy)."""
    repoint: Annotated[list[str], argv_template("target", "host", "port", "dbname")]
    """Points writers at {target} ({host}, {port}, {dbname} are filled in)."""
    resume: Argv
    """Lets writes flow again."""
    timeout: Duration = 30.0
    """Each command's time limit."""


class SwitchMethod(StrEnum):
    PGBOUNCER = "pgbouncer"
    COMMAND = "command"
    NONE = "none"


class SwitchoverSettings(Section):
    method: SwitchMethod = SwitchMethod.PGBOUNCER
    """pgbouncer, command, or none (blue and green share one database: traffic only)."""
    fence_timeout: Duration = 5.0
    """Longest wait for writers to pause; past it the switch aborts and resumes on blue."""
    timeout: Duration = 30.0
    """Hard limit for the whole switch; past it everything is put back on blue."""
    max_write_xact_age: Duration = 2.0
    """Write transactions older than this on blue make the switch wait (precheck)."""
    catch_up_timeout: Duration = 600.0
    """How long a switch (either way) waits, before its pause and with writes flowing, for the
    new primary to catch up: until a heartbeat written on the old one is applied within
    catch_up_tail and the lag is under sync.max_lag_bytes. Past it the switch fails without
    having paused anything."""
    catch_up_tail: Duration = 0.5
    """The backlog the pause may still drain: a heartbeat must reach the new primary within
    this before writers are paused (a transaction still being applied delays it)."""
    verify: Literal["counts", "checksums", "none"] = "counts"
    """What is compared between the old primary and the new one as they stand at the fence:
    counts (exact), checksums (every value; slower), or none (the drain to the old
    primary's last commit only)."""
    verify_at: Literal["after_resume", "in_pause"] = "after_resume"
    """When that comparison runs. after_resume: writes move as soon as the new primary has
    applied the old one's last commit; the old primary (fenced, not yet following) is then
    compared with the new one as it was at the fence (the reverse slot's exported snapshot)
    while writes flow, and any difference switches writes back, losing nothing (the reverse
    replication carries back what was written meanwhile). in_pause: compared before writes
    move, a difference aborts; the pause grows by the scan (~0.1 s per million rows counted
    here). Without reverse_replication the comparison always runs in the pause. A switch
    killed before its after-resume comparison is compared by the next run, live (verify's
    checksums with rechecks) once the old primary follows."""
    reverse_replication: bool = True
    """Keep blue current from green after the switch, so a rollback loses nothing."""
    auto: bool = True
    """`cutover run`: switch as soon as green streams with lag under sync.max_lag_bytes and
    sync.max_lag; false: wait in streaming for `cutover promote`."""
    pgbouncer: PgBouncerSettings | None = None
    command: CommandEndpointSettings | None = None

    @field_validator("fence_timeout", "timeout", "catch_up_timeout", "catch_up_tail")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _method_has_its_section(self) -> Self:
        if self.method is SwitchMethod.PGBOUNCER and self.pgbouncer is None:
            raise FieldError(("pgbouncer",), "missing; method 'pgbouncer' needs a "
                             "[switchover.pgbouncer] section (admin_dsn, databases, databases_file)")
        if self.method is SwitchMethod.COMMAND and self.command is None:
            raise FieldError(("command",), "missing; method 'command' needs a "
                             "[switchover.command] section (pause, repoint, resume)")
        return self
