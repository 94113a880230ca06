"""The judge: one check's measurement -> a verdict, pure.

A breach is either `failure_limit` consecutive failing intervals, or, for a ratio whose
requests are counted (HAProxy's error ratio, a Prometheus ratio with `samples_query`),
enough accumulated evidence (`evidence.cusum`), which decides a gross failure within a few
dozen requests. A counted interval fails only when its errors are unlikely at the limit
(`evidence.tail`), so 1 error in 35 requests is not "3 %"; a measured value only when it is
past its limit by more than its margin. Too little traffic or no data is inconclusive
(neither pass nor fail). A source that cannot be asked is inconclusive too, until `no_data_limit` times in a
row make it a failure (fail-safe: a blind watch must not keep green live). A `dry_run` check
is judged and recorded the same way but never breaches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from config.slo import OnNoData, SloCheck
from controller.slo import evidence
from controller.slo.readings import Measurement, Reading


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Limit:
    value: float
    how: str
    """Where the number came from: "max 0.01", "blue 22 + noise floor 20", ..."""


@dataclass(frozen=True)
class Verdict:
    check: str
    outcome: Outcome
    breach: bool
    """failure_limit consecutive failures, or enough evidence: act now."""
    reason: str
    green: float | None = None
    baseline: float | None = None
    """Blue's value, when the check compares against it."""
    threshold: float | None = None
    """The limit green was held to (the tightest that applied)."""
    streak: int = 0
    """Consecutive failures so far."""
    derivation: str | None = None
    """How the threshold was derived, e.g. "blue 22 + noise floor 20"."""
    green_samples: int | None = None
    blue_samples: int | None = None
    evidence: float | None = None
    """The CUSUM of a counted ratio; a breach at evidence.BREACH_EVIDENCE."""
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None else round(x, 6)
        return {"check": self.check, "outcome": self.outcome.value, "breach": self.breach,
                "reason": self.reason, "green": num(self.green), "baseline": num(self.baseline),
                "threshold": num(self.threshold), "streak": self.streak,
                "derivation": self.derivation, "green_samples": self.green_samples,
                "blue_samples": self.blue_samples, "evidence": num(self.evidence),
                "dry_run": self.dry_run}


@dataclass
class CheckState:
    failures: int = 0
    unreachable: int = 0
    """Consecutive intervals the source could not be asked."""
    history: list[Outcome] = field(default_factory=list)
    baseline: float | None = None
    """Blue's last value with enough samples: the baseline once blue serves (almost) nothing,
    as at a 100 % stage."""
    evidence: float = 0.0
    """The CUSUM of a counted ratio (0 = no evidence against green)."""
    blue_recent: list[Reading] = field(default_factory=list)
    """Blue's last readings that had requests: pooled when one interval has too few (a 5 %
    control), so green is held to blue of a few seconds ago rather than of before the stage."""


@dataclass(frozen=True)
class _Assessment:
    outcome: Outcome
    reason: str
    upper: Limit | None = None
    """The upper limit green was held to, if any (also when the interval was inconclusive,
    so counted evidence still accrues)."""
    lower: Limit | None = None
    blue: float | None = None


