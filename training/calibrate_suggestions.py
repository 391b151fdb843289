"""Calibrate which suggested edits are offered: ``python -m training.calibrate_suggestions --model PKG --data DIR``.

On tuning cases (the *training* split, never validation) every suggested edit of every query is applied alone
and its true Dice gain (its class, against the truth) set beside its expected gain (from Ê).  The mean true gain
as a function of the expected gain is fitted by isotonic (non-decreasing) regression; the threshold is the
smallest expected gain from which the fit is positive, so that the edits it lets through improve their class on
average at every level of expected gain (not only on average over all of them, which large good edits would
dominate).  It is never below :data:`~SegQCLib.quality.suggestion_settings.DEFAULT_MIN_GAIN_DICE`: an edit
whose own estimate calls it harmful is not offered.

The result is written into the model package as ``suggestions.json`` (with the weights' sha256, so a retrained
model does not inherit it) and read by ``segqc run --suggest``.  ``--out`` also writes a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from scipy.optimize import isotonic_regression

from SegQCLib.io.datasets import hippocampus_dir
from SegQCLib.network.package import default_model_path
from SegQCLib.quality.suggestion_settings import DEFAULT_MIN_GAIN_DICE, write_suggestion_settings

from .queries import TRAIN_MIX
from .splits import DEFAULT_SPLIT_FILE
from .suggestion_study import DEFAULT_SEGMENTER, OFFER_EVERY_EDIT, StudySettings, run_study

logger = logging.getLogger("training.calibrate_suggestions")

# Dice gains lie in [-1, 1]: a threshold above 1 offers nothing (when no level of expected gain helps).
NEVER_OFFER_GAIN = 1.5
DEFAULT_QUERIES_PER_CASE = 6
DEFAULT_SEED = 101  # not the bank's seed (7): fresh perturbations of the tuning cases
CURVE_POINTS = 40
REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class Calibration:
    """The threshold and what it does on the tuning edits."""

    min_gain_dice: float
    edits: int
    offered_edits: int
    offered_mean_true_gain: Optional[float]
    offered_fraction_improved: Optional[float]
    offered_fraction_worse: Optional[float]
    withheld_mean_true_gain: Optional[float]
    curve: list[list[float]]  # [expected gain, fitted mean true gain] at the blocks of the isotonic fit


def _mean(values: np.ndarray) -> Optional[float]:
    return float(values.mean()) if values.size else None


def calibrate_min_gain(expected: Sequence[float], true: Sequence[float],
                       floor: float = DEFAULT_MIN_GAIN_DICE) -> Calibration:
    """Smallest expected gain from which the isotonic fit of the true gain is positive (at least ``floor``)."""
    expected = np.asarray(expected, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if expected.shape != true.shape:
        raise ValueError("expected and true gains must have the same length")
    if expected.size == 0:
        return Calibration(floor, 0, 0, None, None, None, None, [])
    order = np.argsort(expected, kind="stable")
    x, y = expected[order], true[order]
    fit = isotonic_regression(y, increasing=True)
    fitted = np.asarray(fit.x)
    positive = np.flatnonzero(fitted > 0)
    threshold = float(x[positive[0]]) if positive.size else NEVER_OFFER_GAIN
    threshold = max(threshold, floor)
    offered = expected >= threshold
    blocks = np.asarray(fit.blocks[:-1])
    step = max(1, blocks.size // CURVE_POINTS)
    curve = [[float(x[b]), float(fitted[b])] for b in blocks[::step]]
    return Calibration(
        min_gain_dice=threshold, edits=int(expected.size), offered_edits=int(offered.sum()),
        offered_mean_true_gain=_mean(true[offered]),
        offered_fraction_improved=_mean((true[offered] > 0).astype(float)),
        offered_fraction_worse=_mean((true[offered] < 0).astype(float)),
        withheld_mean_true_gain=_mean(true[~offered]), curve=curve)


def _shown(path: Path) -> str:
    """A path as recorded in the package: relative to the repository when in it or beside it (../shared)."""
    relative = os.path.relpath(Path(path).resolve(), REPOSITORY)
    return str(path) if relative.startswith(os.path.join(os.pardir, os.pardir)) else relative


def calibrate(settings: StudySettings) -> tuple[Calibration, dict[str, Any]]:
    """Run the study on the tuning cases (every edit offered) and fit the threshold."""
    if settings.split_side != "train":
        raise ValueError("Calibrate on training-split cases only: validation cases measure the result")
    result = run_study(settings)
    pairs = result.edits
    calibration = calibrate_min_gain([e.expected_gain for _, e in pairs], [e.true_gain for _, e in pairs])
    provenance = {
        "data": _shown(settings.data_dir), "split_file": _shown(settings.split_file), "split": settings.split_side,
        "cases": len({q.case_id for q in result.queries}), "case_ids": sorted({q.case_id for q in result.queries}),
        "queries": len(result.queries),
        "queries_per_case": f"{settings.queries_per_case} perturbations (training mix) + the segmenter's prediction",
        "segmenter": _shown(settings.segmenter_dir), "seed": settings.seed, "model": result.model.get("name"),
        "rule": "smallest expected Dice gain from which the isotonic fit of the true gain is positive, >= "
                f"{DEFAULT_MIN_GAIN_DICE}",
        **asdict(calibration),
    }
    logger.info("Calibrated min_gain_dice %.4f on %d edits of %d queries (%.0f s)", calibration.min_gain_dice,
                calibration.edits, len(result.queries), result.seconds)
    return calibration, provenance


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate_suggestions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="QC model package to calibrate (default: the bundled one); "
                                                      "its suggestions.json is written")
    parser.add_argument("--data", default=str(hippocampus_dir()), help="nnU-Net raw dataset folder")
    parser.add_argument("--split", default=str(DEFAULT_SPLIT_FILE), help="split file (its training cases are used)")
    parser.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER), help="segmenter folder")
    parser.add_argument("--queries-per-case", type=int, default=DEFAULT_QUERIES_PER_CASE,
                        help="perturbation queries per case (plus the segmenter's prediction)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write calibration.json here")
    parser.add_argument("--dry-run", action="store_true", help="do not write the package's suggestions.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model else default_model_path()
    settings = StudySettings(Path(args.data), model_dir, "train", TRAIN_MIX, args.queries_per_case, args.seed,
                             Path(args.split), Path(args.segmenter), OFFER_EVERY_EDIT, args.max_cases, args.device)
    calibration, provenance = calibrate(settings)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "calibration.json").write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    if not args.dry_run:
        path = write_suggestion_settings(model_dir, calibration.min_gain_dice, provenance)
        print(f"wrote {path}")
    print(f"min_gain_dice = {calibration.min_gain_dice:.4f} ({calibration.offered_edits} of {calibration.edits} "
          f"tuning edits offered; their mean true gain {calibration.offered_mean_true_gain})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
