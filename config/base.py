"""Shared building blocks of the settings models."""

from __future__ import annotations

import ipaddress
import re
import string
import types
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

from config.errors import FieldError

# Relative paths in a config file mean "next to the config file", as users expect;
# the loader sets this while it validates one file.
CONFIG_DIR: ContextVar[Path | None] = ContextVar("CONFIG_DIR", default=None)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOSTPORT = re.compile(r"(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


def _scalar_kind(annotation: Any) -> type | None:
    """bool, int or float when a field holds that scalar (optional or not), else None."""
    if annotation in (bool, int, float):
        return typing.cast(type, annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_scalar_kind(a) for a in typing.get_args(annotation) if a is not types.NoneType}
        return kinds.pop() if len(kinds) == 1 else None
    return None


_BOOL_TEXT = ("true", "false", "1", "0")
"""What an environment variable may say for a bool (the file has TOML's true and false)."""


class Section(BaseModel):
    """A config section: unknown keys are errors (typos must not pass silently)."""

    # allow_inf_nan=False: TOML accepts nan and inf, and a limit of nan never fails a check.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        """No guessing: `copy_jobs = true` is not 1 and `enabled = "yes"` is not true."""
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            info = cls.model_fields.get(name)
            kind = None if info is None else _scalar_kind(info.annotation)
            if kind in (int, float) and isinstance(value, bool):
                raise FieldError((name,), f"expected a number, got {str(value).lower()}")
            if kind is bool and not isinstance(value, bool) and not (
                    isinstance(value, str) and value.strip().lower() in _BOOL_TEXT):
                raise FieldError((name,), f"expected true or false, got {value!r}")
        return data


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty: give a file's path")
    return value


def _resolve(path: Path) -> Path:
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL character")
    base = CONFIG_DIR.get()
    path = path.expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_dir():  # "." or a folder: every path in the config names a file
        raise ValueError(f"{path} is a directory; give a file's path")
    return path


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "expected a name of letters, digits, '_', '.' or '-' (at most 63, starting "
            f"with a letter or digit), got {value!r}"
        )
    return value


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can reach it."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _check_hostport(value: str) -> str:
    m = _HOSTPORT.fullmatch(value)
    if not m or not 0 < int(m.group("port")) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:9187, got {value!r}")
    return value


def _check_argv(value: list[str]) -> list[str]:
    if not value or not value[0].strip():
        raise ValueError("expected a command as a list of arguments, such as "
                         "[\"./scripts/traffic-shift.sh\", \"--target\", \"{target}\"]")
    return value


def argv_template(*fields: str) -> AfterValidator:
    """An Argv whose arguments may hold exactly these {placeholders}: anything else (an unknown
    name, {0}, a format spec, a lone brace) is refused when the config is read, never when the
    command runs (a repoint runs inside the write pause)."""
    allowed = ", ".join("{" + f + "}" for f in fields) or "none"

    def _check_argv_template(value: list[str]) -> list[str]:
        _check_argv(value)
        for arg in value:
            try:
                parts = list(string.Formatter().parse(arg))
            except ValueError as exc:
                raise ValueError(f"{arg!r}: {exc} (a literal brace is written twice: {{{{ }}}}); "
                                 f"placeholders: {allowed}") from None
            for _, name, spec, conversion in parts:
                if name is not None and (name not in fields or spec or conversion):
                    written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                    raise ValueError(f"{arg!r}: unknown placeholder {{{written}}}; placeholders: {allowed}")
        return value
    return AfterValidator(_check_argv_template)


def _check_sql_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("PostgreSQL cannot hold a NUL character")
    if not value.strip():
        raise ValueError("empty")
    return value


_IDENT = r'(?:"(?:[^"]|"")+"|[^".\s]+)'
_QUALIFIED = re.compile(rf"(?:(?P<schema>{_IDENT})\.)?{_IDENT}")


def _check_table_name(value: str) -> str:
    _check_sql_text(value)
    if not _QUALIFIED.fullmatch(value.strip()):
        raise ValueError(f"expected a table as name or schema.name (a name holding a dot is "
                         f"quoted: \"a.b\"), got {value!r}")
    return value


def is_system_schema(name: str) -> bool:
    """pg_catalog, pg_toast, information_schema, ...: PostgreSQL's own (by the parsed name)."""
    return name.startswith("pg_") or name == "information_schema"


def system_schema(table: str) -> bool:
    """Whether a TableName names its schema, and that is one of PostgreSQL's own."""
    m = _QUALIFIED.fullmatch(table.strip())
    schema = (m.group("schema") or "") if m else ""
    return bool(schema) and is_system_schema(
        schema[1:-1].replace('""', '"') if schema.startswith('"') else schema.lower())


ConfigPath = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_resolve)]
"""A file path; relative paths are taken from the config file's directory."""

Name = Annotated[str, AfterValidator(_check_name)]
"""A short name (server, check, service): letters, digits, '_', '.', '-'."""

HostPort = Annotated[str, AfterValidator(_check_hostport)]
"""host:port."""

Argv = Annotated[list[str], AfterValidator(_check_argv)]
"""A command as an argument list; never run through a shell."""

SqlText = Annotated[str, AfterValidator(_check_sql_text)]
"""A name or value sent to PostgreSQL: not empty, no NUL (libpq would cut the text there)."""

TableName = Annotated[str, AfterValidator(_check_table_name)]
"""A table: name or schema.name, PostgreSQL's quoting rules."""
