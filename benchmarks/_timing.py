"""The one timing loop every side of a comparison runs (stdlib only: Electrum's interpreter runs it too).

Wall time from ``perf_counter_ns``; CPU time from ``thread_time_ns`` (user + system time of
this thread, kernel work in socket calls included), which another process on the same
core does not inflate. Both are per operation, in nanoseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def time_loop(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Run ``fn`` ``n`` times; (wall ns, CPU ns) per call."""
    cpu0, wall0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        fn()
    wall, cpu = time.perf_counter_ns() - wall0, time.thread_time_ns() - cpu0
    return wall / n, cpu / n
