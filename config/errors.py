"""Config errors that name the field path and say what is expected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FieldError(ValueError):
    """Raised by a model validator to blame one field below the model, not the model itself.

    A cross-field check on the root model would otherwise be reported with an empty path.
    """

    def __init__(self, loc: Sequence[int | str], message: str) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


class ConfigError(Exception):
    """The configuration cannot be used; every problem names its field."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        lines = [f"invalid configuration{where}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def field_path(loc: Sequence[int | str]) -> str:
    """('traffic', 'stages', 1, 'weight') -> 'traffic.stages[1].weight'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    msg = err["msg"]
    if kind == "missing":
        return "missing; this setting is required"
    if kind == "extra_forbidden":
        return "unknown setting (a typo? `cutover config schema` lists every setting)"
    if kind in ("value_error", "assertion_error"):
        # pydantic prefixes our own messages with "Value error, ".
        return msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"{msg[0].lower()}{msg[1:]}{shown}"


_NOT_FIELDS = ("function-", "tagged-union")


def from_validation_error(exc: ValidationError, source: str | None = None) -> ConfigError:
    problems = []
    for err in exc.errors(include_url=False):
        # Tagged unions and function validators add loc parts that are not field names.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(_NOT_FIELDS))]
        raised = err.get("ctx", {}).get("error")
        if isinstance(raised, FieldError):
            loc += raised.loc
        problems.append(Problem(field_path(loc), _message(err)))
    return ConfigError(problems, source)
