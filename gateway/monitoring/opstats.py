"""Mergeable latency histograms (log-scale buckets) and the percentiles read from them, shared by gateways and
the inquiry service."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

MIN_MS = 0.01  # bucket 0 holds everything up to 10 µs
GROWTH = 1.1  # each bucket is 10% wider than the one before: a percentile is off by at most ~5%
_LOG_GROWTH = math.log(GROWTH)
MAX_BUCKET = 400  # ~10^16 ms: nothing real reaches it; guards against a nonsense value


def bucket_of(ms: float) -> int:
    """The histogram bucket of a duration in milliseconds: bucket i holds (MIN_MS·GROWTH^(i-1), MIN_MS·GROWTH^i]."""
    if not ms > MIN_MS:  # also catches NaN
        return 0
    return min(MAX_BUCKET, math.ceil(math.log(ms / MIN_MS) / _LOG_GROWTH - 1e-9))


def bucket_value(index: int) -> float:
    """The value reported for a bucket: the geometric middle of its bounds."""
    if index <= 0:
        return MIN_MS
    return MIN_MS * GROWTH ** (index - 0.5)


Histogram = dict[int, int]


def merge_into(target: Histogram, source: Mapping[int, int]) -> Histogram:
    for index, count in source.items():
        target[index] = target.get(index, 0) + count
    return target


def histogram(values: Iterable[float]) -> Histogram:
    out: Histogram = {}
    for v in values:
        b = bucket_of(v)
        out[b] = out.get(b, 0) + 1
    return out


def percentiles(hist: Mapping[int, int], qs: Iterable[float] = (0.5, 0.95, 0.99)) -> list[float | None]:
    """Nearest-rank percentiles of a histogram, one per ``q`` in (0, 1]; None for an empty histogram."""
    qs = list(qs)
    total = sum(hist.values())
    if total <= 0:
        return [None for _ in qs]
    ordered = sorted(hist.items())
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        value = bucket_value(ordered[-1][0])
        for index, count in ordered:
            seen += count
            if seen >= rank:
                value = bucket_value(index)
                break
        out.append(round(value, 3))
    return out


def error_rate(count: int, failed: int) -> float:
    return round(failed / count, 4) if count else 0.0
