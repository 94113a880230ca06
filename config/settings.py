"""The root settings: a TOML file, CUTOVER_* environment variables and a secrets directory."""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.base import CONFIG_DIR, Name
from config.environments import EnvironmentSettings
from config.errors import ConfigError, FieldError, Problem, field_path, from_validation_error
from config.operations import Hook, HookPoint, MetricsSettings, NotifySettings, StateSettings
from config.replication import SwitchMethod, SwitchoverSettings, SyncSettings
from config.slo import RollbackSettings, SloCheck, SloSource, SourcesSettings
from config.traffic import TrafficSettings

ENV_PREFIX = "CUTOVER_"
CONFIG_ENV = "CUTOVER_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

_FILE_DATA: ContextVar[dict[str, Any]] = ContextVar("_FILE_DATA", default={})  # noqa: B039


class _FileSource(PydanticBaseSettingsSource):
    """The parsed config file; parsing happens in load_settings so errors name the file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_DATA.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get())


class Settings(BaseSettings):
    """Everything Cutover needs to know about one service's cutover."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_dir_missing="ok",
        secrets_prefix="",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    service: Name = "app"
    """The service's name, used in metrics, the journal and notifications."""
    blue: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    green: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    switchover: SwitchoverSettings | None = None
    """How writes move from blue to green; absent: no write switch (e.g. a sync-only service)."""
    traffic: TrafficSettings | None = None
    """How requests move from blue to green; absent: no traffic shifting."""
    slo: list[SloCheck] = Field(default_factory=list)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    rollback: RollbackSettings = Field(default_factory=RollbackSettings)
    hooks: list[Hook] = Field(default_factory=list)
    state: StateSettings = Field(default_factory=StateSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: environment over secrets directory over the file over defaults.
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return (init_settings, env_settings, secrets, _FileSource(settings_cls))

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        if self.switchover is not None and self.switchover.method is not SwitchMethod.NONE:
            for env in ("blue", "green"):
                if getattr(self, env).database is None:
                    raise FieldError((env, "database"), (
                        f"[{env}.database] is required unless switchover.method = 'none' "
                        "(blue and green sharing one database)"))
        if self.traffic is not None and not any(h.at is HookPoint.APPROVE_STAGE and h.on_failure != "ignore"
                                                for h in self.hooks):
            for i, stage in enumerate(self.traffic.stages):
                if stage.gate == "hook":
                    raise FieldError(("traffic", "stages", i, "gate"), (
                        "'hook', but no [[hooks]] at = \"approve_stage\" (with on_failure other "
                        "than \"ignore\") would ever decide; add one, or use gate = \"promote\""))
        names = [c.name for c in self.slo]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(("slo", i, "name"), (
                    f"check names must be unique; {name!r} is already slo[{names.index(name)}]"))
        prom = [c.name for c in self.slo if c.source is SloSource.PROMETHEUS]
        if prom and self.sources.prometheus is None:
            raise FieldError(("sources", "prometheus"), (
                f"missing; slo checks with source 'prometheus' ({', '.join(prom)}) need "
                "[sources.prometheus] url"))
        if any(c.source is SloSource.HTTP for c in self.slo):
            for env in ("blue", "green"):
                if not getattr(self, env).probe_urls():
                    raise FieldError((env, "health_url"), "missing; slo checks with source 'http' "
                                     "need it (or health_urls, one per app server)")
        return self


def need_switchover(settings: Settings, what: str) -> SwitchoverSettings:
    """The [switchover] section, or a ConfigError saying which command needs it."""
    if settings.switchover is None:
        raise ConfigError([Problem("switchover", f"missing; {what} needs a [switchover] section "
                                   "(method = \"pgbouncer\", \"command\" or \"none\")")])
    return settings.switchover


def need_traffic(settings: Settings, what: str) -> TrafficSettings:
    """The [traffic] section, or a ConfigError saying which command needs it."""
    if settings.traffic is None:
        raise ConfigError([Problem("traffic", f"missing; {what} needs a [traffic] section "
                                   "(driver, stages, blue_servers, green_servers)")])
    return settings.traffic


def secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every path to a secret field; '*' stands for any list index."""
    for name, info in model.model_fields.items():
        yield from _paths_in(info.annotation, (*prefix, name))


def _paths_in(annotation: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    origin = typing.get_origin(annotation)
    if annotation is SecretStr:
        yield path
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _paths_in(arg, path)
    elif origin is list:
        yield from _paths_in(typing.get_args(annotation)[0], (*path, "*"))
    elif origin is typing.Annotated:
        yield from _paths_in(typing.get_args(annotation)[0], path)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from secret_paths(annotation, path)


def _present(data: Any, pattern: tuple[str, ...]) -> Iterator[tuple[str | int, ...]]:
    """Locations in data that match a secret path pattern."""
    if not pattern:
        yield ()
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*" and isinstance(data, list):
        for i, item in enumerate(data):
            yield from ((i, *loc) for loc in _present(item, rest))
    elif isinstance(data, dict) and head in data:
        yield from ((head, *loc) for loc in _present(data[head], rest))


def _secrets_in_file(data: dict[str, Any]) -> list[Problem]:
    problems = []
    for pattern in secret_paths(Settings):
        for found in _present(data, pattern):
            env = ENV_PREFIX + "__".join(p for p in pattern if p != "*").upper()
            problems.append(Problem(field_path(found), (
                "secrets are not accepted in the config file; set the environment variable "
                f"{env} or put the value in the file $CREDENTIALS_DIRECTORY/"
                f"{'__'.join(p for p in pattern if p != '*')}")))
    return problems


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file as a dict, or a ConfigError that names the file and the line."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([Problem("", f"config file {path} does not exist; "
                                   "`cutover lab up` writes one for the lab, "
                                   "config/examples/ has commented examples")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("", f"cannot read config file {path}: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"not valid TOML: {exc}")], str(path)) from None
    except RecursionError:
        raise ConfigError([Problem("", "not usable TOML: arrays or tables nested too deeply")],
                          str(path)) from None


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """--config wins over CUTOVER_CONFIG."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    value = environ.get(CONFIG_ENV)
    return Path(value) if value else None


def load_settings(path: Path | None = None, secrets_dir: Path | None = None) -> Settings:
    """Settings from the file (if any), CUTOVER_* variables and the secrets directory.

    Raises ConfigError naming every bad field; never anything else for bad input.
    """
    path = config_path(path)
    data = read_config_file(path) if path is not None else {}
    problems = _secrets_in_file(data)
    if problems:
        raise ConfigError(problems, str(path))
    if secrets_dir is None and os.environ.get(CREDENTIALS_ENV):
        secrets_dir = Path(os.environ[CREDENTIALS_ENV])
    file_token = _FILE_DATA.set(data)
    dir_token = CONFIG_DIR.set(path.resolve().parent if path is not None else None)
    try:
        # Env vars are read by the settings source, which filters on the prefix.
        return Settings(_secrets_dir=secrets_dir)
    except ValidationError as exc:
        raise from_validation_error(exc, str(path) if path else None) from None
    except UnicodeDecodeError as exc:
        # The file was decoded already; only a credentials file can be binary.
        raise ConfigError([Problem("", f"a file in the credentials directory {secrets_dir} is not "
                                   f"UTF-8 text ({exc.reason})")], str(path) if path else None) from None
    except (ValueError, TypeError) as exc:
        # pydantic-settings raises SettingsError (a ValueError) for undecodable env values.
        raise ConfigError([Problem("", str(exc))], str(path) if path else None) from None
    except RecursionError:
        # json.loads of a deeply nested CUTOVER_* value.
        raise ConfigError([Problem("", "a CUTOVER_* environment value is nested too deeply")],
                          str(path) if path else None) from None
    finally:
        CONFIG_DIR.reset(dir_token)
        _FILE_DATA.reset(file_token)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with every secret shown as '**********'."""
    return settings.model_dump(mode="json")
