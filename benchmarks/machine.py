"""What the benchmarks ask of the machine they run on, shared by both scripts."""
from __future__ import annotations

import time


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over `seconds`, other processes included (Linux; NaN elsewhere).
    Measured before a benchmark starts, it says how much of the machine someone else is using."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(c) for c in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # all jiffies, idle + iowait jiffies
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return 1 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return float("nan")
