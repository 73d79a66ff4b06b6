"""Confidence intervals for suite accuracies."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a mean score in [0, 1] over `n` items (95% by default).

    Exact for pass/fail items; for partial-credit scores it treats the mean as a proportion, which is
    conservative (their variance is at most a Bernoulli's of the same mean). Unlike the normal
    approximation it stays inside [0, 1] and is not zero-width at 0% or 100%.
    """
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (mean + z * z / (2 * n)) / denominator
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
