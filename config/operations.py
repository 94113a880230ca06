"""Hooks, the state store, metrics and notifications."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from config.base import ConfigPath, HostPort, Section, argv_template, is_loopback
from config.dsn import dsn_without_secrets
from config.durations import Duration


class HookPoint(StrEnum):
    BEFORE_SYNC = "before_sync"
    BEFORE_SWITCH = "before_switch"
    AFTER_SWITCH = "after_switch"
    BEFORE_TRAFFIC = "before_traffic"
    AFTER_STAGE = "after_stage"
    APPROVE_STAGE = "approve_stage"
    """A baked stage with gate = "hook": it goes on once every one succeeds (asked again every
    traffic.gate_poll meanwhile); a hook with on_failure = "rollback" rolls back instead."""
    STAGE_STARVED = "stage_starved"
    """A stage's checks could gather no evidence for traffic.starved_after x its bake (e.g. to
    start synthetic load); the stage waits once more, then holds."""
    BEFORE_FINALIZE = "before_finalize"
    AFTER_FINALIZE = "after_finalize"
    AFTER_ROLLBACK = "after_rollback"


HOOK_FIELDS = ("at", "service", "phase", "stage", "weight")
"""What a hook's command may hold as {placeholders}, and what an HTTP hook receives as JSON."""


class Hook(Section):
    at: HookPoint
    name: str | None = None
    command: Annotated[list[str], argv_template(*HOOK_FIELDS)] | None = None
    """argv, run without a shell; {at}, {service}, {phase}, {stage} and {weight} are filled in
    (empty when there is none); any other placeholder is refused when the config is read."""
    url: AnyHttpUrl | None = None
    """Called with the phase as JSON; any non-2xx status is a failure."""
    method: Literal["GET", "POST"] = "POST"
    timeout: Duration = 60.0
    on_failure: Literal["rollback", "hold", "ignore"] = "hold"

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (argv list) or url")
        return self


class StateSettings(Section):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    """sqlite: one daemon, an embedded file. postgres: two daemons of the service in HA; the
    one holding the service's advisory lock acts, the other waits and takes over."""
    path: ConfigPath = Field(default=Path("cutover-state.db"), validate_default=True)
    """sqlite: the journal file."""
    dsn: Annotated[str, dsn_without_secrets("CUTOVER_STATE__PASSWORD or the credentials "
                                            "directory")] | None = None
    """postgres: the store's database (its own, not blue's or green's application database,
    which the switch fences); no password in it."""
    password: SecretStr | None = None
    """Never in the file: CUTOVER_STATE__PASSWORD or the credentials dir (state__password)."""

    @model_validator(mode="after")
    def _backend_has_target(self) -> Self:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("backend 'postgres' needs dsn")
        return self


class MetricsSettings(Section):
    enabled: bool = True
    listen: HostPort = "127.0.0.1:9187"
    """Where /metrics, /healthz and /status are served (localhost by default; they have no
    authentication, so another address is warned about)."""

    def address(self) -> tuple[str, int]:
        """(host, port) to bind, an IPv6 host without its brackets."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def exposure_warning(self) -> str | None:
        """What to tell the user when `listen` is reachable from other hosts."""
        if is_loopback(self.address()[0]):
            return None
        return (f"metrics.listen = {self.listen!r} is reachable from other hosts, and /status and "
                "/metrics have no authentication; keep 127.0.0.1 and put an authenticating proxy "
                "in front if other hosts need them")


class NotifyEvent(StrEnum):
    PHASE = "phase"
    BREACH = "breach"
    ROLLBACK = "rollback"
    HOOK_FAILED = "hook_failed"
    REPLICATION = "replication"
    GATE = "gate"
    """A baked stage waits at its gate for `cutover promote` or its approve_stage hooks."""
    """The replication broke (apply errors, subscription disabled, no worker), or works again."""


class NotifySettings(Section):
    webhook: SecretStr | None = None
    """A Slack-compatible webhook URL; secret (it carries a token): use the env or credentials."""
    timeout: Duration = 5.0
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NotifyEvent))
    """Which events are sent."""
