"""The configuration reference (docs/config.md), generated from the models themselves so it
can never drift from what the code accepts."""

from __future__ import annotations

import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from config.base import Section
from config.durations import format_duration, parse_duration, parse_size
from config.settings import Settings

INTRO = """# Configuration reference

Generated from the settings models (`make docs` rewrites it; a test keeps it current).
One TOML file (`--config` or `CUTOVER_CONFIG`); every key can be overridden by an environment
variable `CUTOVER_<SECTION>__<KEY>` (e.g. `CUTOVER_SYNC__COPY_JOBS=8`). Settings of type
*secret* are refused in the file: give them as environment variables or as files in
`$CREDENTIALS_DIRECTORY` named like `blue__database__password`. Durations: `"250ms"`, `"90s"`,
`"5m"`, `"1h30m"`; sizes: `"16MB"`, `"1GiB"`. Relative paths are taken from the config file's
directory. `[[name]]` sections may be repeated.
"""


def _validators(info: FieldInfo) -> set[str]:
    names = set()
    for meta in info.metadata:
        func = getattr(meta, "func", None)
        if func is not None:
            names.add(func.__name__)
    return names


def _type_text(annotation: Any, validators: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    by_validator = {parse_duration.__name__: "duration", parse_size.__name__: "size",
                    "_check_hostport": "host:port", "_check_argv": "argv list",
                    "_check_argv_template": "argv list", "_check_name": "name", "_resolve": "path"}
    for name, text in by_validator.items():
        if name in validators:
            return text
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0], {getattr(m, "func", _type_text).__name__ for m in args[1:]})
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args if a is not type(None))
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"table of {_type_text(args[0])} = {_type_text(args[1])}"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        simple = {SecretStr: "secret", AnyHttpUrl: "URL", Path: "path", bool: "boolean",
                  int: "integer", float: "number", str: "string"}
        for kind, text in simple.items():
            if issubclass(annotation, kind):
                return text
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: FieldInfo, type_text: str) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "**required**"
    else:
        value = info.default
    if value is None:
        return "—"
    if type_text == "duration":
        return f"`{format_duration(value)}`"
    if type_text == "size" and value % 1024 == 0:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % size == 0:
                return f"`{value // size}{unit}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, BaseModel):
        return f"`{json.dumps(value.model_dump(mode='json'))}`"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`" + json.dumps([v.model_dump(mode="json") for v in value]) + "`"
    return f"`{json.dumps(value, default=str)}`"


def _model_of(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The section model inside an annotation, and whether it is a list ([[...]])."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            found = _model_of(a)
            if found:
                return found
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], Section):
        return args[0], True
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation, False
    return None


def _section(path: str, model: type[BaseModel], repeated: bool, out: list[str]) -> None:
    rows: list[str] = []
    subsections: list[tuple[str, type[BaseModel], bool]] = []
    for name, info in model.model_fields.items():
        nested = _model_of(info.annotation)
        # Stages are small records that read better inline, as `stages = [{...}]`.
        if nested and name != "stages":
            subsections.append((f"{path}.{name}" if path else name, *nested))
            continue
        type_text = _type_text(info.annotation, _validators(info))
        description = (info.description or "").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{name}` | {type_text} | {_default_text(info, type_text)} | {description} |")
    if rows:
        title = f"[[{path}]]" if repeated else (f"[{path}]" if path else "top level")
        out += [f"## `{title}`" if path else "## Top level", ""]
        if model.__doc__ and model is not Settings and not model.__doc__.startswith("A config section"):
            out += [model.__doc__.strip(), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for sub_path, sub_model, sub_repeated in subsections:
        _section(sub_path, sub_model, sub_repeated, out)


def reference_markdown() -> str:
    out = [INTRO]
    _section("", Settings, False, out)
    return "\n".join(out).rstrip() + "\n"
