"""Timing helpers shared by the benchmark scripts.

Every helper synchronises CUDA around the timed region, so GPU work is measured, not
just launched. Thread counts are the caller's to set (``torch.set_num_threads``).

``clock`` is ``time.perf_counter`` (wall time) by default; ``time.process_time``
(CPU seconds of this process) is the steadier clock for single-threaded CPU runs on a
machine shared with other jobs, as it leaves out the time spent waiting for a core.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, List, Optional

import torch


def synchronize(device: Optional[torch.device]) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def call_seconds(fn: Callable[[], object], iters: int, warmup: int = 1,
                 device: Optional[torch.device] = None,
                 clock: Callable[[], float] = time.perf_counter) -> List[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls, read on ``clock``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = clock()
        fn()
        synchronize(device)
        times.append(clock() - start)
    return times


def mean_seconds(fn: Callable[[], object], iters: int, warmup: int = 1,
                 device: Optional[torch.device] = None) -> float:
    """Mean seconds per call (see :func:`call_seconds`)."""
    return statistics.fmean(call_seconds(fn, iters, warmup, device))


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 1,
                   device: Optional[torch.device] = None) -> float:
    """Median seconds per call (see :func:`call_seconds`)."""
    return statistics.median(call_seconds(fn, iters, warmup, device))
