# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""What the package tells people about a stream: percentiles of timings, throttled warnings.

One helper each, for the node's /diagnostics and log, the bag report and the benchmarks.
No rclpy, no torch.
"""

from __future__ import annotations

import math
import re
import time
from typing import Callable, Dict, Hashable, Optional, Sequence, Tuple

WARN_PERIOD_S = 5.0


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile of values (q from 0 to 100), nan when there are none.

    Linear between the two nearest ranks (numpy's default), so q 50 is the median.
    """
    ordered = sorted(values)
    if not ordered:
        return float('nan')
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def kind_of(text: str, length: int = 40) -> str:
    """Return the kind of problem a message tells, for a Throttle: its start, numbers as #.

    Messages name counts, sizes and stamps that change from frame to frame (a lidar scan's
    point count): keyed by the text itself, a throttle would keep a kind per frame for good and
    tell every one.
    """
    return re.sub(r'\d+(\.\d+)?', '#', text)[:length]


class Throttle:
    """Tell each kind of problem at most once per period (None: only the first), counting all.

    A repeat told after a quiet period says how many were suppressed meanwhile. counts holds
    how often each kind came up, told or not; pass a dict to keep them in it.
    """

    def __init__(self, tell: Callable[[str], None], period: Optional[float] = WARN_PERIOD_S,
                 counts: Optional[Dict[Hashable, int]] = None) -> None:
        self.tell = tell
        self.period = period
        self.counts: Dict[Hashable, int] = {} if counts is None else counts
        self._told: Dict[Hashable, Tuple[float, int]] = {}  # kind -> (when, its count then)

    def __call__(self, kind: Hashable, text: str) -> bool:
        """Count one problem of this kind; tell text unless it is too soon. Return if told."""
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.period is None:
            if n == 1:
                self.tell(text)
            return n == 1
        now = time.monotonic()
        told = self._told.get(kind)
        if told is not None and now - told[0] < self.period:
            return False
        suppressed = n - told[1] - 1 if told is not None else 0
        self.tell(text + (f' ({suppressed} more like this suppressed)' if suppressed else ''))
        self._told[kind] = (now, n)
        return True

    def told(self, kind: Hashable) -> bool:
        """Whether this kind of problem came up (and so was told) already."""
        return self.counts.get(kind, 0) > 0
