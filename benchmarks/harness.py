"""The benchmark harness: common options, one clock, one memory probe, one results writer.

Every benchmark is a module ``benchmarks/<name>.py`` run as ``python -m benchmarks.<name>``
and built on :class:`Harness`::

    from benchmarks.harness import Harness

    def main(argv=None):
        h = Harness("my_bench", "one-line description")
        h.parser.add_argument("--rows", type=int, default=100_000)
        args = h.parse(argv)                  # torch threads, seeds, work dir
        with h.clock() as t:
            run_something(args.rows)
        h.write(f"| rows | seconds |\\n|---|---|\\n| {args.rows} | {t.wall_s:.2f} |\\n",
                [{"rows": args.rows, "wall_s": t.wall_s, "cpu_s": t.cpu_s,
                  "peak_rss_mb": h.peak_rss_mb()}])

``h.write`` writes ``<out>/<name>.md`` (the exact command, git revision, date, environment,
then the body) and its machine-readable twin ``<out>/<name>.json``; ``--out`` defaults to the
repository's ``results/``. Every benchmark honours ``--tiny`` (a size that finishes in
seconds; the smoke test runs every benchmark so).

Clock: :meth:`Harness.clock` (or :func:`clock`) reads wall time (``time.perf_counter``) and
this process's CPU seconds (``time.process_time``: all its threads, not its children) around
a block, synchronising CUDA on both ends when given a device. On a machine shared with other
jobs the CPU seconds of a one-thread run are the steadier figure; a run over several threads
or processes reports wall time. :func:`time_calls` times repeated calls with the same clock
(:func:`call_seconds`, :func:`mean_seconds`, :func:`median_seconds`: one of its two figures).

Memory: :func:`peak_rss_mb` is the peak resident set size of the calling process, read from
``VmHWM`` in ``/proc/self/status`` (Linux). ``getrusage``'s ``ru_maxrss`` is not used: Linux
carries it over from the parent across ``exec``, so a child would report its parent's peak.
A benchmark that measures worker processes calls :func:`peak_rss_mb` in each worker and
reports the workers' values itself; :func:`reset_peak_rss` starts a new peak (a phase's own).
:func:`proportional_set_mb` (PSS, shared pages divided among the processes that map them)
is the one other memory figure, for benchmarks about sharing memory between processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository root (the folder holding ``benchmarks/``, ``config/``, ``results/``)."""

RESULTS_DIR = os.path.join(REPO, "results")


@dataclasses.dataclass
class Timing:
    """Seconds of one timed block: ``wall_s`` on ``time.perf_counter``, ``cpu_s`` on
    ``time.process_time`` (this process's CPU, all threads)."""
    wall_s: float = math.nan
    cpu_s: float = math.nan


def synchronize(device) -> None:
    """Wait for the work queued on ``device`` (a ``torch.device``; no-op on CPU and for None)."""
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch
        torch.cuda.synchronize(device)


def now(cpu: bool = False) -> float:
    """The clock's current reading: wall seconds (``time.perf_counter``), or with ``cpu`` this
    process's CPU seconds (``time.process_time``). For timestamps inside a timed step; a block
    is timed with :func:`clock`."""
    return time.process_time() if cpu else time.perf_counter()


@contextlib.contextmanager
def clock(device=None) -> Iterator[Timing]:
    """Time the block: yields a :class:`Timing` whose fields are set when the block ends.

    Args:
        device: a ``torch.device``; CUDA work queued on it is waited for on both ends.

    Example:
        >>> with clock() as t:
        ...     _ = sum(range(1000))
        >>> t.wall_s >= 0 and t.cpu_s >= 0
        True
    """
    timing = Timing()
    synchronize(device)
    wall, cpu = now(), now(cpu=True)
    yield timing
    synchronize(device)
    timing.wall_s, timing.cpu_s = now() - wall, now(cpu=True) - cpu


