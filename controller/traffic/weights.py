"""Per-server weights for a green share: each environment's share split evenly among its
servers, as small integers (HAProxy caps a weight at 256)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MAX_WEIGHT = 256


def weights_for(green_percent: int, blue: Sequence[str], green: Sequence[str],
                max_weight: int = MAX_WEIGHT) -> dict[str, int]:
    """Exact when the servers divide evenly, else the closest the weight limit allows. A side
    with a share above 0 never gets weight 0, and 0 % gives exactly 0."""
    if not 0 <= green_percent <= 100:
        raise ValueError(f"green share must be 0-100, got {green_percent}")
    # Each blue server (100-p)*ng, each green p*nb: the totals are exactly (100-p) : p.
    b = (100 - green_percent) * len(green)
    g = green_percent * len(blue)
    common = math.gcd(b, g) or 1
    b, g = b // common, g // common
    if max(b, g) > max_weight:
        b, g = _closest(green_percent, len(blue), len(green), max_weight)
    return {**dict.fromkeys(blue, b), **dict.fromkeys(green, g)}


def _closest(green_percent: int, nb: int, ng: int, max_weight: int) -> tuple[int, int]:
    """The (blue, green) weight pair in 1..max_weight whose share is nearest the target."""
    def error(pair: tuple[int, int]) -> float:
        b, g = pair
        return abs(100.0 * ng * g / (ng * g + nb * b) - green_percent)
    pairs = []
    for g in range(1, max_weight + 1):
        ideal = ng * g * (100 - green_percent) / (green_percent * nb)
        pairs.append((min(max_weight, max(1, round(ideal))), g))
    return min(pairs, key=error)


def green_share(weights: Mapping[str, int], green: Sequence[str]) -> float:
    """Green's percentage of the total weight; 0 when every weight is 0 (nothing is served)."""
    total = sum(weights.values())
    return 100.0 * sum(weights[s] for s in green if s in weights) / total if total else 0.0
