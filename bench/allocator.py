"""Benchmark the household allocator: one optimisation and one report, with peak memory.

Run ``python bench/allocator.py`` (``--profile`` adds a pyinstrument profile of a single-process
run). The job is issue 7's: 10,000 paths, 30 years, four asset classes, grid step 0.05
(1,771 candidates), two processes. Targets on this machine: < 10 s, < 2 GB, report < 3 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.allocator.assumptions import load_assumptions
from apps.allocator.household import EXAMPLE_REQUEST, parse_request
from apps.allocator.optimizer import optimize
from apps.allocator.report import build_report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class TreeMemory:
    """Sample the summed resident memory of this process and all its descendants.

    getrusage(RUSAGE_CHILDREN) cannot see the pool's workers: they are children of the
    forkserver, which is still alive when the run ends. So poll /proc instead (Linux only).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.sample_mb())
            time.sleep(self.interval)

    @staticmethod
    def sample_mb() -> float:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # The command name may hold spaces; the fields after its closing bracket do not.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            rss[pid] = int(fields[21]) * resource.getpagesize()
        tree = {os.getpid()}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return sum(rss.get(pid, 0) for pid in tree) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="profile a single-process run with pyinstrument")
    parser.add_argument("--executor", choices=("process", "thread"), default="process")
    args = parser.parse_args()

    request = parse_request(EXAMPLE_REQUEST)
    assumptions = load_assumptions()
    params = request.params
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}")
    print(
        f"job: n_sims={params.n_sims} horizon_years={params.horizon_years} classes={assumptions.n_classes} "
        f"grid_step={params.grid_step} n_jobs={params.n_jobs} executor={args.executor}"
    )

    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
        optimize(request.household, dataclasses.replace(params, n_jobs=1), assumptions)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))

    with TreeMemory() as memory:
        started = time.perf_counter()
        result = optimize(request.household, params, assumptions, executor=args.executor)
        optimise_s = time.perf_counter() - started

    started = time.perf_counter()
    deck = build_report(result, request.household, assumptions)
    report_s = time.perf_counter() - started

    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    total_mb = max(memory.peak_mb, parent_mb)
    best = result.summary()["recommended"]
    print(f"candidates: {result.weights.shape[0]}, recommended: {best['weights']}")
    print(f"recommended success probability: {best['success_probability']}")
    print(f"optimisation wall time: {optimise_s:6.2f} s   (target < 10 s)  {'OK' if optimise_s < 10 else 'MISSED'}")
    print(
        f"peak memory:            {total_mb:6.0f} MB  (target < 2048 MB) {'OK' if total_mb < 2048 else 'MISSED'}"
        f"  [all processes together, sampled every 20 ms; this process alone peaked at {parent_mb:.0f} MB]"
    )
    print(f"report build time:      {report_s:6.2f} s   (target < 3 s)   {'OK' if report_s < 3 else 'MISSED'}")
    print(f"report size:            {len(deck) / 1024:6.0f} KB")


if __name__ == "__main__":
    main()