def time_calls(fn: Callable[[], object], iters: int, warmup: int = 1, device=None) -> List[Timing]:
    """:class:`Timing` of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    timings = []
    for _ in range(iters):
        with clock(device) as timing:
            fn()
        timings.append(timing)
    return timings


def call_seconds(fn: Callable[[], object], iters: int, warmup: int = 1, device=None,
                 cpu: bool = False) -> List[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls: wall time, or
    with ``cpu`` this process's CPU seconds (the steadier figure for one thread on a shared machine)."""
    return [t.cpu_s if cpu else t.wall_s for t in time_calls(fn, iters, warmup, device)]


def mean_seconds(fn: Callable[[], object], iters: int, warmup: int = 1, device=None, cpu: bool = False) -> float:
    """Mean of :func:`call_seconds`."""
    return statistics.fmean(call_seconds(fn, iters, warmup, device, cpu))


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 1, device=None, cpu: bool = False) -> float:
    """Median of :func:`call_seconds`."""
    return statistics.median(call_seconds(fn, iters, warmup, device, cpu))


def _proc_status_mb(path: str, key: str) -> float:
    with open(path) as fd:
        for line in fd:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} line in {path}")


def peak_rss_mb() -> float:
    """Peak resident set size of the calling process in MiB (``VmHWM``, Linux)."""
    return _proc_status_mb("/proc/self/status", "VmHWM")


def reset_peak_rss() -> None:
    """Set the calling process's peak RSS to its current RSS (``/proc/self/clear_refs``),
    so that the next :func:`peak_rss_mb` is the peak of what ran in between."""
    with open("/proc/self/clear_refs", "w") as fd:
        fd.write("5")


def proportional_set_mb() -> float:
    """Proportional set size of the calling process in MiB (``Pss`` of ``/proc/self/smaps_rollup``):
    its private pages plus its share of the pages it maps together with other processes."""
    return _proc_status_mb("/proc/self/smaps_rollup", "Pss")


