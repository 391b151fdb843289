"""Benchmark: what the domain check and the network's mirror uncertainty add to ``QCEngine.run_case``.

For (a) a real hippocampus case and (b) the synthetic 64x256x256 case of ``bench_inference.py`` (1 mm, a
two-class box segmentation over most of it), with the bundled model (or ``--model``) on CPU, in one process:

* ``run_case`` as shipped: domain check (profile) + one extra mirrored window for the uncertainty;
* ``run_case`` without the mirrored window (``QCEngine(flip_check=False)``);
* the domain check alone (``timing_s["domain"]`` of the report).

Repeats alternate between the two engines so that load from other jobs hits both alike; medians are
printed with the ratio shipped / without-mirror.  Target: the 64x256x256 case at most 1.10x (one window
among many); a one-window case pays about one window more.

Run: ``python benchmarks/bench_domain.py [--repeats 5] [--threads N] [--model PATH]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import write_large_case  # noqa: E402

TARGET_RATIO_LARGE = 1.10


def measure(engine, case, repeats: int) -> tuple[float, float, int]:
    """Median seconds of run_case, median seconds of its domain check, windows."""
    seconds, domain = [], []
    report = None
    for _ in range(repeats):
        started = time.perf_counter()
        report = engine.run_case(case).report
        seconds.append(time.perf_counter() - started)
        domain.append(report.timing_s.get("domain", 0.0))
    return statistics.median(seconds), statistics.median(domain), report.parameters["inference"]["windows"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per engine (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", help="model package (default: the bundled model)")
    args = parser.parse_args(argv)

    import torch

    from SegQCLib.engine import QCEngine
    from SegQCLib.io.case import load_case
    from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases

    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = QCEngine(args.model, "cpu")
    plain = QCEngine(args.model, "cpu", flip_check=False)
    cases = {}
    root = hippocampus_dir()
    if (root / "imagesTr").is_dir():
        first = list_nnunet_cases(root)[0]
        cases[f"hippocampus {first.case_id}"] = load_case(first.images, first.label)
    with tempfile.TemporaryDirectory() as folder:
        image, seg = write_large_case(Path(folder))
        cases["synthetic 64x256x256"] = load_case([image], seg)
    worst = 0.0
    for name, case in cases.items():
        for engine in (shipped, plain):
            engine.run_case(case)  # warm-up: library initialisation is not timed
        with_flip, without_flip, domain_s = [], [], []
        for _ in range(args.repeats):
            a, d, windows = measure(shipped, case, 1)
            b, _, _ = measure(plain, case, 1)
            with_flip.append(a)
            without_flip.append(b)
            domain_s.append(d)
        a, b = statistics.median(with_flip), statistics.median(without_flip)
        ratio = a / b
        print(f"{name}: {windows} window(s); run_case {a:.3f} s shipped vs {b:.3f} s without the mirrored window "
              f"= {ratio:.3f}x; domain check {statistics.median(domain_s):.3f} s "
              f"({statistics.median(domain_s) / a:.1%} of the run)")
        if name.startswith("synthetic"):
            worst = ratio
    met = worst <= TARGET_RATIO_LARGE
    print(f"target: 64x256x256 at most {TARGET_RATIO_LARGE:.2f}x -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