def judge(check: SloCheck, m: Measurement, state: CheckState, *, blue_live: bool = True) -> Verdict:
    """Judge one interval and update state (the streaks, the evidence) in place.

    blue_live=False: blue serves nothing by design (the hold after the last stage), so a
    limit relative to blue is not judged at all; only absolute limits hold green."""
    m = _with_recent_blue(check, m, state)
    if _enough(check, m.blue):  # kept at its pessimistic end, as a live blue is taken
        counted_blue = _counted(m.blue)
        state.baseline = evidence.upper(*counted_blue) if counted_blue else _finite(m.blue.value)
    a = _assess(check, m, state.baseline if blue_live else None, blue_live)
    outcome, reason = a.outcome, a.reason
    state.unreachable = state.unreachable + 1 if m.error is not None else 0
    blind = state.unreachable >= check.no_data_limit
    if blind:
        outcome = Outcome.FAIL
        reason = f"{reason}; {state.unreachable} times in a row (fail-safe)"
    counted = _counted(m.green)
    if counted is not None and a.upper is not None and m.error is None and not m.green.overlapping:
        state.evidence = evidence.cusum(state.evidence, *counted, a.upper.value)
    if state.evidence >= evidence.BREACH_EVIDENCE:
        # Evidence gathered over several intervals decides even where this one alone could
        # not (too little traffic): the interval is a failure, and says why first.
        if outcome is not Outcome.FAIL:
            reason = f"enough evidence over the last intervals (this one alone: {outcome.value}, {reason})"
            outcome = Outcome.FAIL
        reason = f"{reason}; evidence {state.evidence:.1f} ≥ {evidence.BREACH_EVIDENCE:.1f}"
    if outcome is Outcome.FAIL:
        state.failures += 1
    elif outcome is Outcome.PASS:
        state.failures = 0
    # An inconclusive interval neither clears nor extends a run of failures.
    state.history = [*state.history[-99:], outcome]
    breach = (blind or state.failures >= check.failure_limit
              or state.evidence >= evidence.BREACH_EVIDENCE)
    if breach and check.dry_run:
        breach, reason = False, f"{reason}; would breach (dry run)"
    limit = a.upper if a.upper is not None else a.lower
    return Verdict(check.name, outcome, breach, reason, m.green.value, a.blue,
                   limit.value if limit else None, state.failures,
                   limit.how if limit else None, m.green.samples, m.blue.samples,
                   state.evidence if counted is not None else None, check.dry_run)


POOLED = 10
"""At most this many of blue's last intervals pooled into one baseline."""


def _with_recent_blue(check: SloCheck, m: Measurement, state: CheckState) -> Measurement:
    """m, with blue pooled over its last intervals when this one has too few requests."""
    blue = m.blue
    if _finite(blue.value) is None or not blue.samples:
        return m
    state.blue_recent = [*state.blue_recent[-(POOLED - 1):], blue]
    if _enough(check, blue) or blue.overlapping:
        return m
    pooled: list[Reading] = []
    for r in reversed(state.blue_recent):
        pooled.append(r)
        n = sum(p.samples or 0 for p in pooled)
        if n >= check.min_samples:
            value = sum((p.value or 0.0) * (p.samples or 0) for p in pooled) / n
            errors = (sum(p.errors or 0 for p in pooled)
                      if all(p.errors is not None for p in pooled) else None)
            margin = sum(p.margin * (p.samples or 0) for p in pooled) / n
            return Measurement(m.green, Reading(value, n, errors=errors, margin=margin), m.error)
    return m


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _enough(check: SloCheck, r: Reading) -> bool:
    return _finite(r.value) is not None and (r.samples is None or r.samples >= check.min_samples)


def _counted(r: Reading) -> tuple[int, int] | None:
    """(errors, requests) of a ratio reading that counts them."""
    if r.errors is None or r.samples is None or r.samples <= 0:
        return None
    return r.errors, r.samples


def _limits(check: SloCheck, m: Measurement, last_baseline: float | None,
            blue_live: bool) -> tuple[Limit | None, Limit | None, float | None]:
    """The upper and lower limits green is held to, and blue's value behind them."""
    upper = Limit(check.max, f"max {check.max:g}") if check.max is not None else None
    lower = Limit(check.min, f"min {check.min:g}") if check.min is not None else None
    if check.max_vs_blue is None or not blue_live:
        return upper, lower, None
    since, blue = "", _finite(m.blue.value) if _enough(check, m.blue) else None
    if blue is None:
        blue, since = last_baseline, " (blue's last baseline)"
    if blue is None:
        return upper, lower, None
    # Blue at the pessimistic end of what it measured: a blue with 0 errors this second must
    # not make green's limit 0, and a blue average known to ±2 ms is held at its top.
    counted = _counted(m.blue) if not since else None
    top = evidence.upper(*counted) if counted else blue + (m.blue.margin if not since else 0.0)
    shown = f"blue {blue:.4g}{since}" + (f" (≤ {top:.4g})" if top > blue else "")
    # Relative, but never closer to blue than the noise floor: 0 vs 1 error is not "worse".
    times, plus = top * check.max_vs_blue, top + check.noise_floor
    relative = (Limit(times, f"{shown} x {check.max_vs_blue:g}") if times >= plus
                else Limit(plus, f"{shown} + noise floor {check.noise_floor:g}"))
    if upper is None or relative.value < upper.value:
        upper = relative
    return upper, lower, blue