def git_revision() -> str:
    """``HEAD``'s commit of the repository, with ``+uncommitted`` when the tree has changes."""
    try:
        sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+uncommitted" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as fd:
            for line in fd:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(threads: Optional[int] = None) -> dict:
    """Versions, thread count and machine of this run."""
    import fuxictr
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "fuxictr": getattr(fuxictr, "__version__", "unknown"),
           "torch_threads": threads if threads is not None else torch.get_num_threads(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Harness:
    """One benchmark's options, clock, memory probe and results files.

    Args:
        name: the benchmark's name: the module ``benchmarks.<name>`` and the results files
            ``<out>/<name>.md`` and ``<out>/<name>.json``.
        description: one line saying what it measures (the parser's description and the
            results file's title).

    Attributes:
        parser: an ``argparse.ArgumentParser`` holding the common options ``--threads``
            (torch threads, default 1), ``--budget-s`` (seconds the run may take; the
            benchmark decides what to leave out past it), ``--out`` (folder of the results
            files, default the repository's ``results/``), ``--work-dir`` (data and
            intermediate files; kept and reused when given, a temporary folder removed at
            exit otherwise), ``--seeds`` (one or more integers; the first seeds the
            generators) and ``--tiny`` (a size that finishes in seconds). Add the
            benchmark's own options to it before :meth:`parse`.
        args: the parsed options (after :meth:`parse`).
    """

    def __init__(self, name: str, description: str):
        self.name, self.description = name, description
        self.parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
        common = self.parser.add_argument_group("common benchmark options")
        common.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
        common.add_argument("--budget-s", type=float, default=None,
                            help="seconds this run may take (default: no limit)")
        common.add_argument("--out", default=RESULTS_DIR,
                            help=f"folder of {name}.md and {name}.json (default: the repository's results/)")
        common.add_argument("--work-dir", default=None,
                            help="folder for data and intermediate files, kept and reused "
                                 "(default: a temporary folder removed at exit)")
        common.add_argument("--seeds", type=int, nargs="+", default=[2019],
                            help="random seeds (default 2019); the first seeds the generators")
        common.add_argument("--tiny", action="store_true",
                            help="a tiny size that finishes in seconds (smoke test)")
        self.args: Optional[argparse.Namespace] = None
        self._argv: List[str] = []
        self._started = time.perf_counter()
        self._tmp_work_dir: Optional[str] = None

    @property
    def command(self) -> str:
        """The command line of this run, as ``python -m benchmarks.<name> ...``."""
        return shlex.join(["python", "-m", f"benchmarks.{self.name}", *self._argv])

    def parse(self, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
        """Parse ``argv`` (default ``sys.argv[1:]``), set torch's thread count, seed the
        generators with the first seed and create the work dir; returns the options."""
        import torch
        self._argv = list(sys.argv[1:] if argv is None else argv)
        args = self.parser.parse_args(self._argv)
        if args.threads < 1:
            self.parser.error(f"--threads must be at least 1, got {args.threads}")
        if args.budget_s is not None and args.budget_s <= 0:
            self.parser.error(f"--budget-s must be positive, got {args.budget_s}")
        torch.set_num_threads(args.threads)
        seed_all(args.seeds[0])
        if args.work_dir is None:
            self._tmp_work_dir = tempfile.mkdtemp(prefix=f"bench-{self.name}-")
            args.work_dir = self._tmp_work_dir
            import atexit
            atexit.register(shutil.rmtree, self._tmp_work_dir, True)
        else:
            os.makedirs(args.work_dir, exist_ok=True)
        self._started = time.perf_counter()
        self.args = args
        return args

    def clock(self, device=None):
        """:func:`clock`: ``with h.clock() as t: ...`` then ``t.wall_s``, ``t.cpu_s``."""
        return clock(device)

    def time_calls(self, fn: Callable[[], object], iters: int, warmup: int = 1, device=None) -> List[Timing]:
        """:func:`time_calls`."""
        return time_calls(fn, iters, warmup, device)

    def peak_rss_mb(self) -> float:
        """:func:`peak_rss_mb`: this process's peak RSS in MiB (VmHWM)."""
        return peak_rss_mb()

    def budget_left_s(self) -> float:
        """Seconds left of ``--budget-s`` since :meth:`parse` (infinite without a budget)."""
        if self.args is None or self.args.budget_s is None:
            return math.inf
        return self.args.budget_s - (time.perf_counter() - self._started)

    def output_path(self, filename: str) -> str:
        """``<out>/<filename>``, for a benchmark's further files (plots, logs)."""
        out = self._require_args().out
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, filename)

    def header(self) -> str:
        """The results file's head: title, command, revision, date and environment."""
        args = self._require_args()
        env = environment(args.threads)
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (f"# {self.description}\n\n"
                f"Command: `{self.command}`\n\n"
                f"Revision {git_revision()}, {date}; torch {env['torch']}, fuxictr {env['fuxictr']}, "
                f"Python {env['python']}; {env['torch_threads']} torch thread(s); "
                f"CPU {env['cpu']} ({env['cpu_count']} cores)"
                + (f"; GPU {env['gpu']}" if "gpu" in env else "") + ".\n")

    def write(self, markdown_body: str, records) -> str:
        """Write ``<out>/<name>.md`` (:meth:`header`, then ``markdown_body``) and
        ``<out>/<name>.json`` (command, revision, date, environment, options and ``records``,
        any JSON-serialisable value, usually a list of dicts), each atomically; also prints
        the markdown. Returns the markdown file's path."""
        from fuxictr_ext.atomic import write_text_atomic
        args = self._require_args()
        text = self.header() + "\n" + markdown_body.strip("\n") + "\n"
        options = {key: value for key, value in vars(args).items() if key != "work_dir" or not self._tmp_work_dir}
        twin = {"name": self.name, "description": self.description, "command": self.command,
                "git_revision": git_revision(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "environment": environment(args.threads), "options": options, "records": records}
        md_path, json_path = self.output_path(f"{self.name}.md"), self.output_path(f"{self.name}.json")
        write_text_atomic(json_path, json.dumps(twin, indent=1, default=_jsonable) + "\n")
        write_text_atomic(md_path, text)
        print(text, flush=True)
        return md_path

    def _require_args(self) -> argparse.Namespace:
        if self.args is None:
            raise RuntimeError(f"Harness({self.name!r}): call parse() before writing results")
        return self.args


def _jsonable(value):
    """JSON fallback for NumPy scalars and arrays, paths and dataclasses."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)
