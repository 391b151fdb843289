"""Benchmark: how fast ``segqc --help`` answers (a fresh Python process each time, as a user runs it).

Measures, in the same run, the median wall time of ``python -m SegQCLib.commands.cli --help`` and of each
sub-command's ``--help``, against an empty Python start (``python -c pass``) as the reference: the top-level
help imports no command module (no torch, numpy or SimpleITK), so it should cost little more than starting
Python.  Target: ``segqc --help`` under 1 s and under 5x the empty start.

Run: ``python benchmarks/bench_cli_help.py [--repeats 5]``.  Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_SECONDS = 1.0
TARGET_RATIO = 5.0
COMMANDS = ((), ("run",), ("estimate",), ("rank",), ("model",), ("corrections",))


def wall_time(arguments: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(arguments, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command, median (default 5)")
    args = parser.parse_args(argv)
    reference = wall_time([sys.executable, "-c", "pass"], args.repeats)
    print(f"python -c pass: {reference:.3f} s (reference)")
    top = 0.0
    for command in COMMANDS:
        seconds = wall_time([sys.executable, "-m", "SegQCLib.commands.cli", *command, "--help"], args.repeats)
        print(f"segqc {' '.join(command + ('--help',))}: {seconds:.3f} s = {seconds / reference:.1f}x")
        if not command:
            top = seconds
    met = top < TARGET_SECONDS and top / reference < TARGET_RATIO
    print(f"target: segqc --help < {TARGET_SECONDS:.1f} s and < {TARGET_RATIO:.0f}x -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