def _assess(check: SloCheck, m: Measurement, last_baseline: float | None,
            blue_live: bool) -> _Assessment:
    if m.error is not None:
        return _Assessment(Outcome.INCONCLUSIVE, f"source failed: {m.error}")
    upper, lower, blue = _limits(check, m, last_baseline, blue_live)
    absolute = check.max is not None or check.min is not None
    if check.max_vs_blue is not None and not blue_live and not absolute:
        return _Assessment(Outcome.INCONCLUSIVE, "not judged: blue serves no traffic to compare with")
    if m.green.failed is not None:
        return _Assessment(Outcome.FAIL, m.green.failed, upper, lower, blue)
    green = _finite(m.green.value)
    if green is None:
        if check.on_no_data is OnNoData.FAIL:
            return _Assessment(Outcome.FAIL, "no data for green (on_no_data = fail)", upper, lower, blue)
        return _Assessment(Outcome.INCONCLUSIVE, "no data for green", upper, lower, blue)
    if m.green.samples is not None and m.green.samples < check.min_samples:
        return _Assessment(Outcome.INCONCLUSIVE, f"too little traffic on green "
                           f"({m.green.samples} < min_samples {check.min_samples})", upper, lower, blue)
    if check.max_vs_blue is not None and blue is None and not absolute:
        return _Assessment(Outcome.INCONCLUSIVE, "no blue baseline to compare with")
    counted = _counted(m.green)
    if counted is not None and upper is not None:
        outcome, reason = _weigh(*counted, upper)
    else:
        outcome, reason = _compare(green, m.green.margin, upper, lower)
    if outcome is Outcome.PASS and check.max_vs_blue is not None and blue is None:
        reason = ("within limits (no blue baseline yet)" if blue_live else
                  "within absolute limits (blue serves no traffic: the relative limit is not judged)")
    return _Assessment(outcome, reason, upper, lower, blue)


def _weigh(errors: int, requests: int, limit: Limit) -> tuple[Outcome, str]:
    seen = f"green {errors} errors in {requests} requests ({errors / requests:.3g})"
    if limit.value <= 0:  # "no errors at all": one is a failure
        if errors > 0:
            return Outcome.FAIL, f"{seen} above limit 0 = {limit.how}"
        return Outcome.PASS, f"within limits: {seen}"
    p = evidence.tail(errors, requests, limit.value)
    if p < evidence.FAIL_P:
        return Outcome.FAIL, f"{seen} above limit {limit.value:.4g} = {limit.how} (p = {p:.2g})"
    return Outcome.PASS, f"within limits: {seen}, limit {limit.value:.4g} = {limit.how}"


def _compare(green: float, margin: float, upper: Limit | None,
             lower: Limit | None) -> tuple[Outcome, str]:
    plus = f" ± {margin:.2g}" if margin else ""
    if upper is not None and green - margin > upper.value:
        return Outcome.FAIL, f"green {green:.4g}{plus} above limit {upper.value:.4g} = {upper.how}"
    if lower is not None and green + margin < lower.value:
        return Outcome.FAIL, f"green {green:.4g}{plus} below limit {lower.value:.4g} = {lower.how}"
    # Within its margin of a limit is not evidence of a failure, like a few errors: a pass.
    return Outcome.PASS, "within limits"
