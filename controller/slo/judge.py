"""The judge: one check's measurement -> a verdict, pure. A breach needs `failure_limit`
consecutive failures; too little traffic or no data is inconclusive (neither pass nor fail);
a source that cannot be asked is inconclusive too, until `no_data_limit` times in a row make
it a failure (fail-safe: a blind watch must not keep green live)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from config.slo import OnNoData, SloCheck
from controller.slo.readings import Measurement


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    check: str
    outcome: Outcome
    breach: bool
    """failure_limit consecutive failures: act now."""
    reason: str
    green: float | None = None
    baseline: float | None = None
    """Blue's value, when the check compares against it."""
    threshold: float | None = None
    """The limit green was held to (the tightest that applied)."""
    streak: int = 0
    """Consecutive failures so far."""

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None else round(x, 6)
        return {"check": self.check, "outcome": self.outcome.value, "breach": self.breach,
                "reason": self.reason, "green": num(self.green), "baseline": num(self.baseline),
                "threshold": num(self.threshold), "streak": self.streak}


@dataclass
class CheckState:
    failures: int = 0
    unreachable: int = 0
    """Consecutive intervals the source could not be asked."""
    history: list[Outcome] = field(default_factory=list)
    baseline: float | None = None
    """Blue's last value with enough samples: the baseline once blue serves (almost) nothing,
    as at a 100 % stage."""


def judge(check: SloCheck, m: Measurement, state: CheckState) -> Verdict:
    """Judge one interval and update state (the streaks) in place."""
    blue = _finite(m.blue.value)
    if blue is not None and (m.blue.samples is None or m.blue.samples >= check.min_samples):
        state.baseline = blue
    outcome, reason, threshold = _assess(check, m, state.baseline)
    state.unreachable = state.unreachable + 1 if m.error is not None else 0
    if state.unreachable >= check.no_data_limit:
        outcome = Outcome.FAIL
        reason = f"{reason}; {state.unreachable} times in a row (fail-safe)"
    if outcome is Outcome.FAIL:
        state.failures += 1
    elif outcome is Outcome.PASS:
        state.failures = 0
    # An inconclusive interval neither clears nor extends a run of failures.
    state.history = [*state.history[-99:], outcome]
    return Verdict(check.name, outcome, state.failures >= check.failure_limit, reason,
                   m.green.value, _baseline(check, m, state),
                   threshold, state.failures)


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _assess(check: SloCheck, m: Measurement,
            last_baseline: float | None) -> tuple[Outcome, str, float | None]:
    if m.error is not None:
        return Outcome.INCONCLUSIVE, f"source failed: {m.error}", None
    if m.green.failed is not None:
        return Outcome.FAIL, m.green.failed, None
    green = _finite(m.green.value)
    if green is None:
        if check.on_no_data is OnNoData.FAIL:
            return Outcome.FAIL, "no data for green (on_no_data = fail)", None
        return Outcome.INCONCLUSIVE, "no data for green", None
    if m.green.samples is not None and m.green.samples < check.min_samples:
        return (Outcome.INCONCLUSIVE,
                f"too little traffic on green ({m.green.samples} < min_samples {check.min_samples})",
                None)
    if check.max is not None and green > check.max:
        return Outcome.FAIL, f"green {green:.4g} above max {check.max:g}", check.max
    if check.min is not None and green < check.min:
        return Outcome.FAIL, f"green {green:.4g} below min {check.min:g}", check.min
    if check.max_vs_blue is None:
        return Outcome.PASS, "within limits", _tightest(check)
    blue = _finite(m.blue.value)
    since = ""
    if blue is None or (m.blue.samples is not None and m.blue.samples < check.min_samples):
        blue, since = last_baseline, " (blue's last baseline)"
    if blue is None:
        # Absolute limits passed; the comparison has no baseline yet.
        if check.max is not None or check.min is not None:
            return Outcome.PASS, "within limits (no blue baseline yet)", _tightest(check)
        return Outcome.INCONCLUSIVE, "no blue baseline to compare with", None
    # Relative, but never closer to blue than the noise floor: 0 vs 1 error is not "worse".
    limit = max(blue * check.max_vs_blue, blue + check.noise_floor)
    if green > limit:
        return (Outcome.FAIL, f"green {green:.4g} worse than blue {blue:.4g}{since} x "
                f"{check.max_vs_blue:g} (limit {limit:.4g})", limit)
    return Outcome.PASS, "within limits", limit if check.max is None else min(limit, check.max)


def _tightest(check: SloCheck) -> float | None:
    return check.max if check.max is not None else check.min


def _baseline(check: SloCheck, m: Measurement, state: CheckState) -> float | None:
    if check.max_vs_blue is None:
        return None
    blue = _finite(m.blue.value)
    enough = blue is not None and (m.blue.samples is None or m.blue.samples >= check.min_samples)
    return blue if enough else state.baseline
