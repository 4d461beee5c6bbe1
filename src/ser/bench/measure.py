"""The numbers a benchmark reports, from raw samples: latency percentiles and throughput, and the noise
bounds that tell a real change between two runs from machine jitter. Agreement with the reference is
`ser.metrics.Agreement`, the comparison export validation and the INT8 gate report too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """Percentiles (linear interpolation), mean and standard deviation of latency samples, in ms."""
    ms = 1000 * np.asarray(samples_s, dtype=np.float64)
    if ms.ndim != 1 or len(ms) == 0:
        raise ValueError("need at least one latency sample")
    summary = {f"p{q}_ms": float(np.percentile(ms, q)) for q in PERCENTILES}
    summary |= {
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "min_ms": float(ms.min()),
        "runs": len(ms),
    }
    return summary


def throughput(batch: int, seconds: float, mean_ms: float) -> dict[str, float]:
    """Clips per second and seconds of audio per second (the inverse real-time factor)."""
    calls_per_s = 1000 / mean_ms
    return {"clips_per_s": batch * calls_per_s, "audio_x": batch * seconds * calls_per_s}


def median_ratio(
    before_s: Sequence[float], after_s: Sequence[float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Median of `after` over median of `before`, with a bootstrap confidence interval: each sample
    set is resampled with replacement, so the bounds are as wide as the runs' own spread."""
    before, after = np.asarray(before_s, dtype=np.float64), np.asarray(after_s, dtype=np.float64)
    if len(before) == 0 or len(after) == 0:
        raise ValueError("need samples on both sides")
    rng = np.random.default_rng(seed)
    b = np.median(rng.choice(before, (resamples, len(before))), axis=1)
    a = np.median(rng.choice(after, (resamples, len(after))), axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(a / b, [tail, 100 - tail])
    return float(np.median(after) / np.median(before)), float(low), float(high)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both), by x."""
    front = [
        i for i, (x, y) in enumerate(points) if not any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)
    ]
    return sorted(front, key=lambda i: points[i][0])
