"""Weighing counted evidence, pure: is green's error ratio above its limit, given how many
requests it saw? Two classic tests on the binomial model of errors among requests:

- one interval: the exact binomial tail, the chance of at least this many errors among this
  many requests if green's true ratio were exactly at the limit (1 error in 35 requests
  against a limit of 1 % is a 30 % chance: no evidence; 5 in 35 is 0.003 %: evidence);
- across intervals: Page's CUSUM of the log-likelihood ratio between "at the limit" and
  "twice the limit", which a clean green drives to 0 and a broken one up by about 0.7 per
  error, so 50 % errors reach the breach threshold within a few dozen requests.
"""

from __future__ import annotations

import math

FAIL_P = 0.01
"""An interval fails when its errors would occur less than 1 % of the time at the limit."""
BREACH_EVIDENCE = math.log(1e6)
"""The CUSUM's threshold: a likelihood ratio of a million to one that green is at twice its
limit rather than at it. A clean green (well under its limit) drifts away from it; one at
exactly its limit takes millions of requests to reach it by chance."""
MIN_LIMIT = 1e-4
"""The CUSUM holds a limit of 0 ("any error fails") as 1 in 10,000, so the arithmetic stays
finite; the judge fails any error against a limit of 0 itself."""
Z_UPPER = 1.645
"""Blue's ratio is taken at the top of its one-sided 95 % interval when it sets green's
limit: a blue that happened to have no errors this second must not make green's limit 0."""


def tail(errors: int, requests: int, limit: float) -> float:
    """P(X >= errors) for X ~ Binomial(requests, limit): the interval's p-value."""
    if errors <= 0:
        return 1.0
    p = min(max(limit, MIN_LIMIT), 1.0)
    if errors > requests or p >= 1.0:
        return 1.0 if p >= 1.0 else 0.0
    if errors <= requests * p:  # at or below what the limit predicts: no evidence either way
        return 1.0 - _sum_terms(errors - 1, requests, p, downward=True)
    return _sum_terms(errors, requests, p, downward=False)


def _sum_terms(start: int, n: int, p: float, *, downward: bool) -> float:
    """Sum the binomial pmf from start outward (away from the mode, where terms only shrink)."""
    log_term = (math.lgamma(n + 1) - math.lgamma(start + 1) - math.lgamma(n - start + 1)
                + start * math.log(p) + (n - start) * math.log1p(-p))
    term, total, k = math.exp(log_term), 0.0, start
    odds = p / (1 - p)
    while 0 <= k <= n and term > 0:
        total += term
        if term < total * 1e-15:
            break
        term *= (k / (n - k + 1) / odds) if downward else ((n - k) / (k + 1) * odds)
        k += -1 if downward else 1
    return min(total, 1.0)


def cusum(evidence: float, errors: int, requests: int, limit: float) -> float:
    """One interval's step of Page's CUSUM: evidence for "twice the limit" over "at it"."""
    p0 = min(max(limit, MIN_LIMIT), 0.5)
    p1 = min(2 * p0, 0.999)
    llr = errors * math.log(p1 / p0) + (requests - errors) * math.log((1 - p1) / (1 - p0))
    return max(0.0, evidence + llr)


def upper(errors: int, requests: int, z: float = Z_UPPER) -> float:
    """The Wilson score interval's upper end for a ratio of errors in requests."""
    if requests <= 0:
        return 1.0
    phat = min(max(errors, 0), requests) / requests
    denom = 1 + z * z / requests
    centre = phat + z * z / (2 * requests)
    spread = z * math.sqrt(phat * (1 - phat) / requests + z * z / (4 * requests * requests))
    return min(1.0, (centre + spread) / denom)
