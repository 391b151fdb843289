"""Calibrate a truth-output QC model on its run's tuning cases: ``python -m training.calibrate --run RUN``.

The network's estimated-truth probabilities are calibrated with one temperature T (the truth logits are
divided by T, Guo et al. 2017): T minimises the cross-entropy of the estimated truth on the tuning
queries (never the validation split), over the voxels near the query or the truth where the errors are.
Calibrated probabilities make SegQC's expected-count estimates (eqs. 4-8) unbiased on average.  The fitted
temperature is stored in the package's ``config.json`` (``truth_temperature``), so every front end
applies it; the tuning figures before and after are written to ``calibration.json`` in the package.

``--objective estimate-mae`` chooses T instead from :data:`TEMPERATURE_GRID` by the estimate's Dice MAE on the
same tuning queries: the figure a reviewer reads.  The bundled v2 model uses it (the cross-entropy fit gave
T = 1.70, which softened the maps and raised the tuning MAE from 0.049 to 0.061; the MAE choice was T = 0.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from SegQCLib.network.config import OutputKind
from SegQCLib.network.package import load_model_package, save_model_package
from SegQCLib.network.qcresunet import error_logits_from_truth, one_hot
from SegQCLib.quality.evaluation import mae

from .bank import load_bank
from .dataset import QueryDataset
from .train import SETTINGS_FILE, estimated_case_dice, near_region

logger = logging.getLogger("training.calibrate")

CALIBRATION_FILE = "calibration.json"
TEMPERATURE_RANGE = (0.25, 4.0)
GOLDEN_STEPS = 40
TEMPERATURE_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0)
OBJECTIVES = ("cross-entropy", "estimate-mae")


@dataclass
class TuningOutputs:
    """Raw truth logits (temperature 1) of every tuning query, with what is needed to score them."""

    logits: torch.Tensor  # (N, 1 + C, Z, Y, X)
    query: torch.Tensor  # (N, Z, Y, X)
    truth: torch.Tensor  # (N, Z, Y, X) channel indices (0 = background)
    dice: np.ndarray
    identity: np.ndarray


@torch.no_grad()
def collect(model, dataset: QueryDataset, batch_size: int = 8) -> TuningOutputs:
    """Truth logits of every query of ``dataset`` at temperature 1, without augmentation."""
    model.eval()
    labels = list(model.config.labels)
    logits, queries, truths, dice = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.batch(range(start, min(len(dataset), start + batch_size)), None)
        output = model(batch.image, one_hot(batch.query, model.config.mask_labels))
        logits.append(output.truth_logits.float() * model.config.truth_temperature)
        target = torch.zeros_like(batch.truth)
        for index, label in enumerate(labels):
            target[batch.truth == label] = index + 1
        queries.append(batch.query)
        truths.append(target)
        dice.append(batch.dice.numpy())
    return TuningOutputs(torch.cat(logits), torch.cat(queries), torch.cat(truths), np.concatenate(dice),
                         dataset.identity.copy())


def scores_at(outputs: TuningOutputs, temperature: float, labels: Sequence[int]) -> dict[str, float]:
    """Near-region cross-entropy, estimate Dice MAE and perfect queries' mean estimate at ``temperature``."""
    logits = outputs.logits / temperature
    near = near_region(outputs.query, outputs.truth)
    ce = F.cross_entropy(logits, outputs.truth, reduction="none")
    query_onehot = one_hot(outputs.query, labels)
    error = torch.sigmoid(error_logits_from_truth(logits, query_onehot))
    estimate = estimated_case_dice(error, query_onehot).numpy()
    perfect = float(estimate[outputs.identity].mean()) if outputs.identity.any() else math.nan
    return {"temperature": float(temperature), "near_cross_entropy": float(ce[near].mean()),
            "est_dice_mae": mae(estimate, outputs.dice), "perfect_est_dice": perfect}


def fit_temperature(outputs: TuningOutputs, labels: Sequence[int]) -> float:
    """The temperature in :data:`TEMPERATURE_RANGE` minimising the near-region cross-entropy (golden section
    on log T; the cross-entropy of a temperature-scaled softmax is unimodal in T)."""
    low, high = (math.log(v) for v in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return scores_at(outputs, math.exp(log_t), labels)["near_cross_entropy"]

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(GOLDEN_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return math.exp((low + high) / 2)


def lowest_estimate_mae_temperature(outputs: TuningOutputs, labels: Sequence[int],
                                    grid: Sequence[float] = TEMPERATURE_GRID) -> float:
    """The temperature of ``grid`` whose estimated case Dice is closest to the truth on average (MAE)."""
    return min(grid, key=lambda t: scores_at(outputs, t, labels)["est_dice_mae"])


def calibrate(run: Path, package_name: str, bank: Path, out: Path, tuning_queries: int | None = None,
              objective: str = "cross-entropy") -> dict:
    package = load_model_package(run / package_name)
    config = package.config
    if config.output != OutputKind.TRUTH.value:
        raise ValueError(f"{run / package_name} predicts errors directly; temperature calibration needs the "
                         "truth output")
    settings = json.loads((run / SETTINGS_FILE).read_text())
    tuning_ids = set(settings["tuning_cases"])
    cases = [c for c in load_bank(bank, "train") if c.case_id in tuning_ids]
    dataset = QueryDataset(cases, config)
    if tuning_queries:
        dataset.keep(tuning_queries)
    outputs = collect(package.model, dataset)
    labels = list(config.labels)
    before = scores_at(outputs, config.truth_temperature, labels)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    temperature = (fit_temperature(outputs, labels) if objective == "cross-entropy"
                   else lowest_estimate_mae_temperature(outputs, labels))
    after = scores_at(outputs, temperature, labels)
    logger.info("temperature %.3f: before %s, after %s", temperature, before, after)
    config.truth_temperature = round(temperature, 4)
    state = {k: v.detach().cpu() for k, v in package.model.state_dict().items()}
    save_model_package(out, config, state, package.card or None, overwrite=True)
    result = {"tuning_cases": sorted(tuning_ids), "queries": len(dataset), "objective": objective,
              "before": before, "after": after}
    (out / CALIBRATION_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="training run folder (its settings name the tuning cases)")
    parser.add_argument("--package", default="best", help="model package inside the run (default %(default)s)")
    parser.add_argument("--bank", required=True, help="the query bank the run was trained on")
    parser.add_argument("--out", default=None, help="calibrated package (default RUN/<package>_calibrated)")
    parser.add_argument("--tuning-queries", type=int, default=None, help="use only this many tuning queries")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objective", choices=OBJECTIVES, default="cross-entropy",
                        help="what T minimises on the tuning queries (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    out = Path(args.out) if args.out else run / f"{args.package}_calibrated"
    result = calibrate(run, args.package, Path(args.bank), out, args.tuning_queries, args.objective)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
