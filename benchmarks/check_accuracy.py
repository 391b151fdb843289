"""Check: the faster settings predict what the reference settings predict, on real and synthetic cases.

For each case (the first ``--cases`` real hippocampus cases of ``../shared/data/hippocampus`` or
``$SEGQC_DATA_DIR``, and the 64x256x256 synthetic case of ``bench_inference.py``) the QC network runs with
the reference settings (PyTorch, the model's overlap) and with each candidate (``--runtime openvino``,
``--overlap X``), and the error maps are also passed through the 8-bit writer's rounding.  Printed per case
and candidate: the largest and mean absolute difference of the error probabilities, and the difference of
the estimated case Dice, QI and the network's predicted Dice.  Exit status 1 when a difference exceeds
``--tolerance`` (probabilities) or ``--dice-tolerance`` (estimates).

Usage: python benchmarks/check_accuracy.py [--model PATH] [--runtime openvino] [--overlap 0.1] [--cases 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "benchmarks"))

from bench_inference import BUNDLED_MODEL, write_case  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--runtime", default=None, choices=("torch", "openvino"), help="candidate runtime")
    parser.add_argument("--overlap", type=float, default=None, help="candidate sliding-window overlap")
    parser.add_argument("--cases", type=int, default=5, help="real hippocampus cases to check")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed probability difference")
    parser.add_argument("--dice-tolerance", type=float, default=1e-3, help="largest allowed estimate difference")
    args = parser.parse_args(argv)

    import torch

    from SegQCLib.engine import QCEngine
    from SegQCLib.io.case import load_case
    from SegQCLib.io.datasets import hippocampus_dir, list_nnunet_cases
    from SegQCLib.io.probability_maps import PROBABILITY_STEP
    from SegQCLib.quality.postprocess import build_report

    torch.set_num_threads(max(1, torch.get_num_threads()))
    reference = QCEngine(args.model, "cpu")
    candidates = {"8-bit maps": None}
    if args.runtime or args.overlap is not None:
        name = f"runtime {args.runtime or 'torch'}, overlap {args.overlap if args.overlap is not None else 'model'}"
        candidates[name] = QCEngine(args.model, "cpu", overlap=args.overlap, runtime=args.runtime or "torch")
    cases = {}
    root = hippocampus_dir()
    if (root / "imagesTr").is_dir():
        for entry in list_nnunet_cases(root)[:args.cases]:
            cases[entry.case_id] = (entry.images, entry.label)
    else:
        print(f"real data not found at {root}: only the synthetic case is checked")
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        image, seg = write_case(Path(scratch))
        cases["synthetic 64x256x256"] = ([image], seg)
        print(f"{'case':<24} {'candidate':<36} {'max |dp|':>9} {'mean |dp|':>10} {'d Dice_est':>10} {'d QI':>9} "
              f"{'d Dice_pred':>11}")
        for case_id, (images, label) in cases.items():
            case = load_case(images, label)
            base = reference.run_case(case)
            for name, engine in candidates.items():
                if engine is None:  # what segqc estimate reads back from the written maps
                    maps = {k: np.rint(np.clip(v, 0, 1) / PROBABILITY_STEP).astype(np.float32) * np.float32(
                        PROBABILITY_STEP) for k, v in base.error_prob.items()}
                    report, dice_pred = build_report(case.segmentation, maps), base.report.case.dice_pred
                else:
                    result = engine.run_case(case)
                    maps, report, dice_pred = result.error_prob, result.report, result.report.case.dice_pred
                diffs = [np.abs(maps[k] - base.error_prob[k]) for k in maps]
                largest = max(float(d.max()) for d in diffs)
                mean = float(np.mean([d.mean() for d in diffs]))
                d_dice = abs((report.case.dice_est or 0) - (base.report.case.dice_est or 0))
                d_qi = abs(report.case.qi - base.report.case.qi)
                d_pred = abs((dice_pred or 0) - (base.report.case.dice_pred or 0))
                limit = PROBABILITY_STEP / 2 + 1e-6 if engine is None else args.tolerance
                bad = largest > limit or d_dice > args.dice_tolerance
                failed |= bad
                print(f"{case_id:<24} {name:<36} {largest:9.2e} {mean:10.2e} {d_dice:10.2e} {d_qi:9.2e} "
                      f"{d_pred:11.2e}{'  EXCEEDS' if bad else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
